import ClickHouseHTTP
import Foundation
import Testing

@testable import ClickHouseSink

@Suite struct RetryStateMachineTests {
    let policy = RetryPolicy(initialDelay: .milliseconds(100), multiplier: 2, maximumDelay: .seconds(1), maximumAttempts: nil)
    let refused = ClickHouseError.transport(.connectionRefused, message: "refused")
    let reset = ClickHouseError.transport(.connectionReset, message: "reset")

    @Test func backoffIsExponentialCappedAndJittered() {
        #expect(policy.delay(beforeRetry: 1, fraction: 0.999_999) == .milliseconds(99))
        #expect(policy.delay(beforeRetry: 3, fraction: 0.5) == .milliseconds(200))
        #expect(policy.delay(beforeRetry: 30, fraction: 0.999_999) == .milliseconds(999), "capped at the maximum delay")
        #expect(policy.delay(beforeRetry: 4, fraction: 0) == .zero, "full jitter starts at zero")
    }

    @Test func retriesRefusedConnectionsWithoutVerifying() {
        var machine = InsertRetryStateMachine(policy: policy)
        #expect(machine.start() == .send(attempt: 1))
        #expect(machine.sendFailed(refused, fraction: 0.5) == .retry(after: .milliseconds(50), attempt: 2))
        #expect(machine.sendFailed(refused, fraction: 0.5) == .retry(after: .milliseconds(100), attempt: 3))
        #expect(machine.sent() == .succeed)
        #expect(machine.retries == 2)
    }

    @Test func ambiguousFailuresAreVerifiedBeforeResending() {
        var machine = InsertRetryStateMachine(policy: policy)
        _ = machine.start()
        #expect(machine.sendFailed(reset, fraction: 0.5) == .verify(after: .milliseconds(50)))
        #expect(machine.verificationFailed(refused, fraction: 0.5) == .verify(after: .milliseconds(100)))
        #expect(machine.verified(applied: false) == .retry(after: .zero, attempt: 2))
        #expect(machine.sendFailed(.transport(.timeout, message: "slow"), fraction: 0.5) == .verify(after: .milliseconds(200)))
        #expect(machine.verified(applied: true) == .succeed, "the lost acknowledgement is recovered, nothing is sent twice")
    }

    @Test func fatalErrorsStopAtOnce() {
        var machine = InsertRetryStateMachine(policy: policy)
        _ = machine.start()
        let unknownTable = ClickHouseError.server(code: 60, status: 404, message: "Table default.x doesn't exist.")
        #expect(machine.sendFailed(unknownTable, fraction: 0.5) == .fail(unknownTable))
    }

    @Test func attemptsCanBeBounded() {
        var machine = InsertRetryStateMachine(policy: RetryPolicy(maximumAttempts: 2))
        _ = machine.start()
        let overloaded = ClickHouseError.server(code: 202, status: 500, message: "Too many simultaneous queries")
        #expect(machine.sendFailed(overloaded, fraction: 0) == .retry(after: .zero, attempt: 2))
        #expect(machine.sendFailed(overloaded, fraction: 0) == .fail(overloaded))
    }
}
