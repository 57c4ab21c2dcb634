import CTRWindows

/// Decides which offsets may be committed: a partition's committed offset never passes an
/// event whose effect on the output is not yet durable in ClickHouse, nor a refused message
/// whose dead letter the broker has not acknowledged.
///
/// Pure state machine. The pipeline reports what it consumed, which insert batches depend on
/// which offsets, and which batches ClickHouse acknowledged; ``offsetsToCommit(pending:maxEventTime:deadLettersPendingFrom:)``
/// answers with the new commit positions.
public struct OffsetCommitTracker: Sendable {
    /// Next offset to consume, per source partition (`-1` while unknown).
    private var positions: [Int64]
    private var committed: [Int64]
    /// Per partition, the event time stored with the last commit.
    private var committedMaxEventTime: [Int64?]
    /// Batch sequence → per partition, the lowest offset whose effect the batch carries.
    private var inFlight: [UInt64: [SourceOffset?]] = [:]

    /// - Parameter committed: per partition, the committed position (next offset to consume)
    ///   and its event time, if any.
    public init(committed: [(offset: Int64, maxEventTime: Int64?)?]) {
        positions = committed.map { $0?.offset ?? -1 }
        self.committed = positions
        committedMaxEventTime = committed.map { $0?.maxEventTime }
    }

    /// Records that the message at `offset` of `partition` was consumed and handled.
    @inlinable
    public mutating func consumed(_ partition: SourcePartition, offset: Int64) {
        recordPosition(partition, offset + 1)
    }

    @usableFromInline
    mutating func recordPosition(_ partition: SourcePartition, _ position: Int64) {
        if position > positions[partition] { positions[partition] = position }
    }

    /// Next offset to consume of `partition`, if known (consumed or committed).
    public func position(of partition: SourcePartition) -> Int64? {
        positions[partition] >= 0 ? positions[partition] : nil
    }

    /// Records that batch `sequence` carries the effect of the events at and after `offsets`.
    public mutating func batch(_ sequence: UInt64, dependsOn offsets: [SourceOffset]) {
        guard !offsets.isEmpty else { return }
        var lowest = inFlight[sequence] ?? Array(repeating: nil, count: positions.count)
        for source in offsets where source.offset < (lowest[source.partition]?.offset ?? .max) {
            lowest[source.partition] = source
        }
        inFlight[sequence] = lowest
    }

    /// Records that ClickHouse acknowledged batch `sequence` (unknown sequences are ignored).
    public mutating func acknowledged(_ sequence: UInt64) {
        inFlight.removeValue(forKey: sequence)
    }

    /// Number of batches not yet acknowledged that carry event effects.
    public var unacknowledgedBatches: Int { inFlight.count }

    /// New commit positions (next offset to consume) that moved since the last commit, each
    /// with the partition's highest event time before it (for the commit's metadata).
    ///
    /// - Parameters:
    ///   - pending: per partition, the lowest offset counted in windows but not yet emitted.
    ///   - maxEventTime: per partition, the highest event time consumed so far.
    ///   - deadLettersPendingFrom: per partition, the lowest offset whose dead letter is not yet
    ///     acknowledged by the broker. A commit held there carries the event time of the last
    ///     commit (an earlier, lower one: a replay then judges lateness no stricter than before).
    public func offsetsToCommit(
        pending: (SourcePartition) -> SourceOffset?, maxEventTime: (SourcePartition) -> Int64?,
        deadLettersPendingFrom: (SourcePartition) -> Int64? = { _ in nil }
    ) -> [SourcePartition: SourceOffset] {
        var result: [SourcePartition: SourceOffset] = [:]
        for partition in positions.indices where positions[partition] >= 0 {
            var safe = SourceOffset(partition: partition, offset: positions[partition], maxEventTimeBefore: maxEventTime(partition))
            if let lowest = pending(partition), lowest.offset < safe.offset { safe = lowest }
            for offsets in inFlight.values {
                if let lowest = offsets[partition], lowest.offset < safe.offset { safe = lowest }
            }
            if let letter = deadLettersPendingFrom(partition), letter < safe.offset {
                safe = SourceOffset(partition: partition, offset: letter, maxEventTimeBefore: committedMaxEventTime[partition])
            }
            if safe.offset > committed[partition] { result[partition] = safe }
        }
        return result
    }

    /// Records a successful commit.
    public mutating func committed(_ offsets: [SourcePartition: SourceOffset]) {
        for (partition, offset) in offsets where offset.offset > committed[partition] {
            committed[partition] = offset.offset
            committedMaxEventTime[partition] = offset.maxEventTimeBefore ?? committedMaxEventTime[partition]
        }
    }
}

/// What the aggregator stores with a committed offset: the partition's highest event time before
/// it, so that a consumer resuming there restores the watermark exactly (`ctr1 maxts=<ms>`).
public struct CommitMetadata: Equatable, Sendable {
    public var maxEventTime: Int64?

    public init(maxEventTime: Int64?) { self.maxEventTime = maxEventTime }

    public init?(text: String) {
        let fields = text.split(separator: " ")
        guard fields.first == "ctr1" else { return nil }
        maxEventTime = fields.dropFirst().first { $0.hasPrefix("maxts=") }.flatMap { Int64($0.dropFirst("maxts=".count)) }
    }

    public var text: String { maxEventTime.map { "ctr1 maxts=\($0)" } ?? "ctr1" }
}
