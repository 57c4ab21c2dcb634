import CRdKafka
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A Kafka producer over librdkafka. Thread-safe, as librdkafka's producer is.
///
/// ``send(topic:partition:key:value:headers:deliveryID:queueFullTimeout:)`` only enqueues. Each
/// message's outcome arrives later as a ``DeliveryReport``, served by ``poll(timeout:)`` and
/// ``flush(timeout:)`` on the thread that calls them, and is counted in ``deliveredCount`` and
/// ``failedCount`` (cumulative: nothing resets them, so no failure can be missed).
public final class KafkaProducer: @unchecked Sendable {
    /// The broker's verdict on one message.
    public struct DeliveryReport: Sendable {
        /// The `deliveryID` given to `send`.
        public var id: UInt64
        /// `nil` when the broker acknowledged the message; otherwise why librdkafka gave up on
        /// it (after its own retries, within `message.timeout.ms`).
        public var error: KafkaError?
        /// Where the message landed (acknowledged messages only).
        public var partition: Int32
        public var offset: Int64
    }

    private final class Deliveries: Sendable {
        struct State {
            var delivered = 0
            var failed = 0
            var firstError: String?
        }
        let state = Mutex(State())
        let onDelivery: (@Sendable (DeliveryReport) -> Void)?
        init(onDelivery: (@Sendable (DeliveryReport) -> Void)?) { self.onDelivery = onDelivery }
    }

    private let handle: OpaquePointer
    private let deliveries: Deliveries
    private let topics = Mutex<[String: OpaquePointer]>([:])

    /// Largest message librdkafka accepts from this producer (`message.max.bytes`): key, value
    /// and serialized headers together.
    public let maximumMessageBytes: Int

    /// Properties applied unless the configuration sets them: idempotent delivery, small
    /// linger for batching, and a large local queue.
    public static let defaultProperties: [String: String] = [
        "enable.idempotence": "true",
        "linger.ms": "5",
        "queue.buffering.max.messages": "1000000",
        "queue.buffering.max.kbytes": "1048576",
    ]

    /// Creates the producer.
    ///
    /// - Parameter onDelivery: called once per message with its outcome, on the thread that
    ///   calls ``poll(timeout:)`` or ``flush(timeout:)`` (and from `deinit`, which flushes).
    public init(configuration: KafkaConfiguration, onDelivery: (@Sendable (DeliveryReport) -> Void)? = nil) throws(KafkaError) {
        var properties = Self.defaultProperties
        properties.merge(configuration.properties) { _, new in new }
        let conf = try KafkaConfiguration(properties).makeNativeConfiguration()
        let deliveries = Deliveries(onDelivery: onDelivery)
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(deliveries).toOpaque())
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
            guard let message, let opaque else { return }
            let deliveries = Unmanaged<Deliveries>.fromOpaque(opaque).takeUnretainedValue()
            let error = message.pointee.err
            let failure = error == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(error, context: "delivery failed")
            deliveries.state.withLock { state in
                if let failure {
                    state.failed += 1
                    if state.firstError == nil { state.firstError = failure.message }
                } else {
                    state.delivered += 1
                }
            }
            deliveries.onDelivery?(
                DeliveryReport(
                    id: UInt64(UInt(bitPattern: message.pointee._private)), error: failure,
                    partition: message.pointee.partition, offset: message.pointee.offset
                )
            )
        }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorBuffer, errorBuffer.count) else {
            rd_kafka_conf_destroy(conf)
            let reason = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(message: "cannot create the Kafka producer: \(reason)")
        }
        self.handle = handle
        self.deliveries = deliveries
        var value = [CChar](repeating: 0, count: 64)
        var size = value.count
        if rd_kafka_conf_get(rd_kafka_conf(handle), "message.max.bytes", &value, &size) == RD_KAFKA_CONF_OK,
            let bytes = Int(String(decoding: value.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        {
            maximumMessageBytes = bytes
        } else {
            maximumMessageBytes = 1_000_000
        }
    }

    deinit {
        rd_kafka_flush(handle, 5_000)
        topics.withLock { topics in
            for topic in topics.values { rd_kafka_topic_destroy(topic) }
        }
        rd_kafka_destroy(handle)
    }

    private func topicHandle(_ name: String) -> OpaquePointer? {
        topics.withLock { topics in
            if let topic = topics[name] { return topic }
            let topic = rd_kafka_topic_new(handle, name, nil)
            topics[name] = topic
            return topic
        }
    }

    /// Enqueues a message.
    ///
    /// When librdkafka's local queue is full (`queue.buffering.max.messages` or `.kbytes`, e.g.
    /// while the brokers are unreachable), it serves delivery reports and tries again for at
    /// most `queueFullTimeout`, then throws a ``KafkaError`` whose ``KafkaError/isQueueFull``
    /// is true: the caller decides whether to wait longer, keep the message, or pause. It never
    /// waits forever, so a consumer thread calling it stays within `max.poll.interval.ms`.
    /// Other synchronous refusals (e.g. ``KafkaError/isMessageTooLarge`` when key, value and
    /// headers exceed ``maximumMessageBytes``) throw at once.
    ///
    /// - Parameters:
    ///   - partition: an explicit partition, or `nil` for the configured partitioner (by key).
    ///   - deliveryID: returned in this message's ``DeliveryReport``.
    public func send(
        topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8], headers: [(String, [UInt8])] = [],
        deliveryID: UInt64 = 0, queueFullTimeout: Duration = .seconds(5)
    ) throws(KafkaError) {
        guard let topicHandle = topicHandle(topic) else { throw KafkaError(message: "cannot open topic \(topic)") }
        let deadline = ContinuousClock.now + queueFullTimeout
        while true {
            var nativeHeaders: OpaquePointer?
            if !headers.isEmpty {
                nativeHeaders = rd_kafka_headers_new(headers.count)
                for (name, headerValue) in headers {
                    headerValue.withUnsafeBytes { bytes in
                        _ = rd_kafka_header_add(nativeHeaders, name, -1, bytes.baseAddress, bytes.count)
                    }
                }
            }
            let opaque = UnsafeMutableRawPointer(bitPattern: UInt(deliveryID))
            let error: rd_kafka_resp_err_t = value.withUnsafeBytes { valueBytes in
                (key ?? []).withUnsafeBytes { keyBytes in
                    crdkafka_produce(
                        handle, topicHandle, partition ?? RD_KAFKA_PARTITION_UA, valueBytes.baseAddress, valueBytes.count,
                        key == nil ? nil : keyBytes.baseAddress, key == nil ? 0 : keyBytes.count, nativeHeaders, opaque
                    )
                }
            }
            if error == RD_KAFKA_RESP_ERR_NO_ERROR { return }
            if let nativeHeaders { rd_kafka_headers_destroy(nativeHeaders) }
            guard error == RD_KAFKA_RESP_ERR__QUEUE_FULL else {
                throw KafkaError(error, context: "cannot produce to \(topic)")
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                throw KafkaError(error, context: "cannot produce to \(topic): the local queue stayed full for \(queueFullTimeout)")
            }
            rd_kafka_poll(handle, Int32(min(remaining, .milliseconds(10)).wholeMilliseconds))
        }
    }

    /// Serves delivery reports, waiting at most `timeout` for the first.
    public func poll(timeout: Duration = .zero) {
        rd_kafka_poll(handle, Int32(timeout.wholeMilliseconds))
    }

    /// Waits until every enqueued message is delivered or failed, serving delivery reports.
    /// Throws if messages are still queued after `timeout`. Failed messages do not throw:
    /// they are reported to `onDelivery` and counted in ``failedCount``.
    public func flush(timeout: Duration) throws(KafkaError) {
        let error = rd_kafka_flush(handle, Int32(timeout.wholeMilliseconds))
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(error, context: "messages still undelivered after \(timeout)")
        }
    }

    /// Messages delivered so far.
    public var deliveredCount: Int { deliveries.state.withLock { $0.delivered } }
    /// Messages that failed so far.
    public var failedCount: Int { deliveries.state.withLock { $0.failed } }
    /// Why the first failed message failed, if one did.
    public var firstFailure: String? { deliveries.state.withLock { $0.firstError } }
    /// Messages enqueued and not yet delivered or failed (including in-flight requests).
    public var outstandingCount: Int { Int(rd_kafka_outq_len(handle)) }

    /// Number of partitions of `topic`, from the cluster's metadata.
    public func partitionCount(topic: String, timeout: Duration) throws(KafkaError) -> Int {
        guard let topicHandle = topicHandle(topic) else { throw KafkaError(message: "cannot open topic \(topic)") }
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let error = rd_kafka_metadata(handle, 0, topicHandle, &metadata, Int32(timeout.wholeMilliseconds))
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
            throw KafkaError(error, context: "cannot read metadata of \(topic)")
        }
        defer { rd_kafka_metadata_destroy(metadata) }
        guard metadata.pointee.topic_cnt > 0 else { throw KafkaError(message: "topic \(topic) not found") }
        let topicMetadata = metadata.pointee.topics[0]
        guard topicMetadata.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(topicMetadata.err, context: "topic \(topic)")
        }
        return Int(topicMetadata.partition_cnt)
    }
}

extension Duration {
    /// Whole milliseconds, clamped to 0 ... `Int32.max` (librdkafka's timeout arguments).
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        guard seconds < Int64(Int32.max / 1000) else { return Int64(Int32.max) }
        return max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}
