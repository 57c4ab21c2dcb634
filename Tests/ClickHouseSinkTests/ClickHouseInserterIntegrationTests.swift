import ClickHouseHTTP
import CTRWindows
import Foundation
import Logging
import TestSupport
import Testing

@testable import ClickHouseSink

/// The sink against a real ClickHouse server (Debian's 18.16 in CI), with faults injected by a
/// proxy in front of it.
@Suite(.serialized) struct ClickHouseInserterIntegrationTests {
    let endpoint: ClickHouseEndpoint
    let logger = Logger(label: "test")

    init() throws {
        endpoint = try ClickHouseTestServer.makeDatabase(prefix: "sink")
        try ClickHouseTestServer.migrate(endpoint)
    }

    func batch(_ id: String, products: [String], revision: UInt32 = 0) -> InsertBatch {
        let start = Timestamp(milliseconds: 1_700_000_000_000)
        let end = Timestamp(milliseconds: 1_700_000_010_000)
        var batch = InsertBatch(id: id, sequence: 0, day: InsertBatch.day(of: end))
        for product in products {
            batch.append(
                ResultRow(
                    productID: product, windowStart: start, windowEnd: end, totals: WindowCounts(impressions: 10, clicks: 2),
                    delta: WindowCounts(impressions: 10, clicks: 2), revision: revision, emittedAt: end, sources: SourceOffsets([(name: "impressions:0", offset: 41)])
                )
            )
        }
        return batch
    }

    func count(_ connection: ClickHouseConnection, _ condition: String = "1") throws -> Int {
        Int(try connection.scalar("SELECT count() FROM ctr_results_raw WHERE \(condition)")) ?? -1
    }

    func inserter(through url: String, policy: RetryPolicy = RetryPolicy(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(50))) throws -> ClickHouseInserter {
        var proxied = endpoint
        proxied.url = url
        proxied.requestTimeout = .seconds(2)
        return ClickHouseInserter(connection: try ClickHouseConnection(endpoint: proxied), policy: policy, logger: logger)
    }

    @Test func storesHostileProductIDsVerbatim() throws {
        let hostile = ["it's", "back\\slash", "new\nline", "tab\there", "'; DROP TABLE ctr_results_raw; --", "\"quoted\"", "émoji 😀", "{\"json\": 1}"]
        let inserter = try inserter(through: endpoint.url)
        let report = try inserter.insert(batch("hostile", products: hostile))
        #expect(report.rows == hostile.count)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let stored = try connection.execute("SELECT product_id FROM ctr_results_raw WHERE batch_id = 'hostile' FORMAT JSONEachRow").lines
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String] }
            .compactMap { $0["product_id"] }
        #expect(Set(stored) == Set(hostile))
        #expect(try count(connection) >= hostile.count, "the table still exists")
    }

    @Test func lostAcknowledgementIsVerifiedNotWrittenTwice() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        proxy.inject([.dropResponse])
        let inserter = try inserter(through: "http://127.0.0.1:\(proxy.port)")
        let report = try inserter.insert(batch("dropped-ack", products: ["a", "b", "c"]))
        #expect(report.recoveredAmbiguousAttempt)
        #expect(try count(ClickHouseConnection(endpoint: endpoint), "batch_id = 'dropped-ack'") == 3)
    }

    @Test func retriesServerErrorsAndResetsThenSucceedsOnce() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        proxy.inject([.error(status: 500, code: 202), .resetBeforeForwarding, .error(status: 503, code: 242)])
        let inserter = try inserter(through: "http://127.0.0.1:\(proxy.port)")
        let report = try inserter.insert(batch("flaky", products: ["x", "y"]))
        #expect(report.retries >= 3)
        #expect(try count(ClickHouseConnection(endpoint: endpoint), "batch_id = 'flaky'") == 2)
    }

    @Test func slowAnswerBeyondTheTimeoutDoesNotDuplicate() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        proxy.inject([.delay(seconds: 3)])
        let inserter = try inserter(through: "http://127.0.0.1:\(proxy.port)")
        _ = try inserter.insert(batch("slow", products: ["s"]))
        #expect(try count(ClickHouseConnection(endpoint: endpoint), "batch_id = 'slow'") == 1)
    }

    @Test func unknownTableIsFatalWithAdvice() throws {
        var missing = endpoint
        missing.database = "no_such_database_here"
        let inserter = ClickHouseInserter(connection: try ClickHouseConnection(endpoint: missing), policy: RetryPolicy(), logger: logger)
        do {
            _ = try inserter.insert(batch("fatal", products: ["p"]))
            Issue.record("expected a fatal error")
        } catch {
            #expect(!error.underlying.isRetryable)
            #expect(error.description.contains("ctr_results_raw"))
            #expect(error.description.contains("schema-tool migrate"))
        }
    }

    @Test func unreachableServerIsRetriedUntilAttemptsRunOut() throws {
        let inserter = try inserter(through: "http://127.0.0.1:\(PackagePaths.freePort())", policy: RetryPolicy(initialDelay: .milliseconds(1), maximumAttempts: 3))
        do {
            _ = try inserter.insert(batch("down", products: ["p"]))
            Issue.record("expected failure")
        } catch {
            guard case .transport(.connectionRefused, _) = error.underlying else {
                Issue.record("unexpected \(error)")
                return
            }
        }
    }
}
