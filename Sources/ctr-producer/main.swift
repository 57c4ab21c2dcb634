import ArgumentParser
import CTRWindows
import Foundation
import Ingest
import Synchronization
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
    @Option(help: "Extra librdkafka property KEY=VALUE; repeatable. Not for secrets: see --kafka-properties-file.") var kafkaProperty: [String] = []
    @Option(help: "File of librdkafka properties, one KEY=VALUE per line (also read: CTR_KAFKA_PROPERTY_<NAME> variables).")
    var kafkaPropertiesFile: String?

    func configuration() throws -> KafkaConfiguration {
        var servers = brokers ?? ProcessInfo.processInfo.environment["CTR_BROKERS"]
        if let bootstrapFile {
            guard let text = try? String(contentsOfFile: bootstrapFile, encoding: .utf8) else {
                throw ValidationError("cannot read --bootstrap-file \(bootstrapFile)")
            }
            servers = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var configuration = KafkaConfiguration(["bootstrap.servers": servers ?? "localhost:9092"])
        do {
            if let kafkaPropertiesFile {
                configuration.properties.merge(try KafkaConfiguration.readPropertiesFile(atPath: kafkaPropertiesFile)) { $1 }
            }
            configuration.properties.merge(KafkaConfiguration.properties(fromEnvironment: ProcessInfo.processInfo.environment)) { $1 }
            for property in kafkaProperty {
                let (key, value) = try KafkaConfiguration.parseProperty(property)
                configuration[key] = value
            }
        } catch {
            throw ValidationError(error.description)
        }
        return configuration
    }

    var topics: TopicNames {
        TopicNames(impressions: impressionsTopic, clicks: clicksTopic, conversions: conversionsTopic, events: eventsTopic)
    }
}

/// Window rules the truth file and the final watermark events follow (the aggregator's).
struct WindowOptions: ParsableArguments {
    @Option(help: "Window size of the truth file, ms.") var windowMs: Int64 = 10_000
    @Option(help: "Aggregator out-of-orderness, ms (for the final watermark events).") var outOfOrdernessMs: Int64 = 2_000
    @Option(help: "Aggregator allowed lateness, ms (for the final watermark events).") var allowedLatenessMs: Int64 = 5_000
    @Option(help: "Write the exact expected counts per (product, window) to this JSON file.") var truthFile: String?
    @Flag(help: "Do not send the events that move every partition's watermark past the stream's windows.") var noFinalWatermark = false
    @Option(
        help: ArgumentHelp(
            "Key the truth file by product and these event fields, as ctr-aggregator --dimensions (e.g. campaign_id,country,device_type).",
            valueName: "fields"
        )
    )
    var truthDimensions = ""
    @Flag(help: "Count unique users (distinct user_id of impressions and of clicks) per key in the truth file; memory grows with the events.")
    var truthUniques = false

    var dimensionNames: [String] {
        truthDimensions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    func validate() throws {
        let names = dimensionNames
        guard names.count <= 8 else { throw ValidationError("--truth-dimensions takes at most 8 fields, as ctr-aggregator --dimensions") }
        guard !names.contains(where: \.isEmpty), Set(names).count == names.count else {
            throw ValidationError("--truth-dimensions must name distinct, non-empty fields, separated by commas")
        }
        guard !names.contains("product_id") else { throw ValidationError("--truth-dimensions: product_id is always part of the key") }
    }

    /// The empty truth the publisher records into.
    var truth: Truth {
        Truth(windowSize: Milliseconds(windowMs), dimensions: dimensionNames, countsUsers: truthUniques)
    }

    var rules: WindowRules {
        WindowRules(
            windowSize: Milliseconds(windowMs), outOfOrderness: Milliseconds(outOfOrdernessMs),
            allowedLateness: Milliseconds(allowedLatenessMs), sendsFinalWatermark: !noFinalWatermark
        )
    }
}

/// The Kafka producer as the publisher's sink.
final class KafkaSink: MessageSink {
    let producer: KafkaProducer

    init(_ options: KafkaOptions) throws {
        producer = try KafkaProducer(configuration: try options.configuration())
    }

    /// Waits for room in librdkafka's queue for up to a minute (the brokers may be restarting).
    func publish(topic: String, partition: Int32?, key: [UInt8], value: [UInt8]) throws {
        try producer.send(topic: topic, partition: partition, key: key, value: value, queueFullTimeout: .seconds(60))
    }

    func partitionCount(of topic: String) throws -> Int {
        try producer.partitionCount(topic: topic, timeout: .seconds(10))
    }

    func serveDeliveries() { producer.poll() }

    func finishDeliveries() throws {
        try producer.flush(timeout: .seconds(120))
        if producer.failedCount > 0 {
            throw KafkaError(message: "\(producer.failedCount) message(s) could not be delivered: \(producer.firstFailure ?? "unknown error")")
        }
    }
}

func makePublisher(_ kafka: KafkaOptions, _ windows: WindowOptions) throws -> Publisher<KafkaSink> {
    Publisher(sink: try KafkaSink(kafka), topics: kafka.topics, rules: windows.rules, truth: windows.truth) { line in
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

func sleepFor(_ duration: Duration?) {
    guard let duration else { return }
    Thread.sleep(forTimeInterval: Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
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
    @Option(help: "Mean click-through rate (per-product rates are drawn around it).") var meanCtr = 0.015
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
    @Option(help: "Mean revenue per conversion, e.g. a cost-per-action payout (currency units, 2 decimals).") var revenuePerConversion = 4.0
    @Option(help: "Number of campaigns (campaign_id cmp-0001, ...; Zipf-skewed traffic).") var campaigns = 20
    @Option(help: "Size of the user pool (user_id u-0, ...; Zipf-like skew).") var users = 100_000
    @Option(help: "Fraction of impressions without user_id (their clicks and conversions have none either).") var anonymousFraction = 0.0
    @Option(help: "Fraction of events sent twice with the same event_id, within 500 ms of event time, as a producer's retry would.")
    var duplicateFraction = 0.0
    @Flag(help: "Leave campaign_id, country and device_type out of the events.") var noDimensions = false

    func validate() throws {
        guard count != nil || duration != nil else { throw ValidationError("give --count or --duration") }
        guard products > 0 else { throw ValidationError("--products must be positive") }
        guard rate >= 0 else { throw ValidationError("--rate must not be negative") }
        guard campaigns > 0 && campaigns <= 9_999 else { throw ValidationError("--campaigns must be 1 to 9999") }
        guard users > 0 else { throw ValidationError("--users must be positive") }
        guard (0...1).contains(anonymousFraction) else { throw ValidationError("--anonymous-fraction must be from 0 to 1") }
        guard duplicateFraction >= 0 && duplicateFraction < 1 else { throw ValidationError("--duplicate-fraction must be at least 0 and below 1") }
    }

    func run() throws {
        let start = startTimeMs ?? Int64(Date().timeIntervalSince1970 * 1000)
        var generator = TrafficGenerator(
            configuration: TrafficConfiguration(
                products: products, meanCTR: meanCtr, seed: seed, startTime: Timestamp(milliseconds: start),
                eventRate: eventRate ?? (rate > 0 ? rate : 10_000), disorder: Milliseconds(disorderMs), lateFraction: lateFraction,
                tooLateFraction: tooLateFraction, tooLateLag: Milliseconds(tooLateLagMs), invalidFraction: invalidFraction,
                conversionRate: conversionRate, revenuePerClick: revenuePerClick, revenuePerConversion: revenuePerConversion,
                singleTopic: kafka.eventsTopic != nil, campaigns: campaigns, users: users, anonymousFraction: anonymousFraction,
                duplicateFraction: duplicateFraction, emitsDimensions: !noDimensions
            )
        )
        var publisher = try makePublisher(kafka, windows)
        let pacer = RatePacer(rate: rate)
        let began = ContinuousClock.now
        let limit = duration.map { Duration.nanoseconds(Int64($0 * 1e9)) }
        var stop = false
        let interrupted = installInterruptHandler()
        while !stop, let message = generator.next() {
            try publisher.send(message)
            if let count, publisher.sent >= count { stop = true }
            if publisher.sent % 256 == 0 {
                let elapsed = ContinuousClock.now - began
                if let limit, elapsed >= limit { stop = true }
                if interrupted() { stop = true }
                sleepFor(pacer.delay(afterSent: publisher.sent, elapsed: elapsed))
            }
        }
        let products = self.products
        let watermark = try publisher.sendFinalWatermark(conversions: conversionRate > 0) {
            TrafficGenerator.productName($0 % max(products, 1))
        }
        print(try publisher.finish(finalWatermark: watermark, truthFile: windows.truthFile))
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
        let reader: LineReader
        do {
            reader = try LineReader(path: file)
        } catch {
            throw ValidationError("\(error)")
        }
        guard let header = reader.next() else { throw ValidationError("\(file) is empty") }
        let replay: AvazuReplay
        do {
            replay = try AvazuReplay(headerLine: String(header), productColumn: productColumn)
        } catch {
            throw ValidationError("\(file): \(error)")
        }
        var publisher = try makePublisher(kafka, windows)
        var order = HourlyEventTimeOrder()
        var pacer = ReplayPacer(speedup: speedup)
        var line = 1
        var rows = 0
        var badRows = 0
        let began = ContinuousClock.now
        let interrupted = installInterruptHandler()

        func send(_ messages: [GeneratedMessage]) throws {
            for message in messages {
                if let time = message.expectation.time { sleepFor(pacer.delay(beforeEventAt: time, elapsed: ContinuousClock.now - began)) }
                try publisher.send(message)
            }
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
            let id = String(text.prefix(while: { $0 != "," }))
            try send(order.add(AvazuReplay.messages(of: row, id: id, singleTopic: kafka.eventsTopic != nil), at: row.impressionTime))
        }
        try send(order.finish())
        FileHandle.standardError.write(Data("read \(rows) rows, \(badRows) bad rows reported above\n".utf8))
        let watermark = try publisher.sendFinalWatermark { _ in "avazu-end-of-stream" }
        print(try publisher.finish(finalWatermark: watermark, truthFile: windows.truthFile))
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
