import ArgumentParser
import ClickHouseHTTP
import ClickHouseSink
import CTRPipeline
import CTRWindows
import Dispatch
import Foundation
import EventDecoding
import Ingest
import Logging
import Metrics
import MetricsHTTP
import Prometheus
import Yams

typealias Defaults = AggregatorConfiguration.Defaults

/// Settings resolve as: command-line flag, then `CTR_*` environment variable, then the YAML
/// configuration file (keys are the flag names without dashes prefix, e.g. `clickhouse-url`),
/// then the default.
struct AggregatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctr-aggregator",
        abstract: "Consume impressions and clicks from Kafka, count them in event-time windows, write CTR rows to ClickHouse.",
        discussion: """
            Every option also reads the environment variable CTR_<NAME> (e.g. --clickhouse-url: CTR_CLICKHOUSE_URL) \
            and the key <name> of the YAML file given with --config (e.g. clickhouse-url: http://...). \
            Precedence: flag > environment > file > default.
            ClickHouse credentials come only from CLICKHOUSE_USER and CLICKHOUSE_PASSWORD or --clickhouse-password-file \
            (CLICKHOUSE_PASSWORD_FILE), never from a flag.
            Kafka secrets (sasl.password, ssl.key.password, ...) belong in --kafka-properties-file or in \
            CTR_KAFKA_PROPERTY_<NAME> variables (sasl.password: CTR_KAFKA_PROPERTY_SASL_PASSWORD; '.' is '_', '_' is '__', \
            '-' is '___'), not on the command line, which every local user can read. Kafka properties apply in this order, \
            later ones winning: --brokers, the kafka-properties list (YAML) or CTR_KAFKA_PROPERTIES, the properties file, \
            CTR_KAFKA_PROPERTY_<NAME>, --kafka-property.
            """,
        version: "\(ctrPipelineVersion) (\(buildRevision))"
    )

    @Option(help: "YAML configuration file. (env: CTR_CONFIG)") var config: String?
    @Option(help: "Kafka bootstrap servers. (default: \(Defaults.brokers))") var brokers: String?
    @Option(help: "Consumer group id. (default: \(Defaults.groupID))") var groupId: String?
    @Option(help: "Impressions topic. (default: \(Defaults.impressionsTopic))") var impressionsTopic: String?
    @Option(help: "Clicks topic. (default: \(Defaults.clicksTopic))") var clicksTopic: String?
    @Option(help: "Conversions (purchases) topic; without it the pipeline runs without conversions. (default: none)") var conversionsTopic: String?
    @Option(help: "Single-topic mode: every message of this topic is an impression, and a click when --click-field is 1. (default: none)")
    var eventsTopic: String?
    @Option(help: "Click flag field in single-topic mode. (default: \(Defaults.clickField))") var clickField: String?
    @Option(help: "Dead-letter topic for refused and too-late messages. (default: \(Defaults.deadLetterTopic))") var dlqTopic: String?
    @Option(
        help: "Extra librdkafka property KEY=VALUE, e.g. security.protocol=SASL_SSL; repeatable. Not for secrets. (env: CTR_KAFKA_PROPERTIES, one per line)"
    )
    var kafkaProperty: [String] = []
    @Option(help: "File of librdkafka properties, one KEY=VALUE per line (values may contain commas; # comments): the place for secrets.")
    var kafkaPropertiesFile: String?
    @Option(help: "ClickHouse HTTP(S) URL. (default: \(Defaults.clickHouseURL))") var clickhouseUrl: String?
    @Option(help: "ClickHouse database. (default: \(Defaults.database))") var database: String?
    @Option(help: "File holding the ClickHouse password.") var clickhousePasswordFile: String?
    @Option(help: "CA certificates (PEM) for HTTPS to ClickHouse.") var clickhouseCaFile: String?
    @Option(help: "Window size in milliseconds, whole seconds. (default: \(Defaults.windows.windowSize.value))") var windowSizeMs: Int64?
    @Option(help: "Bounded out-of-orderness in milliseconds. (default: \(Defaults.windows.outOfOrderness.value))") var outOfOrdernessMs: Int64?
    @Option(help: "Allowed lateness in milliseconds. (default: \(Defaults.windows.allowedLateness.value))") var allowedLatenessMs: Int64?
    @Option(help: "Processing time after which a silent partition stops holding the watermark, ms. (default: \(Defaults.windows.idleTimeout.value))") var idleTimeoutMs: Int64?
    @Option(help: "When every partition has been idle this long (processing time), the open windows fire; e.g. 60s, 1500ms, 2m; 0 disables. (default: \(Defaults.windows.closeIdleAfter.map { "\($0.value)ms" } ?? "0"))")
    var closeIdleAfter: String?
    @Option(help: "A new consumer group starts every partition at its first message at or after this time (ISO-8601, e.g. 2026-11-30T00:00:00Z, or epoch ms); a group with committed offsets resumes there. (default: earliest)")
    var startFrom: String?
    @Option(help: "With --start-from: start every partition there even when the group has committed offsets (true/false). (default: false)")
    var resetOffsets: Bool?
    @Option(help: "Largest accepted message value in bytes. (default: \(Defaults.decoder.maximumMessageBytes))") var maxMessageBytes: Int?
    @Option(help: "Earliest accepted event time, epoch ms. (default: \(EventDecoder.defaultTimestampRange.lowerBound) = 2000-01-01)") var minTimestampMs: Int64?
    @Option(help: "Latest accepted event time, epoch ms. (default: \(EventDecoder.defaultTimestampRange.upperBound) = 2100-01-01)") var maxTimestampMs: Int64?
    @Option(help: "How far an event time may be ahead of processing time before it is refused as timestamp_in_future, ms. (default: \(EventDecoder.defaultMaximumFuture.value))")
    var maxFutureMs: Int64?
    @Option(help: "Comma-separated event fields (string or integer, at most 8) that join product_id in the window key, e.g. campaign_id,country,device_type; each needs a String column of that name in ctr_results_raw. (default: none)")
    var dimensions: String?
    @Option(help: "Event field that identifies an event: an event whose id its window already counted is not counted again. (default: none)")
    var dedupField: String?
    @Option(help: "Rows per insert batch, at most; a batch is one block. (default: \(Defaults.batchMaxRows))") var batchMaxRows: Int?
    @Option(help: "Longest wait before a batch is sent while ClickHouse is not busy with an earlier one, ms. (default: \(Defaults.batchMaxDelay.milliseconds))") var batchMaxDelayMs: Int?
    @Option(help: "Rows buffered for ClickHouse above which consuming pauses. (default: \(Defaults.bufferMaxRows))") var bufferMaxRows: Int?
    @Option(help: "Open (product, window) pairs above which consuming pauses until windows close. (default: \(Defaults.maxOpenProductWindows))")
    var maxOpenProductWindows: Int?
    @Option(help: "First retry delay, ms. (default: \(Defaults.retry.initialDelay.milliseconds))") var retryInitialMs: Int?
    @Option(help: "Backoff multiplier. (default: \(Defaults.retry.multiplier))") var retryMultiplier: Double?
    @Option(help: "Longest retry delay, ms. (default: \(Defaults.retry.maximumDelay.milliseconds))") var retryMaxMs: Int?
    @Option(help: "Attempts before giving up, 0 = retry forever. (default: 0)") var retryMaxAttempts: Int?
    @Option(help: "ClickHouse request timeout, ms. (default: \(Defaults.requestTimeout.milliseconds))") var requestTimeoutMs: Int?
    @Option(help: "Offset commit interval, ms. (default: \(Defaults.commitInterval.milliseconds))") var commitIntervalMs: Int?
    @Option(help: "Port for /metrics, /health and /ready; 0 disables. (default: \(Defaults.metricsPort))") var metricsPort: Int?
    @Option(help: "Address the metrics server binds; 0.0.0.0 (or ::) exposes it on every interface, as a container needs. (default: \(Defaults.metricsHost))")
    var metricsHost: String?
    @Option(help: "/health answers 503 when the pipeline loop has made no progress for this long; e.g. 60s, 1500ms, 2m. (default: \(Defaults.healthStallTimeout.milliseconds)ms)")
    var healthStallTimeout: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error. (default: info)") var logLevel: String?
    @Option(help: "Log format: text or json. (default: text)") var logFormat: String?

    func run() throws {
        var settings = try Settings(configFile: config ?? ProcessInfo.processInfo.environment["CTR_CONFIG"])
        let logger = makeLogger(format: settings.string("log-format", logFormat, default: "text"), level: settings.string("log-level", logLevel, default: "info"))
        let kafka = try kafkaConfiguration(&settings, logger: logger)
        let timeout = Duration.milliseconds(try settings.int("request-timeout-ms", requestTimeoutMs, default: Int(Defaults.requestTimeout.milliseconds)))
        let endpoint = ClickHouseEndpoint(
            url: settings.string("clickhouse-url", clickhouseUrl, default: Defaults.clickHouseURL),
            database: settings.string("database", database, default: Defaults.database),
            credentials: try ClickHouseCredentials.fromEnvironment(passwordFile: settings.optional("clickhouse-password-file", clickhousePasswordFile)),
            caFile: settings.optional("clickhouse-ca-file", clickhouseCaFile),
            requestTimeout: timeout
        )
        let maxAttempts = try settings.int("retry-max-attempts", retryMaxAttempts, default: 0)
        // Comma-separated on the command line and in CTR_DIMENSIONS; a YAML sequence arrives one item per line.
        let dimensionFields = settings.string("dimensions", dimensions, default: "").split(whereSeparator: { $0 == "," || $0 == "\n" })
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let deduplicationField = settings.optional("dedup-field", dedupField).map { $0.trimmingCharacters(in: .whitespaces) }
        let clickFieldName = settings.string("click-field", clickField, default: Defaults.clickField)
        do {
            try EventDecoder.validateFieldNames(
                dimensions: dimensionFields, deduplicationField: deduplicationField,
                clickField: settings.optional("events-topic", eventsTopic) == nil ? nil : clickFieldName
            )
        } catch {
            throw ValidationError(error.description)
        }
        let configuration = AggregatorConfiguration(
            kafka: kafka,
            groupID: settings.string("group-id", groupId, default: Defaults.groupID),
            impressionsTopic: settings.string("impressions-topic", impressionsTopic, default: Defaults.impressionsTopic),
            clicksTopic: settings.string("clicks-topic", clicksTopic, default: Defaults.clicksTopic),
            conversionsTopic: settings.optional("conversions-topic", conversionsTopic),
            eventsTopic: settings.optional("events-topic", eventsTopic),
            clickField: clickFieldName,
            deadLetterTopic: settings.string("dlq-topic", dlqTopic, default: Defaults.deadLetterTopic),
            clickHouse: endpoint,
            windows: WindowConfiguration(
                windowSize: Milliseconds(try settings.int64("window-size-ms", windowSizeMs, default: Defaults.windows.windowSize.value)),
                outOfOrderness: Milliseconds(try settings.int64("out-of-orderness-ms", outOfOrdernessMs, default: Defaults.windows.outOfOrderness.value)),
                allowedLateness: Milliseconds(try settings.int64("allowed-lateness-ms", allowedLatenessMs, default: Defaults.windows.allowedLateness.value)),
                idleTimeout: Milliseconds(try settings.int64("idle-timeout-ms", idleTimeoutMs, default: Defaults.windows.idleTimeout.value)),
                closeIdleAfter: try durationMilliseconds("close-idle-after", settings.string("close-idle-after", closeIdleAfter, default: "\(Defaults.windows.closeIdleAfter?.value ?? 0)ms"))
                    .flatMap { $0 > 0 ? Milliseconds($0) : nil }
            ),
            decoder: EventDecoder(
                maximumMessageBytes: try settings.int("max-message-bytes", maxMessageBytes, default: Defaults.decoder.maximumMessageBytes),
                timestampRange: try settings.int64("min-timestamp-ms", minTimestampMs, default: EventDecoder.defaultTimestampRange.lowerBound)
                    ... settings.int64("max-timestamp-ms", maxTimestampMs, default: EventDecoder.defaultTimestampRange.upperBound),
                maximumFuture: Milliseconds(try settings.int64("max-future-ms", maxFutureMs, default: EventDecoder.defaultMaximumFuture.value)),
                dimensionFields: dimensionFields,
                deduplicationField: deduplicationField
            ),
            batchMaxRows: try settings.int("batch-max-rows", batchMaxRows, default: Defaults.batchMaxRows),
            batchMaxDelay: .milliseconds(try settings.int("batch-max-delay-ms", batchMaxDelayMs, default: Int(Defaults.batchMaxDelay.milliseconds))),
            bufferMaxRows: try settings.int("buffer-max-rows", bufferMaxRows, default: Defaults.bufferMaxRows),
            retry: RetryPolicy(
                initialDelay: .milliseconds(try settings.int("retry-initial-ms", retryInitialMs, default: Int(Defaults.retry.initialDelay.milliseconds))),
                multiplier: try settings.double("retry-multiplier", retryMultiplier, default: Defaults.retry.multiplier),
                maximumDelay: .milliseconds(try settings.int("retry-max-ms", retryMaxMs, default: Int(Defaults.retry.maximumDelay.milliseconds))),
                maximumAttempts: maxAttempts > 0 ? maxAttempts : nil
            ),
            commitInterval: .milliseconds(try settings.int("commit-interval-ms", commitIntervalMs, default: Int(Defaults.commitInterval.milliseconds))),
            startFrom: try settings.optional("start-from", startFrom).map { try timestamp("start-from", $0) },
            resetOffsets: try settings.bool("reset-offsets", resetOffsets, default: false),
            maxOpenProductWindows: try settings.int("max-open-product-windows", maxOpenProductWindows, default: Defaults.maxOpenProductWindows)
        )
        if configuration.resetOffsets && configuration.startFrom == nil {
            throw ValidationError("--reset-offsets needs --start-from: it says where every partition starts")
        }
        let port = try settings.int("metrics-port", metricsPort, default: Defaults.metricsPort)
        let host = settings.string("metrics-host", metricsHost, default: Defaults.metricsHost)
        guard let stallMilliseconds = try durationMilliseconds("health-stall-timeout", settings.string("health-stall-timeout", healthStallTimeout, default: "\(Defaults.healthStallTimeout.milliseconds)ms")),
            stallMilliseconds > 0
        else { throw ValidationError("--health-stall-timeout must be positive") }
        let stallTimeout = Duration.milliseconds(stallMilliseconds)
        try settings.rejectUnknownKeys()

        // Metrics go through swift-metrics to a Prometheus registry served on /metrics.
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = PipelineMetrics.histogramBuckets
        MetricsSystem.bootstrap(factory)
        PipelineMetrics.recordBuildInfo(version: ctrPipelineVersion, revision: buildRevision)
        let pipeline = AggregatorPipeline(configuration: configuration, logger: logger)
        var server: MetricsServer?
        if port > 0 {
            let metrics = pipeline.metrics
            let endpoints = MetricsEndpoints(
                metrics: { registry.emitToString() + ProcessMetrics.current().prometheusText },
                health: {
                    let stalled = metrics.timeSinceProgress
                    return stalled <= stallTimeout
                        ? .healthy : .unhealthy(reason: "the pipeline loop has made no progress for \(stalled) (limit \(stallTimeout))")
                },
                ready: { metrics.isReady }
            )
            let started: MetricsServer
            do {
                started = try MetricsServer(
                    configuration: MetricsServerConfiguration(host: host, port: port), endpoints: endpoints,
                    onAcceptError: { logger.warning("\($0)") }
                )
            } catch {
                logger.critical("\(error)")
                throw ExitCode(1)
            }
            started.start()
            server = started
            logger.info("serving metrics", metadata: ["url": "http://\(host.contains(":") ? "[\(host)]" : host):\(started.port)/metrics"])
        }
        defer { server?.stop() }
        let signals = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                logger.info("signal received, stopping", metadata: ["signal": "\(number)"])
                pipeline.stop()
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            try pipeline.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }

    /// The librdkafka properties, from (lowest precedence first) `--brokers`, the
    /// `kafka-properties` list, the properties file, `CTR_KAFKA_PROPERTY_<NAME>` and
    /// `--kafka-property`; checked for the consumer.
    private func kafkaConfiguration(_ settings: inout Settings, logger: Logger) throws -> KafkaConfiguration {
        var kafka = KafkaConfiguration(["bootstrap.servers": settings.string("brokers", brokers, default: Defaults.brokers)])
        do {
            for item in settings.list("kafka-properties") {
                let (key, value) = try KafkaConfiguration.parseProperty(item)
                kafka[key] = value
            }
            if let path = settings.optional("kafka-properties-file", kafkaPropertiesFile) {
                kafka.properties.merge(try KafkaConfiguration.readPropertiesFile(atPath: path)) { $1 }
            }
            kafka.properties.merge(KafkaConfiguration.properties(fromEnvironment: ProcessInfo.processInfo.environment)) { $1 }
            for item in kafkaProperty {
                let (key, value) = try KafkaConfiguration.parseProperty(item)
                if KafkaConfiguration.isSecret(key) {
                    logger.warning(
                        "a secret Kafka property is on the command line, where every local user can read it; use --kafka-properties-file or an environment variable",
                        metadata: ["property": "\(key)", "variable": "\(KafkaConfiguration.environmentName(of: key))"]
                    )
                }
                kafka[key] = value
            }
            try kafka.validateForConsumer()
        } catch let error as KafkaConfiguration.SourceError {
            throw ValidationError(error.description)
        } catch let error as KafkaError {
            throw ValidationError(error.message)
        }
        return kafka
    }

    private func makeLogger(format: String, level: String) -> Logger {
        let json = format.lowercased() == "json"
        LoggingSystem.bootstrap { label in
            json ? JSONLogHandler(label: label) as any LogHandler : StreamLogHandler.standardError(label: label)
        }
        var logger = Logger(label: "ctr-aggregator")
        logger.logLevel = Logger.Level(rawValue: level.lowercased()) ?? .info
        return logger
    }
}

/// Resolves settings from flags, `CTR_*` environment variables and the YAML file.
struct Settings {
    private var file: [String: String] = [:]
    /// YAML sequences, item by item (never joined and split again).
    private var fileLists: [String: [String]] = [:]
    private var used: Set<String> = ["log-format", "log-level", "kafka-properties"]
    private let environment = ProcessInfo.processInfo.environment
    private let configFile: String?

    init(configFile: String?) throws {
        self.configFile = configFile
        guard let configFile else { return }
        guard let text = try? String(contentsOfFile: configFile, encoding: .utf8) else {
            throw ValidationError("cannot read the configuration file \(configFile)")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ValidationError("the configuration file \(configFile) is not valid YAML: \(error)")
        }
        guard let mapping = node?.mapping else {
            if node == nil { return }
            throw ValidationError("the configuration file \(configFile) must be a mapping of option names to values")
        }
        for (key, value) in mapping {
            guard let name = key.string else { continue }
            if let sequence = value.sequence {
                fileLists[name] = sequence.compactMap(\.string)
                file[name] = fileLists[name]!.joined(separator: "\n")
            } else {
                file[name] = value.string ?? ""
            }
        }
    }

    private static func environmentName(_ key: String) -> String {
        "CTR_" + key.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    mutating func optional(_ key: String, _ flag: String?) -> String? {
        used.insert(key)
        return flag ?? environment[Self.environmentName(key)] ?? file[key]
    }

    mutating func string(_ key: String, _ flag: String?, default value: String) -> String {
        optional(key, flag) ?? value
    }

    /// A list setting: the environment variable's items (one per line; see
    /// `KafkaConfiguration.splitPropertyList` for the comma rule), else the YAML sequence's
    /// items as they are (a YAML string is split like the variable).
    mutating func list(_ key: String) -> [String] {
        used.insert(key)
        if let text = environment[Self.environmentName(key)] { return KafkaConfiguration.splitPropertyList(text) }
        if let items = fileLists[key] { return items.filter { !$0.isEmpty } }
        return file[key].map(KafkaConfiguration.splitPropertyList) ?? []
    }

    private mutating func parsed<T>(_ key: String, _ flag: T?, default value: T, _ parse: (String) -> T?) throws -> T {
        if let flag { used.insert(key); return flag }
        guard let text = optional(key, nil) else { return value }
        guard let parsedValue = parse(text) else {
            throw ValidationError("\(key) must be a number, got '\(text)' (from \(environment[Self.environmentName(key)] != nil ? Self.environmentName(key) : configFile ?? "?"))")
        }
        return parsedValue
    }

    mutating func int(_ key: String, _ flag: Int?, default value: Int) throws -> Int { try parsed(key, flag, default: value) { Int($0) } }
    mutating func int64(_ key: String, _ flag: Int64?, default value: Int64) throws -> Int64 { try parsed(key, flag, default: value) { Int64($0) } }
    mutating func double(_ key: String, _ flag: Double?, default value: Double) throws -> Double { try parsed(key, flag, default: value) { Double($0) } }
    mutating func bool(_ key: String, _ flag: Bool?, default value: Bool) throws -> Bool { try parsed(key, flag, default: value) { Bool($0) } }

    func rejectUnknownKeys() throws {
        let unknown = Set(file.keys).subtracting(used)
        guard unknown.isEmpty else {
            throw ValidationError(
                "unknown setting(s) \(unknown.sorted().joined(separator: ", ")) in \(configFile ?? "the configuration file"); see ctr-aggregator --help"
            )
        }
    }
}

/// One JSON object per log line on standard error.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: String] = [
            "ts": ISO8601DateFormatter().string(from: Date()), "level": event.level.rawValue, "logger": label,
            "message": event.message.description,
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { object[key] = value.description }
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            FileHandle.standardError.write(data + Data("\n".utf8))
        }
    }
}

/// The release this source tree is; `ctr_build_info{version}` and `--version`.
let ctrPipelineVersion = "0.1.0"

// Before any thread starts (see AllocatorSettings).
AllocatorSettings.apply(environment: ProcessInfo.processInfo.environment)
AggregatorCommand.main()

/// Milliseconds of a duration such as `60s`, `1500ms`, `2m` or `1h` (a bare number is seconds).
func durationMilliseconds(_ name: String, _ text: String) throws -> Int64? {
    let units: [(suffix: String, factor: Int64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    for unit in units where trimmed.hasSuffix(unit.suffix) {
        if let value = Int64(trimmed.dropLast(unit.suffix.count)), value >= 0 { return value * unit.factor }
    }
    if let seconds = Int64(trimmed), seconds >= 0 { return seconds * 1_000 }
    throw ValidationError("--\(name) expects a duration such as 60s, 1500ms or 2m, got \(text)")
}

/// An instant given as ISO-8601 with a time zone (`2026-11-30T00:00:00Z`) or epoch milliseconds.
func timestamp(_ name: String, _ text: String) throws -> Timestamp {
    if let milliseconds = Int64(text) { return Timestamp(milliseconds: milliseconds) }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text) {
        return Timestamp(milliseconds: Int64((date.timeIntervalSince1970 * 1000).rounded()))
    }
    throw ValidationError("--\(name) expects an ISO-8601 time with a zone (2026-11-30T00:00:00Z) or epoch milliseconds, got \(text)")
}
