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
    public var table: String
    public var windows: WindowConfiguration
    public var decoder: EventDecoder
    /// Rows that make a batch full.
    public var batchMaxRows: Int
    /// Longest time a row waits in an open batch.
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
        groupID: String = "ctr-aggregator",
        impressionsTopic: String = "impressions",
        clicksTopic: String = "clicks",
        conversionsTopic: String? = nil,
        eventsTopic: String? = nil,
        clickField: String = "click",
        deadLetterTopic: String = "ctr-dlq",
        clickHouse: ClickHouseEndpoint,
        table: String = "ctr_results_raw",
        windows: WindowConfiguration = WindowConfiguration(),
        decoder: EventDecoder = EventDecoder(),
        batchMaxRows: Int = 50_000,
        batchMaxDelay: Duration = .milliseconds(250),
        bufferMaxRows: Int = 500_000,
        retry: RetryPolicy = RetryPolicy(),
        commitInterval: Duration = .seconds(1),
        pollBatchSize: Int = 10_000,
        statusInterval: Duration = .seconds(10),
        startFrom: Timestamp? = nil,
        resetOffsets: Bool = false,
        maxOpenProductWindows: Int = 500_000
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
        self.table = table
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
