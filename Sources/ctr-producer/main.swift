import ArgumentParser
import CTRWindows
import Foundation
import Synchronization
import Ingest
import TrafficGenerator

/// Options shared by the traffic sources.
struct KafkaOptions: ParsableArguments {
    @Option(help: "Kafka bootstrap servers. (env: CTR_BROKERS)") var brokers: String?
    @Option(help: "Read the bootstrap servers from this file (as written by ctr-dev-broker).") var bootstrapFile: String?
    @Option(help: "Impressions topic.") var impressionsTopic = "impressions"
    @Option(help: "Clicks topic.") var clicksTopic = "clicks"
    @Option(help: "Conversions topic (used with --conversion-rate).") var conversionsTopic = "conversions"
    @Option(help: "Single-topic mode: publish impressions with a `click` flag to this topic instead of impressions and clicks.")
    var eventsTopic: String?
    @Option(help: "Extra librdkafka property KEY=VALUE; repeatable.") var kafkaProperty: [String] = []

    func configuration() throws -> KafkaConfiguration {
        var servers = brokers ?? ProcessInfo.processInfo.environment["CTR_BROKERS"]
        if let bootstrapFile {
            guard let text = try? String(contentsOfFile: bootstrapFile, encoding: .utf8) else {
                throw ValidationError("cannot read --bootstrap-file \(bootstrapFile)")
            }
            servers = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var configuration = KafkaConfiguration(["bootstrap.servers": servers ?? "localhost:9092"])
        for property in kafkaProperty {
            let parts = property.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw ValidationError("--kafka-property expects KEY=VALUE, got \(property)") }
            configuration[String(parts[0])] = String(parts[1])
        }
        return configuration
    }

    func topicName(_ topic: InputTopic) -> String {
        switch topic {
        case .impressions: impressionsTopic
        case .clicks: clicksTopic
        case .conversions: conversionsTopic
        case .events: eventsTopic ?? impressionsTopic
        }
    }

    /// The topics the stream goes to (for the final watermark events).
    func topics(conversions: Bool) -> [InputTopic] {
        (eventsTopic != nil ? [.events] : [.impressions, .clicks]) + (conversions ? [.conversions] : [])
    }
}

/// Window rules the truth file and the final watermark events follow (the aggregator's).
struct WindowOptions: ParsableArguments {
    @Option(help: "Window size of the truth file, ms.") var windowMs: Int64 = 10_000
    @Option(help: "Aggregator out-of-orderness, ms (for the final watermark events).") var outOfOrdernessMs: Int64 = 2_000
    @Option(help: "Aggregator allowed lateness, ms (for the final watermark events).") var allowedLatenessMs: Int64 = 5_000
    @Option(help: "Write the exact expected counts per (product, window) to this JSON file.") var truthFile: String?
    @Flag(help: "Do not send the events that move every partition's watermark past the stream's windows.") var noFinalWatermark = false
}

/// Publishes messages with progress on stderr, and the truth file at the end.
struct Publisher {
    let producer: KafkaProducer
    let kafka: KafkaOptions
    var truth: Truth
    var sent = 0
    let started = ContinuousClock.now
    var lastProgress = ContinuousClock.now

    init(kafka: KafkaOptions, windows: WindowOptions) throws {
        producer = try KafkaProducer(configuration: try kafka.configuration())
        self.kafka = kafka
        truth = Truth(windowSize: Milliseconds(windows.windowMs))
    }

    mutating func send(_ message: GeneratedMessage, partition: Int32? = nil) throws {
        try producer.send(topic: kafka.topicName(message.topic), partition: partition, key: message.key, value: message.value)
        truth.record(message)
        sent += 1
        if sent % 1024 == 0 {
            producer.poll()
            if ContinuousClock.now - lastProgress >= .seconds(1) {
                lastProgress = .now
                progress()
            }
        }
    }

    func progress(final: Bool = false) {
        let elapsed = ContinuousClock.now - started
        let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 1e-9)
        let line = "\(final ? "done: " : "")sent \(sent) messages in \(String(format: "%.1f", seconds)) s (\(Int(Double(sent) / seconds)) msg/s)"
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Sends one event per partition of both topics far enough ahead that every partition's
    /// watermark passes every window of the stream; returns the resulting watermark.
    mutating func sendFinalWatermark(_ windows: WindowOptions, conversions: Bool = false, productName: (Int) -> String) throws -> Timestamp? {
        guard !windows.noFinalWatermark, truth.maxEventTime > .min else { return nil }
        let time = Timestamp(milliseconds: truth.maxEventTime + windows.windowMs + windows.outOfOrdernessMs + windows.allowedLatenessMs + 1_000)
        for topic in kafka.topics(conversions: conversions) {
            let partitions = try producer.partitionCount(topic: kafka.topicName(topic), timeout: .seconds(10))
            for partition in 0..<partitions {
                let product = productName(partition)
                try send(
                    TrafficGenerator.event(product: product, timestamp: time, topic: topic, eventID: "final-\(topic)-\(partition)"),
                    partition: Int32(partition)
                )
            }
        }
        return time - Milliseconds(windows.outOfOrdernessMs)
    }

    mutating func finish(_ windows: WindowOptions, finalWatermark: Timestamp?) throws {
        try producer.flush(timeout: .seconds(120))
        progress(final: true)
        if let truthFile = windows.truthFile {
            try Data(truth.json(finalWatermark: finalWatermark)).write(to: URL(fileURLWithPath: truthFile))
        }
        let counted = truth.totals
        print(
            "sent impressions=\(truth.sent[.impressions] ?? 0) clicks=\(truth.sent[.clicks] ?? 0) conversions=\(truth.sent[.conversions] ?? 0) "
                + "events=\(truth.sent[.events] ?? 0) counted_impressions=\(counted.impressions) counted_clicks=\(counted.clicks) "
                + "counted_conversions=\(counted.conversions) counted_revenue_micros=\(counted.revenueMicros) "
                + "too_late=\(truth.tooLate) invalid=\(truth.invalid.values.reduce(0, +)) windows=\(truth.counts.count)"
        )
    }
}

struct ProducerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctr-producer",
        abstract: "Publish realistic impression and click traffic to Kafka.",
        subcommands: [Synthetic.self, Avazu.self],
        defaultSubcommand: Synthetic.self
    )
}

struct Synthetic: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a deterministic synthetic stream (the default).",
        discussion: """
            Event time starts at --start-time-ms (default: now) and advances at --event-rate events/s \
            (default: --rate, or 10000 when sending as fast as possible). The same --seed and --start-time-ms \
            give the same messages.
            """
    )

    @OptionGroup var kafka: KafkaOptions
    @OptionGroup var windows: WindowOptions
    @Option(help: "Number of products.") var products = 1_000
    @Option(help: "Mean click-through rate.") var meanCtr = 0.04
    @Option(help: "Messages per second of wall-clock time; 0 sends as fast as possible.") var rate: Double = 1_000
    @Option(help: "Events per second of event time.") var eventRate: Double?
    @Option(help: "Stop after this many messages.") var count: Int?
    @Option(help: "Stop after this many seconds of wall-clock time.") var duration: Double?
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Event time of the first event, epoch ms. (default: now)") var startTimeMs: Int64?
    @Option(help: "Bounded event-time disorder, ms.") var disorderMs: Int64 = 1_000
    @Option(help: "Fraction of late events (2-6 s behind, still counted).") var lateFraction = 0.0
    @Option(help: "Fraction of too-late events (refused by the aggregator).") var tooLateFraction = 0.0
    @Option(help: "How far behind the stream too-late events are (up to 1.5 times this), ms.") var tooLateLagMs: Int64 = 120_000
    @Option(help: "Fraction of invalid messages.") var invalidFraction = 0.0
    @Option(help: "Fraction of clicks followed by a conversion on --conversions-topic.") var conversionRate = 0.0
    @Option(help: "Mean revenue per click (currency units, 2 decimals); 0 sends none.") var revenuePerClick = 0.0
    @Option(help: "Mean revenue per conversion (currency units, 2 decimals).") var revenuePerConversion = 0.0

    func validate() throws {
        guard count != nil || duration != nil else { throw ValidationError("give --count or --duration") }
        guard products > 0 else { throw ValidationError("--products must be positive") }
        guard rate >= 0 else { throw ValidationError("--rate must not be negative") }
    }

    func run() throws {
        let start = startTimeMs ?? Int64(Date().timeIntervalSince1970 * 1000)
        var generator = TrafficGenerator(
            configuration: TrafficConfiguration(
                products: products, meanCTR: meanCtr, seed: seed, startTime: Timestamp(milliseconds: start),
                eventRate: eventRate ?? (rate > 0 ? rate : 10_000), disorder: Milliseconds(disorderMs), lateFraction: lateFraction,
                tooLateFraction: tooLateFraction, tooLateLag: Milliseconds(tooLateLagMs), invalidFraction: invalidFraction,
                conversionRate: conversionRate, revenuePerClick: revenuePerClick, revenuePerConversion: revenuePerConversion,
                singleTopic: kafka.eventsTopic != nil
            )
        )
        var publisher = try Publisher(kafka: kafka, windows: windows)
        let began = ContinuousClock.now
        var stop = false
        let interrupted = installInterruptHandler()
        while !stop, let message = generator.next() {
            try publisher.send(message)
            if let count, publisher.sent >= count { stop = true }
            if publisher.sent % 256 == 0 {
                let elapsed = ContinuousClock.now - began
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                if let duration, seconds >= duration { stop = true }
                if interrupted() { stop = true }
                if rate > 0 {
                    let ahead = Double(publisher.sent) / rate - seconds
                    if ahead > 0 { Thread.sleep(forTimeInterval: ahead) }
                }
            }
        }
        let products = self.products
        let watermark = try publisher.sendFinalWatermark(windows, conversions: conversionRate > 0) {
            TrafficGenerator.productName($0 % max(products, 1))
        }
        try publisher.finish(windows, finalWatermark: watermark)
    }
}

struct Avazu: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay the Kaggle Avazu CTR training file (CSV, plain or .gz) as impressions and clicks.",
        discussion: """
            One impression per row, and a click for every row with click = 1. product_id is the value of \
            --product-column (default site_id: the publisher site is the unit whose CTR ad-tech users tune, \
            with a few thousand distinct values). Event time: `hour` (YYMMDDHH, UTC), each row placed \
            deterministically within its hour by a hash of its id, its click 1 s later. Rows are published \
            hour by hour in event-time order. Bad rows are reported on stderr with their line number and \
            counted; they are not published.
            """
    )

    @OptionGroup var kafka: KafkaOptions
    @OptionGroup var windows: WindowOptions
    @Option(help: "The Avazu CSV file (train or train.gz).") var file: String
    @Option(help: "Column whose value becomes product_id.") var productColumn = "site_id"
    @Option(help: "Replay this many times faster than real time; 0 sends as fast as possible.") var speedup: Double = 0
    @Option(help: "Stop after this many rows.") var limit: Int?

    func run() throws {
        let reader = try LineReader(path: file)
        guard let header = reader.next() else { throw ValidationError("\(file) is empty") }
        let replay: AvazuReplay
        do {
            replay = try AvazuReplay(headerLine: String(header), productColumn: productColumn)
        } catch {
            throw ValidationError("\(file): \(error)")
        }
        var publisher = try Publisher(kafka: kafka, windows: windows)
        var line = 1
        var rows = 0
        var badRows = 0
        var hour: [GeneratedMessage] = []
        var currentHour: Int64?
        var firstEventTime: Int64?
        let began = ContinuousClock.now
        let interrupted = installInterruptHandler()

        func flush() throws {
            hour.sort { ($0.expectation.time ?? 0) < ($1.expectation.time ?? 0) }
            for message in hour {
                if speedup > 0, let time = message.expectation.time {
                    let first = firstEventTime ?? time
                    firstEventTime = first
                    let due = Double(time - first) / 1000 / speedup
                    let elapsed = ContinuousClock.now - began
                    let ahead = due - (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
                    if ahead > 0 { Thread.sleep(forTimeInterval: ahead) }
                }
                try publisher.send(message)
            }
            hour.removeAll(keepingCapacity: true)
        }

        while let text = reader.next() {
            line += 1
            if text.isEmpty { continue }
            if let limit, rows >= limit { break }
            if interrupted() { break }
            let row: AvazuReplay.Row
            do {
                row = try replay.row(text, line: line)
            } catch {
                badRows += 1
                FileHandle.standardError.write(Data("\(file):\(error)\n".utf8))
                continue
            }
            rows += 1
            let rowHour = row.impressionTime.milliseconds / 3_600_000
            if rowHour != currentHour {
                try flush()
                currentHour = rowHour
            }
            let id = String(text.prefix(while: { $0 != "," }))
            if kafka.eventsTopic != nil {
                hour.append(TrafficGenerator.event(product: row.product, timestamp: row.impressionTime, topic: .events, eventID: id, clicked: row.clicked))
            } else {
                hour.append(TrafficGenerator.event(product: row.product, timestamp: row.impressionTime, topic: .impressions, eventID: id))
                if row.clicked {
                    hour.append(TrafficGenerator.event(product: row.product, timestamp: row.clickTime, topic: .clicks, eventID: id + "-click"))
                }
            }
        }
        try flush()
        FileHandle.standardError.write(Data("read \(rows) rows, \(badRows) bad rows reported above\n".utf8))
        let watermark = try publisher.sendFinalWatermark(windows) { _ in "avazu-end-of-stream" }
        try publisher.finish(windows, finalWatermark: watermark)
    }
}

extension GeneratedMessage.Expectation {
    var time: Int64? {
        if case .counted(_, let timestamp, _) = self { return timestamp.milliseconds }
        return nil
    }
}

/// Reads a text file line by line, through `gzip -dc` when the name ends in `.gz`.
final class LineReader {
    private let handle: FileHandle
    private let process: Process?
    private var buffer: [UInt8] = []
    private var start = 0
    private var finished = false

    init(path: String) throws {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw ValidationError("cannot read \(path): check that the file exists and is readable")
        }
        if path.hasSuffix(".gz") {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["gzip", "-dc", path]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            self.process = process
            handle = pipe.fileHandleForReading
        } else {
            guard let file = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot open \(path)") }
            handle = file
            process = nil
        }
    }

    /// The next line without its terminator (`\n` or `\r\n`), or `nil` at the end.
    func next() -> Substring? {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[start..<end], as: UTF8.self)
                start = newline + 1
                return Substring(line)
            }
            if finished {
                guard start < buffer.count else { return nil }
                let line = String(decoding: buffer[start...], as: UTF8.self)
                start = buffer.count
                return Substring(line)
            }
            buffer.removeFirst(start)
            start = 0
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { finished = true } else { buffer.append(contentsOf: chunk) }
        }
    }

    deinit {
        process?.waitUntilExit()
    }
}

/// SIGINT/SIGTERM stop the stream cleanly (final watermark, truth file); returns a check.
func installInterruptHandler() -> @Sendable () -> Bool {
    let flag = InterruptFlag()
    for number in [SIGINT, SIGTERM] {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { flag.raised.store(true, ordering: .relaxed) }
        source.resume()
        signalSources.append(source)
    }
    return { flag.raised.load(ordering: .relaxed) }
}

final class InterruptFlag: Sendable {
    let raised = Atomic<Bool>(false)
}

nonisolated(unsafe) var signalSources: [any DispatchSourceSignal] = []

ProducerCommand.main()
