import CRdKafka
import Synchronization

/// A Kafka producer over librdkafka. Thread-safe, as librdkafka's producer is.
///
/// ``send(topic:partition:key:value:headers:)`` only enqueues; delivery is confirmed by
/// ``flush(timeout:)``, which reports any message that could not be delivered.
public final class KafkaProducer: @unchecked Sendable {
    private final class Deliveries: Sendable {
        struct State {
            var delivered = 0
            var failed = 0
            var failedSinceFlush = 0
            var firstError: String?
        }
        let state = Mutex(State())
    }

    private let handle: OpaquePointer
    private let deliveries: Deliveries
    private let topics = Mutex<[String: OpaquePointer]>([:])

    /// Properties applied unless the configuration sets them: idempotent delivery, small
    /// linger for batching, and a large local queue.
    public static let defaultProperties: [String: String] = [
        "enable.idempotence": "true",
        "linger.ms": "5",
        "queue.buffering.max.messages": "1000000",
        "queue.buffering.max.kbytes": "1048576",
    ]

    public init(configuration: KafkaConfiguration) throws(KafkaError) {
        var properties = Self.defaultProperties
        properties.merge(configuration.properties) { _, new in new }
        let conf = try KafkaConfiguration(properties).makeNativeConfiguration()
        let deliveries = Deliveries()
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(deliveries).toOpaque())
        rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
            guard let message, let opaque else { return }
            let deliveries = Unmanaged<Deliveries>.fromOpaque(opaque).takeUnretainedValue()
            let error = message.pointee.err
            deliveries.state.withLock { state in
                if error == RD_KAFKA_RESP_ERR_NO_ERROR {
                    state.delivered += 1
                } else {
                    state.failed += 1
                    state.failedSinceFlush += 1
                    if state.firstError == nil { state.firstError = String(cString: rd_kafka_err2str(error)) }
                }
            }
        }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorBuffer, errorBuffer.count) else {
            rd_kafka_conf_destroy(conf)
            let reason = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(message: "cannot create the Kafka producer: \(reason)")
        }
        self.handle = handle
        self.deliveries = deliveries
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

    /// Enqueues a message. When librdkafka's local queue is full it waits for deliveries and
    /// tries again, so a message is never dropped here.
    ///
    /// - Parameter partition: an explicit partition, or `nil` for the configured partitioner
    ///   (by key).
    public func send(
        topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8], headers: [(String, [UInt8])] = []
    ) throws(KafkaError) {
        guard let topicHandle = topicHandle(topic) else { throw KafkaError(message: "cannot open topic \(topic)") }
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
            let error: rd_kafka_resp_err_t = value.withUnsafeBytes { valueBytes in
                (key ?? []).withUnsafeBytes { keyBytes in
                    produce(topicHandle, partition ?? RD_KAFKA_PARTITION_UA, valueBytes, key == nil ? nil : keyBytes, nativeHeaders)
                }
            }
            if error == RD_KAFKA_RESP_ERR_NO_ERROR { return }
            if let nativeHeaders { rd_kafka_headers_destroy(nativeHeaders) }
            guard error == RD_KAFKA_RESP_ERR__QUEUE_FULL else {
                throw KafkaError(error, context: "cannot produce to \(topic)")
            }
            rd_kafka_poll(handle, 10)
        }
    }

    private func produce(
        _ topic: OpaquePointer, _ partition: Int32, _ value: UnsafeRawBufferPointer, _ key: UnsafeRawBufferPointer?,
        _ headers: OpaquePointer?
    ) -> rd_kafka_resp_err_t {
        crdkafka_produce(handle, topic, partition, value.baseAddress, value.count, key?.baseAddress, key?.count ?? 0, headers)
    }

    /// Serves delivery reports without blocking.
    public func poll() {
        rd_kafka_poll(handle, 0)
    }

    /// Waits until every enqueued message is delivered or failed. Throws if messages are still
    /// queued after `timeout`, or if any message failed since the previous flush.
    public func flush(timeout: Duration) throws(KafkaError) {
        let (seconds, attoseconds) = timeout.components
        let error = rd_kafka_flush(handle, Int32(seconds * 1000 + attoseconds / 1_000_000_000_000_000))
        let (failed, firstError) = deliveries.state.withLock { state in
            defer {
                state.failedSinceFlush = 0
                state.firstError = nil
            }
            return (state.failedSinceFlush, state.firstError)
        }
        if error != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(error, context: "messages still undelivered after \(timeout)")
        }
        if failed > 0 {
            throw KafkaError(message: "\(failed) message(s) could not be delivered: \(firstError ?? "unknown error")")
        }
    }

    /// Messages delivered so far.
    public var deliveredCount: Int { deliveries.state.withLock { $0.delivered } }
    /// Messages that failed so far.
    public var failedCount: Int { deliveries.state.withLock { $0.failed } }

    /// Number of partitions of `topic`, from the cluster's metadata.
    public func partitionCount(topic: String, timeout: Duration) throws(KafkaError) -> Int {
        guard let topicHandle = topicHandle(topic) else { throw KafkaError(message: "cannot open topic \(topic)") }
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let (seconds, attoseconds) = timeout.components
        let error = rd_kafka_metadata(handle, 0, topicHandle, &metadata, Int32(seconds * 1000 + attoseconds / 1_000_000_000_000_000))
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
