import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import EventDecoding
import Ingest

/// Everything `ctr-aggregator` needs to run; the executable fills it from flags, environment
/// and the configuration file.
public struct AggregatorConfiguration: Sendable {
    /// librdkafka properties of the consumer and the dead-letter producer, including
    /// `bootstrap.servers` and any SASL/SSL settings.
    public var kafka: KafkaConfiguration
    public var groupID: String
    public var impressionsTopic: String
    public var clicksTopic: String
    /// Optional topic of purchase events; `nil` runs without conversions.
    public var conversionsTopic: String?
    /// Single-topic mode: every message of this topic is an impression, and also a click when
    /// its ``clickField`` is 1. Replaces the impressions and clicks topics.
    public var eventsTopic: String?
    /// The click flag's field name in single-topic mode.
    public var clickField: String
    public var deadLetterTopic: String
    public var clickHouse: ClickHouseEndpoint
    public var windows: WindowConfiguration
    public var decoder: EventDecoder
    /// Rows that make a batch full.
    public var batchMaxRows: Int
    /// Longest time a row waits in an open batch while the sink is idle (while it still writes
    /// earlier batches, the open batch waits for it, or until full: fewer, larger inserts).
    public var batchMaxDelay: Duration
    /// Rows buffered towards ClickHouse above which consuming pauses (bounded memory while
    /// ClickHouse is slow or down); it resumes below half of it.
    public var bufferMaxRows: Int
    public var retry: RetryPolicy
    /// How often consumed offsets are committed (when they moved).
    public var commitInterval: Duration
    /// Largest number of messages handled per poll.
    public var pollBatchSize: Int
    /// How often a summary line is logged.
    public var statusInterval: Duration
    /// Partitions without a committed offset start at the first message at or after this time.
    public var startFrom: Timestamp?
    /// With ``startFrom``: every partition starts there, ignoring committed offsets.
    public var resetOffsets: Bool
    /// Open (product, window) pairs above which consuming pauses until windows close.
    public var maxOpenProductWindows: Int

    /// The topics consumed, in subscription order.
    public var inputTopics: [String] {
        if let eventsTopic { return [eventsTopic] }
        return [impressionsTopic, clicksTopic] + (conversionsTopic.map { [$0] } ?? [])
    }

    /// What messages of `topic` are.
    public func shape(of topic: String) -> EventShape {
        if topic == eventsTopic { return .impressionWithClickFlag(clickField: clickField) }
        if topic == clicksTopic { return .kind(.click) }
        if topic == conversionsTopic { return .kind(.conversion) }
        return .kind(.impression)
    }

    public init(
        kafka: KafkaConfiguration,
        groupID: String = Defaults.groupID,
        impressionsTopic: String = Defaults.impressionsTopic,
        clicksTopic: String = Defaults.clicksTopic,
        conversionsTopic: String? = nil,
        eventsTopic: String? = nil,
        clickField: String = Defaults.clickField,
        deadLetterTopic: String = Defaults.deadLetterTopic,
        clickHouse: ClickHouseEndpoint,
        windows: WindowConfiguration = Defaults.windows,
        decoder: EventDecoder = Defaults.decoder,
        batchMaxRows: Int = Defaults.batchMaxRows,
        batchMaxDelay: Duration = Defaults.batchMaxDelay,
        bufferMaxRows: Int = Defaults.bufferMaxRows,
        retry: RetryPolicy = Defaults.retry,
        commitInterval: Duration = Defaults.commitInterval,
        pollBatchSize: Int = Defaults.pollBatchSize,
        statusInterval: Duration = Defaults.statusInterval,
        startFrom: Timestamp? = nil,
        resetOffsets: Bool = false,
        maxOpenProductWindows: Int = Defaults.maxOpenProductWindows
    ) {
        self.kafka = kafka
        self.groupID = groupID
        self.impressionsTopic = impressionsTopic
        self.clicksTopic = clicksTopic
        self.conversionsTopic = conversionsTopic
        self.eventsTopic = eventsTopic
        self.clickField = clickField
        self.deadLetterTopic = deadLetterTopic
        self.clickHouse = clickHouse
        self.windows = windows
        self.decoder = decoder
        self.batchMaxRows = batchMaxRows
        self.batchMaxDelay = batchMaxDelay
        self.bufferMaxRows = bufferMaxRows
        self.retry = retry
        self.commitInterval = commitInterval
        self.pollBatchSize = pollBatchSize
        self.statusInterval = statusInterval
        self.startFrom = startFrom
        self.resetOffsets = resetOffsets
        self.maxOpenProductWindows = maxOpenProductWindows
    }
}

extension AggregatorConfiguration {
    /// The default of every setting: the one place each is stated. The initializer and
    /// `ctr-aggregator` (its help text and its fallbacks) read them from here; window, retry and
    /// decoder defaults are those of their own types.
    public enum Defaults {
        public static let brokers = "localhost:9092"
        public static let groupID = "ctr-aggregator"
        public static let impressionsTopic = "impressions"
        public static let clicksTopic = "clicks"
        public static let clickField = "click"
        public static let deadLetterTopic = "ctr-dlq"
        public static let clickHouseURL = "http://127.0.0.1:8123"
        public static let database = "default"
        /// ClickHouse request timeout.
        public static let requestTimeout: Duration = .seconds(30)
        public static let windows = WindowConfiguration()
        public static let decoder = EventDecoder()
        public static let retry = RetryPolicy()
        public static let batchMaxRows = 50_000
        public static let batchMaxDelay: Duration = .milliseconds(250)
        public static let bufferMaxRows = 250_000
        public static let maxOpenProductWindows = 500_000
        public static let commitInterval: Duration = .seconds(1)
        public static let pollBatchSize = 10_000
        public static let statusInterval: Duration = .seconds(10)
        public static let metricsPort = 9464
        /// The metrics server binds loopback unless told otherwise: its endpoints have no
        /// authentication.
        public static let metricsHost = "127.0.0.1"
        /// `/health` fails after the pipeline loop made no progress for this long.
        public static let healthStallTimeout: Duration = .seconds(60)
    }
}
