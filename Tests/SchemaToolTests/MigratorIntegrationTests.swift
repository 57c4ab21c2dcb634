import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

@testable import SchemaTool

/// `schema-tool` against a real ClickHouse server.
@Suite(.serialized) struct MigratorIntegrationTests {
    let migrationsDirectory = PackagePaths.root.appendingPathComponent("migrations").path

    func schemaTool(_ arguments: [String]) throws -> CommandResult {
        try ChildProcess.run(PackagePaths.executable("schema-tool"), arguments)
    }

    func directory(_ files: [String: String]) throws -> String {
        let url = try PackagePaths.temporaryDirectory("migrations")
        for (name, text) in files { try text.write(to: url.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return url.path
    }

    @Test func migrateCreatesEverythingOnceAndVerifies() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "schema")
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrationsDirectory]
        let first = try schemaTool(["migrate"] + common)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("applied 3 migration(s)"))
        let second = try schemaTool(["migrate"] + common)
        #expect(second.status == 0)
        #expect(second.stdout.contains("up to date"))
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let tables = try connection.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase() AND name LIKE 'ctr_%' ORDER BY name")
        #expect(tables.map { "\($0[0])=\($0[1])" } == ["ctr_latest_view=MaterializedView", "ctr_ml_view=MaterializedView", "ctr_results_raw=MergeTree"])
        #expect(try schemaTool(["verify"] + common).status == 0)
        let status = try schemaTool(["status"] + common)
        #expect(status.stdout.components(separatedBy: " applied ").count - 1 == 3)
        #expect(try schemaTool(["plan"] + common).stdout.contains("nothing to apply"))
    }

    @Test func failedStatementStopsRecordsProgressAndResumes() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "resume")
        let migrations = try directory([
            "0001_first.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.c (x UInt8) ENGINE = NoSuchEngine;\nCREATE TABLE ${DATABASE}.d (x UInt8) ENGINE = Memory;\n"
        ])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let failed = try schemaTool(["migrate"] + common)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("0001_first.sql:3: statement 3 of 4 failed"))
        #expect(try schemaTool(["status"] + common).stdout.contains("failed at statement 3"))
        // Fix the file; a resumed run must not run statements 1 and 2 again (they would fail:
        // no IF NOT EXISTS).
        try "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.c (x UInt8) ENGINE = Memory;\nCREATE TABLE ${DATABASE}.d (x UInt8) ENGINE = Memory;\n"
            .write(toFile: migrations + "/0001_first.sql", atomically: true, encoding: .utf8)
        let resumed = try schemaTool(["migrate"] + common)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('a','b','c','d')") == "4")
    }

    @Test func editedMigrationBlocksUntilRepaired() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "edited")
        let migrations = try directory(["0001_t.sql": "CREATE TABLE ${DATABASE}.t (x UInt8) ENGINE = Memory;\n"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try schemaTool(["migrate"] + common).status == 0)
        try "CREATE TABLE ${DATABASE}.t (x UInt16) ENGINE = Memory;\n".write(toFile: migrations + "/0001_t.sql", atomically: true, encoding: .utf8)
        let blocked = try schemaTool(["migrate"] + common)
        #expect(blocked.status == 1)
        #expect(blocked.stderr.contains("was modified after it was applied"))
        #expect(try schemaTool(["status"] + common).stdout.contains("modified since applied"))
        #expect(try schemaTool(["repair", "--accept-checksum", "1"] + common).status == 0)
        #expect(try schemaTool(["migrate"] + common).status == 0)
    }

    @Test(arguments: [
        (["0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"], "version 1 is also used by"),
        (["0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"], "expected version 2 here"),
        (["0001_a.sql": "SELECT 1;\nSELECT '${UNDEFINED}';"], "0001_a.sql:2: undefined variable ${UNDEFINED}"),
        (["0001_a.sql": "SELECT 1;\nSELECT 'open;"], "0001_a.sql:2: unterminated string literal"),
        (["first.sql": "SELECT 1;"], "migration files are named NNNN_description.sql"),
    ])
    func badInputIsRefusedBeforeAnythingRuns(files: [String: String], message: String) throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "bad")
        let migrations = try directory(files)
        let result = try schemaTool(["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations])
        #expect(result.status == 1)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase()") == "0", "nothing changed")
    }

    @Test func ledgerNamingAMissingFileIsReported() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "missing")
        let migrations = try directory(["0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = Memory;", "0002_b.sql": "CREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = Memory;"])
        let common = ["--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        #expect(try schemaTool(["migrate"] + common).status == 0)
        try FileManager.default.removeItem(atPath: migrations + "/0002_b.sql")
        let result = try schemaTool(["migrate"] + common)
        #expect(result.status == 1)
        #expect(result.stderr.contains("no file 0002_b.sql exists"))
    }

    @Test func concurrentMigrationsApplyEachStatementOnce() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "lock")
        // Without IF NOT EXISTS: a second application of any statement would fail.
        let migrations = try directory([
            "0001_a.sql": "CREATE TABLE ${DATABASE}.a (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (1);",
            "0002_b.sql": "CREATE TABLE ${DATABASE}.b (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO ${DATABASE}.a VALUES (2);",
        ])
        let arguments = ["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database, "--migrations-dir", migrations]
        let logs = try PackagePaths.temporaryDirectory("lock-logs")
        let runs = try (0..<5).map { try ChildProcess(PackagePaths.executable("schema-tool"), arguments, logDirectory: logs, name: "run\($0)") }
        for run in runs { run.process.waitUntilExit() }
        for run in runs { #expect(run.process.terminationStatus == 0, "\(run.stderr)") }
        #expect(runs.filter { $0.stdout.contains("applied 2 migration(s)") }.count == 1, "exactly one run applied the migrations")
        let connection = try ClickHouseConnection(endpoint: endpoint)
        #expect(try connection.scalar("SELECT groupArray(x) FROM (SELECT x FROM a ORDER BY x)") == "[1,2]")
    }

    @Test func shippedMigrationsRunOnCurrentClickHouse() throws {
        let rendered = try schemaTool(["render", "--database", "ctr", "--migrations-dir", migrationsDirectory])
        #expect(rendered.status == 0)
        let file = try PackagePaths.temporaryDirectory("render").appendingPathComponent("rendered.json")
        try rendered.stdout.write(to: file, atomically: true, encoding: .utf8)
        let check = try ChildProcess.run(
            "/usr/bin/env", ["python3", PackagePaths.root.appendingPathComponent("Tests/compat/check_current_clickhouse.py").path, file.path]
        )
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        print("current ClickHouse: \(check.stdout)")
    }
}
