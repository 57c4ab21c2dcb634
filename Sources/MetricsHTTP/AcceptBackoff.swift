#if canImport(Glibc)
import Glibc
#endif

/// What the accept loop does after `accept` failed: a pure decision over the error and the
/// failures in a row, so the loop never ends on an error.
///
/// Errors that concern one connection (the peer gave up, a signal, nothing to accept) are retried
/// at once. Resource exhaustion (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) and anything unexpected
/// stop accepting for a while, doubling from ``initialDelay`` to ``maximumDelay``, because the
/// listening socket stays readable and retrying at once would spin; connections already open
/// are still served meanwhile, and new ones wait in the listen backlog.
public struct AcceptBackoff: Sendable, Equatable {
    public enum Action: Equatable, Sendable {
        /// Try again now (also: stop for this round when it was `EAGAIN`).
        case retry
        /// Stop accepting for this long, then try again.
        case pause(Duration)
    }

    public var initialDelay: Duration
    public var maximumDelay: Duration
    /// Failures in a row that paused accepting; reset by a successful accept.
    public private(set) var consecutiveFailures = 0

    public init(initialDelay: Duration = .milliseconds(50), maximumDelay: Duration = .seconds(1)) {
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
    }

    /// Records an accept failure with `errno` and says what to do.
    public mutating func failed(errno code: Int32) -> Action {
        switch code {
        case EINTR, EAGAIN, EWOULDBLOCK, ECONNABORTED, EPROTO, EPERM:
            return .retry
        default:
            let exponent = min(consecutiveFailures, 16)
            consecutiveFailures += 1
            let delay = initialDelay * (1 << exponent)
            return .pause(min(delay, maximumDelay))
        }
    }

    /// Records a successful accept.
    public mutating func succeeded() {
        consecutiveFailures = 0
    }
}
