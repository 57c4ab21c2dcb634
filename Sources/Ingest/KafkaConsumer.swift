import CRdKafka

#if canImport(Glibc)
import Glibc
#endif

/// A partition of a topic.
public struct TopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: TopicPartition, rhs: TopicPartition) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }

    /// `topic:partition`, as stored in `ctr_results_raw.source_partitions`.
    public var description: String { "\(topic):\(partition)" }
}

/// A change of the partitions this consumer owns in its group, as recorded during a poll.
public enum RebalanceEvent: Sendable, Equatable {
    /// The group gave these partitions to this consumer in consumer-group generation
    /// `generation`. They are assigned *paused*: no message of theirs reaches the application
    /// before it resumes them, and fetching starts at their committed offsets (or the earliest
    /// offset) then.
    case assigned([TopicPartition], generation: Int32)
    /// The group took these partitions away; they are already unassigned. `lost` is true when
    /// the group moved on without this consumer (session timeout, poll interval exceeded):
    /// another member may own them already.
    case revoked([TopicPartition], lost: Bool)
}

/// A message as read from Kafka, valid only during the callback that receives it.
public struct KafkaMessage {
    public var topic: String
    /// Position of `topic` in the subscription list given to ``KafkaConsumer/init(configuration:topics:maxBatch:onError:)``.
    public var topicIndex: Int
    public var partition: Int32
    public var offset: Int64
    public var payload: UnsafeRawBufferPointer
    public var key: UnsafeRawBufferPointer
}

/// A consumer in a consumer group with manual offset commits, over librdkafka.
///
/// Not thread-safe: one thread polls and commits. librdkafka's rebalance callback runs inside
/// ``poll(maxMessages:timeout:_:)``; it only performs the assignment change librdkafka requires
/// (new partitions are assigned paused) and records the event for
/// ``takeRebalanceEvents()``, so the application decides what to do outside the callback.
public final class KafkaConsumer {
    /// What librdkafka's callbacks record; owned by the consumer, so it lives as long as the
    /// client whose callbacks reference it.
    private final class RebalanceContext {
        var events: [RebalanceEvent] = []
        let onError: (KafkaError) -> Void
        /// Incremented on every revocation, to spot batches fetched for a revoked assignment.
        var revocations = 0
        /// Incremented on every client-level error (broker down, transport failures).
        var errors = 0
        /// Assigned partitions the application has not resumed yet.
        var awaitingResume: Set<TopicPartition> = []
        /// Partitions awaiting their resume of which librdkafka delivered messages anyway; the
        /// consumer held them back (see `holdBack`).
        var heldBack: Set<TopicPartition> = []
        /// Where an assigned partition without a committed offset starts: librdkafka's logical
        /// offset for `auto.offset.reset`.
        let startWithoutCommit: Int64
        init(onError: @escaping (KafkaError) -> Void, startWithoutCommit: Int64) {
            self.onError = onError
            self.startWithoutCommit = startWithoutCommit
        }
    }

    private let handle: OpaquePointer
    private let queue: OpaquePointer
    private let callbacks: RebalanceContext
    private var topicNames: [OpaquePointer: (name: String, index: Int)] = [:]
    private var lastTopic: (handle: OpaquePointer, topic: (name: String, index: Int))?
    private let topics: [String]
    private var messages: [UnsafeMutablePointer<rd_kafka_message_t>?]
    private var closed = false

    /// Properties applied unless the configuration sets them: manual commits, start from the
    /// earliest offset, range assignment (partition N of every topic goes to the same member,
    /// so co-partitioned topics stay together), and pre-fetch settings that keep a busy
    /// consumer fed.
    ///
    /// The pre-fetch queue is one queue for the whole consumer, whatever the number of
    /// partitions, bounded by `queued.min.messages` (messages) and `queued.max.messages.kbytes`
    /// (payload bytes). Once it is over either bound, librdkafka (before 2.2, which adds
    /// `fetch.queue.backoff.ms`) stops fetching until its broker thread next wakes up on its
    /// own, about a second later: the queue must hold about a second of consumption, or a
    /// consumer slower than its fetches (one with work to do, catching up on a backlog) starves
    /// for the rest of every second. A queued message of a small event costs 300 to 500 bytes
    /// (librdkafka's message and operation, and its share of the decompressed fetch), so the
    /// message count is what bounds memory: 300,000 messages (100 to 150 MiB) hold about a
    /// second at the aggregator's rate, and the 64 MiB payload bound (librdkafka's default)
    /// only matters for large messages. Measured (`scripts/bench.py`): with a 1,000,000-message
    /// bound, 75-byte events filled the 64 MiB and peak RSS was 281 MiB higher; a 16 MiB
    /// payload bound (about 140,000 events) held a third of a second, and the aggregator's
    /// pipeline thread sat blocked for half of a catch-up.
    public static let defaultProperties: [String: String] = [
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "queued.min.messages": "300000",
        "queued.max.messages.kbytes": "65536",
        "session.timeout.ms": "10000",
        "heartbeat.interval.ms": "1000",
    ]

    /// Creates the consumer and subscribes to `topics`.
    ///
    /// - Parameters:
    ///   - onError: called on the polling thread for client-level errors (broker down, ...);
    ///     librdkafka keeps retrying by itself. It must not capture anything that can be
    ///     released before the consumer.
    public init(
        configuration: KafkaConfiguration,
        topics: [String],
        maxBatch: Int = 10_000,
        onError: @escaping (KafkaError) -> Void
    ) throws(KafkaError) {
        var properties = Self.defaultProperties
        properties.merge(configuration.properties) { _, new in new }
        let conf = try KafkaConfiguration(properties).makeNativeConfiguration()
        let callbacks = RebalanceContext(onError: onError, startWithoutCommit: Self.logicalOffset(autoOffsetReset: properties["auto.offset.reset"]))
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(callbacks).toOpaque())
        rd_kafka_conf_set_rebalance_cb(conf) { handle, error, partitions, opaque in
            let context = Unmanaged<RebalanceContext>.fromOpaque(opaque!).takeUnretainedValue()
            let list = KafkaConsumer.topicPartitions(partitions)
            switch error {
            case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                rd_kafka_assign(handle, partitions)
                rd_kafka_pause_partitions(handle, partitions)
                context.awaitingResume.formUnion(list)
                context.events.append(.assigned(list, generation: KafkaConsumer.generation(of: handle) ?? -1))
            default:
                context.awaitingResume.subtract(list)
                context.heldBack.subtract(list)
                context.revocations += 1
                context.events.append(.revoked(list, lost: rd_kafka_assignment_lost(handle) != 0))
                rd_kafka_assign(handle, nil)
            }
        }
        rd_kafka_conf_set_error_cb(conf) { _, code, reason, opaque in
            let context = Unmanaged<RebalanceContext>.fromOpaque(opaque!).takeUnretainedValue()
            context.errors += 1
            context.onError(KafkaError(code: code, message: reason.map { String(cString: $0) } ?? "unknown error"))
        }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errorBuffer, errorBuffer.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(message: "cannot create the Kafka consumer: \(Self.string(errorBuffer))")
        }
        rd_kafka_poll_set_consumer(handle)
        self.handle = handle
        self.queue = rd_kafka_queue_get_consumer(handle)
        self.callbacks = callbacks
        self.messages = Array(repeating: nil, count: maxBatch)
        self.topics = topics

        let subscription = rd_kafka_topic_partition_list_new(Int32(topics.count))
        defer { rd_kafka_topic_partition_list_destroy(subscription) }
        for topic in topics {
            rd_kafka_topic_partition_list_add(subscription, topic, RD_KAFKA_PARTITION_UA)
        }
        let error = rd_kafka_subscribe(handle, subscription)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            // Fully initialized: `deinit` closes and releases the client.
            throw KafkaError(error, context: "cannot subscribe to \(topics.joined(separator: ", "))")
        }
    }

    deinit {
        close()
    }

    /// The rebalance events recorded since the last call, oldest first.
    public func takeRebalanceEvents() -> [RebalanceEvent] {
        defer { callbacks.events.removeAll() }
        return callbacks.events
    }

    /// Number of client-level errors reported so far (see `onError`).
    public var errorCount: Int { callbacks.errors }

    /// The consumer-group generation this member belongs to, from librdkafka's group metadata
    /// (`CGMDv2:` followed by the generation id in host byte order); `nil` outside a group.
    static func generation(of handle: OpaquePointer?) -> Int32? {
        guard let metadata = rd_kafka_consumer_group_metadata(handle) else { return nil }
        defer { rd_kafka_consumer_group_metadata_destroy(metadata) }
        var buffer: UnsafeMutableRawPointer?
        var size = 0
        if let error = rd_kafka_consumer_group_metadata_write(metadata, &buffer, &size) {
            rd_kafka_error_destroy(error)
            return nil
        }
        guard let buffer else { return nil }
        defer { free(buffer) }
        let magic = Array("CGMDv2:".utf8)
        guard size >= magic.count + 4, UnsafeRawBufferPointer(start: buffer, count: magic.count).elementsEqual(magic) else { return nil }
        let generation = buffer.loadUnaligned(fromByteOffset: magic.count, as: Int32.self)
        return generation >= 0 ? generation : nil
    }

    /// Waits up to `timeout` for a first message, then hands every message already fetched,
    /// up to `maxMessages`, to `handle`, in offset order per partition: it returns as soon as
    /// there is something to hand over, not when `maxMessages` are there (librdkafka's batch
    /// call alone waits the whole timeout for a full batch). Returns the number of messages
    /// handed over. Errors on individual messages (e.g. a partition that became unavailable)
    /// go to the `onError` handler.
    ///
    /// Rebalances are recorded during this call (see ``takeRebalanceEvents()``). A batch during
    /// which partitions were revoked is dropped whole: its messages were fetched for the old
    /// assignment, and whoever owns the partitions next fetches them again from the committed
    /// offsets.
    ///
    /// A message of a partition that is assigned and not yet resumed is held back, never handed
    /// over: librdkafka pauses a partition only if the pause is not overtaken by the fetcher
    /// start that librdkafka creates on its own thread for the new assignment (it discards an
    /// operation created before one that already ran; seen under load). ``resume(_:)`` then
    /// moves the partition back to its start.
    @discardableResult
    public func poll(maxMessages: Int, timeout: Duration, _ handle: (KafkaMessage) -> Void) -> Int {
        let count = min(maxMessages, messages.count)
        let revocationsBefore = callbacks.revocations
        let received = messages.withUnsafeMutableBufferPointer { buffer -> Int in
            let ready = rd_kafka_consume_batch_queue(queue, 0, buffer.baseAddress, count)
            guard ready == 0, count > 0, let first = rd_kafka_consume_queue(queue, Int32(Self.milliseconds(timeout))) else { return ready }
            buffer[0] = first
            return 1 + max(0, rd_kafka_consume_batch_queue(queue, 0, buffer.baseAddress! + 1, count - 1))
        }
        guard received > 0 else { return 0 }
        if callbacks.revocations != revocationsBefore {
            for index in 0..<received {
                guard let message = messages[index] else { continue }
                holdBack(message.pointee)
                rd_kafka_message_destroy(message)
            }
            return 0
        }
        var delivered = 0
        for index in 0..<received {
            guard let message = messages[index] else { continue }
            defer { rd_kafka_message_destroy(message) }
            let value = message.pointee
            if !callbacks.awaitingResume.isEmpty, holdBack(value) { continue }
            guard value.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                if value.err != RD_KAFKA_RESP_ERR__PARTITION_EOF {
                    callbacks.onError(KafkaError(value.err, context: "consume error"))
                }
                continue
            }
            let topic = topicName(value.rkt)
            handle(
                KafkaMessage(
                    topic: topic.name,
                    topicIndex: topic.index,
                    partition: value.partition,
                    offset: value.offset,
                    payload: UnsafeRawBufferPointer(start: value.payload, count: value.len),
                    key: UnsafeRawBufferPointer(start: value.key, count: value.key_len)
                )
            )
            delivered += 1
        }
        return delivered
    }

    /// Records `message` as held back if its partition awaits its resume; true if it does.
    @discardableResult
    private func holdBack(_ message: rd_kafka_message_t) -> Bool {
        guard message.err == RD_KAFKA_RESP_ERR_NO_ERROR, !callbacks.awaitingResume.isEmpty else { return false }
        let partition = TopicPartition(topic: topicName(message.rkt).name, partition: message.partition)
        guard callbacks.awaitingResume.contains(partition) else { return false }
        callbacks.heldBack.insert(partition)
        return true
    }

    /// The name of a message's topic and its position in the subscription. Messages arrive in
    /// runs of one partition's fetch, so the last topic answers most calls without hashing.
    private func topicName(_ topic: OpaquePointer?) -> (name: String, index: Int) {
        guard let topic else { return ("", -1) }
        if let last = lastTopic, last.handle == topic { return last.topic }
        let known: (name: String, index: Int)
        if let cached = topicNames[topic] {
            known = cached
        } else {
            let name = String(cString: rd_kafka_topic_name(topic))
            known = (name: name, index: topics.firstIndex(of: name) ?? -1)
            topicNames[topic] = known
        }
        lastTopic = (topic, known)
        return known
    }

    /// A committed position: the next offset to consume, and the metadata string stored with it.
    public struct CommittedOffset: Sendable, Hashable {
        public var offset: Int64
        public var metadata: String

        public init(offset: Int64, metadata: String = "") {
            self.offset = offset
            self.metadata = metadata
        }
    }

    /// Commits `offsets` synchronously, with their metadata.
    public func commit(_ offsets: [TopicPartition: CommittedOffset]) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = Self.makeList(offsets.keys.sorted()) { offsets[$0]!.offset }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let elements = UnsafeMutableBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt))
        for index in elements.indices {
            let key = TopicPartition(topic: String(cString: elements[index].topic), partition: elements[index].partition)
            guard let metadata = offsets[key]?.metadata, !metadata.isEmpty else { continue }
            // librdkafka frees the metadata with the list.
            let bytes = Array(metadata.utf8)
            let copy = malloc(bytes.count)!
            bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            elements[index].metadata = copy
            elements[index].metadata_size = bytes.count
        }
        let error = rd_kafka_commit(handle, list, 0)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR || error == RD_KAFKA_RESP_ERR__NO_OFFSET else {
            throw KafkaError(error, context: "offset commit failed")
        }
    }

    /// The committed offsets of `partitions` with their metadata (absent when none is committed).
    public func committedOffsets(_ partitions: [TopicPartition], timeout: Duration) throws(KafkaError) -> [TopicPartition: CommittedOffset] {
        let list = Self.makeList(partitions) { _ in Int64(RD_KAFKA_OFFSET_INVALID) }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_committed(handle, list, Int32(Self.milliseconds(timeout)))
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(error, context: "cannot read committed offsets") }
        var result: [TopicPartition: CommittedOffset] = [:]
        for element in UnsafeBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt)) where element.offset >= 0 {
            let metadata = element.metadata.map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: element.metadata_size), as: UTF8.self)
            } ?? ""
            result[TopicPartition(topic: String(cString: element.topic), partition: element.partition)] =
                CommittedOffset(offset: element.offset, metadata: metadata)
        }
        return result
    }

    /// For each of `partitions`, the offset of the first message whose timestamp is at or after
    /// `time` (epoch milliseconds), or the end of the partition when there is none.
    public func offsets(at time: Int64, of partitions: [TopicPartition], timeout: Duration) throws(KafkaError) -> [TopicPartition: Int64] {
        let list = Self.makeList(partitions) { _ in time }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_offsets_for_times(handle, list, Int32(Self.milliseconds(timeout)))
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(error, context: "cannot look up offsets for time \(time)") }
        var result: [TopicPartition: Int64] = [:]
        for element in UnsafeBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt)) {
            let partition = TopicPartition(topic: String(cString: element.topic), partition: element.partition)
            guard element.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError(element.err, context: "cannot look up the offset of \(partition) for time \(time)")
            }
            if element.offset >= 0 {
                result[partition] = element.offset
            } else {
                var low: Int64 = 0
                var high: Int64 = 0
                let error = rd_kafka_query_watermark_offsets(handle, partition.topic, partition.partition, &low, &high, Int32(Self.milliseconds(timeout)))
                guard error == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(error, context: "cannot read the end of \(partition)") }
                result[partition] = high
            }
        }
        return result
    }

    /// Moves the fetch positions of assigned partitions to `offsets`.
    public func seek(_ offsets: [TopicPartition: Int64], timeout: Duration) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        callbacks.heldBack.subtract(offsets.keys)
        let list = Self.makeList(offsets.keys.sorted()) { offsets[$0]! }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        if let error = rd_kafka_seek_partitions(handle, list, Int32(Self.milliseconds(timeout))) {
            let message = String(cString: rd_kafka_error_string(error))
            rd_kafka_error_destroy(error)
            throw KafkaError(message: "cannot seek: \(message)")
        }
        for element in UnsafeBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt)) where element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(element.err, context: "cannot seek \(element.partition)")
        }
    }

    /// The high watermark (offset of the next message to be produced) of `partition`, from
    /// the last fetch; `nil` if unknown.
    public func highWatermark(_ partition: TopicPartition) -> Int64? {
        var low: Int64 = 0
        var high: Int64 = 0
        let error = rd_kafka_get_watermark_offsets(handle, partition.topic, partition.partition, &low, &high)
        return error == RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 ? high : nil
    }

    /// Stops fetching `partitions` (the group membership stays alive while polling continues).
    public func pause(_ partitions: [TopicPartition]) {
        let list = Self.makeList(partitions) { _ in 0 }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_pause_partitions(handle, list)
    }

    /// Resumes fetching `partitions`.
    ///
    /// A partition of a new assignment of which ``poll(maxMessages:timeout:_:)`` held messages
    /// back first goes back to its start: its committed offset, or where `auto.offset.reset`
    /// says when it has none.
    ///
    /// Resume a new assignment only after ``committedOffsets(_:timeout:)`` has returned for it.
    /// librdkafka starts the fetcher of an assigned partition when the coordinator answers its
    /// own committed-offset query, and a resume created before that start can be discarded as
    /// outdated, leaving the partition paused. Both queries go to the coordinator on one
    /// connection and are answered in order on librdkafka's thread, so once the application's
    /// query has returned, the fetcher's start exists and the resume comes after it.
    public func resume(_ partitions: [TopicPartition]) throws(KafkaError) {
        let rewound = partitions.filter { callbacks.heldBack.contains($0) }
        if !rewound.isEmpty {
            let committed = try committedOffsets(rewound, timeout: .seconds(30))
            var start: [TopicPartition: Int64] = [:]
            for partition in rewound {
                start[partition] = committed[partition]?.offset ?? callbacks.startWithoutCommit
            }
            try seek(start.filter { $0.value != Int64(RD_KAFKA_OFFSET_INVALID) }, timeout: .seconds(30))
        }
        callbacks.awaitingResume.subtract(partitions)
        callbacks.heldBack.subtract(partitions)
        let list = Self.makeList(partitions) { _ in 0 }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_resume_partitions(handle, list)
    }

    /// Lifts the pause of `partitions` inside librdkafka only, as librdkafka does when the
    /// fetcher start of a new assignment overtakes its pause: for the tests of the held-back
    /// messages (``poll(maxMessages:timeout:_:)``, ``resume(_:)``).
    func liftPauseInsideLibrdkafka(_ partitions: [TopicPartition]) {
        let list = Self.makeList(partitions) { _ in 0 }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_resume_partitions(handle, list)
    }

    /// The partitions whose messages are held back until their resume.
    var heldBack: Set<TopicPartition> { callbacks.heldBack }

    /// librdkafka's logical start offset for an `auto.offset.reset` value (which librdkafka reads
    /// case-insensitively); `INVALID` for `error` or a value it does not know.
    private static func logicalOffset(autoOffsetReset: String?) -> Int64 {
        switch autoOffsetReset?.lowercased() {
        case "smallest", "earliest", "beginning": Int64(RD_KAFKA_OFFSET_BEGINNING)
        case "largest", "latest", "end": Int64(RD_KAFKA_OFFSET_END)
        default: Int64(RD_KAFKA_OFFSET_INVALID)
        }
    }

    /// Leaves the group (revoking the assignment through the rebalance handler) and releases
    /// the client.
    public func close() {
        guard !closed else { return }
        closed = true
        rd_kafka_consumer_close(handle)
        rd_kafka_queue_destroy(queue)
        rd_kafka_destroy(handle)
    }

    private static func makeList(_ partitions: [TopicPartition], offset: (TopicPartition) -> Int64) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(max(partitions.count, 1)))!
        for partition in partitions {
            let element = rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)!
            element.pointee.offset = offset(partition)
        }
        return list
    }

    private static func topicPartitions(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> [TopicPartition] {
        guard let list else { return [] }
        return UnsafeBufferPointer(start: list.pointee.elems, count: Int(list.pointee.cnt))
            .map { TopicPartition(topic: String(cString: $0.topic), partition: $0.partition) }
            .sorted()
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    private static func string(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
