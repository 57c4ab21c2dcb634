import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import Foundation
import Ingest
import Logging
import Synchronization

/// Why the aggregator stopped with an error.
public struct PipelineError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Consumes impressions and clicks, counts them in event-time windows, and writes the window
/// rows to ClickHouse, committing Kafka offsets only behind rows ClickHouse acknowledged.
///
/// Threads: ``run()`` polls Kafka, decodes and aggregates on the calling thread; inserts run on
/// the ``SinkWorker``'s thread. See `docs/exactly-once.md` for the recovery protocol.
public final class AggregatorPipeline: @unchecked Sendable {
    public let configuration: AggregatorConfiguration
    public let metrics: PipelineMetrics
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    private let instanceID: String

    // Pipeline-thread state.
    private var consumer: KafkaConsumer?
    private var deadLetters: DeadLetterPublishing?
    private var queries: ClickHouseConnection?
    private var sink: SinkWorker?
    private var catalog = ProductCatalog()
    private var assignment: Assignment?
    private var openBatch: InsertBatch?
    private var openBatchCreated = ContinuousClock.now
    private var nextBatchSequence: UInt64 = 0
    private var lastCommit = ContinuousClock.now
    private var paused = false
    private var fatalError: PipelineError?
    private var deadLetterLogLimiter = RateLimiter(interval: .seconds(5))
    /// Counters of the pipeline thread, published to ``metrics`` after every poll.
    private var counters = PipelineCounters()

    /// The partitions this instance owns, with their window state.
    struct Assignment {
        var partitions: [TopicPartition]
        var index: [TopicPartition: SourcePartition]
        /// Source partition by subscription topic index and partition.
        var sources: [[SourcePartition?]]
        var shapes: [EventShape]
        var windows: WindowAggregator
        var tracker: OffsetCommitTracker
    }

    public init(configuration: AggregatorConfiguration, logger: Logger, metrics: PipelineMetrics = PipelineMetrics()) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        var random = SystemRandomNumberGenerator()
        self.instanceID = String(random.next() & 0xFFFF_FFFF_FFFF, radix: 36)
    }

    /// Asks ``run()`` to finish: stop fetching, write what is complete, commit, return.
    /// Safe to call from any thread (e.g. a signal handler's queue).
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
    }

    /// Runs until ``stop()`` or a fatal error.
    public func run() throws(PipelineError) {
        try start()
        defer { shutdownClients() }
        metrics.setReady(true)
        var lastStatus = ContinuousClock.now
        while !stopRequested.load(ordering: .relaxed) && fatalError == nil {
            pollOnce()
            if ContinuousClock.now - lastStatus >= configuration.statusInterval {
                lastStatus = .now
                logStatus()
            }
        }
        metrics.setReady(false)
        if let fatalError { throw fatalError }
        logger.info("stopping: writing complete windows and committing offsets")
        drainAndCommit(timeout: .seconds(30))
        consumer?.close()
        logger.info("stopped", metadata: ["rows_written": "\(metrics.rowsWritten)"])
    }

    // MARK: Start and stop

    private func start() throws(PipelineError) {
        if let problem = configuration.windows.validate() { throw PipelineError("invalid window settings: \(problem)") }
        do {
            queries = try ClickHouseConnection(endpoint: configuration.clickHouse)
        } catch {
            throw PipelineError("cannot set up the ClickHouse client: \(error)")
        }
        try checkTable()
        let sinkConnection: ClickHouseConnection
        do {
            sinkConnection = try ClickHouseConnection(endpoint: configuration.clickHouse)
        } catch {
            throw PipelineError("cannot set up the ClickHouse client: \(error)")
        }
        let metrics = self.metrics
        let sink = SinkWorker(
            inserter: ClickHouseInserter(
                connection: sinkConnection, table: configuration.table, policy: configuration.retry, logger: logger
            ),
            observeRetry: { _ in metrics.recordSinkRetry() },
            observeInsert: { metrics.recordInsert($0) }
        )
        sink.start()
        self.sink = sink
        do {
            deadLetters = try KafkaDeadLetterPublisher(configuration: configuration.kafka, topic: configuration.deadLetterTopic)
            var consumerConfiguration = configuration.kafka
            consumerConfiguration["group.id"] = configuration.groupID
            let logger = self.logger
            consumer = try KafkaConsumer(
                configuration: consumerConfiguration,
                topics: configuration.inputTopics,
                maxBatch: configuration.pollBatchSize,
                onRebalance: { [unowned self] event in self.rebalance(event) },
                onError: { error in logger.warning("kafka", metadata: ["error": "\(error)"]) }
            )
        } catch {
            sink.stop()
            throw PipelineError("cannot start the Kafka clients (\(configuration.kafka)): \(error)")
        }
        logger.info(
            "started",
            metadata: [
                "instance": "\(instanceID)", "group": "\(configuration.groupID)",
                "topics": "\(configuration.inputTopics.joined(separator: ","))",
                "clickhouse": "\(configuration.clickHouse)",
            ]
        )
    }

    private func checkTable() throws(PipelineError) {
        let exists: String
        do {
            exists = try retryingQuery { connection throws(ClickHouseError) in
                try connection.scalar("EXISTS TABLE \(self.configuration.table)")
            }
        } catch {
            throw PipelineError("cannot reach ClickHouse at \(configuration.clickHouse): \(error)")
        }
        guard exists == "1" else {
            throw PipelineError(
                "table \(configuration.table) does not exist in database \(configuration.clickHouse.database): "
                    + "run `schema-tool migrate --clickhouse-url \(configuration.clickHouse.url) --database \(configuration.clickHouse.database)` first"
            )
        }
    }

    private func shutdownClients() {
        sink?.stop()
        try? deadLetters?.flush(timeout: .seconds(10))
    }

    // MARK: The loop

    private func pollOnce() {
        guard let consumer else { return }
        // The hot loop works on locals moved out of `self` (no copies, no exclusivity checks);
        // rebalance handlers run inside `poll` before the first message, so the assignment is
        // taken only once messages arrive.
        var current: Assignment?
        var taken = false
        var counters = self.counters
        var catalog = self.catalog
        consumer.poll(maxMessages: configuration.pollBatchSize, timeout: .milliseconds(100)) { message in
            if !taken {
                taken = true
                current = assignment.take()
            }
            guard current != nil else { return }
            handle(message, &current!, &catalog, &counters)
        }
        if taken { assignment = current }
        self.catalog = catalog
        self.counters = counters
        let now = Self.wallClock()
        if assignment != nil {
            let emissions = assignment!.windows.advance(now: now)
            if !emissions.isEmpty { add(emissions, at: now) }
            self.counters.openWindows = assignment!.windows.openWindowCount
            self.counters.watermarkMilliseconds = assignment!.windows.watermark?.milliseconds
        }
        self.counters.wallClockMilliseconds = now.milliseconds
        if let openBatch, openBatch.rowCount > 0,
            openBatch.rowCount >= configuration.batchMaxRows || ContinuousClock.now - openBatchCreated >= configuration.batchMaxDelay
        {
            submitOpenBatch()
        }
        processCompletions()
        if ContinuousClock.now - lastCommit >= configuration.commitInterval {
            commit()
        }
        applyBackpressure()
        self.counters.paused = paused
        metrics.publish(self.counters)
    }

    private func handle(
        _ message: KafkaMessage, _ assignment: inout Assignment, _ catalog: inout ProductCatalog, _ counters: inout PipelineCounters
    ) {
        guard message.topicIndex >= 0, message.topicIndex < assignment.sources.count,
            Int(message.partition) < assignment.sources[message.topicIndex].count,
            let partition = assignment.sources[message.topicIndex][Int(message.partition)]
        else { return }
        let shape = assignment.shapes[partition]
        switch configuration.decoder.decode(message.payload, shape: shape) {
        case .failure(let rejection):
            counters.recordConsumed(shape.primaryKind)
            deadLetter(message, rejection, &counters)
        case .success(let event):
            let product = catalog.id(for: event.productID)
            switch shape {
            case .kind(let kind):
                count(kind, product, event, revenueMicros: event.revenueMicros, message, partition, &assignment, &catalog, &counters)
            case .impressionWithClickFlag:
                let impression = count(.impression, product, event, revenueMicros: 0, message, partition, &assignment, &catalog, &counters)
                // The click has the impression's time: when that is too late, one dead letter covers both.
                if event.clicked, impression != .tooLate {
                    count(.click, product, event, revenueMicros: event.revenueMicros, message, partition, &assignment, &catalog, &counters)
                }
            }
        }
        assignment.tracker.consumed(partition, offset: message.offset)
    }

    /// Counts one event of `kind` (a single-topic message can be an impression and a click).
    @discardableResult
    private func count(
        _ kind: EventKind, _ product: ProductID, _ event: DecodedEvent, revenueMicros: UInt64, _ message: KafkaMessage,
        _ partition: SourcePartition, _ assignment: inout Assignment, _ catalog: inout ProductCatalog, _ counters: inout PipelineCounters
    ) -> IngestOutcome {
        counters.recordConsumed(kind)
        var result = assignment.windows.ingest(kind, product, at: event.timestamp, from: partition, offset: message.offset, revenueMicros: revenueMicros)
        if case .needsRestore(let windowStart) = result {
            restoreWindow(windowStart, &assignment, &catalog, &counters)
            result = assignment.windows.ingest(kind, product, at: event.timestamp, from: partition, offset: message.offset, revenueMicros: revenueMicros)
        }
        switch result {
        case .tooLate(let windowStart):
            let end = windowStart + configuration.windows.windowSize
            let watermark = assignment.windows.watermark?.milliseconds ?? 0
            deadLetter(
                message,
                Rejection(
                    .tooLate,
                    "event time \(event.timestamp.milliseconds) ms falls in window [\(windowStart.milliseconds), \(end.milliseconds)) ms, "
                        + "closed: watermark \(watermark) ms >= window end + allowed lateness \(configuration.windows.allowedLateness.value) ms"
                ),
                &counters
            )
        case .lateUpdate:
            counters.lateUpdates += 1
        case .alreadyCounted:
            counters.alreadyCounted += 1
        case .counted, .needsRestore:
            break
        }
        if case .tooLate = result { return .tooLate }
        return .handled
    }

    enum IngestOutcome { case handled, tooLate }

    private func deadLetter(_ message: KafkaMessage, _ rejection: Rejection, _ counters: inout PipelineCounters) {
        counters.rejected[rejection.reason, default: 0] += 1
        let letter = DeadLetter(
            value: Array(message.payload), key: Array(message.key), reason: rejection.reason, detail: rejection.detail,
            source: TopicPartition(topic: message.topic, partition: message.partition), offset: message.offset
        )
        do {
            try deadLetters?.publish(letter)
        } catch {
            fatalError = PipelineError("cannot write to the dead-letter topic \(configuration.deadLetterTopic): \(error)")
        }
        if deadLetterLogLimiter.allow() {
            logger.warning(
                "message sent to the dead-letter topic",
                metadata: [
                    "reason": "\(rejection.reason.rawValue)", "detail": "\(rejection.detail)",
                    "source": "\(message.topic):\(message.partition)@\(message.offset)",
                    "suppressed": "\(deadLetterLogLimiter.takeSuppressed())",
                ]
            )
        }
    }

    // MARK: Output

    private func add(_ emissions: [WindowEmission], at now: Timestamp) {
        guard let partitions = assignment?.partitions else { return }
        for emission in emissions {
            let day = InsertBatch.day(of: emission.windowEnd)
            if let openBatch, openBatch.day != day { submitOpenBatch() }
            if openBatch == nil {
                openBatch = InsertBatch(id: "ctr-agg-\(instanceID)-\(nextBatchSequence)", sequence: nextBatchSequence, day: day)
                nextBatchSequence += 1
                openBatchCreated = .now
            }
            let sources = SourceOffsets(emission.includedThrough.map { (name: partitions[$0.partition].description, offset: $0.offset) })
            for row in emission.rows {
                openBatch!.append(
                    ResultRow(
                        productID: catalog.name(of: row.product), windowStart: emission.windowStart, windowEnd: emission.windowEnd,
                        totals: row.totals, delta: row.delta, revision: row.revision, emittedAt: now, sources: sources
                    )
                )
            }
            assignment!.tracker.batch(openBatch!.sequence, dependsOn: emission.firstNewOffsets)
            counters.recordEmission(rows: emission.rows)
        }
    }

    private func submitOpenBatch() {
        guard let batch = openBatch else { return }
        openBatch = nil
        guard batch.rowCount > 0 else { return }
        sink?.submit(batch)
    }

    private func processCompletions() {
        guard let sink else { return }
        for completion in sink.takeCompletions() {
            switch completion {
            case .written(let sequence, _):
                assignment?.tracker.acknowledged(sequence)
            case .failed(_, let error):
                metrics.recordSinkFailure()
                fatalError = PipelineError(error.description)
            }
        }
        counters.bufferedRows = sink.bufferedRows + (openBatch?.rowCount ?? 0)
    }

    private func applyBackpressure() {
        guard let consumer, let assignment, let sink else { return }
        let buffered = sink.bufferedRows
        if !paused && buffered >= configuration.bufferMaxRows {
            paused = true
            consumer.pause(assignment.partitions)
            logger.warning("ClickHouse is behind: paused consuming", metadata: ["buffered_rows": "\(buffered)"])
        } else if paused && buffered < configuration.bufferMaxRows / 2 {
            paused = false
            consumer.resume(assignment.partitions)
            logger.info("resumed consuming", metadata: ["buffered_rows": "\(buffered)"])
        }
    }

    private func commit() {
        lastCommit = .now
        guard let consumer, let assignment else { return }
        var lag: [String: Int64] = [:]
        for (index, partition) in assignment.partitions.enumerated() {
            if let high = consumer.highWatermark(partition), let position = assignment.tracker.position(of: index) {
                lag[partition.description] = max(0, high - position)
            }
        }
        metrics.setConsumerLag(lag)
        let windows = assignment.windows
        let offsets = assignment.tracker.offsetsToCommit(
            pending: { windows.lowestPendingOffset(of: $0) },
            maxEventTime: { windows.watermarks.maxEventTime(of: $0)?.milliseconds }
        )
        guard !offsets.isEmpty else { return }
        do {
            // Dead letters of the committed range must be durable first.
            try deadLetters?.flush(timeout: .seconds(10))
            var byPartition: [TopicPartition: KafkaConsumer.CommittedOffset] = [:]
            for (partition, offset) in offsets {
                byPartition[assignment.partitions[partition]] = KafkaConsumer.CommittedOffset(
                    offset: offset.offset, metadata: CommitMetadata(maxEventTime: offset.maxEventTimeBefore).text
                )
            }
            try consumer.commit(byPartition)
            self.assignment?.tracker.committed(offsets)
            counters.commits += 1
        } catch {
            logger.warning("offset commit failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    /// Writes what is complete and commits, waiting at most `timeout` for ClickHouse.
    private func drainAndCommit(timeout: Duration) {
        submitOpenBatch()
        if let sink, !sink.waitUntilIdle(timeout: timeout) {
            logger.warning("ClickHouse did not acknowledge every batch in time; their events will be consumed again")
        }
        processCompletions()
        commit()
    }

    // MARK: Rebalance and recovery

    private func rebalance(_ event: RebalanceEvent) {
        switch event {
        case .revoked(let partitions):
            logger.info("partitions revoked", metadata: ["partitions": "\(partitions.map(\.description).joined(separator: ","))"])
            drainAndCommit(timeout: configuration.clickHouse.requestTimeout)
            assignment = nil
            openBatch = nil
            paused = false
        case .assigned(let partitions):
            logger.info("partitions assigned", metadata: ["partitions": "\(partitions.map(\.description).joined(separator: ","))"])
            assign(partitions)
        }
    }

    private func assign(_ partitions: [TopicPartition]) {
        // Everything this instance submitted must have landed before ClickHouse is read back.
        while let sink, !sink.waitUntilIdle(timeout: .seconds(5)), !stopRequested.load(ordering: .relaxed) {
            logger.warning("waiting for ClickHouse to acknowledge earlier batches before recovering the assignment")
        }
        processCompletions()
        let restoreThrough: Timestamp?
        var committed: [TopicPartition: KafkaConsumer.CommittedOffset] = [:]
        do {
            restoreThrough = try recoveryHorizon()
            committed = try consumer?.committedOffsets(partitions, timeout: .seconds(30)) ?? [:]
        } catch {
            fatalError = PipelineError("cannot read the recovery state: \(error)")
            return
        }
        var index: [TopicPartition: SourcePartition] = [:]
        let topics = configuration.inputTopics
        var sources: [[SourcePartition?]] = topics.map { topic in
            Array(repeating: nil, count: Int(partitions.filter { $0.topic == topic }.map(\.partition).max() ?? -1) + 1)
        }
        for (position, partition) in partitions.enumerated() {
            index[partition] = position
            if let topic = topics.firstIndex(of: partition.topic) { sources[topic][Int(partition.partition)] = position }
        }
        assignment = Assignment(
            partitions: partitions,
            index: index,
            sources: sources,
            shapes: partitions.map { configuration.shape(of: $0.topic) },
            windows: WindowAggregator(
                configuration: configuration.windows, partitionCount: partitions.count, now: Self.wallClock(),
                restoreThrough: restoreThrough
            ),
            tracker: OffsetCommitTracker(partitionCount: partitions.count)
        )
        // Resume every partition's watermark where the committed position left it, and derive
        // the pipeline watermark now, so that the first replayed batch is judged like the
        // first run judged it.
        for (position, partition) in partitions.enumerated() {
            if let metadata = committed[partition].flatMap({ CommitMetadata(text: $0.metadata) }), let maxEventTime = metadata.maxEventTime {
                assignment?.windows.restoreWatermark(of: position, maxEventTime: Timestamp(milliseconds: maxEventTime))
            }
        }
        _ = assignment?.windows.advance(now: Self.wallClock())
    }

    /// Waits until inserts of other (possibly dead) instances that were running when this
    /// assignment began are finished, then returns the latest window start with rows, if any:
    /// windows up to it are restored from ClickHouse before they count anything.
    private func recoveryHorizon() throws(ClickHouseError) -> Timestamp? {
        let waitStarted = ContinuousClock.now
        while true {
            let elapsed = Int((ContinuousClock.now - waitStarted).components.seconds)
            let running = try retryingQuery { connection throws(ClickHouseError) in
                try connection.scalar(
                    """
                    SELECT count() FROM system.processes WHERE query_id LIKE 'ctr-agg-%' AND elapsed >= \(elapsed)
                    """
                )
            }
            if running == "0" || ContinuousClock.now - waitStarted > configuration.clickHouse.requestTimeout { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let latest = try retryingQuery { connection throws(ClickHouseError) in
            try connection.scalar("SELECT count(), toUnixTimestamp(max(window_start)) FROM \(self.configuration.table)")
        }
        let fields = latest.split(separator: "\t")
        guard fields.count == 2, let count = Int(fields[0]), count > 0, let seconds = Int64(fields[1]) else { return nil }
        return Timestamp(milliseconds: seconds * 1000)
    }

    private func restoreWindow(
        _ windowStart: Timestamp, _ assignment: inout Assignment, _ catalog: inout ProductCatalog, _ counters: inout PipelineCounters
    ) {
        let start = windowStart.epochSeconds
        let end = (windowStart + configuration.windows.windowSize).epochSeconds
        let filter = "window_end = toDateTime(\(end), 'UTC') AND window_start = toDateTime(\(start), 'UTC')"
        do {
            let rows = try retryingQuery { connection throws(ClickHouseError) in
                try connection.rows(
                    """
                    SELECT product_id, max(revision), argMax(impressions, revision), argMax(clicks, revision), \
                    argMax(conversions, revision), toString(argMax(revenue, revision)) \
                    FROM \(self.configuration.table) WHERE \(filter) GROUP BY product_id
                    """
                )
            }
            let offsets = try retryingQuery { connection throws(ClickHouseError) in
                try connection.rows(
                    """
                    SELECT source, max(offset) FROM \(self.configuration.table) \
                    ARRAY JOIN source_partitions AS source, source_offsets AS offset WHERE \(filter) GROUP BY source
                    """
                )
            }
            var restored: [RestoredRow] = []
            for row in rows where row.count == 6 {
                guard let revision = UInt32(row[1]), let impressions = UInt64(row[2]), let clicks = UInt64(row[3]),
                    let conversions = UInt64(row[4]), let revenue = DecimalText.micros(row[5])
                else { continue }
                let product = catalog.id(for: TabSeparated.unescape(row[0]))
                let totals = WindowCounts(impressions: impressions, clicks: clicks, conversions: conversions, revenueMicros: revenue)
                restored.append(RestoredRow(product: product, totals: totals, revision: revision))
            }
            var names: [String: SourcePartition] = [:]
            for (partition, position) in assignment.index { names[partition.description] = position }
            let included = offsets.compactMap { row -> SourceOffset? in
                guard row.count == 2, let partition = names[TabSeparated.unescape(row[0])], let offset = Int64(row[1]) else { return nil }
                return SourceOffset(partition: partition, offset: offset)
            }
            assignment.windows.restore(windowStart: windowStart, rows: restored, includedThrough: included)
            counters.windowsRestored += 1
            if !restored.isEmpty {
                logger.info("restored window from ClickHouse", metadata: ["window_start": "\(start)", "products": "\(restored.count)"])
            }
        } catch {
            fatalError = PipelineError("cannot restore window \(start) from ClickHouse: \(error)")
            assignment.windows.restore(windowStart: windowStart, rows: [], includedThrough: [])
        }
    }

    /// Runs a read-only query, retrying retryable failures with the sink's backoff until it
    /// succeeds or a stop is requested.
    private func retryingQuery<T>(_ query: (ClickHouseConnection) throws(ClickHouseError) -> T) throws(ClickHouseError) -> T {
        guard let queries else { throw ClickHouseError.transport(.other, message: "no ClickHouse connection") }
        var attempt = 0
        while true {
            do {
                return try query(queries)
            } catch {
                attempt += 1
                guard error.isRetryable, !stopRequested.load(ordering: .relaxed) else { throw error }
                if let maximum = configuration.retry.maximumAttempts, attempt >= maximum { throw error }
                logger.warning("ClickHouse query failed; retrying", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                let delay = configuration.retry.delay(beforeRetry: attempt, fraction: Double.random(in: 0..<1))
                ClickHouseInserter.threadSleep(delay)
            }
        }
    }

    private func logStatus() {
        logger.info(
            "status",
            metadata: [
                "consumed": "\(counters.consumedImpressions + counters.consumedClicks + counters.consumedConversions)",
                "rejected": "\(counters.rejected.values.reduce(0, +))",
                "rows_written": "\(metrics.rowsWritten)",
                "open_windows": "\(counters.openWindows)",
                "watermark_ms": "\(counters.watermarkMilliseconds.map(String.init) ?? "none")",
                "buffered_rows": "\(counters.bufferedRows)",
                "paused": "\(paused)",
            ]
        )
    }

    static func wallClock() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(milliseconds: Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}

/// What the aggregator stores with a committed offset: the partition's highest event time before
/// it, so that a consumer resuming there restores the watermark exactly (`ctr1 maxts=<ms>`).
struct CommitMetadata: Equatable {
    var maxEventTime: Int64?

    init(maxEventTime: Int64?) { self.maxEventTime = maxEventTime }

    init?(text: String) {
        let fields = text.split(separator: " ")
        guard fields.first == "ctr1" else { return nil }
        maxEventTime = fields.dropFirst().first { $0.hasPrefix("maxts=") }.flatMap { Int64($0.dropFirst("maxts=".count)) }
    }

    var text: String { maxEventTime.map { "ctr1 maxts=\($0)" } ?? "ctr1" }
}

extension EventShape {
    /// The kind a message of this shape counts as first.
    var primaryKind: EventKind {
        if case .kind(let kind) = self { return kind }
        return .impression
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

/// ClickHouse's `TabSeparated` escaping.
enum TabSeparated {
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var result = ""
        var iterator = field.makeIterator()
        while let character = iterator.next() {
            guard character == "\\", let next = iterator.next() else {
                result.append(character)
                continue
            }
            switch next {
            case "t": result.append("\t")
            case "n": result.append("\n")
            case "r": result.append("\r")
            case "b": result.append("\u{08}")
            case "f": result.append("\u{0C}")
            case "0": result.append("\u{00}")
            case "a": result.append("\u{07}")
            case "v": result.append("\u{0B}")
            default: result.append(next)
            }
        }
        return result
    }
}
