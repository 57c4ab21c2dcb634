import ClickHouseSink
import CTRWindows
import EventDecoding
import Ingest

/// Why the aggregator stopped with an error.
public struct PipelineError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The aggregator's protocol logic as a pure state machine: consumer-group assignments and
/// their recovery, counting, batching, backpressure and offset commits.
///
/// The driver (``AggregatorPipeline``) feeds it what happened: rebalance events, consumed
/// messages (already decoded), the end of each poll with processing time, sink completions,
/// commit results. It performs the returned ``Action``s and reports their results back. The
/// machine does no I/O and reads no clock, so every rule is testable without servers.
///
/// Lifecycle of an assignment (librdkafka's eager protocol: every rebalance revokes everything):
/// 1. ``assigned(_:generation:now:)``: the partitions arrive paused → ``Action/recover(generation:partitions:)``:
///    fence earlier generations in the store and read the committed offsets.
/// 2. ``committedOffsetsRead(_:now:)`` → ``Action/restore(_:)``: read back the durable windows that
///    can still receive events.
/// 3. ``restored(_:now:)`` → ``Action/resume(_:)``: consume. Emissions are held until every
///    partition's position has reached what the restored rows reflect (the restore frontier),
///    so the one position vector written per batch is true for every row of it.
/// 4. ``revoked(lost:)`` → ``Action/cancelBatches(generationsBelow:)``: everything of the
///    assignment is dropped and nothing more is written or committed for it; the next owner
///    recovers from the store.
public struct PipelineStateMachine: Sendable {
    /// The rules the machine applies.
    public struct Configuration: Sendable {
        public var windows: WindowConfiguration
        /// Rows that make a batch full (a batch never has more).
        public var batchMaxRows: Int
        /// Longest time (ms of processing time) a row waits in an open batch while the sink is
        /// idle; while it still writes earlier batches, the open batch waits for it (or until
        /// full).
        public var batchMaxDelay: Milliseconds
        /// Rows waiting for ClickHouse above which consuming pauses; it resumes below half.
        public var bufferMaxRows: Int
        /// Open (product, window) pairs above which consuming pauses until windows close (it
        /// resumes below half): bounds the window state when the watermark is held back, e.g.
        /// while a partition without data waits out the idle timeout during a catch-up.
        public var maxOpenProductWindows: Int
        /// How often (ms of processing time) offsets are committed when they moved.
        public var commitInterval: Milliseconds
        /// Identifies this writer in batch ids.
        public var writer: String
        /// The subscribed topics, in subscription order, with what their messages are.
        public var topics: [(name: String, shape: EventShape)]
        /// Partitions without a committed offset start at the first message at or after this
        /// time (instead of the earliest).
        public var startFrom: Timestamp?
        /// With ``startFrom``: every partition starts there, committed offsets or not.
        public var resetOffsets: Bool

        public init(
            windows: WindowConfiguration, batchMaxRows: Int, batchMaxDelay: Milliseconds, bufferMaxRows: Int, commitInterval: Milliseconds,
            writer: String, topics: [(name: String, shape: EventShape)], startFrom: Timestamp? = nil, resetOffsets: Bool = false,
            maxOpenProductWindows: Int = 1_000_000
        ) {
            self.windows = windows
            self.batchMaxRows = batchMaxRows
            self.batchMaxDelay = batchMaxDelay
            self.bufferMaxRows = bufferMaxRows
            self.commitInterval = commitInterval
            self.writer = writer
            self.topics = topics
            self.startFrom = startFrom
            self.resetOffsets = resetOffsets
            self.maxOpenProductWindows = maxOpenProductWindows
        }
    }

    /// What the driver must do.
    public enum Action: Sendable, Equatable {
        /// Fence writers of earlier generations in the store (and wait for their running
        /// inserts), then read the committed offsets of `partitions` and report them with
        /// ``committedOffsetsRead(_:now:)``.
        case recover(generation: Int32, partitions: [TopicPartition])
        /// Move these partitions to their first message at or after the time, and report the
        /// offsets with ``startPositionsFound(_:now:)``.
        case seek([TopicPartition], to: Timestamp)
        /// Read back durable windows and report them with ``restored(_:now:)``.
        case restore(RestoreRequest)
        /// Tell the operator (a warning line).
        case notice(String)
        /// Start fetching these partitions.
        case resume([TopicPartition])
        /// Stop fetching these partitions (the group membership stays).
        case pause([TopicPartition])
        /// Queue the batch for writing.
        case submit(ResultBatch)
        /// Drop queued batches of generations below this one: never write them.
        case cancelBatches(generationsBelow: Int32)
        /// Commit these positions (next offset to consume, with ``CommitMetadata`` text), then
        /// report ``commitSucceeded(_:)`` or ``commitFailed()``.
        case commit([TopicPartition: KafkaConsumer.CommittedOffset])
        /// Stop the aggregator with this error.
        case fail(PipelineError)
    }

    /// What to do with one consumed message.
    public enum MessageVerdict: Sendable, Equatable {
        case handled
        /// Send the message to the dead-letter topic.
        case deadLetter(Rejection)
    }

    enum Phase: Sendable, Equatable {
        /// No partitions.
        case unassigned
        /// Waiting for ``committedOffsetsRead(_:now:)``.
        case readingCommittedOffsets
        /// Waiting for ``startPositionsFound(_:now:)``.
        case seeking
        /// Waiting for ``restored(_:now:)``.
        case restoring
        /// Consuming.
        case running
        /// A batch of this generation was fenced: another member owns the partitions now and
        /// the revocation has not arrived yet. Nothing is emitted or committed.
        case deposed
        /// Failed; nothing more happens.
        case failed
    }

    struct Assignment: Sendable {
        var generation: Int32
        var partitions: [TopicPartition]
        var names: [String]
        /// Source partition by subscription topic index and partition number.
        var sources: [[SourcePartition?]]
        var shapes: [EventShape]
        var windows: WindowAggregator
        var tracker: OffsetCommitTracker
        /// Per partition, the position below which restored rows may reflect events: no
        /// emission until every partition's position reached it.
        var restoreFrontier: [Int64]
        var holdingEmissions: Bool
    }

    public let configuration: Configuration
    private(set) var phase: Phase = .unassigned
    private var assignment: Assignment?
    private var catalog = ProductCatalog()
    private var openBatch: ResultBatch?
    private var openBatchCreatedAt: Int64 = 0
    private var nextSequence: UInt64 = 0
    private var lastCommitAt: Int64 = 0
    /// The positions of the commit in flight; empty when none is.
    private var pendingCommit: [SourcePartition: SourceOffset] = [:]
    /// Committed offsets kept while start positions are looked up.
    private var pendingCommitted: [TopicPartition: KafkaConsumer.CommittedOffset] = [:]
    /// The first batch sequence of the current assignment: lower ones belong to earlier ones.
    private var assignmentFirstSequence: UInt64 = 0
    /// Every partition is paused for backpressure (ClickHouse behind, dead-letter topic full).
    private var paused = false
    /// Partitions paused because the window state is at its bound and they are ahead.
    private var pausedAhead: Set<SourcePartition> = []
    private var bufferedRows = 0
    /// Counters published as metrics after every poll.
    public private(set) var counters = PipelineCounters()

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The assigned partitions and their consumer positions (next offset), for lag metrics.
    public var positions: [(partition: TopicPartition, position: Int64?)] {
        guard let assignment else { return [] }
        return assignment.partitions.indices.map { (assignment.partitions[$0], assignment.tracker.position(of: $0)) }
    }

    // MARK: Assignment and recovery

    /// The group assigned `partitions` (paused) in `generation`.
    public mutating func assigned(_ partitions: [TopicPartition], generation: Int32, now: Timestamp) -> [Action] {
        guard phase != .failed else { return [] }
        var actions: [Action] = []
        if assignment != nil { actions += revoked(lost: false) }
        guard !partitions.isEmpty else { return actions }
        guard generation >= 0 else {
            phase = .failed
            return actions + [.fail(PipelineError("the Kafka client reported no consumer-group generation for the assignment"))]
        }
        var sources: [[SourcePartition?]] = configuration.topics.map { topic in
            Array(repeating: nil, count: Int(partitions.filter { $0.topic == topic.name }.map(\.partition).max() ?? -1) + 1)
        }
        for (index, partition) in partitions.enumerated() {
            if let topic = configuration.topics.firstIndex(where: { $0.name == partition.topic }) {
                sources[topic][Int(partition.partition)] = index
            }
        }
        assignment = Assignment(
            generation: generation,
            partitions: partitions,
            names: partitions.map(\.description),
            sources: sources,
            shapes: partitions.map { partition in configuration.topics.first { $0.name == partition.topic }?.shape ?? .kind(.impression) },
            windows: WindowAggregator(configuration: configuration.windows, partitionCount: partitions.count, now: now),
            tracker: OffsetCommitTracker(committed: Array(repeating: nil, count: partitions.count)),
            restoreFrontier: Array(repeating: 0, count: partitions.count),
            holdingEmissions: false
        )
        assignmentFirstSequence = nextSequence
        phase = .readingCommittedOffsets
        return actions + [.cancelBatches(generationsBelow: generation), .recover(generation: generation, partitions: partitions)]
    }

    /// The committed positions of the assigned partitions (absent: nothing committed).
    public mutating func committedOffsetsRead(_ committed: [TopicPartition: KafkaConsumer.CommittedOffset], now: Timestamp) -> [Action] {
        guard phase == .readingCommittedOffsets, let assignment else { preconditionFailure("committed offsets read in phase \(phase)") }
        guard let startFrom = configuration.startFrom else { return beginRestore(committed, now: now) }
        let starting = assignment.partitions.filter { configuration.resetOffsets || committed[$0] == nil }
        var actions: [Action] = []
        if starting.count < assignment.partitions.count {
            actions.append(
                .notice(
                    "the group has committed offsets for \(assignment.partitions.count - starting.count) partition(s): they resume there and "
                        + "--start-from is ignored for them (add --reset-offsets to start every partition at --start-from)"
                )
            )
        }
        guard !starting.isEmpty else { return actions + beginRestore(committed, now: now) }
        pendingCommitted = committed.filter { !starting.contains($0.key) }
        phase = .seeking
        return actions + [.seek(starting, to: startFrom)]
    }

    /// The partitions of ``Action/seek(_:to:)`` now start at `offsets`.
    public mutating func startPositionsFound(_ offsets: [TopicPartition: Int64], now: Timestamp) -> [Action] {
        guard phase == .seeking else { preconditionFailure("start positions found in phase \(phase)") }
        var committed = pendingCommitted
        pendingCommitted = [:]
        for (partition, offset) in offsets { committed[partition] = KafkaConsumer.CommittedOffset(offset: offset) }
        return beginRestore(committed, now: now)
    }

    private mutating func beginRestore(_ committed: [TopicPartition: KafkaConsumer.CommittedOffset], now: Timestamp) -> [Action] {
        guard var assignment else { preconditionFailure("no assignment to restore") }
        var positions: [(offset: Int64, maxEventTime: Int64?)?] = []
        var lowestWatermark: Int64?
        var withoutHistory: [String] = []
        for (index, partition) in assignment.partitions.enumerated() {
            guard let offset = committed[partition] else {
                positions.append(nil)
                withoutHistory.append(assignment.names[index])
                continue
            }
            let maxEventTime = CommitMetadata(text: offset.metadata)?.maxEventTime
            positions.append((offset.offset, maxEventTime))
            if let maxEventTime {
                // Resume the partition's watermark where the committed position left it, so the
                // replay judges lateness as the first run did.
                assignment.windows.restoreWatermark(of: index, maxEventTime: Timestamp(milliseconds: maxEventTime))
                let partitionWatermark = maxEventTime - configuration.windows.outOfOrderness.value
                lowestWatermark = min(lowestWatermark ?? partitionWatermark, partitionWatermark)
            } else {
                withoutHistory.append(assignment.names[index])
            }
        }
        assignment.tracker = OffsetCommitTracker(committed: positions)
        _ = assignment.windows.advance(now: now, holdEmissions: true)
        self.assignment = assignment
        phase = .restoring
        // Windows ending at or before this bound cannot receive a counted event any more.
        let bound = lowestWatermark.map { Timestamp(milliseconds: $0 - configuration.windows.allowedLateness.value) }
        return [.restore(RestoreRequest(partitions: assignment.names, windowEndAfter: bound, partitionsWithoutHistory: withoutHistory))]
    }

    /// The durable rows read back for the assignment: install them and start consuming.
    public mutating func restored(_ rows: [StoredWindowRow], now: Timestamp) -> [Action] {
        guard phase == .restoring, var assignment else { preconditionFailure("restored in phase \(phase)") }
        var byWindow: [Timestamp: [RestoredRow]] = [:]
        for row in rows {
            var reflected = Array(repeating: Int64(0), count: assignment.partitions.count)
            for (index, name) in assignment.names.enumerated() {
                guard let position = row.reflectedBefore[name] else { continue }
                reflected[index] = position
                assignment.restoreFrontier[index] = max(assignment.restoreFrontier[index], position)
            }
            let product = catalog.id(for: SeriesKey(product: ProductKey(row.productID), dimensions: row.dimensions))
            byWindow[row.windowStart, default: []].append(
                RestoredRow(product: product, totals: row.totals, revision: row.revision, reflectedBefore: reflected, uniqueUsers: row.uniqueUsers)
            )
        }
        for (start, rows) in byWindow { assignment.windows.restore(windowStart: start, rows: rows) }
        counters.windowsRestored += byWindow.count
        assignment.holdingEmissions = !Self.reachedFrontier(assignment)
        self.assignment = assignment
        phase = .running
        lastCommitAt = now.milliseconds
        return paused ? [] : [.resume(assignment.partitions)]
    }

    private static func reachedFrontier(_ assignment: Assignment) -> Bool {
        assignment.restoreFrontier.indices.allSatisfy { index in
            assignment.restoreFrontier[index] <= (assignment.tracker.position(of: index) ?? 0)
        }
    }

    /// The group took the partitions away (`lost`: without this member's participation).
    /// Everything of the assignment is dropped: queued and open batches are never written,
    /// nothing more is committed. The next owner recovers from the store.
    public mutating func revoked(lost: Bool) -> [Action] {
        guard let assignment else { return [] }
        self.assignment = nil
        openBatch = nil
        paused = false
        pausedAhead = []
        pendingCommit = [:]
        if phase != .failed { phase = .unassigned }
        catalog = ProductCatalog()
        return [.cancelBatches(generationsBelow: assignment.generation &+ 1)]
    }

    // MARK: Messages

    /// One consumed message of subscription topic `topicIndex`, decoded (or refused) by the
    /// driver. Messages of a partition arrive in offset order.
    public mutating func consumed(
        topicIndex: Int, partition: Int32, offset: Int64, _ decoded: Result<DecodedEvent, Rejection>
    ) -> MessageVerdict {
        guard phase == .running, assignment != nil, topicIndex >= 0, topicIndex < assignment!.sources.count,
            Int(partition) < assignment!.sources[topicIndex].count, let source = assignment!.sources[topicIndex][Int(partition)]
        else { return .handled }
        let shape = assignment!.shapes[source]
        defer { assignment!.tracker.consumed(source, offset: offset) }
        switch decoded {
        case .failure(let rejection):
            counters.recordConsumed(shape.primaryKind)
            counters.rejected[rejection.reason, default: 0] += 1
            return .deadLetter(rejection)
        case .success(let event):
            let product = catalog.id(for: SeriesKey(product: event.product, dimensions: event.dimensions))
            switch shape {
            case .kind(let kind):
                return count(kind, product, event, revenueMicros: event.revenueMicros, source: source, offset: offset)
            case .impressionWithClickFlag:
                let impression = count(.impression, product, event, revenueMicros: 0, source: source, offset: offset)
                // The click has the impression's time: when that is refused, one dead letter covers both.
                guard event.clicked, impression == .handled else { return impression }
                return count(.click, product, event, revenueMicros: event.revenueMicros, source: source, offset: offset)
            }
        }
    }

    private mutating func count(
        _ kind: EventKind, _ product: ProductID, _ event: DecodedEvent, revenueMicros: UInt64, source: SourcePartition, offset: Int64
    ) -> MessageVerdict {
        counters.recordConsumed(kind)
        switch assignment!.windows.ingest(
            kind, product, at: event.timestamp, from: source, offset: offset, revenueMicros: revenueMicros, user: event.user, eventID: event.eventID
        ) {
        case .counted:
            return .handled
        case .duplicate:
            counters.duplicates[Int(kind.rawValue)] += 1
            return .handled
        case .lateUpdate:
            counters.lateUpdates += 1
            return .handled
        case .alreadyCounted:
            counters.alreadyCounted += 1
            return .handled
        case .tooLate(let windowStart):
            let end = windowStart + configuration.windows.windowSize
            let watermark = assignment!.windows.watermark?.milliseconds ?? 0
            counters.rejected[.tooLate, default: 0] += 1
            return .deadLetter(
                Rejection(
                    .tooLate,
                    "event time \(event.timestamp.milliseconds) ms falls in window [\(windowStart.milliseconds), \(end.milliseconds)) ms, "
                        + "closed: watermark \(watermark) ms >= window end + allowed lateness \(configuration.windows.allowedLateness.value) ms"
                )
            )
        case .revenueOverflow(let windowStart):
            counters.rejected[.invalidRevenue, default: 0] += 1
            return .deadLetter(
                Rejection(
                    .invalidRevenue,
                    "revenue \(DecimalText.string(micros: revenueMicros)) would take the revenue of product window "
                        + "[\(windowStart.milliseconds) ms) beyond Decimal(18, 6)'s 999999999999.999999"
                )
            )
        }
    }

    // MARK: Time, batches, commits

    /// What the driver observed besides messages since the last poll.
    public struct PollObservation: Sendable {
        /// Processing time now.
        public var now: Timestamp
        /// Rows submitted to the sink and not yet written.
        public var sinkBufferedRows: Int
        /// Assigned partitions that may have data this consumer has not read (a known backlog,
        /// or the broker reported trouble): they must not become idle.
        public var partitionsWithBacklog: Set<TopicPartition>
        /// Whether the Kafka client reported trouble (all partitions count as possibly behind).
        public var sourceTrouble: Bool
        /// Per partition, the lowest offset whose dead letter the broker has not acknowledged.
        public var deadLettersPendingFrom: [TopicPartition: Int64]
        /// Whether the dead-letter publisher holds as many unacknowledged letters as it may
        /// (the dead-letter topic is unavailable): consuming pauses until it drains.
        public var deadLettersFull: Bool
        /// Whether the poll waited its whole timeout without a message. With no backlog and no
        /// trouble either, the consumer has caught up: nothing is about to join the open batch.
        public var pollWasEmpty: Bool

        public init(
            now: Timestamp, sinkBufferedRows: Int = 0, partitionsWithBacklog: Set<TopicPartition> = [], sourceTrouble: Bool = false,
            deadLettersPendingFrom: [TopicPartition: Int64] = [:], deadLettersFull: Bool = false, pollWasEmpty: Bool = false
        ) {
            self.now = now
            self.sinkBufferedRows = sinkBufferedRows
            self.partitionsWithBacklog = partitionsWithBacklog
            self.sourceTrouble = sourceTrouble
            self.deadLettersPendingFrom = deadLettersPendingFrom
            self.deadLettersFull = deadLettersFull
            self.pollWasEmpty = pollWasEmpty
        }
    }

    /// The end of a poll: moves processing time, emits due windows into batches, submits full
    /// or old batches (and the open batch as soon as the consumer has caught up: an empty poll
    /// with no backlog, so waiting out `batchMaxDelay` would only delay its rows), commits
    /// when due, and pauses or resumes consumption for backpressure.
    ///
    /// An open batch that is not full waits while the sink still holds rows of earlier
    /// batches: submitted then, it would only queue behind them, and kept, it grows, so a
    /// backlog is written in fewer, larger inserts. ClickHouse's cost is mostly per insert
    /// (parts of the results table and of every view's table; measured in the README's
    /// benchmark section).
    public mutating func pollFinished(_ observation: PollObservation) -> [Action] {
        guard phase == .running, assignment != nil else { return [] }
        let now = observation.now
        bufferedRows = observation.sinkBufferedRows
        var actions: [Action] = []
        // A partition is idle only when there is nothing to read from it: one with a backlog,
        // one this machine kept paused since the last poll (its messages wait unread, and the
        // client learns high watermarks from fetches, which stop while paused, so no backlog
        // shows), and any behind a troubled broker stay active.
        for index in assignment!.partitions.indices
        where paused || pausedAhead.contains(index) || observation.sourceTrouble
            || observation.partitionsWithBacklog.contains(assignment!.partitions[index])
        {
            assignment!.windows.keepActive(index)
        }
        if assignment!.holdingEmissions, Self.reachedFrontier(assignment!) { assignment!.holdingEmissions = false }
        let emissions = assignment!.windows.advance(now: now, holdEmissions: assignment!.holdingEmissions)
        if !emissions.isEmpty { add(emissions, at: now, into: &actions) }
        for product in assignment!.windows.takeReleasedProducts() { catalog.release(product) }
        let caughtUp = observation.pollWasEmpty && observation.partitionsWithBacklog.isEmpty && !observation.sourceTrouble
        if let batch = openBatch, batch.rowCount > 0, observation.sinkBufferedRows == 0,
            caughtUp || now.milliseconds - openBatchCreatedAt >= configuration.batchMaxDelay.value
        {
            submitOpenBatch(into: &actions)
        }
        if now.milliseconds - lastCommitAt >= configuration.commitInterval.value, let commit = commitAction(observation) {
            actions.append(commit)
        }
        applyBackpressure(deadLettersFull: observation.deadLettersFull, into: &actions)
        counters.openWindows = assignment!.windows.openWindowCount
        counters.openProductWindows = assignment!.windows.openProductWindowCount
        counters.watermarkMilliseconds = assignment!.windows.watermark?.milliseconds
        counters.wallClockMilliseconds = now.milliseconds
        counters.bufferedRows = bufferedRows + (openBatch?.rowCount ?? 0)
        counters.paused = paused || !pausedAhead.isEmpty
        return actions
    }

    /// Adds the rows of one advance to batches.
    ///
    /// A batch's provenance is the consumer positions at its last append, and that must be
    /// true of every row in it: a row appended earlier whose (product, window) got more events
    /// since was emitted again by this advance, and that later revision must land in the same
    /// batch. So the open batch takes this advance's rows only if all of them that fall on its
    /// day fit; otherwise it is submitted first. Rows of a single advance may then be split
    /// across batches freely (at a day change or the row cap): they all share one position.
    private mutating func add(_ emissions: [WindowEmission], at now: Timestamp, into actions: inout [Action]) {
        let positions = currentPositions()
        if let batch = openBatch, let first = emissions.first {
            let firstDay = ResultBatch.day(of: first.windowEnd)
            let sameDayRows = emissions.prefix { ResultBatch.day(of: $0.windowEnd) == batch.day }.reduce(0) { $0 + $1.rows.count }
            if firstDay != batch.day || batch.rowCount + sameDayRows > configuration.batchMaxRows { submitOpenBatch(into: &actions) }
        }
        for emission in emissions {
            let day = ResultBatch.day(of: emission.windowEnd)
            counters.recordEmission(rows: emission.rows)
            var dependentBatch: UInt64?
            for row in emission.rows {
                if let batch = openBatch, batch.day != day || batch.rowCount >= configuration.batchMaxRows {
                    submitOpenBatch(into: &actions)
                }
                if openBatch == nil { openNewBatch(day: day, now: now) }
                if dependentBatch != openBatch!.sequence {
                    dependentBatch = openBatch!.sequence
                    openBatch!.positions = positions
                    assignment!.tracker.batch(openBatch!.sequence, dependsOn: emission.firstNewOffsets)
                }
                openBatch!.append(ResultRow(row, of: emission, series: catalog.series(of: row.product), emittedAt: now))
            }
        }
    }

    private mutating func openNewBatch(day: Int64, now: Timestamp) {
        let generation = assignment!.generation
        openBatch = ResultBatch(
            id: "\(ClickHouseResultsStore.queryPrefix(writer: configuration.writer))g\(generation)-\(nextSequence)",
            sequence: nextSequence, generation: generation, day: day
        )
        nextSequence += 1
        openBatchCreatedAt = now.milliseconds
    }

    private func currentPositions() -> [PartitionPosition] {
        guard let assignment else { return [] }
        return assignment.names.indices.map { index in
            PartitionPosition(
                partition: assignment.names[index],
                nextOffset: max(assignment.tracker.position(of: index) ?? 0, assignment.restoreFrontier[index])
            )
        }
    }

    private mutating func submitOpenBatch(into actions: inout [Action]) {
        guard let batch = openBatch else { return }
        openBatch = nil
        guard batch.rowCount > 0 else { return }
        bufferedRows += batch.rowCount
        actions.append(.submit(batch))
    }

    private mutating func commitAction(_ observation: PollObservation) -> Action? {
        guard pendingCommit.isEmpty, let assignment else { return nil }
        lastCommitAt = observation.now.milliseconds
        let windows = assignment.windows
        let offsets = assignment.tracker.offsetsToCommit(
            pending: { windows.lowestPendingOffset(of: $0) },
            maxEventTime: { windows.watermarks.maxEventTime(of: $0)?.milliseconds },
            deadLettersPendingFrom: { observation.deadLettersPendingFrom[assignment.partitions[$0]] }
        )
        guard !offsets.isEmpty else { return nil }
        pendingCommit = offsets
        var byPartition: [TopicPartition: KafkaConsumer.CommittedOffset] = [:]
        for (partition, offset) in offsets {
            byPartition[assignment.partitions[partition]] = KafkaConsumer.CommittedOffset(
                offset: offset.offset, metadata: CommitMetadata(maxEventTime: offset.maxEventTimeBefore).text
            )
        }
        return .commit(byPartition)
    }

    /// The commit of the last ``Action/commit(_:)`` succeeded.
    public mutating func commitSucceeded() {
        guard !pendingCommit.isEmpty else { return }
        assignment?.tracker.committed(pendingCommit)
        pendingCommit = [:]
        counters.commits += 1
    }

    /// The commit of the last ``Action/commit(_:)`` failed; a later poll tries again.
    public mutating func commitFailed() {
        pendingCommit = [:]
    }

    /// Pauses consumption of every partition while ClickHouse is behind (`--buffer-max-rows`,
    /// resuming below half) or the dead-letter topic cannot take more.
    ///
    /// While the window state is at its bound (`--max-open-product-windows`), it pauses only the
    /// partitions more than a window ahead of the pipeline watermark (or all partitions with data
    /// while the watermark is undefined), so that the partitions holding the watermark back catch
    /// up (or go idle) and windows close; a partition resumes when it is no longer ahead or the
    /// state is below half. The partitions that hold the watermark are never paused for it, so
    /// the windows can always close (a single window with more products than the bound is kept
    /// whole).
    private mutating func applyBackpressure(deadLettersFull: Bool, into actions: inout [Action]) {
        guard let assignment else { return }
        let buffered = bufferedRows + (openBatch?.rowCount ?? 0)
        if !paused && (buffered >= configuration.bufferMaxRows || deadLettersFull) {
            paused = true
            actions.append(.pause(assignment.partitions))
        } else if paused && buffered < configuration.bufferMaxRows / 2 && !deadLettersFull {
            paused = false
            let resumed = assignment.partitions.indices.filter { !pausedAhead.contains($0) }.map { assignment.partitions[$0] }
            if !resumed.isEmpty { actions.append(.resume(resumed)) }
        }
        let open = assignment.windows.openProductWindowCount
        var ahead: Set<SourcePartition> = []
        if open >= configuration.maxOpenProductWindows || (!pausedAhead.isEmpty && open >= configuration.maxOpenProductWindows / 2) {
            let watermark = assignment.windows.watermark?.milliseconds
            let lead = configuration.windows.outOfOrderness.value + configuration.windows.windowSize.value
            ahead = Set(
                assignment.partitions.indices.filter { index in
                    guard let latest = assignment.windows.watermarks.maxEventTime(of: index)?.milliseconds else { return false }
                    return watermark.map { latest - lead > $0 } ?? true
                }
            )
            if open < configuration.maxOpenProductWindows { ahead.formIntersection(pausedAhead) }
        }
        let newlyPaused = ahead.subtracting(pausedAhead).sorted()
        let resumed = pausedAhead.subtracting(ahead).sorted()
        pausedAhead = ahead
        if !paused {
            if !newlyPaused.isEmpty { actions.append(.pause(newlyPaused.map { assignment.partitions[$0] })) }
            if !resumed.isEmpty { actions.append(.resume(resumed.map { assignment.partitions[$0] })) }
        }
    }

    // MARK: Sink completions

    /// What became of a submitted batch.
    public mutating func batchCompleted(_ completion: SinkCompletion) -> [Action] {
        switch completion {
        case .written(let sequence, _):
            assignment?.tracker.acknowledged(sequence)
            return []
        case .fenced(let sequence):
            // A batch of the current assignment was refused: the group moved on without this
            // member, and the revocation has not arrived yet.
            guard phase == .running, let assignment, sequence >= assignmentFirstSequence else { return [] }
            phase = .deposed
            return [.pause(assignment.partitions)]
        case .failed(_, let error):
            phase = .failed
            return [.fail(PipelineError(error.description))]
        }
    }

    // MARK: Stop

    /// A clean stop: submit what is complete. The driver then waits for the sink, reports the
    /// completions, and calls ``finalCommit(_:)``.
    public mutating func stopping() -> [Action] {
        guard phase == .running else { return [] }
        var actions: [Action] = []
        submitOpenBatch(into: &actions)
        return actions
    }

    /// The last commit of a clean stop, after the sink drained.
    public mutating func finalCommit(_ observation: PollObservation) -> [Action] {
        guard phase == .running else { return [] }
        pendingCommit = [:]
        return commitAction(observation).map { [$0] } ?? []
    }
}

extension EventShape {
    /// The kind a message of this shape counts as first.
    var primaryKind: EventKind {
        if case .kind(let kind) = self { return kind }
        return .impression
    }
}
