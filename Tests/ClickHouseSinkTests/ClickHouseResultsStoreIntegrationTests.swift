import ClickHouseHTTP
import CTRWindows
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import ClickHouseSink

/// The results store against a real ClickHouse server (Debian's 18.16 in CI), with faults
/// injected by a proxy in front of it.
@Suite(.serialized) struct ClickHouseResultsStoreIntegrationTests {
    let endpoint: ClickHouseEndpoint
    let logger = Logger(label: "test")
    let start = Timestamp(milliseconds: 1_700_000_000_000)
    let end = Timestamp(milliseconds: 1_700_000_010_000)

    init() throws {
        endpoint = try ClickHouseTestServer.makeDatabase(prefix: "sink")
        try ClickHouseTestServer.migrate(endpoint)
    }

    func batch(
        _ id: String, products: [String], revision: UInt32 = 0, generation: Int32 = 1, positions: [PartitionPosition] = []
    ) -> ResultBatch {
        var batch = ResultBatch(id: id, sequence: 0, generation: generation, day: ResultBatch.day(of: end))
        for product in products {
            batch.append(
                ResultRow(
                    productID: product, windowStart: start, windowEnd: end, totals: WindowCounts(impressions: 10, clicks: 2),
                    delta: WindowCounts(impressions: 10, clicks: 2), revision: revision, emittedAt: end
                )
            )
        }
        batch.positions = positions
        return batch
    }

    func count(_ condition: String = "1") throws -> Int {
        Int(try ClickHouseConnection(endpoint: endpoint).scalar("SELECT count() FROM ctr_results_raw WHERE \(condition)")) ?? -1
    }

    func store(
        through url: String? = nil, writer: String = "w1",
        policy: RetryPolicy = RetryPolicy(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
    ) throws -> ClickHouseResultsStore {
        var proxied = endpoint
        proxied.url = url ?? endpoint.url
        proxied.requestTimeout = .seconds(2)
        return try ClickHouseResultsStore(endpoint: proxied, writer: writer, consumerGroup: "g", policy: policy, maxBatchRows: 1000, logger: logger)
    }

    func written(_ outcome: WriteOutcome) -> InsertReport? {
        if case .written(let report) = outcome { return report }
        return nil
    }

    @Test func storesHostileProductIDsVerbatimAndReadsThemBack() throws {
        let hostile = [
            "it's", "back\\slash", "new\nline", "tab\there", "'; DROP TABLE ctr_results_raw; --", "\"quoted\"", "émoji 😀", "{\"json\": 1}",
            "caf\u{E9}", "cafe\u{301}", "\\t\u{301}x", "nul\u{0}byte",
        ]
        let store = try store()
        let report = written(try store.write(batch("hostile", products: hostile, positions: [PartitionPosition(partition: "impressions:0", nextOffset: 42)])) { _ in })
        #expect(report?.rows == hostile.count)
        let restored = try store.restore(RestoreRequest(partitions: ["impressions:0"], windowEndAfter: start, partitionsWithoutHistory: []))
        let ids = restored.map { Array($0.productID.utf8) }
        #expect(Set(ids) == Set(hostile.map { Array($0.utf8) }), "every id round-trips byte for byte, NFC and NFD apart")
        #expect(restored.allSatisfy { $0.reflectedBefore == ["impressions:0": 42] && $0.totals.impressions == 10 })
    }

    @Test func restoreKeepsTheLatestRevisionAndOnlyOurPartitions() throws {
        let store = try store()
        _ = try store.write(batch("r0", products: ["a", "b"], positions: [PartitionPosition(partition: "impressions:0", nextOffset: 10)])) { _ in }
        _ = try store.write(batch("r1", products: ["a"], revision: 1, positions: [PartitionPosition(partition: "impressions:0", nextOffset: 20)])) { _ in }
        _ = try store.write(batch("other", products: ["z"], positions: [PartitionPosition(partition: "impressions:1", nextOffset: 5)])) { _ in }
        let connection = try ClickHouseConnection(endpoint: endpoint)
        // A row written before provenance moved to ctr_batches carries its own arrays.
        _ = try connection.execute(
            "INSERT INTO ctr_results_raw (product_id, window_start, window_end, impressions, clicks, revision, emitted_at, "
                + "source_partitions, source_offsets, batch_id) VALUES ('legacy', toDateTime(1700000000, 'UTC'), "
                + "toDateTime(1700000010, 'UTC'), 3, 1, 0, now(), ['impressions:0'], [6], 'old-batch')"
        )
        let restored = try store.restore(RestoreRequest(partitions: ["impressions:0"], windowEndAfter: start, partitionsWithoutHistory: []))
        let byProduct = Dictionary(uniqueKeysWithValues: restored.map { ($0.productID, $0) })
        #expect(Set(byProduct.keys) == ["a", "b", "legacy"])
        #expect(byProduct["a"]?.revision == 1 && byProduct["a"]?.reflectedBefore == ["impressions:0": 20])
        #expect(byProduct["b"]?.reflectedBefore == ["impressions:0": 10])
        #expect(byProduct["legacy"]?.reflectedBefore == ["impressions:0": 7])
        #expect(try store.restore(RestoreRequest(partitions: ["impressions:0"], windowEndAfter: end, partitionsWithoutHistory: [])).isEmpty)
        let unbounded = try store.restore(RestoreRequest(partitions: ["impressions:1"], windowEndAfter: nil, partitionsWithoutHistory: ["impressions:1"]))
        #expect(unbounded.map(\.productID) == ["z"], "a partition without a committed position finds its batches however old")
    }

    @Test func aLaterGenerationFencesEarlierWriters() throws {
        let deposed = try store(writer: "old")
        let owner = try store(writer: "new")
        #expect(written(try deposed.write(batch("g1-a", products: ["p"], generation: 1)) { _ in }) != nil)
        try owner.fence(group: "g", generation: 2) { false }
        #expect(try deposed.write(batch("g1-b", products: ["p"], generation: 1)) { _ in } == .fenced)
        #expect(try count("batch_id = 'g1-b'") == 0)
        #expect(written(try owner.write(batch("g2-a", products: ["p"], generation: 2)) { _ in }) != nil)
    }

    @Test func lostAcknowledgementIsVerifiedNotWrittenTwice() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        let store = try store(through: "http://127.0.0.1:\(proxy.port)")
        // A first batch sends five requests (create and truncate the staging table, stage the
        // rows, write the provenance): the insert is the fifth.
        proxy.inject([.none, .none, .none, .none, .dropResponse])
        let report = written(try store.write(batch("dropped-ack", products: ["a", "b", "c"])) { _ in })
        #expect(report?.recoveredAmbiguousAttempt == true)
        #expect(try count("batch_id = 'dropped-ack'") == 3)
    }

    @Test func retriesServerErrorsAndResetsThenSucceedsOnce() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        proxy.inject([.error(status: 500, code: 202), .resetBeforeForwarding, .error(status: 503, code: 242)])
        let store = try store(through: "http://127.0.0.1:\(proxy.port)")
        let report = written(try store.write(batch("flaky", products: ["x", "y"])) { _ in })
        #expect((report?.retries ?? 0) >= 3)
        #expect(try count("batch_id = 'flaky'") == 2)
    }

    @Test func slowAnswerBeyondTheTimeoutDoesNotDuplicate() throws {
        let proxy = try FaultProxy(upstreamPort: URLComponents(string: endpoint.url)!.port!)
        let store = try store(through: "http://127.0.0.1:\(proxy.port)")
        proxy.inject([.none, .none, .none, .none, .delay(seconds: 3)])
        _ = try store.write(batch("slow", products: ["s"])) { _ in }
        #expect(try count("batch_id = 'slow'") == 1)
    }

    @Test func missingTablesAreReportedWithAdvice() throws {
        var missing = endpoint
        missing.database = "no_such_database_here"
        let store = try ClickHouseResultsStore(endpoint: missing, writer: "w", consumerGroup: "g", policy: RetryPolicy(), maxBatchRows: 10, logger: logger)
        do {
            try store.checkSchema()
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("ctr_results_raw"))
            #expect(error.description.contains("schema-tool migrate"))
        }
    }

    @Test func unreachableServerIsRetriedUntilAttemptsRunOut() throws {
        let store = try store(
            through: "http://127.0.0.1:\(PackagePaths.freePort())", policy: RetryPolicy(initialDelay: .milliseconds(1), maximumAttempts: 3)
        )
        let failures = Mutex(0)
        do {
            _ = try store.write(batch("down", products: ["p"])) { _ in failures.withLock { $0 += 1 } }
            Issue.record("expected failure")
        } catch {
            guard case .transport(.connectionRefused, _) = error.underlying else {
                Issue.record("unexpected \(error)")
                return
            }
        }
        #expect(failures.withLock { $0 } == 3, "three attempts, each reported")
    }
}
