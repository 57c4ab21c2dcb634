import CTRWindows


/// Decides which offsets may be committed: a partition's committed offset never passes an
/// event whose effect on the output is not yet durable in ClickHouse.
///
/// Pure state machine. The pipeline reports what it consumed, which insert batches depend on
/// which offsets, and which batches ClickHouse acknowledged; ``offsetsToCommit(pending:)``
/// answers with the new commit positions.
public struct OffsetCommitTracker: Sendable {
    /// Next offset to consume, per source partition (`-1` before the first message).
    private var positions: [Int64]
    private var committed: [Int64]
    /// Batch sequence → per partition, the lowest offset whose effect the batch carries.
    private var inFlight: [UInt64: [SourceOffset?]] = [:]

    public init(partitionCount: Int) {
        positions = Array(repeating: -1, count: partitionCount)
        committed = Array(repeating: -1, count: partitionCount)
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

    /// Next offset to consume of `partition`, if anything was consumed.
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

    /// Records that ClickHouse acknowledged batch `sequence`.
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
    public func offsetsToCommit(
        pending: (SourcePartition) -> SourceOffset?, maxEventTime: (SourcePartition) -> Int64?
    ) -> [SourcePartition: SourceOffset] {
        var result: [SourcePartition: SourceOffset] = [:]
        for partition in positions.indices where positions[partition] >= 0 {
            var safe = SourceOffset(partition: partition, offset: positions[partition], maxEventTimeBefore: maxEventTime(partition))
            if let lowest = pending(partition), lowest.offset < safe.offset { safe = lowest }
            for offsets in inFlight.values {
                if let lowest = offsets[partition], lowest.offset < safe.offset { safe = lowest }
            }
            if safe.offset > committed[partition] { result[partition] = safe }
        }
        return result
    }

    /// Records a successful commit.
    public mutating func committed(_ offsets: [SourcePartition: SourceOffset]) {
        for (partition, offset) in offsets { committed[partition] = max(committed[partition], offset.offset) }
    }
}
