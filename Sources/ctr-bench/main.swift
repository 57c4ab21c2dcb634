import ArgumentParser
import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import Foundation
import EventDecoding
import Ingest
import Logging
import TrafficGenerator

/// Measurements that scripts/bench.py combines into one table. Each prints one line
/// `RESULT <name> <events> <seconds>` (plus `key=value` details, `cpu=` the CPU seconds of this
/// process over the same span) on stdout.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctr-bench",
        abstract: "Benchmark stages of the CTR pipeline (release build: swift build -c release).",
        subcommands: [Consume.self, Stages.self, FileSource.self, Sink.self, SinkFormats.self, Memory.self, Callgrind.self, DistinctProducer.self]
    )
}

/// `events` messages of the synthetic stream over `products` products, in memory: the plain
/// stream (no `user_id`, no dimensions), or with `features` every event's user and its
/// `campaign_id`, `country` and `device_type`.
func generatedMessages(events: Int, products: Int, features: Bool = false) -> [(InputTopic, [UInt8])] {
    var generator = TrafficGenerator(
        configuration: TrafficConfiguration(
            products: products, startTime: Timestamp(milliseconds: 1_700_000_000_000), eventRate: 100_000,
            anonymousFraction: features ? 0 : 1, emitsDimensions: features
        )
    )
    var messages: [(InputTopic, [UInt8])] = []
    messages.reserveCapacity(events)
    for _ in 0..<events {
        guard let message = generator.next() else { break }
        messages.append((message.topic, message.value))
    }
    return messages
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// User plus system CPU seconds of this process so far.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

func report(_ name: String, events: Int, seconds: Double, _ details: String = "") {
    print("RESULT \(name) \(events) \(String(format: "%.6f", seconds)) \(details)")
    fflush(nil)
}

struct Consume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "librdkafka consume-and-discard: the consumer limit.")
    @Option var brokers: String
    @Option var topics = "impressions,clicks"
    @Option var expect: Int
    @Option var group = "bench-consume-\(UInt32.random(in: 0...UInt32.max))"
    @Option(help: "Stop when no message arrived for this long after the first, ms (the topics hold fewer than expected).")
    var idleExitMs = 5_000

    func run() throws {
        var received = 0
        var bytes = 0
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(["bootstrap.servers": brokers, "group.id": group]),
            topics: topics.split(separator: ",").map(String.init), onError: { _ in }
        )
        var start: ContinuousClock.Instant?
        var cpuAtStart = 0.0
        var last = ContinuousClock.now
        let deadline = ContinuousClock.now + .seconds(300)
        while received < expect && ContinuousClock.now < deadline {
            consumer.poll(maxMessages: 10_000, timeout: .milliseconds(100)) { message in
                if start == nil {
                    start = .now
                    cpuAtStart = cpuSeconds()
                }
                received += 1
                bytes += message.payload.count
                last = .now
            }
            for case .assigned(let partitions, _) in consumer.takeRebalanceEvents() {
                _ = try consumer.committedOffsets(partitions, timeout: .seconds(10))
                try consumer.resume(partitions)
            }
            if start != nil, ContinuousClock.now - last > .milliseconds(idleExitMs) { break }
        }
        let elapsed = start.map { _ in seconds(since: start!) - (received < expect ? seconds(since: last) : 0) } ?? 0
        report("consume", events: received, seconds: elapsed, "bytes=\(bytes) cpu=\(cpuSeconds() - cpuAtStart)")
        consumer.close()
    }
}

struct Stages: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Decode only and windows only, on events generated in memory.")
    @Option var events = 2_000_000
    @Option var products = 10_000

    func run() throws {
        let messages = generatedMessages(events: events, products: products)
        let decoder = EventDecoder()
        let now = Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        var decoded: [(EventKind, String, Timestamp)] = []
        decoded.reserveCapacity(messages.count)
        var start = ContinuousClock.now
        var cpu = cpuSeconds()
        for (topic, value) in messages {
            if case .success(let event) = decoder.decode(value, expecting: topic.kind, now: now) {
                decoded.append((topic.kind, event.product.name, event.timestamp))
            }
        }
        report("decode", events: messages.count, seconds: seconds(since: start), "cpu=\(cpuSeconds() - cpu)")

        var catalog = ProductCatalog()
        var windows = WindowAggregator(configuration: WindowConfiguration(), partitionCount: 1, now: Timestamp(milliseconds: 0))
        var rows = 0
        start = .now
        cpu = cpuSeconds()
        for (index, (kind, product, time)) in decoded.enumerated() {
            _ = windows.ingest(kind, catalog.id(for: product), at: time, from: 0, offset: Int64(index))
            if index % 10_000 == 0 {
                rows += windows.advance(now: Timestamp(milliseconds: Int64(index))).reduce(0) { $0 + $1.rows.count }
            }
        }
        rows += windows.advance(now: Timestamp(milliseconds: Int64.max / 2)).reduce(0) { $0 + $1.rows.count }
        report("windows", events: decoded.count, seconds: seconds(since: start),
            "rows=\(rows) open_product_windows_at_end=\(windows.openProductWindowCount) cpu=\(cpuSeconds() - cpu)")
    }
}

/// Rows per second through the aggregator's sink (``ClickHouseResultsStore``: staging, the
/// `ctr_batches` provenance row, the fenced insert into `ctr_results_raw`), with each batch's
/// provenance covering `--source-partitions` partitions. The same rows and batch sizes for every
/// partition count, in alternating rounds, so what differs between the lines is only what the
/// partition count costs the sink.
struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rows per second through the results store, per source-partition count.")
    @Option var clickhouseUrl: String
    @Option var database: String
    @Option var rows = 300_000
    @Option var batchRows = 10_000
    @Option(help: "Comma-separated partition counts of each batch's provenance.") var sourcePartitions = "3,96"
    @Option var rounds = 2

    func run() throws {
        let counts = try sourcePartitions.split(separator: ",").map { entry in
            guard let count = Int(entry), count > 0 else { throw ValidationError("--source-partitions: \(entry) is not a partition count") }
            return count
        }
        let store = try ClickHouseResultsStore(
            endpoint: ClickHouseEndpoint(url: clickhouseUrl, database: database), writer: "bench", consumerGroup: "bench", policy: RetryPolicy(),
            maxBatchRows: batchRows, logger: Logger(label: "ctr-bench")
        )
        try store.fence(group: "bench", generation: 1) { false }
        var sequence: UInt64 = 0
        var totals: [Int: (rows: Int, seconds: Double, cpu: Double, batches: Int)] = [:]
        for _ in 0..<rounds {
            for partitions in counts {
                let positions = (0..<partitions).flatMap { partition in
                    ["impressions", "clicks"].map { PartitionPosition(partition: "\($0):\(partition)", nextOffset: 1_000_000 + Int64(partition)) }
                }
                var batches: [ResultBatch] = []
                for first in stride(from: 0, to: rows, by: batchRows) {
                    let start = Timestamp(milliseconds: 1_700_000_000_000 + Int64(sequence) * 10_000)
                    let end = Timestamp(milliseconds: start.milliseconds + 10_000)
                    var batch = ResultBatch(id: "bench-\(sequence)", sequence: sequence, generation: 1, day: ResultBatch.day(of: end))
                    sequence += 1
                    for index in first..<min(first + batchRows, rows) {
                        batch.append(
                            ResultRow(
                                productID: TrafficGenerator.productName(index % 10_000), windowStart: start, windowEnd: end,
                                totals: WindowCounts(impressions: 100, clicks: 3), delta: WindowCounts(impressions: 100, clicks: 3), revision: 0,
                                emittedAt: end
                            )
                        )
                    }
                    batch.positions = positions
                    batches.append(batch)
                }
                let started = ContinuousClock.now
                let cpu = cpuSeconds()
                for batch in batches {
                    guard case .written = try store.write(batch, onRetry: { _ in }) else { throw ValidationError("a batch was fenced") }
                }
                let total = totals[partitions, default: (0, 0, 0, 0)]
                totals[partitions] = (total.rows + rows, total.seconds + seconds(since: started), total.cpu + cpuSeconds() - cpu, total.batches + batches.count)
            }
        }
        for partitions in counts {
            guard let total = totals[partitions] else { continue }
            report("sink-\(partitions)", events: total.rows, seconds: total.seconds, "batches=\(total.batches) cpu=\(total.cpu)")
        }
    }
}

/// The aggregator's core on files, as Flink's contender reads them: the impressions and clicks
/// files (one JSON value per line) read in alternating chunks, as two source partitions;
/// decoded, counted in the default windows (10 s, watermark 2 s), and every emitted window's
/// rows encoded into insert bodies (RowBinary), which are discarded as Flink's blackhole sink
/// discards its rows. No Kafka, no ClickHouse: like for like with Flink's file source.
struct FileSource: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "file", abstract: "Decode, windows and row encoding over JSON-lines files.")
    @Option var impressions: String
    @Option var clicks: String
    @Option(help: "Lines read from one file before switching to the other.") var chunkLines = 10_000

    func run() throws {
        let started = ContinuousClock.now
        let cpu = cpuSeconds()
        var sources = try [(EventKind.impression, impressions), (.click, clicks)].map { kind, path in
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            return (kind: kind, bytes: [UInt8](data), position: 0)
        }
        let decoder = EventDecoder()
        let now = WallClock.now()
        var catalog = ProductCatalog()
        var windows = WindowAggregator(configuration: WindowConfiguration(), partitionCount: sources.count, now: now)
        var offsets = Array(repeating: Int64(0), count: sources.count)
        var events = 0, rejected = 0, rows = 0, revisions = 0, bodyBytes = 0
        func encode(_ emissions: [WindowEmission]) {
            for emission in emissions {
                var batch = ResultBatch(id: "file", sequence: 0, generation: 0, day: ResultBatch.day(of: emission.windowEnd))
                for row in emission.rows {
                    if row.revision > 0 { revisions += 1 }
                    batch.append(ResultRow(row, of: emission, series: catalog.series(of: row.product), emittedAt: now))
                }
                rows += batch.rowCount
                bodyBytes += ResultRowEncoder.rowBinary(batch).count
            }
            for product in windows.takeReleasedProducts() { catalog.release(product) }
        }
        while sources.contains(where: { $0.position < $0.bytes.count }) {
            for partition in sources.indices {
                let kind = sources[partition].kind
                sources[partition].bytes.withUnsafeBytes { file in
                    var position = sources[partition].position
                    var lines = 0
                    while position < file.count && lines < chunkLines {
                        let end = memchr(file.baseAddress! + position, 0x0A, file.count - position)
                            .map { file.baseAddress!.distance(to: UnsafeRawPointer($0)) } ?? file.count
                        if end > position {
                            switch decoder.decode(UnsafeRawBufferPointer(rebasing: file[position..<end]), expecting: kind, now: now) {
                            case .success(let event):
                                let product = catalog.id(for: SeriesKey(product: event.product, dimensions: event.dimensions))
                                _ = windows.ingest(kind, product, at: event.timestamp, from: partition, offset: offsets[partition])
                                events += 1
                            case .failure:
                                rejected += 1
                            }
                            offsets[partition] += 1
                        }
                        position = end + 1
                        lines += 1
                    }
                    sources[partition].position = position
                }
            }
            encode(windows.advance(now: now))
        }
        // End of input: every window is complete, as Flink's bounded source ends with a final watermark.
        encode(windows.advance(now: Timestamp(milliseconds: Int64.max / 2)))
        report("file", events: events, seconds: seconds(since: started), "rows=\(rows) revisions=\(revisions) body_bytes=\(bodyBytes) rejected=\(rejected) cpu=\(cpuSeconds() - cpu)")
    }
}

struct Memory: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resident memory per open (product, window) of the window state.")
    @Option var products = 100_000
    @Option var windows = 3
    @Option(help: "Events (each with a new id, and a new user) in one window, for the dedup and users lines.") var identityEvents = 1_000_000

    func run() throws {
        func residentBytes() -> Int {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        var catalog = ProductCatalog()
        let names = (0..<products).map { TrafficGenerator.productName($0) }
        let ids = names.map { catalog.id(for: $0) }
        let before = residentBytes()
        var aggregator = WindowAggregator(configuration: WindowConfiguration(), partitionCount: 6, now: Timestamp(milliseconds: 0))
        var offset: Int64 = 0
        for window in 0..<windows {
            for id in ids {
                _ = aggregator.ingest(.impression, id, at: Timestamp(milliseconds: 1_700_000_000_000 + Int64(window) * 10_000), from: Int(offset % 6), offset: offset)
                offset += 1
            }
        }
        let after = residentBytes()
        let pairs = aggregator.openProductWindowCount
        report("memory", events: pairs, seconds: 1, "bytes_per_open_product_window=\((after - before) / max(pairs, 1)) open_pairs=\(pairs) state_bytes=\(after - before) catalog_products=\(catalog.count)")

        // What one open window remembers per event for `--dedup-field`, and per distinct user.
        for (name, withIDs, withUsers) in [("memory-dedup", true, false), ("memory-users", false, true)] {
            let start = residentBytes()
            var window = WindowAggregator(configuration: WindowConfiguration(), partitionCount: 1, now: Timestamp(milliseconds: 0))
            for index in 0..<identityEvents {
                let hash = UInt64(index) &* 0x9E37_79B9_7F4A_7C15
                _ = window.ingest(
                    .impression, ids[index % ids.count], at: Timestamp(milliseconds: 1_700_000_000_000), from: 0, offset: Int64(index),
                    user: withUsers ? hash : nil, eventID: withIDs ? hash : nil
                )
            }
            let grown = residentBytes() - start
            let unit = withIDs ? "bytes_per_event_id" : "bytes_per_user"
            report(name, events: identityEvents, seconds: 1, "\(unit)=\(grown / max(identityEvents, 1)) in_one_window=\(identityEvents) state_bytes=\(grown) open_pairs=\(window.openProductWindowCount)")
        }
    }
}

/// One in-process stage over N events, for `valgrind --tool=callgrind`: the instructions of a run
/// with `--skip-stage` (inputs prepared the same way, stage not run) are subtracted from those of
/// a run without it, so the figure is the stage's alone. Deterministic for a given binary and
/// arguments when run with `SWIFT_DETERMINISTIC_HASHING=1`.
struct Callgrind: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one stage (decode, windows, encode) over N events, for callgrind.")

    enum Stage: String, ExpressibleByArgument, CaseIterable {
        case decode, windows, encode
    }

    @Option(help: "decode: EventDecoder over the generated messages; windows: WindowAggregator over decoded events; encode: ResultBatch rows into the insert body (RowBinary, as the sink sends).")
    var stage: Stage
    @Option var events = 20_000
    @Option var products = 10_000
    @Flag(help: "Prepare the inputs but do not run the stage (the baseline to subtract).") var skipStage = false
    @Flag(help: "Events with user_id and three dimensions, decoded with --dimensions campaign_id,country,device_type and --dedup-field event_id.")
    var features = false

    func run() throws {
        let messages = generatedMessages(events: events, products: products, features: features)
        let decoder = features
            ? EventDecoder(dimensionFields: EventDimensions.fieldNames, deduplicationField: "event_id") : EventDecoder()
        let now = Timestamp(milliseconds: 1_700_000_000_000)
        var items = 0
        switch stage {
        case .decode:
            if !skipStage { items = Self.decode(messages, decoder, now) }
        case .windows:
            var decoded: [(EventKind, DecodedEvent)] = []
            for (topic, value) in messages {
                if case .success(let event) = decoder.decode(value, expecting: topic.kind, now: now) { decoded.append((topic.kind, event)) }
            }
            if !skipStage { items = Self.aggregate(decoded) }
        case .encode:
            let start = Timestamp(milliseconds: 1_700_000_000_000)
            let end = Timestamp(milliseconds: 1_700_000_010_000)
            var rows: [ResultRow] = []
            rows.reserveCapacity(events)
            for index in 0..<events {
                let counts = WindowCounts(impressions: UInt64(100 + index % 7), clicks: 3)
                rows.append(
                    ResultRow(
                        productID: TrafficGenerator.productName(index % products), windowStart: start, windowEnd: end, totals: counts,
                        delta: counts, revision: 0, emittedAt: end
                    )
                )
            }
            if !skipStage { items = Self.encode(rows) }
        }
        print("RESULT callgrind-\(stage.rawValue) \(skipStage ? 0 : messages.count) 0 items=\(items)")
    }

    @inline(never) static func decode(_ messages: [(InputTopic, [UInt8])], _ decoder: EventDecoder, _ now: Timestamp) -> Int {
        var valid = 0
        for (topic, value) in messages {
            if case .success = decoder.decode(value, expecting: topic.kind, now: now) { valid += 1 }
        }
        return valid
    }

    /// The catalogue lookup and the window state, as the pipeline does per event.
    @inline(never) static func aggregate(_ decoded: [(EventKind, DecodedEvent)]) -> Int {
        var catalog = ProductCatalog()
        var windows = WindowAggregator(configuration: WindowConfiguration(), partitionCount: 1, now: Timestamp(milliseconds: 0))
        var rows = 0
        for (index, (kind, event)) in decoded.enumerated() {
            let series = catalog.id(for: SeriesKey(product: event.product, dimensions: event.dimensions))
            _ = windows.ingest(kind, series, at: event.timestamp, from: 0, offset: Int64(index), user: event.user, eventID: event.eventID)
            if index % 10_000 == 0 { rows += windows.advance(now: Timestamp(milliseconds: Int64(index))).reduce(0) { $0 + $1.rows.count } }
        }
        return rows + windows.advance(now: Timestamp(milliseconds: Int64.max / 2)).reduce(0) { $0 + $1.rows.count }
    }

    @inline(never) static func encode(_ rows: [ResultRow]) -> Int {
        var batch = ResultBatch(id: "callgrind", sequence: 0, generation: 0, day: ResultBatch.day(of: Timestamp(milliseconds: 1_700_000_010_000)))
        for row in rows { batch.append(row) }
        return ResultRowEncoder.rowBinary(batch).count
    }
}

/// Impressions whose every product id is new (`d<n>`), in event-time order, for the memory line
/// of a producer with runaway ids (reliability review finding 8).
struct DistinctProducer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "distinct-producer", abstract: "Produce impressions with a new product id each.")
    @Option var brokers: String
    @Option var topic = "impressions"
    @Option var count = 5_000_000
    @Option(help: "Events per second of event time.") var eventRate: Int64 = 10_000
    @Option(help: "Events per second of processing time, paced; 0 sends as fast as the broker takes them.") var rate: Int64 = 0
    @Option(help: "Extra librdkafka property KEY=VALUE; repeatable.") var kafkaProperty: [String] = []

    func run() throws {
        var properties = ["bootstrap.servers": brokers, "linger.ms": "20", "batch.num.messages": "10000"]
        for property in kafkaProperty {
            let parts = property.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { properties[parts[0]] = parts[1] }
        }
        let producer = try KafkaProducer(configuration: KafkaConfiguration(properties))
        let start = ContinuousClock.now
        let firstEvent: Int64 = 1_700_000_000_000
        for index in 0..<count {
            let product = "d\(index)"
            let time = firstEvent + Int64(index) * 1000 / eventRate
            let value = #"{"product_id":"\#(product)","timestamp":\#(time),"event_type":"impression"}"#
            try producer.send(topic: topic, key: Array(product.utf8), value: Array(value.utf8))
            if index % 1_000 == 0 {
                producer.poll()
                if rate > 0 {
                    let ahead = start + .milliseconds(Int64(index) * 1000 / rate) - .now
                    if ahead > .zero { Thread.sleep(forTimeInterval: Double(ahead.components.seconds) + Double(ahead.components.attoseconds) / 1e18) }
                }
            }
        }
        try producer.flush(timeout: .seconds(120))
        report("distinct-producer", events: count, seconds: seconds(since: start))
    }
}

Bench.main()

struct SinkFormats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "RowBinary against JSONEachRow for result rows: client encoding and ClickHouse parsing, side by side.",
        discussion: "Inserts the same rows in both formats into a Null-engine table with the results' columns (parsing only), best of --runs."
    )
    @Option var clickhouseUrl: String
    @Option var database: String
    @Option var rows = 500_000
    @Option var batchRows = 50_000
    @Option var runs = 3

    func run() throws {
        let connection = try ClickHouseConnection(endpoint: ClickHouseEndpoint(url: clickhouseUrl, database: database))
        let columns = ResultsTable.rowColumns().map { "\($0.name) \($0.type)" }.joined(separator: ", ")
        _ = try connection.execute("CREATE TABLE IF NOT EXISTS bench_result_rows (\(columns)) ENGINE = Null")
        let end = Timestamp(milliseconds: 1_700_000_010_000)
        var batches: [ResultBatch] = []
        var batch = ResultBatch(id: "bench-0", sequence: 0, generation: 0, day: ResultBatch.day(of: end))
        for index in 0..<rows {
            batch.append(
                ResultRow(
                    productID: TrafficGenerator.productName(index), windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: end,
                    totals: WindowCounts(impressions: 1_234, clicks: 31, conversions: 2, revenueMicros: 12_340_000),
                    delta: WindowCounts(impressions: 1_234, clicks: 31, conversions: 2, revenueMicros: 12_340_000), revision: 0, emittedAt: end
                )
            )
            if batch.rowCount == batchRows || index == rows - 1 {
                batches.append(batch)
                batch = ResultBatch(id: "bench-\(batches.count)", sequence: UInt64(batches.count), generation: 0, day: ResultBatch.day(of: end))
            }
        }
        let encoders: [(String, @Sendable (ResultBatch) -> [UInt8])] = [
            ("JSONEachRow", { ResultRowEncoder.jsonEachRow($0) }), ("RowBinary", { ResultRowEncoder.rowBinary($0) }),
        ]
        for (format, encode) in encoders {
            var bestEncode = Double.infinity
            var bestInsert = Double.infinity
            var bytes = 0
            for _ in 0..<runs {
                var start = ContinuousClock.now
                let bodies = batches.map(encode)
                bestEncode = min(bestEncode, seconds(since: start))
                bytes = bodies.reduce(0) { $0 + $1.count }
                start = .now
                for body in bodies { _ = try connection.execute("INSERT INTO bench_result_rows FORMAT \(format)", body: body) }
                bestInsert = min(bestInsert, seconds(since: start))
            }
            report("sink-format \(format) encode", events: rows, seconds: bestEncode, "bytes_per_row=\(bytes / max(rows, 1))")
            report("sink-format \(format) clickhouse-parse", events: rows, seconds: bestInsert)
        }
    }
}
