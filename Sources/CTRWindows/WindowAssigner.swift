/// Assigns event times to tumbling windows aligned to the Unix epoch (UTC).
///
/// A window covers `[start, start + size)`; `start` is a multiple of `size` milliseconds since
/// the epoch, so every instance of the pipeline agrees on the boundaries.
public struct WindowAssigner: Sendable, Hashable {
    /// Length of every window. Must be positive.
    public let size: Milliseconds

    public init(size: Milliseconds) {
        precondition(size.value > 0, "window size must be positive")
        self.size = size
    }

    /// Start of the window that contains `time`.
    @inlinable
    public func windowStart(for time: Timestamp) -> Timestamp {
        Timestamp(milliseconds: time.milliseconds.floorDivided(by: size.value) &* size.value)
    }

    /// End (exclusive) of the window that starts at `start`.
    @inlinable
    public func windowEnd(forStart start: Timestamp) -> Timestamp {
        start + size
    }
}
