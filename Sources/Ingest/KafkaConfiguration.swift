import CRdKafka

#if canImport(Glibc)
import Glibc
#endif

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

    /// librdkafka's local queue stayed full (`RD_KAFKA_RESP_ERR__QUEUE_FULL`): back off, or
    /// pause consuming, and try again later.
    public var isQueueFull: Bool { code == RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue }

    /// The message is larger than the producer's `message.max.bytes` (refused locally) or the
    /// topic's `max.message.bytes` (refused by the broker).
    public var isMessageTooLarge: Bool { code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE.rawValue }

    public var description: String { message }
}

/// librdkafka client properties (`bootstrap.servers`, `group.id`, `security.protocol`, ...), as
/// documented in librdkafka's CONFIGURATION.md. Values whose key mentions a secret are redacted
/// from descriptions.
///
/// Secrets should not be given on the command line (every local user can read a process's
/// arguments): ``parsePropertiesFile(_:)`` reads a properties file and
/// ``properties(fromEnvironment:)`` reads `CTR_KAFKA_PROPERTY_<NAME>` variables; neither
/// splits values on commas.
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
    ///
    /// A configuration with `group.id` is a consumer's and is checked with
    /// ``validateForConsumer()`` first.
    public func makeNativeConfiguration() throws(KafkaError) -> OpaquePointer {
        if properties["group.id"] != nil { try validateForConsumer() }
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

    /// Refuses settings the aggregator's consumer cannot work with: a cooperative
    /// (incremental) assignor. The consumer assigns and revokes whole assignments (eager
    /// rebalancing: `rd_kafka_assign`, drop everything on revoke); with
    /// `cooperative-sticky` librdkafka would hand it incremental changes it would misread.
    public func validateForConsumer() throws(KafkaError) {
        if let strategy = properties["partition.assignment.strategy"] {
            let cooperative = strategy.split(separator: ",").map { String($0).trimmedBlanks() }.filter { $0.lowercased().contains("cooperative") }
            if !cooperative.isEmpty {
                throw KafkaError(
                    message: "partition.assignment.strategy=\(strategy) is not supported: the aggregator rebalances eagerly "
                        + "(whole assignments), so a cooperative assignor (\(cooperative.joined(separator: ", "))) cannot be used; "
                        + "use range (the default) or roundrobin"
                )
            }
        }
    }

    /// Whether `key` names a secret (redacted from descriptions, never to be given on a
    /// command line).
    public static func isSecret(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return lowered.contains("password") || lowered.contains("secret") || lowered.contains("key.pem")
            || lowered.contains("jaas") || lowered.contains("token") || lowered.contains("sasl.oauthbearer.config")
    }

    public var description: String {
        properties.sorted(by: { $0.key < $1.key })
            .map { "\($0.key)=\(Self.isSecret($0.key) ? "<redacted>" : $0.value)" }
            .joined(separator: " ")
    }

    // MARK: Sources of properties

    /// A property source that could not be read, with where and why.
    public struct SourceError: Error, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Parses one `KEY=VALUE` item (from a flag or a YAML list). The value is everything after
    /// the first `=`, commas and further `=` included.
    public static func parseProperty(_ item: String) throws(SourceError) -> (key: String, value: String) {
        let scalars = item.unicodeScalars
        guard let equals = scalars.firstIndex(of: "=") else {
            throw SourceError("a Kafka property must be KEY=VALUE, got \(redactedItem(item))")
        }
        let key = String(scalars[..<equals]).trimmedBlanks()
        guard !key.isEmpty else { throw SourceError("a Kafka property must be KEY=VALUE, got an empty key") }
        return (key, String(scalars[scalars.index(after: equals)...]))
    }

    /// Parses the text of a properties file: one `KEY=VALUE` per line. Blank lines and lines
    /// starting with `#` or `!` are ignored. The key is trimmed; the value is everything
    /// after the first `=` with leading blanks removed and nothing else changed (commas, `=`,
    /// `#` and trailing blanks are part of it); a trailing `\r` (CRLF files) is dropped.
    /// There is no escaping and no line continuation.
    public static func parsePropertiesFile(_ text: String, name: String = "the Kafka properties file") throws(SourceError) -> [String: String] {
        // Scalars, not Characters: "\r\n" and "=" followed by a combining mark are single Characters.
        var properties: [String: String] = [:]
        for (number, rawLine) in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine
            if line.last == "\r" { line = line.dropLast() }
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.first == "#" || trimmed.first == "!" { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw SourceError("\(name), line \(number + 1): expected KEY=VALUE")
            }
            let key = String(trimmed[..<equals]).trimmedBlanks()
            guard !key.isEmpty else { throw SourceError("\(name), line \(number + 1): empty key") }
            properties[key] = String(trimmed[trimmed.index(after: equals)...].drop(while: { $0 == " " || $0 == "\t" }))
        }
        return properties
    }

    /// Reads and parses a properties file (see ``parsePropertiesFile(_:name:)``).
    public static func readPropertiesFile(atPath path: String) throws(SourceError) -> [String: String] {
        guard let file = fopen(path, "rb") else {
            throw SourceError("cannot read the Kafka properties file \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count > 0 { bytes.append(contentsOf: buffer[0..<count]) }
            if count < buffer.count { break }
        }
        guard ferror(file) == 0 else { throw SourceError("cannot read the Kafka properties file \(path)") }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw SourceError("the Kafka properties file \(path) is not valid UTF-8")
        }
        return try parsePropertiesFile(text, name: path)
    }

    /// Prefix of the environment variables read by ``properties(fromEnvironment:)``.
    public static let environmentPrefix = "CTR_KAFKA_PROPERTY_"

    /// Properties from `CTR_KAFKA_PROPERTY_<NAME>` variables, one property per variable, the
    /// value taken verbatim. `<NAME>` is the property name in upper case with `.` written `_`,
    /// `_` written `__` and `-` written `___` (the convention of Confluent's Kafka images):
    /// `CTR_KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`,
    /// `CTR_KAFKA_PROPERTY_SSL_CIPHER_SUITES` sets `ssl.cipher.suites`.
    public static func properties(fromEnvironment environment: [String: String]) -> [String: String] {
        var properties: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix(environmentPrefix) && name.count > environmentPrefix.count {
            properties[propertyName(environmentName: String(name.dropFirst(environmentPrefix.count)))] = value
        }
        return properties
    }

    /// The `CTR_KAFKA_PROPERTY_<NAME>` variable that sets `key`.
    public static func environmentName(of key: String) -> String {
        environmentPrefix
            + key.uppercased().replacingAll("_", with: "__").replacingAll("-", with: "___").replacingAll(".", with: "_")
    }

    /// `SASL_PASSWORD` → `sasl.password`; `__` → `_`, `___` → `-`.
    static func propertyName(environmentName: String) -> String {
        var result = ""
        var underscores = 0
        func flush() {
            switch underscores {
            case 0: break
            case 1: result += "."
            case 2: result += "_"
            case 3: result += "-"
            default: result += String(repeating: "_", count: underscores)
            }
            underscores = 0
        }
        for character in environmentName {
            if character == "_" {
                underscores += 1
            } else {
                flush()
                result += character.lowercased()
            }
        }
        flush()
        return result
    }

    /// Splits the legacy `CTR_KAFKA_PROPERTIES` value into `KEY=VALUE` items.
    ///
    /// Items are separated by newlines. A value without a newline is split on commas, but
    /// only on a comma followed by something that looks like the next `key=` (a property
    /// name: lower-case letters, digits, `.`, `_`, `-`), so `ssl.cipher.suites=A,B` stays one
    /// item. A value that itself contains `,name=` cannot be written this way: use the
    /// properties file or `CTR_KAFKA_PROPERTY_<NAME>`.
    public static func splitPropertyList(_ text: String) -> [String] {
        let scalars = text.unicodeScalars
        if scalars.contains("\n") {
            return scalars.split(separator: "\n").map { String($0).trimmedBlanks() }.filter { !$0.isEmpty }
        }
        var items: [String] = []
        var current = String.UnicodeScalarView()
        var rest = scalars[...]
        while let comma = rest.firstIndex(of: ",") {
            let after = rest[scalars.index(after: comma)...]
            current.append(contentsOf: rest[..<comma])
            if looksLikePropertyStart(after) {
                items.append(String(current))
                current = String.UnicodeScalarView()
            } else {
                current.append(",")
            }
            rest = after
        }
        current.append(contentsOf: rest)
        items.append(String(current))
        return items.map { $0.trimmedBlanks() }.filter { !$0.isEmpty }
    }

    private static func looksLikePropertyStart(_ text: Substring.UnicodeScalarView) -> Bool {
        let candidate = text.drop(while: { $0 == " " })
        guard let equals = candidate.firstIndex(of: "="), equals > candidate.startIndex else { return false }
        return candidate[..<equals].allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "_" || $0 == "-" }
    }

    private static func redactedItem(_ item: String) -> String {
        isSecret(item) ? "<redacted>" : "'\(item)'"
    }
}

extension String {
    fileprivate func replacingAll(_ target: Unicode.Scalar, with replacement: String) -> String {
        var result = ""
        for scalar in unicodeScalars {
            if scalar == target { result += replacement } else { result.unicodeScalars.append(scalar) }
        }
        return result
    }

    /// Without leading and trailing spaces and tabs.
    fileprivate func trimmedBlanks() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" }),
            let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" })
        else { return "" }
        return String(scalars[first...last])
    }
}
