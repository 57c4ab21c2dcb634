import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

@testable import SchemaTool

/// The failures of review findings 9, 10 and 15 (reliability review of 2026-12-01), on a real
/// ClickHouse 18.16: interrupted cut-overs lose no row, data statements never run twice, and
/// the lock is neither shared nor withheld from its own process.
@Suite(.serialized) struct MigrationSafetyIntegrationTests {
    func port(_ endpoint: ClickHouseEndpoint) -> Int { Int(endpoint.url.split(separator: ":").last ?? "") ?? 0 }

    /// Polls `condition` every 50 ms until it holds or `limit` passes; returns whether it held.
    func waitUntil(_ limit: Duration = .seconds(120), _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    static let fastCutover = [
        "--var", "ML_CUTOVER_DELAY_SECONDS=2", "--var", "ML_CUTOVER_GRACE_SECONDS=1", "--var", "ROLLUP_CUTOVER_DELAY_SECONDS=2",
        "--var", "ROLLUP_CUTOVER_GRACE_SECONDS=1",
    ]

    /// Finding 9: `migrate` killed in the middle of a cut-over and resumed once the bound has
    /// passed, while rows keep arriving: killed after 0004's cut-over table exists, before its
    /// feed view does (the relay holds back the answer of statement 2), and killed while 0006
    /// drops the old ctr_ml_view (statement 7, between the `stop` bound and the new view in the
    /// file). The resumed runs refresh the first bound and set the second only once the new view
    /// exists; every derived object then equals sums over ctr_results_raw (`verify --data`).
    @Test func interruptedCutoversLoseNoRow() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "cutkill")
        let database = endpoint.database
        let common = ["--database", database, "--migrations-dir", PackagePaths.migrationsDirectory]
        #expect(try ChildProcess.schemaTool(["migrate", "--to", "3", "--clickhouse-url", endpoint.url] + common).status == 0)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let writer = try RawRowWriter(endpoint, tag: "k")
        for _ in 0..<10 { try writer.insert() }
        writer.start()
        let progress = { (version: Int) throws -> Int in
            Int(try connection.scalar("SELECT argMax(statements_done, seq) FROM schema_migrations WHERE version = \(version)")) ?? 0
        }
        let logs = try PackagePaths.temporaryDirectory("cutkill-logs")
        // A short lease, so that each resumed run soon takes over from the killed one.
        let arguments = ["migrate", "--lock-lease", "5"] + Self.fastCutover + common

        let slowCreate = try KeepAliveRelay(
            upstreamPort: port(endpoint), rules: [.init(marker: "EXISTS%20\(database).ctr_ml_agg_v2%0A", action: .delay(seconds: 30))]
        )
        let first = try ChildProcess(PackagePaths.executable("schema-tool"), arguments + ["--clickhouse-url", slowCreate.url], logDirectory: logs, name: "first")
        let killable = try waitUntil { try slowCreate.faults == 1 && progress(4) == 1 }
        #expect(killable)
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        #expect(try waitUntil { try connection.scalar("SELECT min(start) < now() - 1 FROM ctr_ml_cutover") == "1" }, "the bound passed")

        let slowDrop = try KeepAliveRelay(
            upstreamPort: port(endpoint),
            rules: [.init(marker: "DROP%20TABLE%20IF%20EXISTS%20\(database).ctr_ml_view", action: .delay(seconds: 30), skip: 1)]
        )
        let second = try ChildProcess(PackagePaths.executable("schema-tool"), arguments + ["--clickhouse-url", slowDrop.url], logDirectory: logs, name: "second")
        #expect(try waitUntil { slowDrop.faults == 1 })
        kill(second.process.processIdentifier, SIGKILL)
        second.process.waitUntilExit()
        let progress4 = try progress(4)
        let progress6 = try progress(6)
        #expect(progress4 == 11 && progress6 == 5, "killed inside 0006's stop cut-over")
        #expect(
            try connection.scalar("SELECT count() FROM schema_migrations WHERE version = 4 AND error LIKE 'cut-over window restarted%'") == "1",
            "0004's stale bound was refreshed"
        )
        let later = (Int(try connection.scalar("SELECT toUnixTimestamp(now())")) ?? 0) + 4
        #expect(try waitUntil { (Int(try connection.scalar("SELECT toUnixTimestamp(now())")) ?? 0) >= later }, "any bound set before the kill passed")

        let resumed = try ChildProcess.schemaTool(arguments + ["--clickhouse-url", endpoint.url])
        writer.stop()
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let verify = try ChildProcess.schemaTool(["verify", "--data", "--settle", "0", "--clickhouse-url", endpoint.url] + common)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        #expect(verify.stdout.contains("data matches"), "\(verify.stdout)")
        #expect(verify.stdout.contains("ctr_ml_agg_v3") && verify.stdout.contains("ctr_rollup_1d") && verify.stdout.contains("ctr_ml_summary"))
    }

    /// The deferred bound of a `stop` cut-over: the plan runs 0004's statements 7 and 8 (drop
    /// the old view, create the new one reading `stop`) before statement 6 (set `stop`), and
    /// 0005's window (the cut-over table up to the last roll-up view) can be run again.
    @Test func cutoverPlanDefersBoundsAndFindsWindows() throws {
        let set = try MigrationSet(directory: PackagePaths.migrationsDirectory, variables: ["DATABASE": "ctr"])
        let plan4 = CutoverPlan(statements: set.migrations[3].statements, database: "ctr")
        #expect(plan4.units.contains([6, 7, 5]), "\(plan4.units)")
        #expect(plan4.windows[2]?.start == 0 && plan4.windows[2]?.objects == ["ctr.ctr_ml_cutover", "ctr.ctr_ml_agg_v2", "ctr.ctr_ml_feed_v2"])
        #expect(plan4.windows[7] == nil, "the stop reader is protected by deferral, not by a window")
        let plan5 = CutoverPlan(statements: set.migrations[4].statements, database: "ctr")
        #expect(plan5.windows[7]?.start == 1 && plan5.windows[7]?.objects.count == 7)
        let plan6 = CutoverPlan(statements: set.migrations[5].statements, database: "ctr")
        #expect(plan6.units.contains([6, 7, 5]), "\(plan6.units)")
        #expect(plan6.units(from: 6).contains([6]), "a ledger that already has the bound runs the rest one by one")
        // Every shipped migration (and those added later in the same pattern, such as 0008):
        // each view reading a cut-over bound is protected by a deferral or a window.
        for migration in set.migrations {
            let plan = CutoverPlan(statements: migration.statements, database: "ctr")
            for (index, role) in plan.roles.enumerated() {
                guard case .reader = role else { continue }
                let deferred = plan.units.contains { $0.count > 1 && $0.contains(index) }
                #expect(deferred || plan.windows[index] != nil, "\(migration.path): statement \(index + 1) reads an unprotected cut-over bound")
            }
        }
    }

    /// Finding 10: a backfill that outlasts the client's timeout keeps running on the server
    /// (18.16 does not cancel it). schema-tool waits for it and counts it as done instead of
    /// sending it again.
    @Test func dataStatementOutlastingTheTimeoutRunsOnce() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "slowfill")
        let migrations = try PackagePaths.directory([
            "0001_fill.sql": """
                CREATE TABLE ${DATABASE}.t (x UInt64) ENGINE = MergeTree ORDER BY x;
                INSERT INTO ${DATABASE}.t SELECT number FROM (SELECT number FROM system.numbers LIMIT 3) WHERE sleep(1) = 0 SETTINGS max_block_size = 1;
                CREATE TABLE ${DATABASE}.after (x UInt8) ENGINE = Memory;
                """
        ])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        // Without the dry run, which would meet the same timeout in the scratch database.
        let result = try ChildProcess.schemaTool(["migrate", "--request-timeout", "1", "--skip-dry-run"] + common)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("the server finished statement 2"), "\(result.stdout)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM t") == "3")
        #expect(try connection.scalar("EXISTS TABLE after") == "1")
    }

    /// Finding 10 / 2: through a keep-alive relay that lets the backfill run and then resets
    /// the connection before the answer, libcurl would silently send it again on a reused
    /// connection. schema-tool sends it on a fresh one, asks the server, and counts it once.
    @Test func lostAnswerOfABackfillOnAKeepAliveConnectionRunsOnce() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "resend")
        let relay = try KeepAliveRelay(upstreamPort: port(endpoint), rules: [.init(marker: "INSERT%20INTO%20\(endpoint.database).t%20", action: .resetAfterAnswer)])
        let migrations = try PackagePaths.directory([
            "0001_fill.sql": """
                CREATE TABLE ${DATABASE}.t (x UInt64) ENGINE = MergeTree ORDER BY x;
                INSERT INTO ${DATABASE}.t SELECT number FROM system.numbers LIMIT 5;
                CREATE TABLE ${DATABASE}.after (x UInt8) ENGINE = Memory;
                """
        ])
        let result = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", relay.url, "--database", endpoint.database, "--migrations-dir", migrations])
        #expect(relay.faults == 1)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("the server finished statement 2"), "\(result.stdout)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM t") == "5", "the backfill ran once")
    }

    /// Finding 10: the ledger write after a backfill fails. schema-tool stops there (it does
    /// not go on with unrecorded progress); the next run finds out from the server that the
    /// backfill finished and does not run it again.
    @Test func failedLedgerWriteStopsAndTheBackfillIsNotRepeated() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "ledgerfail")
        // Ledger rows: statement 1 done, statement 2 started, statement 2 done <- fails.
        let relay = try KeepAliveRelay(
            upstreamPort: port(endpoint), rules: [.init(marker: "schema_migrations%20FORMAT", action: .fail, skip: 2)]
        )
        let migrations = try PackagePaths.directory([
            "0001_fill.sql": """
                CREATE TABLE ${DATABASE}.t (x UInt64) ENGINE = MergeTree ORDER BY x;
                INSERT INTO ${DATABASE}.t SELECT number FROM system.numbers LIMIT 5;
                CREATE TABLE ${DATABASE}.after (x UInt8) ENGINE = Memory;
                """
        ])
        let common = ["--database", endpoint.database, "--migrations-dir", migrations]
        let failed = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", relay.url] + common)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("could not record the progress of migration 1"), "\(failed.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("EXISTS TABLE after") == "0", "nothing ran after the failed ledger write")
        #expect(try ChildProcess.schemaTool(["status", "--clickhouse-url", endpoint.url] + common).stdout.contains("outcome of statement 2 unknown"))
        let resumed = try ChildProcess.schemaTool(["migrate", "--clickhouse-url", endpoint.url] + common)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("finished on the server: counted as done"), "\(resumed.stdout)")
        #expect(try connection.scalar("SELECT count() FROM t") == "5", "the backfill ran once")
        #expect(try connection.scalar("EXISTS TABLE after") == "1")
    }

    /// Finding 10: a failed migration edited before a statement it already ran is refused
    /// (statement numbers would shift); editing the failed statement itself is the fix.
    @Test func editBeforeTheResumePointIsRefused() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "prefix")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        try connection.run("CREATE TABLE c (x UInt8) ENGINE = Memory")
        let original = "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (1);\nCREATE TABLE ${DATABASE}.c (x UInt8) ENGINE = Memory;\n"
        let migrations = try PackagePaths.directory(["0001_a.sql": original])
        let path = migrations + "/0001_a.sql"
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 1, "statement 3 fails: c is in the way")
        try ("CREATE TABLE ${DATABASE}.z (x UInt8) ENGINE = Memory;\n" + original).write(toFile: path, atomically: true, encoding: .utf8)
        let refused = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("statement 1 changed"), "\(refused.stderr)")
        #expect(try connection.scalar("EXISTS TABLE z") == "0")
        try original.replacingOccurrences(of: "${DATABASE}.c (", with: "${DATABASE}.d (").write(toFile: path, atomically: true, encoding: .utf8)
        let resumed = try ChildProcess.schemaTool(["migrate"] + common)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try connection.scalar("SELECT groupArray(x) FROM a") == "[1]", "the INSERT ran once")
    }

    /// Finding 15: a lock request acknowledged too late is withdrawn; the same process then
    /// asks under a new holder id and gets the lock (it used to wait for its own withdrawn id).
    @Test func withdrawnLockRequestDoesNotBarItsOwnProcess() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "withdrawn")
        let relay = try KeepAliveRelay(
            upstreamPort: port(endpoint), rules: [.init(marker: "schema_migrations_lock%20FORMAT", action: .delay(seconds: 0.7))]
        )
        let migrations = try PackagePaths.directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;"])
        let result = try ChildProcess.schemaTool(
            ["migrate", "--lock-timeout", "20", "--clickhouse-url", relay.url, "--database", endpoint.database, "--migrations-dir", migrations]
        )
        #expect(relay.faults == 1)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try ClickHouseConnection(endpoint: endpoint).scalar("EXISTS TABLE a") == "1")
    }

    /// Finding 15: a holder whose lease renewals fail stops before its next statement instead
    /// of running on after its lease expired (when another process may hold the lock).
    @Test func holderWhoseLeaseLapsesStopsBeforeTheNextStatement() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "fence")
        let relay = try KeepAliveRelay(
            upstreamPort: port(endpoint), rules: [.init(marker: "schema_migrations_lock%20FORMAT", action: .fail, skip: 1, repeats: true)]
        )
        let migrations = try PackagePaths.directory([
            "0001_slow.sql": "CREATE TABLE ${DATABASE}.started ENGINE = TinyLog AS SELECT now() AS t;\nWAIT UNTIL (SELECT min(t) FROM ${DATABASE}.started) + 4;\nCREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;"
        ])
        let result = try ChildProcess.schemaTool(
            ["migrate", "--lock-lease", "2", "--clickhouse-url", relay.url, "--database", endpoint.database, "--migrations-dir", migrations]
        )
        #expect(result.status == 1)
        #expect(result.stderr.contains("migration lock"), "\(result.stderr)")
        #expect(try ClickHouseConnection(endpoint: endpoint).scalar("EXISTS TABLE a") == "0", "statement 3 did not run")
    }

    /// Finding 15: `repair` and `baseline` write the ledger only while holding the lock.
    @Test func repairAndBaselineTakeTheLock() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "repairlock")
        let migrations = try PackagePaths.directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 0)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let now = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        try connection.run("INSERT INTO schema_migrations_lock VALUES ('other@host pid 1 #0', \(now - 1_000_000), \(now + 120_000_000), 0)")
        for command in [["repair", "--reset", "1"], ["baseline", "1"]] {
            let result = try ChildProcess.schemaTool(command + ["--lock-timeout", "1"] + common)
            #expect(result.status == 1, "\(command)")
            #expect(result.stderr.contains("another schema-tool holds the migration lock"), "\(result.stderr)")
        }
        #expect(try connection.scalar("SELECT count() FROM schema_migrations WHERE error = 'reset by repair'") == "0")
        try connection.run("INSERT INTO schema_migrations_lock VALUES ('other@host pid 1 #0', \(now - 1_000_000), 0, 1)")
        #expect(try ChildProcess.schemaTool(["repair", "--reset", "1", "--lock-timeout", "5"] + common).status == 0)
    }

    /// `verify --data`: exact data passes; a derived row that differs from what its view
    /// computes is reported per object with exit code 2, unless its window is still open.
    @Test func verifyDataFindsDifferencesAndToleratesOpenWindows() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "verifydata")
        // The shipped migrations plus a later one in the style of the planned 0007 (a latest
        // view with conversions and revenue): verify --data must pick it up by itself.
        var files: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: PackagePaths.migrationsDirectory) where name.hasSuffix(".sql") {
            files[name] = try String(contentsOfFile: PackagePaths.migrationsDirectory + "/" + name, encoding: .utf8)
        }
        files[String(format: "%04d_latest_money.sql", files.count + 1)] = """
            CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.ctr_latest_money_view
            ENGINE = ReplacingMergeTree(version) ORDER BY product_id
            AS SELECT product_id, window_start, conversions, revenue, toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version
            FROM ${DATABASE}.ctr_results_raw;
            """
        let migrations = try PackagePaths.directory(files)
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try ChildProcess.schemaTool(["migrate"] + common).status == 0)
        let writer = try RawRowWriter(endpoint, tag: "v")
        for _ in 0..<40 { try writer.insert() }
        let connection = try ClickHouseConnection(endpoint: endpoint)
        // An open window (ending now) whose roll-up row is then doubled: tolerated.
        try connection.run(
            "INSERT INTO ctr_results_raw (product_id, window_start, window_end, impressions_delta, clicks_delta, revision, emitted_at, batch_id) VALUES ('open', now() - 10, now(), 3, 1, 0, now(), 'o-1')"
        )
        try connection.run(
            "INSERT INTO ctr_rollup_1h SELECT 'open', toStartOfHour(now() - 10), sumState(toUInt64(3)), sumState(toUInt64(0)), sumState(toUInt64(0)), sumState(toDecimal64(0, 6))"
        )
        let clean = try ChildProcess.schemaTool(["verify", "--data"] + common)
        #expect(clean.status == 0, "\(clean.stdout)\(clean.stderr)")
        #expect(clean.stdout.contains("data matches"))
        for object in ["ctr_ml_agg_v3", "ctr_latest_v3", ".inner.ctr_latest_money_view", "ctr_rollup_5m", "ctr_rollup_1h", "ctr_rollup_1d", "ctr_rollup_5m_v2", "ctr_rollup_1h_v2", "ctr_rollup_1d_v2", "ctr_ml_summary", "ctr_funnel_daily"] {
            #expect(clean.stdout.contains(object), "\(object) is compared: \(clean.stdout)")
        }
        // A settled window counted twice in one roll-up.
        try connection.run(
            "INSERT INTO ctr_rollup_1d SELECT 'p1', toStartOfDay(toDateTime(1700000000, 'UTC')), sumState(toUInt64(5)), sumState(toUInt64(0)), sumState(toUInt64(0)), sumState(toDecimal64(0, 6))"
        )
        let dirty = try ChildProcess.schemaTool(["verify", "--data"] + common)
        #expect(dirty.status == 2, "\(dirty.stdout)\(dirty.stderr)")
        #expect(dirty.stdout.contains("data difference: ctr_rollup_1d: 1 of"), "\(dirty.stdout)")
        #expect(dirty.stdout.contains("product_id=p1"), "\(dirty.stdout)")
        #expect(dirty.stdout.contains("data difference: ctr_funnel_daily"), "the view over it too: \(dirty.stdout)")
        #expect(!dirty.stdout.contains("ctr_rollup_1h:"), "the open window is not compared: \(dirty.stdout)")
    }

    /// A quoted identifier with a backslash is read back by the server as written.
    @Test func quotedIdentifierWithBackslashRoundTrips() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "ident")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        try connection.run("CREATE TABLE \(sqlIdentifier("a\\`b\\")) (x UInt8) ENGINE = Memory")
        #expect(try connection.scalar("SELECT name FROM system.tables WHERE database = currentDatabase()") == "a\\\\`b\\\\")
    }
}
