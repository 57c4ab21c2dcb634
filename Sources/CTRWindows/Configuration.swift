/// The event-time rules of the CTR windows.
public struct WindowConfiguration: Sendable, Hashable {
    /// Tumbling window length (default 10 s).
    public var windowSize: Milliseconds
    /// Bounded out-of-orderness: a partition's watermark is its highest event time minus this
    /// (default 2 s).
    public var outOfOrderness: Milliseconds
    /// How long after the watermark passes a window's end late events still update it
    /// (default 5 s). Later events are "too late".
    public var allowedLateness: Milliseconds
    /// Processing time after which a partition without messages stops holding the watermark
    /// back (default 30 s).
    public var idleTimeout: Milliseconds
    /// Processing time after which, when every partition has been idle that long, the open
    /// windows fire: the watermark moves to the end of the latest window with data. `nil`
    /// disables it. Default 60 s: longer than the idle timeout, so a pause in traffic does not
    /// close windows whose late events are still on their way, and short enough that the last
    /// windows of a stream that stopped reach the dashboards within a minute. An event that
    /// arrives later for such a window is a late update while within the allowed lateness of
    /// that watermark, and too late after.
    public var closeIdleAfter: Milliseconds?

    public init(
        windowSize: Milliseconds = .seconds(10),
        outOfOrderness: Milliseconds = .seconds(2),
        allowedLateness: Milliseconds = .seconds(5),
        idleTimeout: Milliseconds = .seconds(30),
        closeIdleAfter: Milliseconds? = .seconds(60)
    ) {
        self.windowSize = windowSize
        self.outOfOrderness = outOfOrderness
        self.allowedLateness = allowedLateness
        self.idleTimeout = idleTimeout
        self.closeIdleAfter = closeIdleAfter
    }

    /// Checks that the values make sense; returns a message naming the first bad one.
    public func validate() -> String? {
        if windowSize.value <= 0 { return "window size must be positive (got \(windowSize))" }
        if windowSize.value % 1000 != 0 {
            return "window size must be a whole number of seconds, as window_start/window_end are DateTime (got \(windowSize))"
        }
        if outOfOrderness.value < 0 { return "out-of-orderness must not be negative (got \(outOfOrderness))" }
        if allowedLateness.value < 0 { return "allowed lateness must not be negative (got \(allowedLateness))" }
        if idleTimeout.value <= 0 { return "idle timeout must be positive (got \(idleTimeout))" }
        if let closeIdleAfter, closeIdleAfter.value <= 0 { return "close-idle-after must be positive (got \(closeIdleAfter))" }
        return nil
    }
}
