import ClickHouseHTTP
import Foundation

/// The recorded state of one migration in the ledger.
public struct LedgerEntry: Sendable, Hashable {
    public enum State: String, Sendable {
        case running, applied, failed, baseline
    }

    public var version: Int
    public var name: String
    public var checksum: String
    public var statementsTotal: Int
    public var statementsDone: Int
    public var state: State
    public var error: String
    public var recordedAt: String
    public var durationMilliseconds: Int
    public var appliedBy: String

    /// Whether the migration needs no more work.
    public var isComplete: Bool { state == .applied || state == .baseline }
}

/// What `status` reports per migration.
public struct MigrationStatus: Sendable {
    public enum State: Sendable, Equatable, CustomStringConvertible {
        case applied, baseline, pending
        case failed(atStatement: Int, error: String)
        case inProgress(atStatement: Int)
        case modifiedSinceApplied
        case fileMissing

        public var description: String {
            switch self {
            case .applied: "applied"
            case .baseline: "baseline"
            case .pending: "pending"
            case .failed(let statement, _): "failed at statement \(statement)"
            case .inProgress(let statement): "interrupted at statement \(statement)"
            case .modifiedSinceApplied: "modified since applied"
            case .fileMissing: "file missing"
            }
        }
    }

    public var version: Int
    public var name: String
    public var state: State
    public var appliedAt: String?
    public var durationMilliseconds: Int?
}

/// Applies migrations to a ClickHouse database and keeps the ledger (`schema_migrations`).
///
/// ClickHouse has no transactions, so every statement's completion is recorded: a failure
/// stops at that statement, and the next `migrate` resumes after the last completed one.
/// Runs hold the lock described in ``MigrationLock``.
public final class Migrator {
    public static let ledgerTable = "schema_migrations"

    public let connection: ClickHouseConnection
    public let database: String
    public let migrations: MigrationSet
    /// The cluster the migrations run on (`ON CLUSTER`), from the migration set.
    public var cluster: ClusterTarget? { migrations.cluster }
    private let actor: String
    private let output: (String) -> Void
    private var cachedBookkeeping: Bookkeeping?

    public init(connection: ClickHouseConnection, migrations: MigrationSet, output: @escaping (String) -> Void = { print($0) }) {
        self.connection = connection
        self.database = connection.endpoint.database
        self.migrations = migrations
        self.output = output
        let host = ProcessInfo.processInfo.hostName
        let user = ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        self.actor = "\(user)@\(host) pid \(ProcessInfo.processInfo.processIdentifier)"
    }

    var quotedDatabase: String { sqlIdentifier(database) }

    /// How the ledger and lock tables are written; on a cluster, checks that the server knows
    /// the cluster and counts its hosts (the insert quorum).
    func bookkeeping() throws(MigratorError) -> Bookkeeping {
        if let cachedBookkeeping { return cachedBookkeeping }
        var quorum: Int?
        if let cluster {
            let hosts: Int
            do {
                let answer = try connection.execute(
                    "SELECT count() FROM system.clusters WHERE cluster = \(sqlStringLiteral(cluster.name))", useDatabase: false
                )
                hosts = Int(answer.text.trimmingCharacters(in: .newlines)) ?? 0
            } catch {
                throw .clickHouse(error)
            }
            guard hosts > 0 else {
                throw .inconsistent(
                    "the server at \(ClickHouseEndpoint.redacted(connection.endpoint.url)) knows no cluster named \(cluster.name) (see SELECT DISTINCT cluster FROM system.clusters); define it in <remote_servers> or fix --cluster"
                )
            }
            quorum = hosts
        }
        let bookkeeping = Bookkeeping(endpoint: connection.endpoint, cluster: cluster, quorum: quorum)
        cachedBookkeeping = bookkeeping
        return bookkeeping
    }

    /// Creates the database, the ledger and the lock table if missing (on every host of the
    /// cluster, if any).
    public func prepare() throws(MigratorError) {
        let bookkeeping = try bookkeeping()
        do {
            let onCluster = cluster.map { " " + $0.onClusterClause } ?? ""
            _ = try connection.execute("CREATE DATABASE IF NOT EXISTS \(quotedDatabase)\(onCluster)", useDatabase: false)
            try bookkeeping.create(
                connection, table: Self.ledgerTable,
                columns: """
                    version UInt32, name String, checksum String, statements_total UInt32, statements_done UInt32, state String,
                    error String, recorded_at DateTime('UTC'), duration_ms UInt64, applied_by String, seq UInt64
                    """,
                orderBy: "(version, seq)"
            )
            try MigrationLock.prepare(connection, bookkeeping: bookkeeping)
        } catch {
            throw .clickHouse(error)
        }
    }

    /// Whether the database exists (queries that name it fail until `migrate` creates it).
    public func databaseExists() throws(ClickHouseError) -> Bool {
        try connection.execute("SELECT count() FROM system.databases WHERE name = \(sqlStringLiteral(database))", useDatabase: false).text.hasPrefix("1")
    }

    /// The latest ledger entry of every version.
    public func ledger() throws(ClickHouseError) -> [Int: LedgerEntry] {
        guard try databaseExists(),
            try connection.scalar("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '\(Self.ledgerTable)'") == "1"
        else { return [:] }
        let rows = try connection.rows(
            """
            SELECT version, argMax(name, seq), argMax(checksum, seq), argMax(statements_total, seq), argMax(statements_done, seq),
                   argMax(state, seq), argMax(replaceRegexpAll(error, '[\\t\\n]', ' '), seq), toString(argMax(recorded_at, seq)),
                   argMax(duration_ms, seq), argMax(applied_by, seq)
            FROM \(quotedDatabase).\(Self.ledgerTable) GROUP BY version ORDER BY version
            """
        )
        var entries: [Int: LedgerEntry] = [:]
        for row in rows where row.count == 10 {
            guard let version = Int(row[0]) else { continue }
            entries[version] = LedgerEntry(
                version: version, name: String(row[1]), checksum: String(row[2]), statementsTotal: Int(row[3]) ?? 0,
                statementsDone: Int(row[4]) ?? 0, state: LedgerEntry.State(rawValue: String(row[5])) ?? .failed,
                error: String(row[6]), recordedAt: String(row[7]), durationMilliseconds: Int(row[8]) ?? 0, appliedBy: String(row[9])
            )
        }
        return entries
    }

    /// Every migration with its state, plus ledger versions whose file is gone.
    public func status() throws(ClickHouseError) -> [MigrationStatus] {
        let ledger = try ledger()
        var result: [MigrationStatus] = []
        for migration in migrations.migrations {
            guard let entry = ledger[migration.version] else {
                result.append(MigrationStatus(version: migration.version, name: migration.name, state: .pending))
                continue
            }
            let state: MigrationStatus.State
            switch entry.state {
            case .applied: state = entry.checksum == migration.checksum ? .applied : .modifiedSinceApplied
            case .baseline: state = .baseline
            case .failed: state = .failed(atStatement: entry.statementsDone + 1, error: entry.error)
            case .running: state = .inProgress(atStatement: entry.statementsDone + 1)
            }
            result.append(
                MigrationStatus(
                    version: migration.version, name: migration.name, state: state, appliedAt: entry.recordedAt,
                    durationMilliseconds: entry.durationMilliseconds
                )
            )
        }
        for (version, entry) in ledger where !migrations.migrations.contains(where: { $0.version == version }) {
            result.append(MigrationStatus(version: version, name: entry.name, state: .fileMissing, appliedAt: entry.recordedAt))
        }
        return result.sorted { $0.version < $1.version }
    }

    /// The statements `migrate(to:)` would run, in order.
    public func plan(to target: Int? = nil) throws(MigratorError) -> [(Migration, [SQLStatement])] {
        let ledger: [Int: LedgerEntry]
        do { ledger = try self.ledger() } catch { throw .clickHouse(error) }
        try checkConsistency(ledger)
        return migrations.migrations
            .filter { $0.version <= (target ?? .max) && !(ledger[$0.version]?.isComplete ?? false) }
            .map { migration in (migration, Array(migration.statements.dropFirst(ledger[migration.version]?.statementsDone ?? 0))) }
    }

    private func checkConsistency(_ ledger: [Int: LedgerEntry]) throws(MigratorError) {
        for (version, entry) in ledger.sorted(by: { $0.key < $1.key }) {
            guard let migration = migrations.migrations.first(where: { $0.version == version }) else {
                throw .inconsistent(
                    "the ledger says migration \(version) (\(entry.name)) was \(entry.state.rawValue), but no file \(String(format: "%04d", version))_\(entry.name).sql exists: restore the file from version control"
                )
            }
            // A failed migration may be edited to fix its failing statement; an applied one not.
            if entry.checksum != migration.checksum && entry.state == .applied {
                throw .inconsistent(
                    "\(migration.path) was modified after it was applied (checksum \(entry.checksum.prefix(12))… recorded, \(migration.checksum.prefix(12))… now): restore the original and put the change in a new migration, or run `schema-tool repair --accept-checksum \(version)` if the edit is harmless"
                )
            }
        }
    }

    /// Applies pending migrations up to `target` (all when `nil`). Returns the versions applied.
    ///
    /// Unless `dryRun` is off, the migrations up to `target` are first replayed in a
    /// ``ScratchDatabase``, so that a statement the server rejects changes nothing.
    @discardableResult
    public func migrate(
        to target: Int? = nil, lockTimeout: Duration = .seconds(300), lockLease: Duration = .seconds(120), dryRun: Bool = true
    ) throws(MigratorError) -> [Int] {
        if dryRun, !(try plan(to: target)).isEmpty { try self.dryRun(through: target ?? .max) }
        try prepare()
        let lock = MigrationLock(connection: connection, bookkeeping: try bookkeeping(), holder: actor, lease: lockLease)
        try lock.acquire(timeout: lockTimeout)
        defer { lock.release() }
        let work = try plan(to: target)
        let coordinationWrites = try self.coordinationWrites()
        var applied: [Int] = []
        for (migration, statements) in work {
            let done = migration.statements.count - statements.count
            let started = ContinuousClock.now
            output("applying \(String(format: "%04d", migration.version))_\(migration.name) (\(statements.count) statement\(statements.count == 1 ? "" : "s"))")
            for (offset, statement) in statements.enumerated() {
                let number = done + offset + 1
                do {
                    if let expression = WaitDirective.expression(in: statement.text) {
                        try waitUntil(expression)
                    } else {
                        try connection.run(statement.text)
                    }
                    if let table = coordinationWrites[migration.version]?[number - 1] { try awaitReplication(of: table) }
                } catch {
                    record(migration, done: number - 1, state: .failed, error: "\(error)", started: started)
                    throw .statementFailed(
                        "\(migration.path):\(statement.line): statement \(number) of \(migration.statements.count) failed: \(error). "
                            + "Statements 1-\(number - 1) are applied and recorded. Fix the statement (or the database) and run migrate again to resume at statement \(number), "
                            + "or see `schema-tool repair --help`."
                    )
                }
                record(migration, done: number, state: number == migration.statements.count ? .applied : .running, error: "", started: started)
            }
            if statements.isEmpty { record(migration, done: migration.statements.count, state: .applied, error: "", started: started) }
            applied.append(migration.version)
        }
        return applied
    }

    /// Replays the migrations up to `version` in a ``ScratchDatabase``: a statement the server
    /// rejects (a syntax error, an unknown column or engine) stops `migrate` before anything
    /// in the database changes.
    private func dryRun(through version: Int) throws(MigratorError) {
        let scratch: ScratchDatabase
        do { scratch = try ScratchDatabase(beside: connection.endpoint) } catch { throw .clickHouse(error) }
        defer { scratch.drop() }
        let failure: ScratchDatabase.Failure?
        do { failure = try scratch.replay(migrations, through: version, includingData: true) } catch { throw .inconsistent(error.description) }
        if let failure {
            throw .statementFailed(
                "\(failure.location): statement \(failure.statement) of \(failure.migration.statements.count) fails in a dry run against a scratch database: \(failure.error). "
                    + "Nothing was changed in \(database). Fix the statement and run migrate again."
            )
        }
    }

    /// On a cluster, the statements (by version and 0-based index) that write rows to a
    /// coordination table (one a migration creates with a `Log`-family engine, such as a
    /// cut-over time), and that table. Every host creates and fills such a table itself or
    /// receives the rows by replication; all must hold the same rows before the next statement
    /// (a view that reads the cut-over, say) runs on them.
    private func coordinationWrites() throws(MigratorError) -> [Int: [Int: String]] {
        guard cluster != nil else { return [:] }
        let plain: MigrationSet
        do { plain = try migrations.rendered(variables: migrations.variables, cluster: nil) } catch { throw .inconsistent(error.description) }
        var tables = Set<String>()
        var writes: [Int: [Int: String]] = [:]
        for migration in plain.migrations {
            for (index, statement) in migration.statements.enumerated() {
                if let table = ClusterRewriter.logTableCreated(by: statement.text, database: database) {
                    tables.insert(table)
                    writes[migration.version, default: [:]][index] = table
                } else if let table = ClusterRewriter.tableInserted(by: statement.text, database: database), tables.contains(table) {
                    writes[migration.version, default: [:]][index] = table
                }
            }
        }
        return writes
    }

    /// Waits until every replica of `table` (`database.name`) holds the same parts, as their
    /// part lists in ZooKeeper show (read through `system.zookeeper`, so no other host is
    /// contacted), for at most `timeout`.
    private func awaitReplication(of table: String, timeout: Duration = .seconds(120)) throws(MigratorError) {
        let parts = table.split(separator: ".", maxSplits: 1).map { sqlStringLiteral(String($0)) }
        guard parts.count == 2 else { return }
        let deadline = ContinuousClock.now + timeout
        let path: String
        do {
            path = try connection.scalar("SELECT zookeeper_path FROM system.replicas WHERE database = \(parts[0]) AND table = \(parts[1])")
        } catch {
            throw .clickHouse(error)
        }
        guard !path.isEmpty else { return }
        while true {
            var replicas: [String] = []
            var partLists = Set<String>()
            do {
                replicas = try connection.rows("SELECT name FROM system.zookeeper WHERE path = \(sqlStringLiteral(path + "/replicas"))").map { String($0[0]) }
                for replica in replicas {
                    partLists.insert(
                        try connection.scalar("SELECT groupArray(name) FROM (SELECT name FROM system.zookeeper WHERE path = \(sqlStringLiteral(path + "/replicas/" + replica + "/parts")) ORDER BY name)")
                    )
                }
            } catch {
                throw .clickHouse(error)
            }
            if partLists.count <= 1 { return }
            guard ContinuousClock.now < deadline else {
                throw .statementFailed(
                    "the replicas of \(table) (\(replicas.joined(separator: ", "))) still hold different parts after \(timeout): replication is stuck; check system.replication_queue on each host"
                )
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Sleeps until the server's clock reaches `expression` (a DateTime expression).
    private func waitUntil(_ expression: String) throws(ClickHouseError) {
        while true {
            let remaining = Int(try connection.scalar("SELECT toInt64(toUnixTimestamp(\(expression))) - toInt64(toUnixTimestamp(now()))")) ?? 0
            guard remaining > 0 else { return }
            output("  waiting \(remaining) s for the cut-over (WAIT UNTIL \(expression))")
            Thread.sleep(forTimeInterval: Double(min(remaining, 10)))
        }
    }

    /// Marks every migration up to `version` as applied without running it (adopting an
    /// existing database whose schema already matches them).
    public func baseline(_ version: Int) throws(MigratorError) {
        try prepare()
        for migration in migrations.migrations where migration.version <= version {
            record(migration, done: migration.statements.count, state: .baseline, error: "", started: .now)
        }
    }

    /// Ways out of a half-applied or edited migration.
    public enum Repair: Sendable {
        /// Record the current file checksum as the applied one.
        case acceptChecksum(Int)
        /// Mark the failed migration's next statement as done (it was applied by hand).
        case skipStatement(Int)
        /// Mark the migration applied (its remaining statements were applied by hand).
        case markApplied(Int)
        /// Forget the migration's progress, so that `migrate` runs it from its first statement.
        case reset(Int)
    }

    public func repair(_ repair: Repair) throws(MigratorError) {
        let ledger: [Int: LedgerEntry]
        do { ledger = try self.ledger() } catch { throw .clickHouse(error) }
        let version: Int
        switch repair {
        case .acceptChecksum(let v), .skipStatement(let v), .markApplied(let v), .reset(let v): version = v
        }
        guard let migration = migrations.migrations.first(where: { $0.version == version }) else {
            throw .inconsistent("no migration file with version \(version)")
        }
        let entry = ledger[version]
        switch repair {
        case .acceptChecksum:
            guard let entry else { throw .inconsistent("migration \(version) is not in the ledger; nothing to accept") }
            record(migration, done: entry.statementsDone, state: entry.state, error: entry.error, started: .now)
        case .skipStatement:
            guard let entry, !entry.isComplete else { throw .inconsistent("migration \(version) is not half-applied") }
            let done = min(entry.statementsDone + 1, migration.statements.count)
            record(migration, done: done, state: done == migration.statements.count ? .applied : .failed, error: "skipped by repair", started: .now)
        case .markApplied:
            record(migration, done: migration.statements.count, state: .applied, error: "marked applied by repair", started: .now)
        case .reset:
            record(migration, done: 0, state: .failed, error: "reset by repair", started: .now)
        }
    }

    static func dateTimeText(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
    }

    private func record(_ migration: Migration, done: Int, state: LedgerEntry.State, error: String, started: ContinuousClock.Instant) {
        let duration = ContinuousClock.now - started
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        let sequence = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        let row: [String: Any] = [
            "version": migration.version, "name": migration.name, "checksum": migration.checksum,
            "statements_total": migration.statements.count, "statements_done": done, "state": state.rawValue,
            "error": String(error.prefix(2000)), "recorded_at": Self.dateTimeText(Date()), "duration_ms": milliseconds,
            "applied_by": actor, "seq": sequence,
        ]
        do {
            try bookkeeping().insert(connection, table: Self.ledgerTable, row: row)
        } catch {
            output("warning: could not record migration \(migration.version) progress in the ledger: \(error)")
        }
    }
}

/// Why `migrate` (or another ledger command) stopped.
public enum MigratorError: Error, Sendable, CustomStringConvertible {
    case clickHouse(ClickHouseError)
    case inconsistent(String)
    case statementFailed(String)
    case lockTimeout(String)

    public var description: String {
        switch self {
        case .clickHouse(let error): "ClickHouse: \(error)"
        case .inconsistent(let message), .statementFailed(let message), .lockTimeout(let message): message
        }
    }
}
