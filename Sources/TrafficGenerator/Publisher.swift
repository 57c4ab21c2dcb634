import CTRWindows
import Foundation

/// Where a ``Publisher`` sends messages: a Kafka producer in `ctr-producer` (which adds the
/// conformance), so this module stays free of librdkafka.
public protocol MessageSink: AnyObject {
    /// Enqueues one message; `partition` `nil` partitions by key.
    func publish(topic: String, partition: Int32?, key: [UInt8], value: [UInt8]) throws
    /// Number of partitions of `topic`.
    func partitionCount(of topic: String) throws -> Int
    /// Serves delivery reports without blocking.
    func serveDeliveries()
    /// Waits until every message is delivered; throws if one failed or some are still queued.
    func finishDeliveries() throws
}

/// Topic names of the input topics.
public struct TopicNames: Sendable, Hashable {
    public var impressions: String
    public var clicks: String
    public var conversions: String
    /// Single-topic mode: impressions with a click flag go here instead of impressions and clicks.
    public var events: String?

    public init(impressions: String = "impressions", clicks: String = "clicks", conversions: String = "conversions", events: String? = nil) {
        self.impressions = impressions
        self.clicks = clicks
        self.conversions = conversions
        self.events = events
    }

    public func name(of topic: InputTopic) -> String {
        switch topic {
        case .impressions: impressions
        case .clicks: clicks
        case .conversions: conversions
        case .events: events ?? impressions
        }
    }

    /// The topics a stream goes to (each gets the final watermark events).
    public func topics(conversions: Bool) -> [InputTopic] {
        (events != nil ? [.events] : [.impressions, .clicks]) + (conversions ? [.conversions] : [])
    }
}

/// The aggregator's window rules, which the truth file and the final watermark events follow.
public struct WindowRules: Sendable, Hashable {
    public var windowSize: Milliseconds
    public var outOfOrderness: Milliseconds
    public var allowedLateness: Milliseconds
    /// Whether to end the stream with events that move every partition's watermark past it.
    public var sendsFinalWatermark: Bool

    public init(
        windowSize: Milliseconds = Milliseconds(10_000), outOfOrderness: Milliseconds = Milliseconds(2_000),
        allowedLateness: Milliseconds = Milliseconds(5_000), sendsFinalWatermark: Bool = true
    ) {
        self.windowSize = windowSize
        self.outOfOrderness = outOfOrderness
        self.allowedLateness = allowedLateness
        self.sendsFinalWatermark = sendsFinalWatermark
    }
}

/// Publishes generated messages, keeps the ``Truth`` of what was sent, ends the stream with
/// final watermark events, and writes the truth file.
public struct Publisher<Sink: MessageSink> {
    public let sink: Sink
    public let topics: TopicNames
    public let rules: WindowRules
    public private(set) var truth: Truth
    public private(set) var sent = 0
    private let started = ContinuousClock.now
    private var lastProgress = ContinuousClock.now
    private let report: (String) -> Void

    /// - Parameters:
    ///   - truth: the truth to record into, empty; default: per product, for `rules.windowSize`.
    ///   - report: receives a progress line about once a second, and the final one.
    public init(sink: Sink, topics: TopicNames, rules: WindowRules, truth: Truth? = nil, report: @escaping (String) -> Void = { _ in }) {
        self.sink = sink
        self.topics = topics
        self.rules = rules
        self.truth = truth ?? Truth(windowSize: rules.windowSize)
        self.report = report
    }

    /// Sends `message` and records it in the truth.
    public mutating func send(_ message: GeneratedMessage, partition: Int32? = nil) throws {
        try sink.publish(topic: topics.name(of: message.topic), partition: partition, key: message.key, value: message.value)
        truth.record(message)
        sent += 1
        if sent % 1024 == 0 {
            sink.serveDeliveries()
            if ContinuousClock.now - lastProgress >= .seconds(1) {
                lastProgress = .now
                report(progressLine())
            }
        }
    }

    /// `sent N messages in S s (R msg/s)`, prefixed `done: ` when `final`.
    public func progressLine(final: Bool = false) -> String {
        let seconds = max((ContinuousClock.now - started).seconds, 1e-9)
        return "\(final ? "done: " : "")sent \(sent) messages in \(String(format: "%.1f", seconds)) s (\(Int(Double(sent) / seconds)) msg/s)"
    }

    /// The time of the final watermark events: far enough past the newest counted event that
    /// every window of the stream closes, allowed lateness included; `nil` when nothing was
    /// counted or ``WindowRules/sendsFinalWatermark`` is off.
    public var finalWatermarkEventTime: Timestamp? {
        guard rules.sendsFinalWatermark, truth.maxEventTime > .min else { return nil }
        return Timestamp(
            milliseconds: truth.maxEventTime + rules.windowSize.value + rules.outOfOrderness.value + rules.allowedLateness.value + 1_000
        )
    }

    /// Sends one event per partition of every topic of the stream at ``finalWatermarkEventTime``,
    /// so that every partition's watermark passes every window of the stream; returns the
    /// resulting watermark (the truth file marks windows ending after it as open).
    ///
    /// - Parameter productName: the product of the event for a partition number.
    public mutating func sendFinalWatermark(conversions: Bool = false, productName: (Int) -> String) throws -> Timestamp? {
        guard let time = finalWatermarkEventTime else { return nil }
        for topic in topics.topics(conversions: conversions) {
            let partitions = try sink.partitionCount(of: topics.name(of: topic))
            for partition in 0..<partitions {
                try send(
                    TrafficGenerator.event(product: productName(partition), timestamp: time, topic: topic, eventID: "final-\(topic)-\(partition)"),
                    partition: Int32(partition)
                )
            }
        }
        return time - rules.outOfOrderness
    }

    /// Waits for every delivery, reports the final progress line, writes the truth file (if
    /// given) and returns the summary line.
    public mutating func finish(finalWatermark: Timestamp?, truthFile: String?) throws -> String {
        try sink.finishDeliveries()
        report(progressLine(final: true))
        if let truthFile {
            try Data(truth.json(finalWatermark: finalWatermark)).write(to: URL(fileURLWithPath: truthFile))
        }
        let counted = truth.totals
        return "sent impressions=\(truth.sent[.impressions] ?? 0) clicks=\(truth.sent[.clicks] ?? 0) conversions=\(truth.sent[.conversions] ?? 0) "
            + "events=\(truth.sent[.events] ?? 0) counted_impressions=\(counted.impressions) counted_clicks=\(counted.clicks) "
            + "counted_conversions=\(counted.conversions) counted_revenue_micros=\(counted.revenueMicros) "
            + "too_late=\(truth.tooLate) invalid=\(truth.invalid.values.reduce(0, +)) duplicates=\(truth.duplicatesSent) windows=\(truth.counts.count)"
    }
}

/// Paces a stream at a number of messages per second of wall-clock time.
public struct RatePacer: Sendable {
    /// Messages per second; 0 or less sends as fast as possible.
    public var rate: Double

    public init(rate: Double) { self.rate = rate }

    /// How long to wait after `sent` messages, `elapsed` after the start, to stay on rate
    /// (`nil`: no wait).
    public func delay(afterSent sent: Int, elapsed: Duration) -> Duration? {
        guard rate > 0 else { return nil }
        let ahead = Double(sent) / rate - elapsed.seconds
        return ahead > 0 ? .nanoseconds(Int64(ahead * 1e9)) : nil
    }
}

/// Paces a replay of event-time-stamped messages at a speed-up of real time.
public struct ReplayPacer: Sendable {
    /// Event-time seconds per wall-clock second; 0 or less sends as fast as possible.
    public var speedup: Double
    private var firstEventTime: Int64?

    public init(speedup: Double) { self.speedup = speedup }

    /// How long to wait before sending a message at `eventTime`, `elapsed` after the start
    /// (`nil`: no wait). The first event time seen is the replay's start.
    public mutating func delay(beforeEventAt eventTime: Int64, elapsed: Duration) -> Duration? {
        guard speedup > 0 else { return nil }
        let first = firstEventTime ?? eventTime
        firstEventTime = first
        let ahead = Double(eventTime - first) / 1000 / speedup - elapsed.seconds
        return ahead > 0 ? .nanoseconds(Int64(ahead * 1e9)) : nil
    }
}

/// Releases messages hour by hour of event time, each hour sorted by event time: the Avazu
/// file is ordered by hour, and rows within an hour get their times from a hash.
public struct HourlyEventTimeOrder: Sendable {
    private var hour: [GeneratedMessage] = []
    private var currentHour: Int64?

    public init() {}

    /// Adds the messages of one row whose impression is at `time`; returns the previous hour,
    /// sorted, when this row starts a new one.
    public mutating func add(_ messages: [GeneratedMessage], at time: Timestamp) -> [GeneratedMessage] {
        let hourLength: Int64 = 3_600_000
        let rowHour = time.milliseconds >= 0 ? time.milliseconds / hourLength : (time.milliseconds - hourLength + 1) / hourLength
        var released: [GeneratedMessage] = []
        if rowHour != currentHour {
            released = finish()
            currentHour = rowHour
        }
        hour.append(contentsOf: messages)
        return released
    }

    /// The buffered hour, sorted by event time (stable: equal times keep their order).
    public mutating func finish() -> [GeneratedMessage] {
        let sorted = hour.enumerated().sorted { ($0.element.expectation.time ?? 0, $0.offset) < ($1.element.expectation.time ?? 0, $1.offset) }
            .map(\.element)
        hour.removeAll(keepingCapacity: true)
        return sorted
    }
}

extension AvazuReplay {
    /// The messages of one row: in single-topic mode one impression with its click flag,
    /// otherwise the impression and, if clicked, the click. `id` is the row's `id` column.
    public static func messages(of row: Row, id: String, singleTopic: Bool) -> [GeneratedMessage] {
        if singleTopic {
            return [TrafficGenerator.event(product: row.product, timestamp: row.impressionTime, topic: .events, eventID: id, clicked: row.clicked)]
        }
        var messages = [TrafficGenerator.event(product: row.product, timestamp: row.impressionTime, topic: .impressions, eventID: id)]
        if row.clicked {
            messages.append(TrafficGenerator.event(product: row.product, timestamp: row.clickTime, topic: .clicks, eventID: id + "-click"))
        }
        return messages
    }
}

extension GeneratedMessage.Expectation {
    /// The event time of a counted message.
    public var time: Int64? {
        if case .counted(_, let timestamp, _) = self { return timestamp.milliseconds }
        return nil
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// A file that could not be read.
public struct LineReaderError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Reads a text file line by line, through `gzip -dc` when the name ends in `.gz`.
public final class LineReader {
    private let handle: FileHandle
    private let process: Process?
    private var buffer: [UInt8] = []
    private var start = 0
    private var finished = false

    public init(path: String) throws {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw LineReaderError(description: "cannot read \(path): check that the file exists and is readable")
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
            guard let file = FileHandle(forReadingAtPath: path) else { throw LineReaderError(description: "cannot open \(path)") }
            handle = file
            process = nil
        }
    }

    /// The next line without its terminator (`\n` or `\r\n`), or `nil` at the end.
    public func next() -> Substring? {
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

    /// The exit status of `gzip` once the file was read to the end (`nil` for plain files).
    public var decompressorStatus: Int32? {
        guard let process, finished else { return nil }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        process?.waitUntilExit()
    }
}
