import EventDecoding
import Ingest
import Synchronization

/// A message refused by the pipeline, with why and where it came from.
public struct DeadLetter: Sendable {
    /// The original message value, byte for byte.
    public var value: [UInt8]
    /// The original message key.
    public var key: [UInt8]
    public var reason: RejectionReason
    public var detail: String
    public var source: TopicPartition
    public var offset: Int64

    public init(value: [UInt8], key: [UInt8], reason: RejectionReason, detail: String, source: TopicPartition, offset: Int64) {
        self.value = value
        self.key = key
        self.reason = reason
        self.detail = detail
        self.source = source
        self.offset = offset
    }

    /// Longest `ctr-detail` header, in bytes (longer details are cut at a character boundary).
    public static let maximumDetailBytes = 1024

    /// The headers written with the dead letter when it is not truncated.
    public var headers: [(String, [UInt8])] {
        var detailBytes = Array(detail.utf8)
        if detailBytes.count > Self.maximumDetailBytes {
            var end = Self.maximumDetailBytes
            while end > 0 && detailBytes[end] & 0xC0 == 0x80 { end -= 1 }
            detailBytes = Array(detailBytes[..<end])
        }
        return [
            ("ctr-reason", Array(reason.rawValue.utf8)),
            ("ctr-detail", detailBytes),
            ("ctr-source-topic", Array(source.topic.utf8)),
            ("ctr-source-partition", Array(String(source.partition).utf8)),
            ("ctr-source-offset", Array(String(offset).utf8)),
        ]
    }

    /// Bytes kept free below the limit for what librdkafka adds per message beyond key, value
    /// and headers (varints of the record format).
    static let encodingSlack = 64

    /// The dead letter as written to a topic whose messages may be at most `maximumBytes`
    /// (key, value and serialized headers together, as librdkafka counts `message.max.bytes`).
    ///
    /// A letter that fits is written unchanged. One that does not keeps a prefix of its value
    /// (and of its key, when the key alone takes more than half the room) and gains the headers
    /// `ctr-truncated: true`, `ctr-original-size` (the value's size in bytes) and
    /// `ctr-original-key-size`; the source coordinates identify the full original message.
    public func encoded(maximumBytes: Int) -> EncodedDeadLetter {
        var headers = self.headers
        if Self.size(of: headers) + key.count + value.count + Self.encodingSlack <= maximumBytes {
            return EncodedDeadLetter(key: key.isEmpty ? nil : key, value: value, headers: headers, isTruncated: false)
        }
        headers += [
            ("ctr-truncated", Array("true".utf8)),
            ("ctr-original-size", Array(String(value.count).utf8)),
            ("ctr-original-key-size", Array(String(key.count).utf8)),
        ]
        let room = max(0, maximumBytes - Self.size(of: headers) - Self.encodingSlack)
        let keptKey = min(key.count, room / 2)
        let keptValue = min(value.count, room - keptKey)
        return EncodedDeadLetter(
            key: keptKey == 0 ? nil : Array(key[..<keptKey]), value: Array(value[..<keptValue]), headers: headers, isTruncated: true
        )
    }

    /// Serialized size of record headers: per header a length varint and the name, a length
    /// varint and the value (5 bytes bound each varint), plus the count.
    static func size(of headers: [(String, [UInt8])]) -> Int {
        headers.reduce(5) { $0 + 10 + $1.0.utf8.count + $1.1.count }
    }
}

/// A dead letter in the form it is produced.
public struct EncodedDeadLetter: Sendable {
    public var key: [UInt8]?
    public var value: [UInt8]
    public var headers: [(String, [UInt8])]
    /// Whether the value or key was cut to fit (the headers say so too).
    public var isTruncated: Bool
}

/// Dead letters the pipeline could not get acknowledged in time.
public struct DeadLetterError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where refused messages go.
///
/// Contract: a letter handed to ``publish(_:)`` is never dropped. It stays *unacknowledged*
/// until the broker acknowledged it, and is re-published after every failed delivery (after a
/// backoff), so the pipeline must not commit a source partition's offset beyond
/// ``lowestUnacknowledged(of:)``: a crash then consumes the message again and dead-letters it
/// again (dead letters are at least once). Nothing here blocks for long; all methods are called
/// from the pipeline thread.
public protocol DeadLetterPublishing: AnyObject {
    /// Accepts `letter`, tracked until acknowledged. Never blocks, never fails: when the
    /// producer's queue is full the letter waits and is sent by a later ``poll()``.
    func publish(_ letter: DeadLetter)
    /// Serves delivery reports and (re-)sends waiting letters whose backoff has passed. Call it
    /// once per poll loop iteration.
    func poll()
    /// The lowest source offset of `partition` whose dead letter the broker has not
    /// acknowledged, or `nil` when every dead letter from it is acknowledged. Commit at most
    /// this offset.
    func lowestUnacknowledged(of partition: TopicPartition) -> Int64?
    /// Letters accepted and not yet acknowledged.
    var unacknowledgedCount: Int { get }
    /// Whether the unacknowledged letters reached the publisher's limits: pause consuming
    /// until it is false again, so memory stays bounded while the dead-letter topic is down.
    var isFull: Bool { get }
    /// Stops tracking and re-sending letters of `partitions` (revoked or lost): their offsets
    /// were not committed past the letters, so the partitions' next owner dead-letters them
    /// again.
    func forget(_ partitions: [TopicPartition])
    /// Polls until every letter is acknowledged; throws if some are still unacknowledged after
    /// `timeout` (they stay tracked).
    func flush(timeout: Duration) throws(DeadLetterError)
}

/// Which dead letters are not acknowledged yet, per source partition, and when each is due to
/// be (re-)sent. A pure state machine: the publisher reports what happened, with the time, and
/// asks what is due.
public struct DeadLetterLedger: Sendable {
    public typealias ID = UInt64

    public enum State: Sendable, Equatable {
        /// To be sent at or after the instant.
        case waiting(notBefore: ContinuousClock.Instant)
        /// Handed to the producer; a delivery report will follow.
        case inFlight
    }

    public struct Entry: Sendable {
        public var letter: DeadLetter
        /// Largest message this letter may become (halved after the broker refused it as too large).
        public var maximumBytes: Int
        /// Deliveries that failed so far.
        public var failures: Int
        public var state: State
    }

    /// Smallest size a letter is cut to after repeated too-large refusals.
    public static let minimumMessageBytes = 1024

    public private(set) var entries: [ID: Entry] = [:]
    /// The waiting entries' due times (so that finding what is due does not scan letters in flight).
    private var waiting: [ID: ContinuousClock.Instant] = [:]
    private var offsets: [TopicPartition: [ID: Int64]] = [:]
    private var nextID: ID = 1
    /// Bytes of key and value held for re-sending.
    public private(set) var bytes = 0
    public let retryBackoff: Duration
    public let maximumRetryBackoff: Duration

    public init(retryBackoff: Duration = .milliseconds(500), maximumRetryBackoff: Duration = .seconds(30)) {
        self.retryBackoff = retryBackoff
        self.maximumRetryBackoff = maximumRetryBackoff
    }

    public var count: Int { entries.count }

    /// Tracks a new letter, due at once; returns its id.
    public mutating func accept(_ letter: DeadLetter, maximumBytes: Int, now: ContinuousClock.Instant) -> ID {
        let id = nextID
        nextID += 1
        entries[id] = Entry(letter: letter, maximumBytes: maximumBytes, failures: 0, state: .waiting(notBefore: now))
        waiting[id] = now
        offsets[letter.source, default: [:]][id] = letter.offset
        bytes += letter.value.count + letter.key.count
        return id
    }

    /// Waiting letters due at `now`, oldest first.
    public func due(now: ContinuousClock.Instant) -> [ID] {
        waiting.compactMap { id, notBefore in notBefore <= now ? id : nil }.sorted()
    }

    /// Whether any letter waits to be (re-)sent.
    public var hasWaiting: Bool { !waiting.isEmpty }

    /// The producer accepted the letter.
    public mutating func sent(_ id: ID) {
        guard entries[id] != nil else { return }
        entries[id]?.state = .inFlight
        waiting.removeValue(forKey: id)
    }

    /// The producer refused the letter synchronously (its queue is full, or another local
    /// error): it waits `delay` and is tried again.
    public mutating func deferred(_ id: ID, until notBefore: ContinuousClock.Instant) {
        guard entries[id] != nil else { return }
        entries[id]?.state = .waiting(notBefore: notBefore)
        waiting[id] = notBefore
    }

    /// The broker acknowledged the letter (a report for an unknown or forgotten id is ignored).
    public mutating func delivered(_ id: ID) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        waiting.removeValue(forKey: id)
        offsets[entry.letter.source]?.removeValue(forKey: id)
        if offsets[entry.letter.source]?.isEmpty == true { offsets.removeValue(forKey: entry.letter.source) }
        bytes -= entry.letter.value.count + entry.letter.key.count
    }

    /// The letter could not be delivered: it is re-sent after an exponential backoff, cut to
    /// half its size first when it was refused as too large. A report for a letter that is not
    /// in flight (forgotten, or already re-queued) is ignored.
    public mutating func failed(_ id: ID, tooLarge: Bool, now: ContinuousClock.Instant) {
        guard var entry = entries[id], entry.state == .inFlight else { return }
        entry.failures += 1
        if tooLarge { entry.maximumBytes = max(Self.minimumMessageBytes, entry.maximumBytes / 2) }
        let notBefore = now + backoff(afterFailures: entry.failures)
        entry.state = .waiting(notBefore: notBefore)
        entries[id] = entry
        waiting[id] = notBefore
    }

    /// Delay before the next attempt after `failures` failed deliveries.
    public func backoff(afterFailures failures: Int) -> Duration {
        var delay = retryBackoff
        for _ in 1..<max(1, failures) {
            delay = delay * 2
            if delay >= maximumRetryBackoff { return maximumRetryBackoff }
        }
        return min(delay, maximumRetryBackoff)
    }

    /// See ``DeadLetterPublishing/lowestUnacknowledged(of:)``.
    public func lowestUnacknowledged(of partition: TopicPartition) -> Int64? {
        offsets[partition]?.values.min()
    }

    /// Drops the letters of `partitions`.
    public mutating func forget(_ partitions: Set<TopicPartition>) {
        for partition in partitions {
            for id in (offsets.removeValue(forKey: partition) ?? [:]).keys {
                waiting.removeValue(forKey: id)
                if let entry = entries.removeValue(forKey: id) { bytes -= entry.letter.value.count + entry.letter.key.count }
            }
        }
    }
}

/// Publishes dead letters to a Kafka topic (`ctr-dlq` by default), keyed like the original,
/// with the guarantees of ``DeadLetterPublishing``.
///
/// - A letter larger than the producer's `message.max.bytes` is truncated
///   (``DeadLetter/encoded(maximumBytes:)``); one the broker refuses as too large is cut to
///   half and sent again. A dead letter is never fatal.
/// - Sending never waits for librdkafka's queue: a full queue leaves the letter waiting.
/// - A failed delivery (broker down past `message.timeout.ms`, unknown topic, authorisation)
///   is retried with exponential backoff for as long as the letter is tracked.
///
/// The producer is not idempotent unless the configuration says so: re-publishing makes dead
/// letters at-least-once anyway, and an idempotent producer can enter fatal states.
public final class KafkaDeadLetterPublisher: DeadLetterPublishing {
    private final class Inbox: Sendable {
        let reports = Mutex<[KafkaProducer.DeliveryReport]>([])
    }

    public let topic: String
    /// Limits above which ``isFull`` is true.
    public let maximumUnacknowledged: Int
    public let maximumUnacknowledgedBytes: Int
    private let producer: KafkaProducer
    private let inbox: Inbox
    private var ledger: DeadLetterLedger
    private var queueFullUntil: ContinuousClock.Instant?

    /// Letters that had to be truncated, deliveries that failed and were retried: for metrics.
    public private(set) var truncatedCount = 0
    public private(set) var failedDeliveryCount = 0

    /// Keys of consumer-only settings, dropped from the shared configuration.
    static let consumerOnlyProperties: Set<String> = [
        "group.id", "group.instance.id", "enable.auto.commit", "auto.commit.interval.ms", "enable.auto.offset.store",
        "auto.offset.reset", "partition.assignment.strategy", "queued.min.messages", "queued.max.messages.kbytes",
        "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "fetch.wait.max.ms", "fetch.min.bytes",
        "fetch.max.bytes", "fetch.message.max.bytes", "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof",
        "check.crcs",
    ]

    public init(
        configuration: KafkaConfiguration, topic: String, retryBackoff: Duration = .milliseconds(500),
        maximumRetryBackoff: Duration = .seconds(30), maximumUnacknowledged: Int = 10_000,
        maximumUnacknowledgedBytes: Int = 64 << 20
    ) throws(KafkaError) {
        var configuration = configuration
        for key in Self.consumerOnlyProperties { configuration.properties.removeValue(forKey: key) }
        if configuration["enable.idempotence"] == nil { configuration["enable.idempotence"] = "false" }
        let inbox = Inbox()
        self.producer = try KafkaProducer(configuration: configuration) { report in
            inbox.reports.withLock { $0.append(report) }
        }
        self.inbox = inbox
        self.topic = topic
        self.ledger = DeadLetterLedger(retryBackoff: retryBackoff, maximumRetryBackoff: maximumRetryBackoff)
        self.maximumUnacknowledged = maximumUnacknowledged
        self.maximumUnacknowledgedBytes = maximumUnacknowledgedBytes
    }

    public func publish(_ letter: DeadLetter) {
        let now = ContinuousClock.now
        let id = ledger.accept(letter, maximumBytes: producer.maximumMessageBytes, now: now)
        serveDeliveryReports(now: now)
        if queueFullUntil.map({ now >= $0 }) ?? true { _ = send(id, now: now) }
    }

    public func poll() {
        let now = ContinuousClock.now
        serveDeliveryReports(now: now)
        guard ledger.hasWaiting, queueFullUntil.map({ now >= $0 }) ?? true else { return }
        queueFullUntil = nil
        for id in ledger.due(now: now) where !send(id, now: now) { return }
    }

    private func serveDeliveryReports(now: ContinuousClock.Instant) {
        producer.poll()
        for report in inbox.reports.withLock({ reports in defer { reports.removeAll() }; return reports }) {
            if let error = report.error {
                failedDeliveryCount += 1
                ledger.failed(report.id, tooLarge: error.isMessageTooLarge, now: now)
            } else {
                ledger.delivered(report.id)
            }
        }
    }

    /// Hands letter `id` to the producer; returns false when its queue is full (stop sending).
    private func send(_ id: DeadLetterLedger.ID, now: ContinuousClock.Instant) -> Bool {
        guard let entry = ledger.entries[id] else { return true }
        let encoded = entry.letter.encoded(maximumBytes: entry.maximumBytes)
        do {
            try producer.send(topic: topic, key: encoded.key, value: encoded.value, headers: encoded.headers, deliveryID: id, queueFullTimeout: .zero)
            ledger.sent(id)
            if encoded.isTruncated && entry.failures == 0 { truncatedCount += 1 }
            return true
        } catch {
            // The letter stays waiting: a full queue is retried shortly, anything else (which
            // librdkafka reports synchronously only for local problems) after the backoff of a
            // failed delivery.
            let delay = error.isQueueFull ? Duration.milliseconds(10) : ledger.backoff(afterFailures: entry.failures + 1)
            ledger.deferred(id, until: now + delay)
            if error.isQueueFull { queueFullUntil = now + delay }
            return !error.isQueueFull
        }
    }

    public func lowestUnacknowledged(of partition: TopicPartition) -> Int64? {
        ledger.lowestUnacknowledged(of: partition)
    }

    public var unacknowledgedCount: Int { ledger.count }
    /// Bytes of key and value held until acknowledged.
    public var unacknowledgedBytes: Int { ledger.bytes }

    public var isFull: Bool {
        ledger.count >= maximumUnacknowledged || ledger.bytes >= maximumUnacknowledgedBytes
    }

    public func forget(_ partitions: [TopicPartition]) {
        ledger.forget(Set(partitions))
    }

    public func flush(timeout: Duration) throws(DeadLetterError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            poll()
            if ledger.count == 0 { return }
            let remaining = deadline - .now
            guard remaining > .zero else {
                throw DeadLetterError(
                    "\(ledger.count) dead letter(s) to \(topic) not acknowledged after \(timeout)"
                        + (producer.firstFailure.map { " (first delivery failure: \($0))" } ?? "")
                )
            }
            producer.poll(timeout: min(remaining, .milliseconds(50)))
        }
    }
}
