import CRdKafka

/// A librdkafka failure, with librdkafka's error code and text.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// `rd_kafka_resp_err_t` value (0 when the error did not come with one).
    public var code: Int32
    /// What failed and, where known, what to do about it.
    public var message: String

    public init(code: Int32 = 0, message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: rd_kafka_resp_err_t, context: String) {
        self.code = error.rawValue
        self.message = "\(context): \(String(cString: rd_kafka_err2str(error)))"
    }

    public var description: String { message }
}

/// librdkafka client properties (`bootstrap.servers`, `group.id`, `security.protocol`, ...), as
/// documented in librdkafka's CONFIGURATION.md. Values whose key mentions a secret are redacted
/// from descriptions.
public struct KafkaConfiguration: Sendable, CustomStringConvertible {
    public var properties: [String: String]

    public init(_ properties: [String: String] = [:]) {
        self.properties = properties
    }

    public subscript(key: String) -> String? {
        get { properties[key] }
        set { properties[key] = newValue }
    }

    /// Builds an `rd_kafka_conf_t`; the caller owns it until it hands it to `rd_kafka_new`.
    public func makeNativeConfiguration() throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else { throw KafkaError(message: "rd_kafka_conf_new failed") }
        var errorBuffer = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, key, value, &errorBuffer, errorBuffer.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let reason = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let shown = Self.isSecret(key) ? "<redacted>" : value
                throw KafkaError(message: "invalid Kafka property \(key)=\(shown): \(reason)")
            }
        }
        return conf
    }

    static func isSecret(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return lowered.contains("password") || lowered.contains("secret") || lowered.contains("key.pem")
            || lowered.contains("jaas") || lowered.contains("token")
    }

    public var description: String {
        properties.sorted(by: { $0.key < $1.key })
            .map { "\($0.key)=\(Self.isSecret($0.key) ? "<redacted>" : $0.value)" }
            .joined(separator: " ")
    }
}
