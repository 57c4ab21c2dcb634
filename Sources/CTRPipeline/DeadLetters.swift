import Ingest

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

    /// The headers written with the dead letter.
    public var headers: [(String, [UInt8])] {
        [
            ("ctr-reason", Array(reason.rawValue.utf8)),
            ("ctr-detail", Array(detail.utf8)),
            ("ctr-source-topic", Array(source.topic.utf8)),
            ("ctr-source-partition", Array(String(source.partition).utf8)),
            ("ctr-source-offset", Array(String(offset).utf8)),
        ]
    }
}

/// Where refused messages go.
public protocol DeadLetterPublishing: AnyObject {
    /// Queues `letter` for delivery.
    func publish(_ letter: DeadLetter) throws(KafkaError)
    /// Waits until every queued letter is delivered; throws if any failed.
    func flush(timeout: Duration) throws(KafkaError)
}

/// Publishes dead letters to a Kafka topic (`ctr-dlq` by default), keyed like the original.
public final class KafkaDeadLetterPublisher: DeadLetterPublishing {
    private let producer: KafkaProducer
    public let topic: String

    public init(configuration: KafkaConfiguration, topic: String) throws(KafkaError) {
        var configuration = configuration
        for key in ["group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
                    "partition.assignment.strategy", "queued.min.messages", "session.timeout.ms", "heartbeat.interval.ms"] {
            configuration.properties.removeValue(forKey: key)
        }
        self.producer = try KafkaProducer(configuration: configuration)
        self.topic = topic
    }

    public func publish(_ letter: DeadLetter) throws(KafkaError) {
        try producer.send(topic: topic, key: letter.key.isEmpty ? nil : letter.key, value: letter.value, headers: letter.headers)
    }

    public func flush(timeout: Duration) throws(KafkaError) {
        try producer.flush(timeout: timeout)
    }
}
