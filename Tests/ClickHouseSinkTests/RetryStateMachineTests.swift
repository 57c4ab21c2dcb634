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

    @Test(arguments: [
        (nil as String?, "Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist., e.what() = DB::Exception", 60 as Int?),
        (nil, "Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR) (version 24.8.1.1)", 62),
        ("241", "Code: 241. DB::Exception: Memory limit exceeded", 241),
        (nil, "<html>Bad gateway</html>", nil),
    ])
    func parsesExceptionCodesOfOldAndNewServers(header: String?, body: String, code: Int?) {
        #expect(ClickHouseError.exceptionCode(header: header, body: body) == code)
    }

    @Test func classifiesErrors() {
        #expect(ClickHouseError.server(code: 159, status: 500, message: "timeout").isRetryable)
        #expect(ClickHouseError.server(code: 252, status: 500, message: "too many parts").isRetryable)
        #expect(!ClickHouseError.server(code: 60, status: 404, message: "unknown table").isRetryable)
        #expect(!ClickHouseError.server(code: 516, status: 401, message: "authentication failed").isRetryable)
        #expect(ClickHouseError.server(code: nil, status: 502, message: "bad gateway").isRetryable)
        #expect(!ClickHouseError.server(code: nil, status: 400, message: "bad request").isRetryable)
        #expect(!refused.mayHaveBeenApplied)
        #expect(reset.mayHaveBeenApplied)
    }
}

@Suite struct CredentialTests {
    @Test func credentialsNeverAppearInDescriptions() throws {
        let credentials = ClickHouseCredentials(user: "ctr", password: "s3cret")
        #expect(!"\(credentials)".contains("s3cret"))
        #expect(!String(reflecting: credentials).contains("s3cret"))
        let endpoint = ClickHouseEndpoint(url: "https://ctr:s3cret@clickhouse:8443", database: "ctr", credentials: credentials)
        #expect(!"\(endpoint)".contains("s3cret"))
        #expect("\(endpoint)".contains("https://<redacted>@clickhouse:8443"))
    }

    @Test func credentialsComeFromTheEnvironmentOrAPasswordFile() throws {
        #expect(try ClickHouseCredentials.fromEnvironment([:]) == nil)
        let fromEnvironment = try #require(try ClickHouseCredentials.fromEnvironment(["CLICKHOUSE_USER": "u", "CLICKHOUSE_PASSWORD": "p"]))
        #expect(fromEnvironment.user == "u" && fromEnvironment.password == "p")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ch-password-\(UUID().uuidString)")
        try "from-file\n".write(to: file, atomically: true, encoding: .utf8)
        let fromFile = try #require(try ClickHouseCredentials.fromEnvironment(["CLICKHOUSE_USER": "u"], passwordFile: file.path))
        #expect(fromFile.password == "from-file")
        #expect(throws: ClickHouseConfigurationError.self) { try ClickHouseCredentials.fromEnvironment([:], passwordFile: "/nonexistent/file") }
    }
}
