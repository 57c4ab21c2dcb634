import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// The client against the private ClickHouse 18.16 server of the test support, directly and
/// through the keep-alive fault proxy (`scripts/fault-proxy.py`).
@Suite(.serialized) struct ConnectionIntegrationTests {
    let endpoint: ClickHouseEndpoint
    let direct: ClickHouseConnection

    init() throws {
        endpoint = try ClickHouseTestServer.makeDatabase(prefix: "http")
        direct = try ClickHouseConnection(endpoint: endpoint)
        try direct.run("CREATE TABLE rows (batch String, x UInt32) ENGINE = MergeTree ORDER BY batch")
    }

    func proxied(_ proxy: FaultProxy, timeout: Duration = .seconds(5)) throws -> ClickHouseConnection {
        var through = endpoint
        through.url = "http://127.0.0.1:\(proxy.port)"
        through.requestTimeout = timeout
        return try ClickHouseConnection(endpoint: through)
    }

    func upstreamPort() -> Int { URLComponents(string: endpoint.url)!.port! }

    func insert(_ batch: String, _ connection: ClickHouseConnection, kind: ClickHouseRequestKind? = nil) throws(ClickHouseError) -> ClickHouseResponse {
        try connection.execute("INSERT INTO rows FORMAT TSV", body: Array("\(batch)\t1\n\(batch)\t2\n".utf8), kind: kind)
    }

    func copies(_ batch: String) throws -> Int {
        (Int(try direct.scalar("SELECT count() FROM rows WHERE batch = '\(batch)'")) ?? -1) / 2
    }

    @Test func readsReuseTheConnectionAndWritesOpenAFreshOne() throws {
        _ = try direct.execute("SELECT 1")
        #expect(try direct.execute("SELECT 2").newConnections == 0, "a read reuses the keep-alive connection")
        #expect(try insert("fresh-1", direct).newConnections == 1, "an insert opens its own connection")
        #expect(try insert("fresh-2", direct).newConnections == 1, "and never leaves it for reuse")
        #expect(try direct.execute("SELECT 3").newConnections == 0, "the reads' connection outlives the writes")
    }

    /// Finding 2: the proxy lets ClickHouse apply the insert, then resets the client connection
    /// before any byte of the answer. The client must report an ambiguous failure and must not
    /// have sent the insert again.
    @Test func anInsertWhoseConnectionDiesAfterApplyIsAmbiguousAndNeverResent() throws {
        let proxy = try FaultProxy(upstreamPort: upstreamPort(), faultsApplyTo: .inserts)
        let connection = try proxied(proxy)
        _ = try connection.execute("SELECT 1")  // a keep-alive connection now waits in libcurl's cache
        proxy.inject([.dropResponse])
        let error = try #require(throws: ClickHouseError.self) {
            _ = try insert("ka-reset", connection)
        }
        #expect(error.mayHaveBeenApplied && error.isRetryable, "\(error)")
        #expect(try copies("ka-reset") == 1, "applied once")
        let statistics = try proxy.statistics()
        #expect(statistics.insertsForwarded == 1, "libcurl did not re-send it")
        #expect(statistics.insertsOnReusedConnection == 0, "the insert went on a fresh connection")
    }

    /// The same fault when a caller lets an insert reuse a connection: libcurl re-sends it by
    /// itself and answers 200, so the batch lands twice. This is why writes never reuse one.
    @Test func libcurlResendsAnInsertOnAReusedConnectionWhenAllowed() throws {
        let proxy = try FaultProxy(upstreamPort: upstreamPort(), faultsApplyTo: .inserts)
        let connection = try proxied(proxy)
        _ = try connection.execute("SELECT 1")
        proxy.inject([.dropResponse])
        #expect(try insert("ka-resent", connection, kind: .idempotent).status == 200)
        #expect(try copies("ka-resent") == 2)
        #expect(try proxy.statistics().insertsForwarded == 2)
    }

    /// A reused connection dies after apply and the reconnect libcurl makes for its re-send is
    /// refused: that is not "never sent".
    @Test func aRefusedReconnectAfterAReusedConnectionDiedIsAmbiguous() throws {
        let proxy = try FaultProxy(upstreamPort: upstreamPort(), faultsApplyTo: .inserts)
        let connection = try proxied(proxy)
        _ = try connection.execute("SELECT 1")
        proxy.inject([.refuseAfterApply(seconds: 2)])
        let error = try #require(throws: ClickHouseError.self) {
            _ = try insert("ka-refused", connection, kind: .idempotent)
        }
        #expect(error == .transport(.reconnectRefused, message: error.transportMessage))
        #expect(error.mayHaveBeenApplied && error.isRetryable)
        #expect(try copies("ka-refused") == 1)
    }

    /// Findings 3 and 12: the proxy lets ClickHouse apply the insert and answers 500 with the
    /// retryable code 252 instead. The client must report it as retryable and ambiguous.
    @Test func aServerErrorAfterApplyIsAmbiguous() throws {
        let proxy = try FaultProxy(upstreamPort: upstreamPort(), faultsApplyTo: .inserts)
        let connection = try proxied(proxy)
        proxy.inject([.errorAfterApply(status: 500, code: 252)])
        let error = try #require(throws: ClickHouseError.self) {
            _ = try insert("error-after", connection)
        }
        #expect(error.code == 252 && error.isRetryable && error.mayHaveBeenApplied, "\(error)")
        #expect(try copies("error-after") == 1)
    }

    /// On 18.16 a materialized view that fails after the base part was written reaches the
    /// client as a coded error "while pushing to view"; the base rows stay.
    @Test func aViewFailingAfterTheBaseInsertIsAmbiguous() throws {
        try direct.run("CREATE TABLE trap (x UInt32) ENGINE = MergeTree ORDER BY x")
        try direct.run("CREATE MATERIALIZED VIEW trap_mv TO trap AS SELECT throwIf(x = 7) + x AS x FROM rows")
        let error = try #require(throws: ClickHouseError.self) {
            _ = try direct.execute("INSERT INTO rows FORMAT TSV", body: Array("view\t7\n".utf8))
        }
        #expect(error.code == 395 && error.raisedByView && error.mayHaveBeenApplied, "\(error)")
        #expect(try direct.scalar("SELECT count() FROM rows WHERE batch = 'view'") == "1", "the base part was written")
        try direct.run("DROP TABLE trap_mv")
    }

    /// Item 18: a result that breaks off after the server has answered 200 is an error, and
    /// `wait_end_of_query=1` turns it into a 500 (both on 18.16).
    @Test func aResultThatBreaksOffIsAnErrorAndWaitEndOfQueryMakesIt500() throws {
        let query = "SELECT throwIf(number = 3000000) FROM system.numbers LIMIT 4000000"
        let error = try #require(throws: ClickHouseError.self) {
            _ = try direct.execute(query, settings: ["max_block_size": "1000"])
        }
        #expect(error.code == 395 && error.status == 200, "\(error)")
        let buffered = try #require(throws: ClickHouseError.self) {
            _ = try direct.execute(query, settings: ClickHouseConnection.wholeResult.merging(["max_block_size": "1000"]) { $1 })
        }
        #expect(buffered.code == 395 && buffered.status == 500, "\(buffered)")
        #expect(try direct.rows("SELECT number FROM system.numbers LIMIT 3", settings: ClickHouseConnection.wholeResult).count == 3)
    }

    /// Finding 11's straggler: an insert held before the server until after its client timed
    /// out still lands when released.
    @Test func aHeldInsertLandsAfterItsClientGaveUp() throws {
        let proxy = try FaultProxy(upstreamPort: upstreamPort(), faultsApplyTo: .inserts)
        let connection = try proxied(proxy, timeout: .milliseconds(500))
        proxy.inject([.hold(seconds: nil)])
        let error = try #require(throws: ClickHouseError.self) {
            _ = try insert("straggler", connection)
        }
        #expect(error == .transport(.timeout, message: error.transportMessage))
        #expect(error.mayHaveBeenApplied)
        #expect(try copies("straggler") == 0, "not yet at the server")
        #expect(proxy.release() == 1)
        #expect(try eventually(timeout: 10) { try copies("straggler") == 1 })
    }
}
