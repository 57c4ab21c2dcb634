import ArgumentParser
import ClickHouseHTTP
import Foundation
import SchemaTool

/// Options every command shares.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "ClickHouse HTTP(S) URL. (env: CLICKHOUSE_URL)") var clickhouseUrl: String?
    @Option(help: "Database to migrate; created if missing. Available to migrations as ${DATABASE}.") var database = "default"
    @Option(help: "Directory of NNNN_name.sql files.") var migrationsDir = "migrations"
    @Option(help: "File holding the ClickHouse password (otherwise CLICKHOUSE_USER / CLICKHOUSE_PASSWORD).") var passwordFile: String?
    @Option(help: "CA certificates (PEM) for HTTPS.") var caFile: String?
    @Option(name: .customLong("var"), help: "Template variable NAME=VALUE for ${NAME}; repeatable. Also from SCHEMA_VAR_NAME.") var variables: [String] = []
    @Option(help: "Seconds one request may take. A data statement that outlasts it is not sent again: schema-tool waits for the server to finish it and reads its outcome from system.query_log.")
    var requestTimeout = 300
    @OptionGroup var clusterOptions: ClusterOptions

    func variableValues() throws -> [String: String] {
        var values: [String: String] = [:]
        for (key, value) in ProcessInfo.processInfo.environment where key.hasPrefix("SCHEMA_VAR_") {
            values[String(key.dropFirst("SCHEMA_VAR_".count))] = value
        }
        for variable in variables {
            let parts = variable.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw ValidationError("--var expects NAME=VALUE, got \(variable)") }
            values[String(parts[0])] = String(parts[1])
        }
        values["DATABASE"] = database
        return values
    }

    func loadMigrations() throws -> MigrationSet {
        do {
            return try MigrationSet(directory: migrationsDir, variables: try variableValues(), cluster: clusterOptions.target)
        } catch let error as MigrationError {
            throw Failure(error.description)
        }
    }

    func connect() throws -> ClickHouseConnection {
        let url = clickhouseUrl ?? ProcessInfo.processInfo.environment["CLICKHOUSE_URL"] ?? "http://127.0.0.1:8123"
        let credentials = try ClickHouseCredentials.fromEnvironment(passwordFile: passwordFile)
        return try ClickHouseConnection(
            endpoint: ClickHouseEndpoint(url: url, database: database, credentials: credentials, caFile: caFile, requestTimeout: .seconds(requestTimeout))
        )
    }
}

/// `--cluster` and how replicated tables are named in ZooKeeper.
struct ClusterOptions: ParsableArguments {
    @Option(help: "Run DDL ON CLUSTER NAME with Replicated engines, and keep the ledger replicated on every host. (env: SCHEMA_CLUSTER)")
    var cluster: String?
    @Option(help: "With --cluster: ZooKeeper path of each replicated table; {database} and {table} are filled in by schema-tool, other macros by the server.")
    var replicationPath = "/clickhouse/tables/{shard}/{database}/{table}"
    @Option(help: "With --cluster: replica name, expanded by each server from its <macros>.")
    var replicaName = "{replica}"

    var target: ClusterTarget? {
        guard let name = cluster ?? ProcessInfo.processInfo.environment["SCHEMA_CLUSTER"], !name.isEmpty else { return nil }
        return ClusterTarget(name: name, replicationPath: replicationPath, replicaName: replicaName)
    }
}

/// A failure reported as one line on stderr with exit code 1.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func reportingFailures<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let failure as Failure {
        FileHandle.standardError.write(Data("error: \(failure.description)\n".utf8))
        throw ExitCode(1)
    } catch let error as MigratorError {
        FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
        throw ExitCode(1)
    } catch let error as ClickHouseError {
        FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
        throw ExitCode(1)
    }
}

struct SchemaToolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema-tool",
        abstract: "Versioned ClickHouse migrations for the CTR pipeline.",
        discussion: "Exit codes: 0 success, 1 failure (message on stderr), 2 `verify` found differences.",
        subcommands: [Migrate.self, Status.self, Plan.self, Verify.self, New.self, Repair.self, Baseline.self, Render.self]
    )
}

/// The migration lock's options, for every command that writes the ledger.
struct LockOptions: ParsableArguments {
    @Option(help: "Seconds to wait for another schema-tool holding the lock.") var lockTimeout = 300
    @Option(help: "Seconds a dead lock holder blocks others (the holder renews its lease every quarter of it).") var lockLease = 120
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending migrations in order (resuming a half-applied one).")
    @OptionGroup var options: ConnectionOptions
    @Option(help: "Apply up to this version only.") var to: Int?
    @OptionGroup var lock: LockOptions
    @Flag(help: "Skip the dry run in a scratch database (for migrations that use objects no migration creates).") var skipDryRun = false
    @Option(help: "Seconds a cut-over bound must still be ahead of the server's clock once the views reading it exist (the clock skew allowed between aggregators and ClickHouse); otherwise the cut-over runs again with a new bound.")
    var cutoverMargin = 1

    func run() throws {
        try reportingFailures {
            let migrator = Migrator(connection: try options.connect(), migrations: try options.loadMigrations())
            migrator.cutoverMargin = .seconds(cutoverMargin)
            let started = ContinuousClock.now
            let applied = try migrator.migrate(
                to: to, lockTimeout: .seconds(lock.lockTimeout), lockLease: .seconds(lock.lockLease), dryRun: !skipDryRun
            )
            let elapsed = ContinuousClock.now - started
            if applied.isEmpty {
                print("database \(options.database) is up to date; nothing to apply")
            } else {
                print("applied \(applied.count) migration(s) (\(applied.map(String.init).joined(separator: ", "))) to \(options.database) in \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds])))")
            }
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show every migration's state and objects no migration created.")
    @OptionGroup var options: ConnectionOptions

    func run() throws {
        try reportingFailures {
            let migrations = try options.loadMigrations()
            let connection = try options.connect()
            let migrator = Migrator(connection: connection, migrations: migrations)
            let statuses = try migrator.status()
            print("VERSION  NAME                              STATE                        APPLIED AT           DURATION")
            for status in statuses {
                let duration = status.durationMilliseconds.map { "\($0) ms" } ?? ""
                print(
                    String(format: "%04d", status.version) + "     " + status.name.padded(33) + " " + status.state.description.padded(28) + " "
                        + (status.appliedAt ?? "").padded(20) + " " + duration
                )
                if case .failed(_, let error) = status.state { print("         error: \(error)") }
                if case .outcomeUnknown(_, let error) = status.state, !error.isEmpty { print("         error: \(error)") }
            }
            if try migrator.databaseExists() {
                let unmanaged = try SchemaVerifier(connection: connection, migrations: migrations).unmanagedObjects(through: .max)
                if !unmanaged.isEmpty { print("objects no migration created: \(unmanaged.joined(separator: ", "))") }
            }
        }
    }
}

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the statements migrate would run, without running them.")
    @OptionGroup var options: ConnectionOptions
    @Option(help: "Plan up to this version only.") var to: Int?

    func run() throws {
        try reportingFailures {
            let migrator = Migrator(connection: try options.connect(), migrations: try options.loadMigrations())
            let plan = try migrator.plan(to: to)
            if plan.isEmpty { print("-- nothing to apply") }
            for (migration, statements) in plan {
                print("-- \(String(format: "%04d", migration.version))_\(migration.name) (\(migration.path))")
                for statement in statements { print(statement.text + ";\n") }
            }
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the live schema matches the applied migrations, and with --data that the derived tables and views equal what their views compute from ctr_results_raw (exit 2 on differences)."
    )
    @OptionGroup var options: ConnectionOptions
    @Flag(help: "Also compare the data of every object derived from ctr_results_raw with what the applied migrations' views compute from its settled rows.")
    var data = false
    @Option(help: "With --data: seconds after its end that a window may still receive rows; only windows that ended earlier are compared.")
    var settle = 300

    func run() throws {
        var problems: [String] = []
        var dataProblems: [String] = []
        var dataSummary: String?
        try reportingFailures {
            let migrations = try options.loadMigrations()
            let connection = try options.connect()
            let ledger = try Migrator(connection: connection, migrations: migrations).ledger()
            let applied = ledger.values.filter(\.isComplete).map(\.version).max() ?? 0
            problems = try SchemaVerifier(connection: connection, migrations: migrations).differences(through: applied)
            for (version, entry) in ledger.sorted(by: { $0.key < $1.key }) where !entry.isComplete {
                problems.append("migration \(version) (\(entry.name)) is \(entry.state.rawValue) at statement \(entry.statementsDone + 1)")
            }
            if data {
                var verifier = DataVerifier(connection: connection, migrations: migrations)
                verifier.settle = .seconds(settle)
                let report = try verifier.compare(through: applied)
                dataProblems = report.differences
                if dataProblems.isEmpty {
                    let rows = report.compared.reduce(0) { $0 + $1.rows }
                    dataSummary = (
                        "data matches: \(report.compared.count) derived object(s) (\(report.compared.map(\.object).joined(separator: ", "))), \(rows) settled row(s), windows ending before \(report.cutoff) UTC"
                            + (report.skipped.isEmpty ? "" : "; not compared (they read the clock): \(report.skipped.joined(separator: ", "))")
                    )
                }
            }
        }
        if problems.isEmpty {
            print("schema matches the applied migrations")
        } else {
            problems.forEach { print("difference: \($0)") }
        }
        dataSummary.map { print($0) }
        dataProblems.forEach { print("data difference: \($0)") }
        if !problems.isEmpty || !dataProblems.isEmpty { throw ExitCode(2) }
    }
}

struct New: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create the next numbered migration file from a template.")
    @Option(help: "Directory of NNNN_name.sql files.") var migrationsDir = "migrations"
    @Argument(help: "Description, e.g. add_revenue.") var name: String

    func run() throws {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: migrationsDir)) ?? []
        let next = (files.compactMap { Int($0.prefix(while: { $0.isNumber })) }.max() ?? 0) + 1
        let slug = name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let path = (migrationsDir as NSString).appendingPathComponent(String(format: "%04d_", next) + String(slug) + ".sql")
        let template = """
            -- \(name)
            -- Statements end with ';'. ${DATABASE} is the target database; ${NAME} is --var NAME=VALUE (or ${NAME:-default}).
            -- Each statement's completion is recorded: keep statements idempotent (IF NOT EXISTS / IF EXISTS).

            """
        try FileManager.default.createDirectory(atPath: migrationsDir, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(template.utf8)) else {
            throw Failure("cannot create \(path)")
        }
        print(path)
    }
}

struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resolve a half-applied or edited migration.",
        discussion: """
            --accept-checksum V: record the edited file of applied migration V as the applied one.
            --skip-statement V: mark the failed statement of V as done (you applied it by hand, or it did run).
            --retry-statement V: mark the statement of V whose outcome is unknown as not run (it wrote nothing, or you removed what it wrote).
            --mark-applied V: mark V applied (you applied its remaining statements by hand).
            --reset V: forget V's progress so that migrate runs it from its first statement.
            """
    )
    @OptionGroup var options: ConnectionOptions
    @Option var acceptChecksum: Int?
    @Option var skipStatement: Int?
    @Option var retryStatement: Int?
    @Option var markApplied: Int?
    @Option var reset: Int?
    @OptionGroup var lock: LockOptions

    func run() throws {
        let choices: [Migrator.Repair] = [
            acceptChecksum.map { .acceptChecksum($0) }, skipStatement.map { .skipStatement($0) }, retryStatement.map { .retryStatement($0) },
            markApplied.map { .markApplied($0) }, reset.map { .reset($0) },
        ].compactMap { $0 }
        guard choices.count == 1 else {
            throw ValidationError("give exactly one of --accept-checksum, --skip-statement, --retry-statement, --mark-applied, --reset")
        }
        try reportingFailures {
            try Migrator(connection: try options.connect(), migrations: try options.loadMigrations())
                .repair(choices[0], lockTimeout: .seconds(lock.lockTimeout), lockLease: .seconds(lock.lockLease))
            print("repaired")
        }
    }
}

struct Baseline: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mark migrations up to VERSION applied without running them (adopt an existing database).")
    @OptionGroup var options: ConnectionOptions
    @Argument var version: Int
    @OptionGroup var lock: LockOptions

    func run() throws {
        try reportingFailures {
            try Migrator(connection: try options.connect(), migrations: try options.loadMigrations())
                .baseline(version, lockTimeout: .seconds(lock.lockTimeout), lockLease: .seconds(lock.lockLease))
            print("baselined \(options.database) at version \(version)")
        }
    }
}

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every migration's rendered statements as JSON, without connecting (for checks against other engines)."
    )
    @Option(help: "Directory of NNNN_name.sql files.") var migrationsDir = "migrations"
    @Option(help: "Value of ${DATABASE}.") var database = "default"
    @Option(name: .customLong("var"), help: "Template variable NAME=VALUE; repeatable.") var variables: [String] = []
    @OptionGroup var clusterOptions: ClusterOptions

    func run() throws {
        var options = try ConnectionOptions.parse(["--database", database, "--migrations-dir", migrationsDir] + variables.flatMap { ["--var", $0] })
        options.database = database
        options.clusterOptions = clusterOptions
        let migrations = try reportingFailures(options.loadMigrations)
        let document = migrations.migrations.map { migration in
            ["version": migration.version, "name": migration.name, "statements": migration.statements.map(\.text)] as [String: Any]
        }
        let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

SchemaToolCommand.main()
