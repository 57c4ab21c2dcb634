import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import EventDecoding
import Foundation
import Ingest
import Logging
import Synchronization

/// Consumes impressions and clicks, counts them in event-time windows, and writes the window
/// rows to ClickHouse, committing Kafka offsets only behind rows ClickHouse acknowledged.
///
/// The driver of ``PipelineStateMachine``: it owns the clients (Kafka consumer, dead-letter
/// producer, the results store and the sink thread), feeds the machine what happens and
/// performs the actions it returns. It makes no decision of its own.
///
/// Threads: ``run()`` polls Kafka, decodes and aggregates on the calling thread; inserts run on
/// the ``SinkWorker``'s thread. See `docs/exactly-once.md` for the recovery protocol.
public final class AggregatorPipeline: Sendable {
    public let configuration: AggregatorConfiguration
    public let metrics: PipelineMetrics
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    /// This process's writer id (batch ids, query ids, fences).
    public let writer: String

    public init(configuration: AggregatorConfiguration, logger: Logger, metrics: PipelineMetrics = PipelineMetrics()) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        var random = SystemRandomNumberGenerator()
        self.writer = String(random.next() & 0xFFFF_FFFF_FFFF, radix: 36)
    }

    /// Asks ``run()`` to finish: stop fetching, write what is complete, commit, return.
    /// Safe to call from any thread (e.g. a signal handler's queue).
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
    }

    /// Runs until ``stop()`` or a fatal error.
    public func run() throws(PipelineError) {
        var driver = try Driver(pipeline: self)
        defer { driver.shutdown() }
        metrics.setReady(true)
        defer { metrics.setReady(false) }
        try driver.run()
    }

    var shouldStop: Bool { stopRequested.load(ordering: .relaxed) }

    /// The clients and the loop, on the pipeline thread.
    struct Driver {
        let pipeline: AggregatorPipeline
        let consumer: KafkaConsumer
        let deadLetters: DeadLetterPublishing
        let recoveryStore: ResultsStore
        let sink: SinkWorker
        let shapes: [EventShape]
        var machine: PipelineStateMachine
        var fatalError: PipelineError?
        var deadLetterLog = RateLimiter(interval: .seconds(5))
        var lastStatus = ContinuousClock.now
        var seenClientErrors = 0
        var sourceTroubleUntil: Int64 = 0

        var configuration: AggregatorConfiguration { pipeline.configuration }
        var logger: Logger { pipeline.logger }

        init(pipeline: AggregatorPipeline) throws(PipelineError) {
            let configuration = pipeline.configuration
            if let problem = configuration.windows.validate() { throw PipelineError("invalid window settings: \(problem)") }
            self.pipeline = pipeline
            let logger = pipeline.logger
            func makeStore() throws(PipelineError) -> ClickHouseResultsStore {
                do {
                    return try ClickHouseResultsStore(
                        endpoint: configuration.clickHouse, writer: pipeline.writer, consumerGroup: configuration.groupID,
                        policy: configuration.retry, maxBatchRows: configuration.batchMaxRows,
                        dimensions: configuration.decoder.dimensionFields, logger: logger
                    )
                } catch {
                    throw PipelineError(error.description)
                }
            }
            let recoveryStore = try makeStore()
            do {
                try recoveryStore.checkSchema()
            } catch {
                throw PipelineError("cannot use ClickHouse at \(configuration.clickHouse): \(error)")
            }
            self.recoveryStore = recoveryStore
            let metrics = pipeline.metrics
            let sink = SinkWorker(
                store: try makeStore(),
                observeRetry: { _ in metrics.recordSinkRetry() },
                observeInsert: { metrics.recordInsert($0) }
            )
            do {
                deadLetters = try KafkaDeadLetterPublisher(configuration: configuration.kafka, topic: configuration.deadLetterTopic)
                var consumerConfiguration = configuration.kafka
                consumerConfiguration["group.id"] = configuration.groupID
                consumer = try KafkaConsumer(
                    configuration: consumerConfiguration,
                    topics: configuration.inputTopics,
                    maxBatch: configuration.pollBatchSize,
                    onError: { error in logger.warning("kafka", metadata: ["error": "\(error)"]) }
                )
            } catch {
                throw PipelineError("cannot start the Kafka clients (\(configuration.kafka)): \(error)")
            }
            sink.start()
            self.sink = sink
            shapes = configuration.inputTopics.map(configuration.shape(of:))
            machine = PipelineStateMachine(
                configuration: PipelineStateMachine.Configuration(
                    windows: configuration.windows,
                    batchMaxRows: configuration.batchMaxRows,
                    batchMaxDelay: Milliseconds(configuration.batchMaxDelay.milliseconds),
                    bufferMaxRows: configuration.bufferMaxRows,
                    commitInterval: Milliseconds(configuration.commitInterval.milliseconds),
                    writer: pipeline.writer,
                    topics: configuration.inputTopics.map { ($0, configuration.shape(of: $0)) },
                    startFrom: configuration.startFrom,
                    resetOffsets: configuration.resetOffsets,
                    maxOpenProductWindows: configuration.maxOpenProductWindows
                )
            )
            logger.info(
                "started",
                metadata: [
                    "writer": "\(pipeline.writer)", "group": "\(configuration.groupID)",
                    "topics": "\(configuration.inputTopics.joined(separator: ","))",
                    "clickhouse": "\(configuration.clickHouse)",
                ]
            )
        }

        func shutdown() {
            sink.stop()
            try? deadLetters.flush(timeout: .seconds(10))
        }

        mutating func run() throws(PipelineError) {
            while !pipeline.shouldStop && fatalError == nil {
                pollOnce()
                if ContinuousClock.now - lastStatus >= configuration.statusInterval {
                    lastStatus = .now
                    logStatus()
                }
            }
            if let fatalError { throw fatalError }
            logger.info("stopping: writing complete windows and committing offsets")
            perform(machine.stopping())
            if !sink.waitUntilIdle(timeout: .seconds(30)) {
                logger.warning("ClickHouse did not acknowledge every batch in time; their events will be consumed again")
            }
            processCompletions()
            if (try? deadLetters.flush(timeout: .seconds(10))) == nil {
                logger.warning("the broker did not acknowledge every dead letter in time; their messages will be consumed again")
            }
            perform(machine.finalCommit(observation()))
            consumer.close()
            logger.info("stopped", metadata: ["rows_written": "\(pipeline.metrics.rowsWritten)"])
        }

        // MARK: The loop

        mutating func pollOnce() {
            let receivedAt = WallClock.now()
            let delivered = consumer.poll(maxMessages: configuration.pollBatchSize, timeout: .milliseconds(100)) { message in
                let decoded = message.topicIndex >= 0 && message.topicIndex < shapes.count
                    ? configuration.decoder.decode(message.payload, shape: shapes[message.topicIndex], now: receivedAt)
                    : .failure(Rejection(.wrongType, "message of an unsubscribed topic \(message.topic)"))
                if case .deadLetter(let rejection) = machine.consumed(
                    topicIndex: message.topicIndex, partition: message.partition, offset: message.offset, decoded
                ) {
                    deadLetter(message, rejection)
                }
            }
            for event in consumer.takeRebalanceEvents() { handle(event) }
            processCompletions()
            perform(machine.pollFinished(observation(pollWasEmpty: delivered == 0)))
            pipeline.metrics.publish(machine.counters)
            pipeline.metrics.recordProgress()
        }

        mutating func handle(_ event: RebalanceEvent) {
            switch event {
            case .assigned(let partitions, let generation):
                logger.info(
                    "partitions assigned",
                    metadata: ["generation": "\(generation)", "partitions": "\(partitions.map(\.description).joined(separator: ","))"]
                )
                perform(machine.assigned(partitions, generation: generation, now: WallClock.now()))
            case .revoked(let partitions, let lost):
                logger.info(
                    lost ? "partitions lost: dropping their state without writing or committing" : "partitions revoked",
                    metadata: ["partitions": "\(partitions.map(\.description).joined(separator: ","))"]
                )
                perform(machine.revoked(lost: lost))
                // Their refused messages are dead-lettered again by whoever replays them.
                deadLetters.forget(partitions)
            }
        }

        /// What the machine needs to know at the end of a poll.
        mutating func observation(pollWasEmpty: Bool = false) -> PipelineStateMachine.PollObservation {
            let now = WallClock.now()
            let errors = consumer.errorCount
            if errors != seenClientErrors {
                seenClientErrors = errors
                sourceTroubleUntil = now.milliseconds + 10_000
            }
            var backlog: Set<TopicPartition> = []
            var lag: [(topic: String, partition: Int32, lag: Int64)] = []
            for (partition, position) in machine.positions {
                guard let high = consumer.highWatermark(partition) else { continue }
                let behind = max(0, high - (position ?? 0))
                lag.append((partition.topic, partition.partition, behind))
                if behind > 0 { backlog.insert(partition) }
            }
            pipeline.metrics.setConsumerLag(lag)
            deadLetters.poll()
            var deadLettersPendingFrom: [TopicPartition: Int64] = [:]
            for (partition, _) in machine.positions {
                deadLettersPendingFrom[partition] = deadLetters.lowestUnacknowledged(of: partition)
            }
            return PipelineStateMachine.PollObservation(
                now: now, sinkBufferedRows: sink.bufferedRows, partitionsWithBacklog: backlog,
                sourceTrouble: now.milliseconds < sourceTroubleUntil, deadLettersPendingFrom: deadLettersPendingFrom,
                deadLettersFull: deadLetters.isFull, pollWasEmpty: pollWasEmpty
            )
        }

        mutating func processCompletions() {
            for completion in sink.takeCompletions() {
                switch completion {
                case .failed:
                    pipeline.metrics.recordSinkFailure()
                case .fenced(let sequence):
                    logger.warning("a later consumer-group generation fenced a batch: nothing of it was written", metadata: ["sequence": "\(sequence)"])
                case .written:
                    break
                }
                perform(machine.batchCompleted(completion))
            }
        }

        // MARK: Actions

        mutating func perform(_ actions: [PipelineStateMachine.Action]) {
            for action in actions { perform(action) }
        }

        mutating func perform(_ action: PipelineStateMachine.Action) {
            switch action {
            case .recover(let generation, let partitions):
                do {
                    try recoveryStore.fence(group: configuration.groupID, generation: generation) { pipeline.shouldStop }
                } catch {
                    fatalError = PipelineError("cannot fence earlier owners of the partitions: \(error)")
                    return
                }
                let committed: [TopicPartition: KafkaConsumer.CommittedOffset]
                do {
                    committed = try consumer.committedOffsets(partitions, timeout: .seconds(30))
                } catch {
                    fatalError = PipelineError("cannot read the committed offsets: \(error)")
                    return
                }
                perform(machine.committedOffsetsRead(committed, now: WallClock.now()))
            case .seek(let partitions, let time):
                do {
                    let offsets = try consumer.offsets(at: time.milliseconds, of: partitions, timeout: .seconds(30))
                    try consumer.seek(offsets, timeout: .seconds(30))
                    logger.info("starting at --start-from", metadata: ["time_ms": "\(time.milliseconds)", "offsets": "\(offsets.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" })"])
                    perform(machine.startPositionsFound(offsets, now: WallClock.now()))
                } catch {
                    fatalError = PipelineError("cannot start at --start-from: \(error)")
                }
            case .notice(let message):
                logger.warning("\(message)")
            case .restore(let request):
                let rows: [StoredWindowRow]
                do {
                    rows = try recoveryStore.restore(request)
                } catch {
                    fatalError = PipelineError("cannot read back the windows of the assignment: \(error)")
                    return
                }
                if !rows.isEmpty { logger.info("restored windows from ClickHouse", metadata: ["rows": "\(rows.count)"]) }
                perform(machine.restored(rows, now: WallClock.now()))
            case .resume(let partitions):
                do {
                    try consumer.resume(partitions)
                } catch {
                    fatalError = PipelineError("cannot resume consuming: \(error)")
                    return
                }
                if machine.phase == .running { logger.info("resumed consuming", metadata: ["partitions": "\(partitions.count)"]) }
            case .pause(let partitions):
                consumer.pause(partitions)
                logger.warning(
                    "paused consuming",
                    metadata: [
                        "partitions": "\(partitions.count)", "buffered_rows": "\(sink.bufferedRows)",
                        "open_product_windows": "\(machine.counters.openProductWindows)",
                    ]
                )
            case .submit(let batch):
                sink.submit(batch)
            case .cancelBatches(let generation):
                let dropped = sink.cancel(generationsBelow: generation)
                if !dropped.isEmpty { logger.info("dropped batches of a revoked assignment", metadata: ["batches": "\(dropped.count)"]) }
            case .commit(let offsets):
                do {
                    // The offsets stop below every dead letter the broker has not acknowledged
                    // (deadLettersPendingFrom), so there is nothing to wait for here.
                    try consumer.commit(offsets)
                    machine.commitSucceeded()
                } catch {
                    machine.commitFailed()
                    logger.warning("offset commit failed; will retry", metadata: ["error": "\(error)"])
                }
            case .fail(let error):
                fatalError = error
            }
        }

        mutating func deadLetter(_ message: KafkaMessage, _ rejection: Rejection) {
            let letter = DeadLetter(
                value: Array(message.payload), key: Array(message.key), reason: rejection.reason, detail: rejection.detail,
                source: TopicPartition(topic: message.topic, partition: message.partition), offset: message.offset
            )
            deadLetters.publish(letter)
            if deadLetterLog.allow() {
                logger.warning(
                    "message sent to the dead-letter topic",
                    metadata: [
                        "reason": "\(rejection.reason.rawValue)", "detail": "\(rejection.detail)",
                        "source": "\(message.topic):\(message.partition)@\(message.offset)",
                        "suppressed": "\(deadLetterLog.takeSuppressed())",
                    ]
                )
            }
        }

        func logStatus() {
            let counters = machine.counters
            logger.info(
                "status",
                metadata: [
                    "consumed": "\(counters.consumedImpressions + counters.consumedClicks + counters.consumedConversions)",
                    "rejected": "\(counters.rejected.values.reduce(0, +))",
                    "rows_written": "\(pipeline.metrics.rowsWritten)",
                    "open_windows": "\(counters.openWindows)",
                    "watermark_ms": "\(counters.watermarkMilliseconds.map(String.init) ?? "none")",
                    "buffered_rows": "\(counters.bufferedRows)",
                    "paused": "\(counters.paused)",
                ]
            )
        }
    }
}

/// Lets one event through per interval and counts the rest.
struct RateLimiter {
    let interval: Duration
    private var last: ContinuousClock.Instant?
    private var suppressed = 0

    init(interval: Duration) { self.interval = interval }

    mutating func allow() -> Bool {
        let now = ContinuousClock.now
        if let last, now - last < interval {
            suppressed += 1
            return false
        }
        last = now
        return true
    }

    mutating func takeSuppressed() -> Int {
        defer { suppressed = 0 }
        return suppressed
    }
}
