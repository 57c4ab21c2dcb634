/// A source of events: one partition of one input topic, numbered densely from 0 by the caller
/// (the caller keeps the mapping to topic and partition).
public typealias SourcePartition = Int

/// Tracks event-time progress per source partition and derives the pipeline watermark.
///
/// - A partition's watermark is the highest event time seen on it minus the out-of-orderness.
/// - The pipeline watermark is the minimum over the partitions that are *active*. A partition
///   that has had no message for the idle timeout (processing time) while there was nothing to
///   read from it is idle and does not hold the watermark back until it receives data again. A
///   partition the caller keeps active (``keepActive(_:)``: data not yet read, consumption
///   paused, broker unreachable) never becomes idle. A partition that has not received any
///   message yet holds the watermark back until it has been assigned for the idle timeout.
/// - When every partition is idle, the watermark is the maximum over the partitions, so that a
///   stream that stopped still closes its windows.
/// - The pipeline watermark never moves backwards.
public struct Watermarks: Sendable {
    @usableFromInline struct PartitionState: Sendable {
        /// Highest event time seen, `nil` before the first event.
        @usableFromInline var maxEventTime: Int64?
        /// Processing time of the last event, or of the assignment before the first event.
        var lastActivity: Int64
        /// Whether an event arrived since the last ``Watermarks/advance(now:)``.
        var sawEventSinceAdvance: Bool
        /// Whether ``Watermarks/keepActive(_:)`` was called since the last advance.
        var keptActiveSinceAdvance = false
        var isIdle: Bool
    }

    let outOfOrderness: Int64
    let idleTimeout: Int64
    @usableFromInline var partitions: [PartitionState]
    /// The pipeline watermark, `nil` until it is first defined.
    public private(set) var current: Timestamp?

    /// Starts tracking `partitionCount` partitions, assigned at processing time `now`.
    public init(partitionCount: Int, outOfOrderness: Milliseconds, idleTimeout: Milliseconds, now: Timestamp) {
        self.outOfOrderness = outOfOrderness.value
        self.idleTimeout = idleTimeout.value
        self.partitions = Array(
            repeating: PartitionState(maxEventTime: nil, lastActivity: now.milliseconds, sawEventSinceAdvance: false, isIdle: false),
            count: partitionCount
        )
    }

    /// Number of partitions tracked.
    public var partitionCount: Int { partitions.count }

    /// Records an event of `partition` with event time `time`.
    @inlinable
    public mutating func observe(_ time: Timestamp, on partition: SourcePartition) {
        observeEvent(time.milliseconds, on: partition)
    }

    @usableFromInline
    mutating func observeEvent(_ time: Int64, on partition: SourcePartition) {
        if let max = partitions[partition].maxEventTime {
            if time > max { partitions[partition].maxEventTime = time }
        } else {
            partitions[partition].maxEventTime = time
        }
        partitions[partition].sawEventSinceAdvance = true
    }

    /// Records that `partition` may have data this consumer has not read (a backlog, paused
    /// consumption, an unreachable broker): until the next ``advance(now:)`` it counts as
    /// active, as if an event had arrived, but its watermark does not move.
    public mutating func keepActive(_ partition: SourcePartition) {
        partitions[partition].keptActiveSinceAdvance = true
    }

    /// Processing time since the last activity of the most recently active partition: how long
    /// the whole input has been quiet as of the last ``advance(now:)`` (0 when some partition
    /// was active then).
    public func quietTime(now: Timestamp) -> Int64 {
        guard let latest = partitions.map(\.lastActivity).max() else { return 0 }
        return max(0, now.milliseconds - latest)
    }

    /// Moves the pipeline watermark up to `time` (never back): used to close windows of a
    /// stream that stopped.
    public mutating func raise(to time: Timestamp) {
        if time > (current ?? Timestamp(milliseconds: .min)) { current = time }
    }

    /// Highest event time seen on `partition`, if any.
    public func maxEventTime(of partition: SourcePartition) -> Timestamp? {
        partitions[partition].maxEventTime.map(Timestamp.init(milliseconds:))
    }

    /// Whether `partition` is currently idle.
    public func isIdle(_ partition: SourcePartition) -> Bool { partitions[partition].isIdle }

    /// Updates idleness with processing time `now` and recomputes the pipeline watermark.
    /// Returns the (possibly unchanged) watermark.
    @discardableResult
    public mutating func advance(now: Timestamp) -> Timestamp? {
        var minimum: Int64?
        var maximum: Int64?
        var anyActive = false
        var heldBack = false
        for index in partitions.indices {
            if partitions[index].sawEventSinceAdvance || partitions[index].keptActiveSinceAdvance {
                partitions[index].sawEventSinceAdvance = false
                partitions[index].keptActiveSinceAdvance = false
                partitions[index].lastActivity = now.milliseconds
                partitions[index].isIdle = false
            } else if now.milliseconds - partitions[index].lastActivity >= idleTimeout {
                partitions[index].isIdle = true
            }
            let state = partitions[index]
            let partitionWatermark = state.maxEventTime.map { $0 - outOfOrderness }
            if let partitionWatermark {
                maximum = Swift.max(maximum ?? partitionWatermark, partitionWatermark)
            }
            guard !state.isIdle else { continue }
            anyActive = true
            if let partitionWatermark {
                minimum = Swift.min(minimum ?? partitionWatermark, partitionWatermark)
            } else {
                heldBack = true
            }
        }
        let candidate: Int64?
        if heldBack {
            candidate = nil
        } else if anyActive {
            candidate = minimum
        } else {
            candidate = maximum
        }
        if let candidate, candidate > (current?.milliseconds ?? Int64.min) {
            current = Timestamp(milliseconds: candidate)
        }
        return current
    }
}
