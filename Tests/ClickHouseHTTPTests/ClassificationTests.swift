import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// How failures are classified, without a server.
@Suite struct ClassificationTests {
    let refused = ClickHouseError.transport(.connectionRefused, message: "refused")
    let reset = ClickHouseError.transport(.connectionReset, message: "reset")

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

    @Test func onlyProvablyUnsentFailuresAreNotAmbiguous() {
        #expect(!ClickHouseError.transport(.connectionRefused, message: "").mayHaveBeenApplied, "fresh connection refused: nothing sent")
        #expect(!ClickHouseError.transport(.tls, message: "").mayHaveBeenApplied, "the request follows the handshake")
        for failure in [ClickHouseError.TransportFailure.reconnectRefused, .connectionReset, .timeout, .other] {
            let error = ClickHouseError.transport(failure, message: "")
            #expect(error.mayHaveBeenApplied, "\(failure)")
            #expect(error.isRetryable, "\(failure)")
        }
    }

    @Test(arguments: [252, 241, 159, 242, 999, 202, 60, 395])
    func everyServerErrorOfAWriteIsAmbiguous(code: Int) {
        let write = ClickHouseError.server(code: code, status: 500, message: "Code: \(code)", request: .nonIdempotent)
        #expect(write.mayHaveBeenApplied)
        let read = ClickHouseError.server(code: code, status: 500, message: "Code: \(code)", request: .idempotent)
        #expect(!read.mayHaveBeenApplied, "a read has nothing to apply")
        #expect(write.isRetryable == read.isRetryable, "the kind changes only the ambiguity")
        #expect(ClickHouseError.server(code: nil, status: 502, message: "bad gateway").mayHaveBeenApplied, "a proxy's 5xx without a code")
    }

    @Test func recognisesErrorsRaisedByAView() {
        let message = "Code: 252, e.displayText() = DB::Exception: Too many parts (1). Merges are processing significantly slower than inserts.: "
            + "while pushing to view rev.trap_mv, e.what() = DB::Exception"
        let error = ClickHouseError.server(code: 252, status: 500, message: message, request: .nonIdempotent)
        #expect(error.raisedByView)
        #expect(error.mayHaveBeenApplied && error.isRetryable)
        #expect(!ClickHouseError.server(code: 252, status: 500, message: "Code: 252. DB::Exception: Too many parts").raisedByView)
    }

    @Test(arguments: [
        ("SELECT 1", ClickHouseRequestKind.idempotent),
        ("  select count() FROM system.processes", .idempotent),
        ("WITH 1 AS x SELECT x", .idempotent),
        ("(SELECT 1) UNION ALL (SELECT 2)", .idempotent),
        ("-- why\nSHOW TABLES", .idempotent),
        ("/* c */ DESCRIBE TABLE t", .idempotent),
        ("EXISTS TABLE t", .idempotent),
        ("INSERT INTO ctr_results_raw FORMAT JSONEachRow", .nonIdempotent),
        ("insert into t select * from u", .nonIdempotent),
        ("CREATE TABLE t (x UInt8) ENGINE = Memory", .nonIdempotent),
        ("ALTER TABLE t DELETE WHERE 1", .nonIdempotent),
        ("", .nonIdempotent),
    ])
    func infersTheRequestKind(query: String, kind: ClickHouseRequestKind) {
        #expect(ClickHouseRequestKind.inferred(from: query) == kind)
    }

    @Test func findsTheExceptionThatEndsA200Answer() throws {
        let old = Array("0\n0\n0\nCode: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception\n".utf8)
        let parsedOld = try #require(ClickHouseError.streamedException(body: old, exceptionCodeHeader: nil, exceptionTag: nil))
        #expect(parsedOld.code == 395)
        #expect(parsedOld.message.hasPrefix("Code: 395, e.displayText()"))

        let current = Array("1\n2\nCode: 241. DB::Exception: Memory limit (total) exceeded: would use 3.00 GiB. (MEMORY_LIMIT_EXCEEDED) (version 24.8.4.13 (official build))\n".utf8)
        #expect(ClickHouseError.streamedException(body: current, exceptionCodeHeader: nil, exceptionTag: nil)?.code == 241)

        let headed = Array("partial".utf8)
        #expect(ClickHouseError.streamedException(body: headed, exceptionCodeHeader: "159", exceptionTag: nil)?.code == 159)
        #expect(ClickHouseError.streamedException(body: headed, exceptionCodeHeader: "0", exceptionTag: nil) == nil)

        let tagged = Array("1\n2\n__exception__\nabcdef0123456789\nCode: 395. DB::Exception: Value passed to 'throwIf' function is non-zero\n93 abcdef0123456789\n__exception__\n".utf8)
        #expect(ClickHouseError.streamedException(body: tagged, exceptionCodeHeader: nil, exceptionTag: "abcdef0123456789")?.code == 395)
    }

    @Test func ordinaryResultsAreNotMistakenForExceptions() {
        for body in ["", "1\n", "Code: 395\n", "a\tCode: 1, e.displayText() = x, e.what() = y\n", "Code: 12. something else\n", "Code: x. DB::Exception: no\n"] {
            #expect(ClickHouseError.streamedException(body: Array(body.utf8), exceptionCodeHeader: nil, exceptionTag: nil) == nil, "\(body)")
        }
        let spelled = Array("Code: 1. DB::Exception: a product id\n".utf8)
        #expect(ClickHouseError.streamedException(body: spelled, exceptionCodeHeader: nil, exceptionTag: nil, trustLastLine: false) == nil)
        #expect(ClickHouseError.streamedException(body: Array("x\n__exception__\n".utf8), exceptionCodeHeader: nil, exceptionTag: nil) == nil)
    }

    @Test func descriptionsSayWhereTheErrorCameFrom() {
        #expect("\(ClickHouseError.server(code: 395, status: 200, message: "Code: 395"))".contains("after the result began"))
        #expect("\(ClickHouseError.transport(.reconnectRefused, message: "x"))".contains("reconnectRefused"))
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

    @Test func aRefusedFreshConnectionIsNotSentAndItsMessageHidesTheCredentials() throws {
        let endpoint = ClickHouseEndpoint(url: "http://ctr:s3cret@127.0.0.1:\(PackagePaths.freePort())", database: "ctr")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        do {
            _ = try connection.execute("INSERT INTO t FORMAT TSV", body: Array("1\n".utf8))
            Issue.record("nothing listens there")
        } catch {
            #expect(error == .transport(.connectionRefused, message: error.transportMessage))
            #expect(!error.mayHaveBeenApplied)
            #expect(!"\(error)".contains("s3cret"))
            #expect("\(error)".contains("<redacted>@127.0.0.1"))
        }
    }
}

extension ClickHouseError {
    var transportMessage: String {
        if case .transport(_, let message) = self { return message }
        return ""
    }

    var status: Int? {
        if case .server(_, let status, _, _) = self { return status }
        return nil
    }
}
