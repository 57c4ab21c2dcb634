import CRdKafka

/// A failure to set up or drive the dev cluster.
public struct DevBrokerError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// librdkafka's mock Kafka cluster (`rdkafka_mock.h`), serving the real Kafka protocol on
/// loopback ports for tests and for running the pipeline without a Kafka installation.
///
/// Data lives in memory only; librdkafka 2.0.2 keeps at most 5 MiB per partition (older
/// messages are dropped as retention would drop them). Thread-safe: the mock API hands every
/// call to the cluster's own thread.
public final class DevBroker: @unchecked Sendable {
    private let handle: OpaquePointer
    private let cluster: OpaquePointer
    public let brokerCount: Int

    /// Starts a cluster of `brokers` brokers.
    public init(brokers: Int) throws(DevBrokerError) {
        guard brokers >= 1 else { throw DevBrokerError("--brokers must be at least 1") }
        guard let conf = rd_kafka_conf_new() else { throw DevBrokerError("rd_kafka_conf_new failed") }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errorBuffer, errorBuffer.count) else {
            throw DevBrokerError("cannot create the librdkafka handle for the mock cluster")
        }
        guard let cluster = rd_kafka_mock_cluster_new(handle, Int32(brokers)) else {
            rd_kafka_destroy(handle)
            throw DevBrokerError("cannot create the mock cluster")
        }
        self.handle = handle
        self.cluster = cluster
        self.brokerCount = brokers
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(handle)
    }

    /// Comma-separated `host:port` list of the brokers.
    public var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(cluster)) }

    /// Creates `topic` with `partitions` partitions and `replicationFactor` replicas.
    public func createTopic(_ topic: String, partitions: Int, replicationFactor: Int) throws(DevBrokerError) {
        let error = rd_kafka_mock_topic_create(cluster, topic, Int32(partitions), Int32(min(replicationFactor, brokerCount)))
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw DevBrokerError("cannot create topic \(topic): \(String(cString: rd_kafka_err2str(error)))")
        }
    }

    /// Applies one fault-injection command; returns what was done.
    public func apply(_ command: FaultCommand) throws(DevBrokerError) -> String {
        let error: rd_kafka_resp_err_t
        switch command {
        case .brokerDown(let id):
            error = rd_kafka_mock_broker_set_down(cluster, Int32(id))
        case .brokerUp(let id):
            error = rd_kafka_mock_broker_set_up(cluster, Int32(id))
        case .requestErrors(let apiKey, let count, let errorCode):
            var codes = Array(repeating: rd_kafka_resp_err_t(rawValue: errorCode), count: count)
            rd_kafka_mock_push_request_errors_array(cluster, Int16(apiKey), codes.count, &codes)
            error = RD_KAFKA_RESP_ERR_NO_ERROR
        case .clearErrors(let apiKey):
            rd_kafka_mock_clear_request_errors(cluster, Int16(apiKey))
            error = RD_KAFKA_RESP_ERR_NO_ERROR
        case .setRoundTripTime(let id, let milliseconds):
            error = rd_kafka_mock_broker_set_rtt(cluster, Int32(id), Int32(milliseconds))
        }
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw DevBrokerError("\(command) failed: \(String(cString: rd_kafka_err2str(error)))")
        }
        return "ok \(command)"
    }
}

/// A fault to inject into the dev cluster, parsed from one line of the control protocol:
/// `broker-down ID`, `broker-up ID`, `request-errors APIKEY COUNT ERRCODE`,
/// `clear-errors APIKEY`, `rtt ID MILLISECONDS`.
public enum FaultCommand: Sendable, Equatable, CustomStringConvertible {
    case brokerDown(Int)
    case brokerUp(Int)
    case requestErrors(apiKey: Int, count: Int, errorCode: Int32)
    case clearErrors(apiKey: Int)
    case setRoundTripTime(broker: Int, milliseconds: Int)

    public init(line: String) throws(DevBrokerError) {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        let numbers = words.dropFirst().compactMap { Int($0) }
        guard let verb = words.first, numbers.count == words.count - 1 else {
            throw DevBrokerError("cannot parse command '\(line)': expected a verb and numbers")
        }
        switch (verb, numbers.count) {
        case ("broker-down", 1): self = .brokerDown(numbers[0])
        case ("broker-up", 1): self = .brokerUp(numbers[0])
        case ("request-errors", 3): self = .requestErrors(apiKey: numbers[0], count: numbers[1], errorCode: Int32(numbers[2]))
        case ("clear-errors", 1): self = .clearErrors(apiKey: numbers[0])
        case ("rtt", 2): self = .setRoundTripTime(broker: numbers[0], milliseconds: numbers[1])
        default:
            throw DevBrokerError(
                "unknown command '\(line)': use broker-down ID, broker-up ID, request-errors APIKEY COUNT ERRCODE, clear-errors APIKEY, rtt ID MS"
            )
        }
    }

    public var description: String {
        switch self {
        case .brokerDown(let id): "broker-down \(id)"
        case .brokerUp(let id): "broker-up \(id)"
        case .requestErrors(let apiKey, let count, let code): "request-errors \(apiKey) \(count) \(code)"
        case .clearErrors(let apiKey): "clear-errors \(apiKey)"
        case .setRoundTripTime(let broker, let milliseconds): "rtt \(broker) \(milliseconds)"
        }
    }
}
