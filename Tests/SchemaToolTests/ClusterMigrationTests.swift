import ClickHouseHTTP
import Foundation
import Synchronization
import TestSupport
import Testing

/// `schema-tool --cluster` against a real two-replica cluster (one ZooKeeper, two ClickHouse
/// servers) started by scripts/clickhouse-cluster.sh.
@Suite(.serialized) struct ClusterMigrationTests {
    static let counter = Atomic<Int>(0)
    /// A database name not used before, and an endpoint for it on every replica.
    func newDatabase(_ prefix: String) throws -> [ClickHouseEndpoint] {
        let name = "\(prefix)_\(ProcessInfo.processInfo.processIdentifier)_\(Self.counter.wrappingAdd(1, ordering: .relaxed).newValue)"
        return try ClickHouseTestCluster.replicaURLs().map { ClickHouseEndpoint(url: $0, database: name) }
    }

    func arguments(_ endpoint: ClickHouseEndpoint, migrations: String? = nil) -> [String] {
        [
            "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations ?? PackagePaths.migrationsDirectory,
            "--cluster", ClickHouseTestCluster.name,
        ]
    }

    /// Polls `query` on every replica until all answer the same as `expected` (or 30 s pass).
    func eventually(_ connections: [ClickHouseConnection], _ query: String, equal expected: String) throws -> [[[Substring]]] {
        let deadline = ContinuousClock.now + .seconds(30)
        var answers: [[[Substring]]] = []
        repeat {
            let reference = try connections[0].rows(expected)
            answers = try connections.map { try $0.rows(query) }
            if answers.allSatisfy({ $0 == reference }) { return [reference] }
            Thread.sleep(forTimeInterval: 0.2)
        } while ContinuousClock.now < deadline
        return answers
    }

    @Test func migrateCreatesReplicatedSchemaAndOneLedgerOnEveryReplica() throws {
        let replicas = try newDatabase("cluster")
        let plan = try ChildProcess.schemaTool(["plan"] + arguments(replicas[1]))
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("CREATE TABLE IF NOT EXISTS \(replicas[0].database).ctr_results_raw ON CLUSTER ctr_cluster"))
        #expect(plan.stdout.contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/\(replicas[0].database)/ctr_results_raw', '{replica}')"))
        let migrated = try ChildProcess.schemaTool(["migrate"] + arguments(replicas[0]))
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applied \(PackagePaths.shippedMigrationCount) migration(s)"))

        let connections = try replicas.map(ClickHouseConnection.init(endpoint:))
        let engines = "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name"
        let onFirst = try connections[0].rows(engines).map { "\($0[0])=\($0[1])" }
        #expect(try connections[1].rows(engines).map { "\($0[0])=\($0[1])" } == onFirst, "both replicas have the same objects")
        #expect(onFirst.contains("ctr_results_raw=ReplicatedMergeTree"))
        #expect(onFirst.contains("ctr_ml_agg_v3=ReplicatedAggregatingMergeTree"))
        #expect(onFirst.contains("ctr_latest_v3=ReplicatedReplacingMergeTree"))
        #expect(onFirst.contains("ctr_rollup_1h_v2=ReplicatedAggregatingMergeTree"))
        #expect(onFirst.contains("ctr_ml_cutover=ReplicatedMergeTree"), "cut-over tables are replicated, not per host")
        #expect(onFirst.contains("schema_migrations=ReplicatedMergeTree"))

        // The ledger, written through replica 1, reads the same on replica 2.
        let ledger = "SELECT version, state, statements_done, seq FROM schema_migrations ORDER BY version, seq"
        #expect(try connections[1].rows(ledger) == connections[0].rows(ledger))
        let status = try ChildProcess.schemaTool(["status"] + arguments(replicas[1]))
        #expect(status.stdout.components(separatedBy: " applied ").count - 1 == PackagePaths.shippedMigrationCount, "\(status.stdout)")
        #expect(try ChildProcess.schemaTool(["migrate"] + arguments(replicas[1])).stdout.contains("up to date"))
        for replica in replicas {
            let verify = try ChildProcess.schemaTool(["verify"] + arguments(replica))
            #expect(verify.status == 0, "\(replica.url): \(verify.stdout)\(verify.stderr)")
        }
        // Without --cluster, verify sees that the engines are not the single-server ones.
        let plainVerify = try ChildProcess.schemaTool(["verify", "--clickhouse-url", replicas[1].url, "--database", replicas[1].database])
        #expect(plainVerify.status == 2)
        #expect(plainVerify.stdout.contains("engine of ctr_results_raw: expected MergeTree, found ReplicatedMergeTree"))

        // Rows inserted on either replica reach both, and the views (fed on the replica that
        // received the insert, replicated from there) equal sums over the raw table on both.
        try RawRowWriter(replicas[0], tag: "r1").insert()
        try RawRowWriter(replicas[1], tag: "r2").insert()
        let view = "SELECT sum(impressions), sum(clicks), count() FROM ctr_ml_summary"
        let raw = "SELECT sum(impressions_delta), sum(clicks_delta), uniqExact(product_id, toStartOfMinute(window_end)) FROM ctr_results_raw"
        let answers = try eventually(connections, view, equal: raw)
        #expect(answers.count == 1, "views on both replicas equal the raw sums: \(answers)")
        #expect(try connections[1].scalar("SELECT count() FROM ctr_results_raw") == "40")
    }

    @Test func concurrentMigrationsAgainstBothReplicasApplyEachStatementOnce() throws {
        let replicas = try newDatabase("cluster_lock")
        let migrations = try PackagePaths.temporaryDirectory("cluster-migrations")
        // Without IF NOT EXISTS: a second application of any statement would fail.
        try "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (1);"
            .write(to: migrations.appendingPathComponent("0001_a.sql"), atomically: true, encoding: .utf8)
        try "CREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (2);"
            .write(to: migrations.appendingPathComponent("0002_b.sql"), atomically: true, encoding: .utf8)
        let logs = try PackagePaths.temporaryDirectory("cluster-lock-logs")
        let runs = try (0..<4).map { index in
            try ChildProcess(
                PackagePaths.executable("schema-tool"), ["migrate"] + arguments(replicas[index % 2], migrations: migrations.path),
                logDirectory: logs, name: "run\(index)"
            )
        }
        for run in runs { run.process.waitUntilExit() }
        for run in runs { #expect(run.process.terminationStatus == 0, "\(run.stderr)") }
        #expect(runs.filter { $0.stdout.contains("applied 2 migration(s)") }.count == 1, "exactly one run applied the migrations")
        let connections = try replicas.map(ClickHouseConnection.init(endpoint:))
        let answers = try eventually(connections, "SELECT groupArray(x) FROM (SELECT x FROM a ORDER BY x)", equal: "SELECT '[1,2]'")
        #expect(answers.count == 1, "each INSERT ran once and reached both replicas: \(answers)")
        #expect(try connections[1].scalar("SELECT countIf(state = 'applied') FROM schema_migrations") == "2")
    }

    /// The view-evolution migrations on the cluster while both replicas receive inserts: the
    /// cut-over tables are replicated, so every host splits rows at the same instants.
    @Test func viewEvolutionOnTheClusterKeepsTotalsExactWhileInsertsRun() throws {
        let replicas = try newDatabase("cluster_evolve")
        #expect(try ChildProcess.schemaTool(["migrate", "--to", "3"] + arguments(replicas[0])).status == 0)
        let writers = try [RawRowWriter(replicas[0], tag: "r1"), RawRowWriter(replicas[1], tag: "r2")]
        for writer in writers { for _ in 0..<10 { try writer.insert() } }
        for writer in writers { writer.start() }
        // The delays must outlast the statements between a cut-over's bound and its wait: on a
        // cluster each is a distributed DDL that both replicas run, which takes seconds on a
        // loaded machine (migration 0010 has seven such statements).
        let migrated = try ChildProcess.schemaTool(
            ["migrate", "--var", "ML_CUTOVER_DELAY_SECONDS=10", "--var", "ML_CUTOVER_GRACE_SECONDS=1", "--var", "ROLLUP_CUTOVER_DELAY_SECONDS=10",
             "--var", "ROLLUP_CUTOVER_GRACE_SECONDS=1"] + arguments(replicas[0])
        )
        let afterMigration = writers.map(\.batches)
        #expect(TestSupport.eventually(timeout: 30) { zip(writers, afterMigration).allSatisfy { $0.batches >= $1 + 10 } }, "rows keep arriving after the new views exist")
        for writer in writers { writer.stop() }
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("waiting"), "the cut-over waits happened with data present")

        let connections = try replicas.map(ClickHouseConnection.init(endpoint:))
        let viewTotals = "SELECT product_id, toUnixTimestamp(window_minute) AS m, sumMerge(impressions), sumMerge(clicks) FROM ctr_ml_view GROUP BY product_id, window_minute ORDER BY product_id, m"
        let rawTotals = "SELECT product_id, toUnixTimestamp(toStartOfMinute(window_end)) AS m, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, m ORDER BY product_id, m"
        let answers = try eventually(connections, viewTotals, equal: rawTotals)
        let rawTotalsAnswer = try connections[0].rows(rawTotals)
        #expect(answers.count == 1, "the evolved view equals sums over the raw table on both replicas: \(answers) vs \(rawTotalsAnswer)")
        let rollup = "SELECT product_id, toUnixTimestamp(period_start) AS p, sumMerge(impressions), sumMerge(clicks) FROM ctr_rollup_1h GROUP BY product_id, period_start ORDER BY product_id, p"
        let rawHourly = "SELECT product_id, toUnixTimestamp(toStartOfHour(window_start)) AS p, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, p ORDER BY product_id, p"
        let rollupAnswers = try eventually(connections, rollup, equal: rawHourly)
        let rawAnswer = try connections[0].rows(rawHourly)
        #expect(rollupAnswers.count == 1, "the roll-ups too: \(rollupAnswers) vs \(rawAnswer)")
        // Schema only: the two writers insert the same (product, window, revision), so which of
        // two rows with one version ctr_latest_v3 keeps depends on insert order (see the
        // ReplacingMergeTree note of `verify --data` in docs/schema-tool.md).
        for replica in replicas { #expect(try ChildProcess.schemaTool(["verify"] + arguments(replica)).status == 0) }
    }

    @Test func unknownClusterIsRefusedBeforeAnythingRuns() throws {
        let replicas = try newDatabase("cluster_unknown")
        let result = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", replicas[0].url, "--database", replicas[0].database, "--cluster", "no_such_cluster"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("knows no cluster named no_such_cluster"))
        let connection = try ClickHouseConnection(endpoint: replicas[0])
        #expect(try connection.execute("SELECT count() FROM system.databases WHERE name = '\(replicas[0].database)'", useDatabase: false).text.hasPrefix("0"))
    }
}
