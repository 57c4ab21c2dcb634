import ClickHouseHTTP
import Foundation

/// Exponential backoff with full jitter: before retry `n` (1-based) the sink waits a uniformly
/// random time in `[0, min(maximumDelay, initialDelay × multiplier^(n-1))]`.
public struct RetryPolicy: Sendable, Hashable {
    public var initialDelay: Duration
    public var multiplier: Double
    public var maximumDelay: Duration
    /// Attempts before a retryable failure is given up as fatal; `nil` retries forever (the
    /// default: while ClickHouse is down the aggregator waits and pauses consuming).
    public var maximumAttempts: Int?

    public init(
        initialDelay: Duration = .milliseconds(100),
        multiplier: Double = 2,
        maximumDelay: Duration = .seconds(10),
        maximumAttempts: Int? = nil
    ) {
        self.initialDelay = initialDelay
        self.multiplier = multiplier
        self.maximumDelay = maximumDelay
        self.maximumAttempts = maximumAttempts
    }

    /// The delay before retry number `retry` (1-based), for a uniform random `fraction` in [0, 1).
    public func delay(beforeRetry retry: Int, fraction: Double) -> Duration {
        let ceiling = min(
            Double(maximumDelay.milliseconds),
            Double(initialDelay.milliseconds) * pow(multiplier, Double(max(0, retry - 1)))
        )
        return .milliseconds(Int64((ceiling * min(max(fraction, 0), 1)).rounded(.down)))
    }
}

extension Duration {
    /// Whole milliseconds (rounded toward zero).
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

/// The retry protocol of one insert, as a pure state machine: the caller sends, reports what
/// happened, and performs the returned action.
///
/// When a failure leaves it unknown whether the insert landed (timeout, connection reset after
/// the body was sent), the machine asks the caller to *verify* (look for the batch's rows in
/// the table) before sending again, so that a retry never writes a batch twice.
public struct InsertRetryStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        /// Send the insert (attempt number, 1-based).
        case send(attempt: Int)
        /// Wait, then check whether the batch's rows are in the table and report with
        /// ``verified(applied:)`` or ``verificationFailed(_:fraction:)``.
        case verify(after: Duration)
        /// Wait, then send again.
        case retry(after: Duration, attempt: Int)
        /// The batch is durable.
        case succeed
        /// Give up: the error is not retryable, or attempts are exhausted.
        case fail(ClickHouseError)
    }

    enum State: Sendable {
        case idle
        case sending(attempt: Int)
        case verifying(attempt: Int, retries: Int)
        case done
    }

    public let policy: RetryPolicy
    private var state: State = .idle
    /// Number of retries so far (sends after the first, and re-verifications).
    public private(set) var retries = 0

    public init(policy: RetryPolicy) {
        self.policy = policy
    }

    public mutating func start() -> Action {
        state = .sending(attempt: 1)
        return .send(attempt: 1)
    }

    public mutating func sent() -> Action {
        guard case .sending = state else { preconditionFailure("sent while not sending: \(state)") }
        state = .done
        return .succeed
    }

    /// The send failed with `error`; `fraction` is a uniform random number in [0, 1). Whether
    /// the insert may have been applied is judged from the error.
    public mutating func sendFailed(_ error: ClickHouseError, fraction: Double) -> Action {
        sendFailed(error, mayHaveBeenApplied: error.mayHaveBeenApplied, fraction: fraction)
    }

    /// The send failed with `error`; `mayHaveBeenApplied` says whether the server may have
    /// written the batch anyway (then the machine asks to verify before any resend).
    public mutating func sendFailed(_ error: ClickHouseError, mayHaveBeenApplied: Bool, fraction: Double) -> Action {
        guard case .sending(let attempt) = state else { preconditionFailure("sendFailed while not sending: \(state)") }
        guard error.isRetryable else {
            state = .done
            return .fail(error)
        }
        if let maximum = policy.maximumAttempts, attempt >= maximum {
            state = .done
            return .fail(error)
        }
        retries += 1
        let delay = policy.delay(beforeRetry: retries, fraction: fraction)
        if mayHaveBeenApplied {
            state = .verifying(attempt: attempt, retries: 0)
            return .verify(after: delay)
        }
        state = .sending(attempt: attempt + 1)
        return .retry(after: delay, attempt: attempt + 1)
    }

    /// The verification found the batch's rows (`applied`) or found that no insert of the
    /// batch is running and none of its rows exist.
    public mutating func verified(applied: Bool) -> Action {
        guard case .verifying(let attempt, _) = state else { preconditionFailure("verified while not verifying: \(state)") }
        if applied {
            state = .done
            return .succeed
        }
        state = .sending(attempt: attempt + 1)
        return .retry(after: .zero, attempt: attempt + 1)
    }

    /// The verification query itself failed.
    public mutating func verificationFailed(_ error: ClickHouseError, fraction: Double) -> Action {
        guard case .verifying(let attempt, let verifyRetries) = state else {
            preconditionFailure("verificationFailed while not verifying: \(state)")
        }
        guard error.isRetryable else {
            state = .done
            return .fail(error)
        }
        retries += 1
        state = .verifying(attempt: attempt, retries: verifyRetries + 1)
        return .verify(after: policy.delay(beforeRetry: retries, fraction: fraction))
    }
}
