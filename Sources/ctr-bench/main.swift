import ArgumentParser
import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import Foundation
import EventDecoding
import Ingest
import TrafficGenerator

/// Measurements that scripts/bench.sh combines into one table. Each prints one line
/// `RESULT <name> <events> <seconds>` (plus details) on stdout.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctr-bench",
        abstract: "Benchmark stages of the CTR pipeline (release build: swift build -c release).",
        subcommands: [Consume.self, Stages.self, Sink.self, SinkFormats.self, Memory.self]
    )
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
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

    func run() throws {
        var received = 0
        var bytes = 0
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(["bootstrap.servers": brokers, "group.id": group]),
            topics: topics.split(separator: ",").map(String.init), onError: { _ in }
        )
        var start: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(300)
        while received < expect && ContinuousClock.now < deadline {
            consumer.poll(maxMessages: 10_000, timeout: .milliseconds(100)) { message in
                if start == nil { start = .now }
                received += 1
                bytes += message.payload.count
            }
            for case .assigned(let partitions, _) in consumer.takeRebalanceEvents() { consumer.resume(partitions) }
        }
        report("consume", events: received, seconds: seconds(since: start ?? .now), "bytes=\(bytes)")
        consumer.close()
    }
}

struct Stages: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Decode only and windows only, on events generated in memory.")
    @Option var events = 2_000_000
    @Option var products = 10_000

    func run() throws {
        var generator = TrafficGenerator(
            configuration: TrafficConfiguration(products: products, startTime: Timestamp(milliseconds: 1_700_000_000_000), eventRate: 100_000)
        )
        var messages: [(InputTopic, [UInt8])] = []
        messages.reserveCapacity(events)
        for _ in 0..<events {
            guard let message = generator.next() else { break }
            messages.append((message.topic, message.value))
        }
        let decoder = EventDecoder()
        let now = Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        var decoded: [(EventKind, String, Timestamp)] = []
        decoded.reserveCapacity(messages.count)
        var start = ContinuousClock.now
        for (topic, value) in messages {
            if case .success(let event) = decoder.decode(value, expecting: topic.kind, now: now) {
                decoded.append((topic.kind, event.product.name, event.timestamp))
            }
        }
        report("decode", events: messages.count, seconds: seconds(since: start))

        var catalog = ProductCatalog()
        var windows = WindowAggregator(configuration: WindowConfiguration(), partitionCount: 1, now: Timestamp(milliseconds: 0))
        var rows = 0
        start = .now
        for (index, (kind, product, time)) in decoded.enumerated() {
            _ = windows.ingest(kind, catalog.id(for: product), at: time, from: 0, offset: Int64(index))
            if index % 10_000 == 0 {
                rows += windows.advance(now: Timestamp(milliseconds: Int64(index))).reduce(0) { $0 + $1.rows.count }
            }
        }
        rows += windows.advance(now: Timestamp(milliseconds: Int64.max / 2)).reduce(0) { $0 + $1.rows.count }
        report("windows", events: decoded.count, seconds: seconds(since: start), "rows=\(rows) open_product_windows_at_end=\(windows.openProductWindowCount)")
    }
}

struct Sink: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rows per second into ctr_results_raw.")
    @Option var clickhouseUrl: String
    @Option var database: String
    @Option var rows = 500_000
    @Option var batchRows = 50_000

    func run() throws {
        let connection = try ClickHouseConnection(endpoint: ClickHouseEndpoint(url: clickhouseUrl, database: database))
        var batches: [[UInt8]] = []
        let end = Timestamp(milliseconds: 1_700_000_010_000)
        var sequence: UInt64 = 0
        var batch = ResultBatch(id: "bench-0", sequence: 0, generation: 0, day: ResultBatch.day(of: end))
        for index in 0..<rows {
            batch.append(
                ResultRow(
                    productID: TrafficGenerator.productName(index), windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: end,
                    totals: WindowCounts(impressions: 100, clicks: 3), delta: WindowCounts(impressions: 100, clicks: 3), revision: 0,
                    emittedAt: end
                )
            )
            if batch.rowCount == batchRows {
                batches.append(ResultRowEncoder.jsonEachRow(batch))
                sequence += 1
                batch = ResultBatch(id: "bench-\(sequence)", sequence: sequence, generation: 0, day: ResultBatch.day(of: end))
            }
        }
        if batch.rowCount > 0 { batches.append(ResultRowEncoder.jsonEachRow(batch)) }
        let start = ContinuousClock.now
        for body in batches {
            _ = try connection.execute("INSERT INTO ctr_results_raw FORMAT JSONEachRow", body: body)
        }
        report("sink", events: rows, seconds: seconds(since: start), "batches=\(batches.count)")
    }
}

struct Memory: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resident memory per open (product, window) of the window state.")
    @Option var products = 100_000
    @Option var windows = 3

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
        let columns = ResultsTable.rowColumns.map { "\($0.name) \($0.type)" }.joined(separator: ", ")
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
        for (format, encode) in [("JSONEachRow", ResultRowEncoder.jsonEachRow), ("RowBinary", ResultRowEncoder.rowBinary)] {
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
