import ClickHouseHTTP
import Foundation

/// The recorded state of one migration in the ledger.
public struct LedgerEntry: Sendable, Hashable {
    public enum State: String, Sendable {
        /// `started`: statement `statementsDone + 1` (a data statement) was sent with
        /// ``queryID`` and its outcome is not known yet; `migrate` finds it out (from
        /// `system.processes` and `system.query_log`) before anything else runs.
        case running, applied, failed, baseline, started
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
    /// SHA-256 of each statement of the file the progress was recorded with (empty in ledgers
    /// written by older versions).
    public var statementChecksums: [String] = []
    /// For `started`: the query id the statement was sent with, and the server (`hostName()`)
    /// that received it.
    public var queryID: String = ""
    public var server: String = ""
    public var seq: UInt64 = 0

    /// Whether the migration needs no more work.
    public var isComplete: Bool { state == .applied || state == .baseline }
}

/// What `status` reports per migration.
public struct MigrationStatus: Sendable {
    public enum State: Sendable, Equatable, CustomStringConvertible {
        case applied, baseline, pending
        case failed(atStatement: Int, error: String)
        case inProgress(atStatement: Int)
        case outcomeUnknown(atStatement: Int, error: String)
        case modifiedSinceApplied
        case fileMissing

        public var description: String {
            switch self {
            case .applied: "applied"
            case .baseline: "baseline"
            case .pending: "pending"
            case .failed(let statement, _): "failed at statement \(statement)"
            case .inProgress(let statement): "interrupted at statement \(statement)"
            case .outcomeUnknown(let statement, _): "outcome of statement \(statement) unknown"
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
    /// The lock while `migrate`, `repair` or `baseline` holds it: checked before every statement.
    private var lock: MigrationLock?
    /// The highest ledger `seq` seen or written: new rows get a higher one even if the wall
    /// clock steps back.
    private var lastSeq: UInt64 = 0
    private var serverName: String?
    /// How far in the future a cut-over bound must still be when a view that reads it exists
    /// (the clock skew allowed between the aggregators and ClickHouse); see ``CutoverPlan``.
    public var cutoverMargin: Duration = .seconds(1)
    /// How many times a cut-over window is run again before giving up.
    public var cutoverAttempts = 3

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
                    error String, recorded_at DateTime('UTC'), duration_ms UInt64, applied_by String, seq UInt64,
                    statement_checksums Array(String), query_id String, server String
                    """,
                orderBy: "(version, seq)"
            )
            // Ledgers created by older versions lack the newer columns (18.16 has no ADD COLUMN
            // IF NOT EXISTS). On a cluster the ledger is one replicated table: the ALTER on this
            // host reaches every replica.
            let existing = Set(
                try connection.rows(
                    "SELECT name FROM system.columns WHERE database = \(sqlStringLiteral(database)) AND table = '\(Self.ledgerTable)'"
                ).map { String($0[0]) }
            )
            let added = [("statement_checksums", "Array(String)"), ("query_id", "String"), ("server", "String")].filter { !existing.contains($0.0) }
            if !added.isEmpty {
                try connection.run(
                    "ALTER TABLE \(quotedDatabase).\(Self.ledgerTable) " + added.map { "ADD COLUMN \($0.0) \($0.1)" }.joined(separator: ", ")
                )
            }
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
        let columns = Set(
            try connection.rows(
                "SELECT name FROM system.columns WHERE database = \(sqlStringLiteral(database)) AND table = '\(Self.ledgerTable)'"
            ).map { String($0[0]) }
        )
        let newer = columns.contains("server")
            ? "arrayStringConcat(argMax(statement_checksums, seq), ','), argMax(query_id, seq), argMax(server, seq)" : "'', '', ''"
        let rows = try connection.rows(
            """
            SELECT version, argMax(name, seq), argMax(checksum, seq), argMax(statements_total, seq), argMax(statements_done, seq),
                   argMax(state, seq), argMax(replaceRegexpAll(error, '[\\t\\n]', ' '), seq), toString(argMax(recorded_at, seq)),
                   argMax(duration_ms, seq), argMax(applied_by, seq), max(seq), \(newer)
            FROM \(quotedDatabase).\(Self.ledgerTable) GROUP BY version ORDER BY version
            """
        )
        var entries: [Int: LedgerEntry] = [:]
        for row in rows where row.count == 14 {
            guard let version = Int(row[0]) else { continue }
            entries[version] = LedgerEntry(
                version: version, name: String(row[1]), checksum: String(row[2]), statementsTotal: Int(row[3]) ?? 0,
                statementsDone: Int(row[4]) ?? 0, state: LedgerEntry.State(rawValue: String(row[5])) ?? .failed,
                error: String(row[6]), recordedAt: String(row[7]), durationMilliseconds: Int(row[8]) ?? 0, appliedBy: String(row[9]),
                statementChecksums: row[11].isEmpty ? [] : row[11].split(separator: ",").map(String.init), queryID: String(row[12]),
                server: String(row[13]), seq: UInt64(row[10]) ?? 0
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
            case .started: state = .outcomeUnknown(atStatement: entry.statementsDone + 1, error: entry.error)
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
            if !entry.isComplete { try checkExecutedPrefix(entry, migration) }
        }
    }

    /// A half-applied migration resumes by statement number, so the statements it already ran
    /// (and one whose outcome is still unknown) must be the ones in the file now: a statement
    /// added, removed or changed before the resume point would make the resume skip or repeat
    /// statements. Only statements after it may be edited (typically the one that failed).
    private func checkExecutedPrefix(_ entry: LedgerEntry, _ migration: Migration) throws(MigratorError) {
        let executed = entry.statementsDone + (entry.state == .started ? 1 : 0)
        guard executed > 0 else { return }
        let current = migration.statementChecksums
        let way = "restore the file as it was when those statements ran (see `schema-tool status`), or undo their effects by hand and run `schema-tool repair --reset \(entry.version)`"
        if entry.statementChecksums.isEmpty {
            // Recorded by an older schema-tool: only the whole file's checksum is known.
            guard entry.checksum == migration.checksum else {
                throw .inconsistent(
                    "\(migration.path) changed since statements 1-\(executed) of it ran (recorded without per-statement checksums, so the change may be before the resume point): \(way)"
                )
            }
            return
        }
        guard current.count >= executed, entry.statementChecksums.count >= executed else {
            throw .inconsistent("\(migration.path) has \(current.count) statements, but statements 1-\(executed) of it already ran: \(way)")
        }
        if let changed = (0..<executed).first(where: { current[$0] != entry.statementChecksums[$0] }) {
            throw .inconsistent(
                "\(migration.path):\(migration.template[changed].line): statement \(changed + 1) changed (or statements were added or removed before it) since statements 1-\(executed) ran; resuming at statement \(executed + 1) would skip or repeat statements: \(way)"
            )
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
        return try withLock(timeout: lockTimeout, lease: lockLease) { () throws(MigratorError) -> [Int] in
            let work = try plan(to: target)
            let coordinationWrites = try self.coordinationWrites()
            let plain: MigrationSet
            do throws(MigrationError) { plain = try migrations.rendered(variables: migrations.variables, cluster: nil) } catch { throw .inconsistent(error.description) }
            var applied: [Int] = []
            for (migration, _) in work {
                let started = ContinuousClock.now
                var done = try resolveUnknownOutcome(of: migration, started: started)
                let remaining = migration.statements.count - done
                output("applying \(String(format: "%04d", migration.version))_\(migration.name) (\(remaining) statement\(remaining == 1 ? "" : "s"))")
                let cutover = CutoverPlan(
                    statements: plain.migrations.first { $0.version == migration.version }?.statements ?? [], database: database
                )
                var units = cutover.units(from: done)
                var position = 0
                var attempts: [Int: Int] = [:]
                while position < units.count {
                    let unit = units[position]
                    var restartAt: Int?
                    for index in unit {
                        let statement = migration.statements[index]
                        let number = index + 1
                        // A reader of a stale bound is never created: its window runs again.
                        if case .reader = cutover.roles[index], let stale = try staleBound(cutover, reader: index, migration: migration) {
                            restartAt = try restartWindow(cutover, reader: index, migration: migration, reason: stale, attempts: &attempts, started: started)
                            break
                        }
                        do throws(MigratorError) {
                            try lock?.ensureHeld()
                            try execute(statement, number: number, of: migration, done: done, started: started, isData: isDataStatement(cutover, index))
                            if let table = coordinationWrites[migration.version]?[index] { try awaitReplication(of: table) }
                        } catch {
                            if case .statementFailed = error { throw error }
                            if case .lockLost = error { throw error }
                            if case .ledgerWrite = error { throw error }
                            try record(migration, done: done, state: .failed, error: "\(error)", started: started)
                            throw .statementFailed(
                                "\(migration.path):\(statement.line): statement \(number) of \(migration.statements.count) failed: \(error). "
                                    + "Statements 1-\(done) are applied and recorded. Fix the statement (or the database) and run migrate again to resume at statement \(done + 1), "
                                    + "or see `schema-tool repair --help`."
                            )
                        }
                        // ... nor left in place if the bound passed while it was being created.
                        if case .reader = cutover.roles[index], let stale = try staleBound(cutover, reader: index, migration: migration) {
                            restartAt = try restartWindow(cutover, reader: index, migration: migration, reason: stale, attempts: &attempts, started: started)
                            break
                        }
                        if unit.count == 1 {
                            done = number
                            try record(migration, done: done, state: done == migration.statements.count ? .applied : .running, error: "", started: started)
                        }
                    }
                    if let restartAt {
                        done = restartAt
                        units = cutover.units(from: done)
                        position = 0
                        continue
                    }
                    if unit.count > 1 {
                        done = unit.max()! + 1
                        try record(migration, done: done, state: done == migration.statements.count ? .applied : .running, error: "", started: started)
                    }
                    position += 1
                }
                if remaining == 0 { try record(migration, done: migration.statements.count, state: .applied, error: "", started: started) }
                applied.append(migration.version)
            }
            return applied
        }
    }

    /// Runs `body` holding the migration lock (`migrate`, `repair` and `baseline` all do).
    private func withLock<T>(timeout: Duration, lease: Duration, _ body: () throws(MigratorError) -> T) throws(MigratorError) -> T {
        try prepare()
        let lock = MigrationLock(connection: connection, bookkeeping: try bookkeeping(), holder: actor, lease: lease)
        try lock.acquire(timeout: timeout)
        self.lock = lock
        defer {
            lock.release()
            self.lock = nil
        }
        do {
            lastSeq = try connection.scalar("SELECT max(seq) FROM \(quotedDatabase).\(Self.ledgerTable)").split(separator: "\n").first.flatMap { UInt64($0) } ?? 0
        } catch {
            throw .clickHouse(error)
        }
        return try body()
    }

    /// Statements that must never run twice: `INSERT`s, except into a cut-over table (a bound
    /// appended twice changes no `min()`).
    private func isDataStatement(_ cutover: CutoverPlan, _ index: Int) -> Bool {
        if case .boundInsert = cutover.roles[index] { return false }
        return cutover.texts.indices.contains(index) && ParsedStatement(cutover.texts[index]).keyword(0, "INSERT")
    }

    /// Runs one statement on a fresh connection (libcurl never re-sends it by itself).
    ///
    /// A data statement is first recorded as `started` with its query id (a ledger write that
    /// fails stops everything before it runs). If it then fails in a way that leaves its
    /// outcome open (timeout, reset, a server error after it began), the server is asked what
    /// became of it (``outcome(ofQuery:server:)``): finished counts as done; not run (or failed
    /// without writing a row) is recorded as failed, to run again; anything else stays
    /// `started` and blocks `migrate` until resolved or repaired.
    private func execute(
        _ statement: SQLStatement, number: Int, of migration: Migration, done: Int, started: ContinuousClock.Instant, isData: Bool
    ) throws(MigratorError) {
        if let expression = WaitDirective.expression(in: statement.text) {
            do { try waitUntil(expression) } catch { throw .clickHouse(error) }
            return
        }
        guard isData else {
            do { _ = try connection.execute(statement.text, kind: .nonIdempotent) } catch { throw .clickHouse(error) }
            return
        }
        let server = try currentServer()
        var random = SystemRandomNumberGenerator()
        let queryID = "schema-tool-\(migration.version)-\(number)-\(String(random.next(), radix: 36))"
        try record(migration, done: done, state: .started, error: "", started: started, queryID: queryID, server: server)
        do {
            _ = try connection.execute(statement.text, settings: ["log_queries": "1"], queryID: queryID, kind: .nonIdempotent)
            return
        } catch {
            let location = "\(migration.path):\(statement.line): statement \(number) of \(migration.statements.count)"
            if case .transport(.connectionRefused, _) = error {
                // A fresh connection that could not be made: the statement was never sent.
                try record(migration, done: done, state: .failed, error: "\(error)", started: started)
                throw .statementFailed("\(location) could not be sent: \(error). Nothing of it ran; run migrate again to resume at statement \(number).")
            }
            output("  statement \(number) failed (\(error)); asking the server whether it ran (query id \(queryID))")
            let outcome: QueryOutcome
            do { outcome = try self.outcome(ofQuery: queryID, server: server) } catch { throw .clickHouse(error) }
            switch outcome {
            case .finished:
                output("  the server finished statement \(number) although the client saw \(error): counted as done")
                return
            case .notRun:
                try record(migration, done: done, state: .failed, error: "\(error)", started: started)
                throw .statementFailed(
                    "\(location) failed: \(error). The server wrote no row of it. Statements 1-\(done) are applied and recorded. Fix the statement (or the database) and run migrate again to resume at statement \(number)."
                )
            case .partial, .unknown:
                try record(migration, done: done, state: .started, error: "\(error); \(outcome)", started: started, queryID: queryID, server: server)
                throw .statementFailed("\(location) failed: \(error), and \(outcome). \(Self.unknownOutcomeAdvice(migration.version, number))")
            }
        }
    }

    static func unknownOutcomeAdvice(_ version: Int, _ number: Int) -> String {
        "It is not run again automatically (it must not run twice). Check its target: if its rows are there, run `schema-tool repair --skip-statement \(version)`; "
            + "if none are (or you removed them), `schema-tool repair --retry-statement \(version)`; then migrate again."
    }

    /// For a migration whose ledger says `started`, finds out what became of that statement and
    /// records it; returns the statements done.
    private func resolveUnknownOutcome(of migration: Migration, started: ContinuousClock.Instant) throws(MigratorError) -> Int {
        let entry: LedgerEntry?
        do { entry = try ledger()[migration.version] } catch { throw .clickHouse(error) }
        guard let entry else { return 0 }
        guard entry.state == .started else { return entry.isComplete ? migration.statements.count : entry.statementsDone }
        let number = entry.statementsDone + 1
        let outcome: QueryOutcome
        if entry.queryID.isEmpty {
            outcome = .unknown("no query id was recorded for it")
        } else {
            do { outcome = try self.outcome(ofQuery: entry.queryID, server: entry.server) } catch { throw .clickHouse(error) }
        }
        switch outcome {
        case .finished:
            output("statement \(number) of \(migration.path) (query id \(entry.queryID)) finished on the server: counted as done")
            let state: LedgerEntry.State = number == migration.statements.count ? .applied : .running
            try record(migration, done: number, state: state, error: "", started: started)
            return number
        case .notRun:
            output("statement \(number) of \(migration.path) (query id \(entry.queryID)) wrote nothing on the server: it runs again")
            try record(migration, done: entry.statementsDone, state: .failed, error: entry.error, started: started)
            return entry.statementsDone
        case .partial, .unknown:
            throw .statementFailed(
                "\(migration.path):\(migration.statements[entry.statementsDone].line): statement \(number) was sent (query id \(entry.queryID)) but \(outcome). "
                    + Self.unknownOutcomeAdvice(migration.version, number)
            )
        }
    }

    /// What became of a data statement sent with a query id.
    enum QueryOutcome: CustomStringConvertible {
        case finished
        /// It failed before writing any row, or never began.
        case notRun
        /// It failed after writing this many rows.
        case partial(Int)
        case unknown(String)

        var description: String {
            switch self {
            case .finished: "the server finished it"
            case .notRun: "the server wrote no row of it"
            case .partial(let rows): "the server failed it after writing \(rows) rows"
            case .unknown(let reason): "its outcome is unknown: \(reason)"
            }
        }
    }

    /// Waits while the server still runs `queryID` (18.16 does not cancel a query whose client
    /// went away), then reads its fate from `system.query_log` (the statement was sent with
    /// `log_queries` = 1).
    func outcome(ofQuery queryID: String, server: String) throws(ClickHouseError) -> QueryOutcome {
        let here = try currentServerName()
        if !server.isEmpty && server != here {
            return .unknown("it was sent to server \(server), and this is \(here): run migrate against \(server) to resolve it")
        }
        var reported = false
        while try connection.scalar("SELECT count() FROM system.processes WHERE query_id = \(sqlStringLiteral(queryID))") != "0" {
            if !reported {
                output("  the server is still running query \(queryID); waiting for it to end")
                reported = true
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        _ = try? connection.execute("SYSTEM FLUSH LOGS", useDatabase: false)
        guard try connection.scalar("EXISTS TABLE system.query_log") == "1" else {
            return .unknown("the server has no system.query_log to tell")
        }
        let rows = try connection.rows(
            "SELECT toUInt8(type), written_rows FROM system.query_log WHERE query_id = \(sqlStringLiteral(queryID)) ORDER BY event_time"
        )
        let types = rows.compactMap { $0.count == 2 ? (Int($0[0]) ?? 0, Int($0[1]) ?? 0) : nil }
        if types.contains(where: { $0.0 == 2 }) { return .finished }
        if let failure = types.first(where: { $0.0 == 4 }) { return failure.1 == 0 ? .notRun : .partial(failure.1) }
        if types.contains(where: { $0.0 == 3 }) { return .notRun }
        if types.contains(where: { $0.0 == 1 }) { return .unknown("the server began it but logged neither its end nor a failure (did it restart?)") }
        return .unknown("the server has no record of it (it may never have arrived, or may still be on its way)")
    }

    private func currentServerName() throws(ClickHouseError) -> String {
        if let serverName { return serverName }
        let name = try connection.scalar("SELECT hostName()")
        serverName = name
        return name
    }

    private func currentServer() throws(MigratorError) -> String {
        do { return try currentServerName() } catch { throw .clickHouse(error) }
    }

    /// Why a bound that the reader at `index` reads is stale, or `nil`: every `DateTime` column
    /// of a cut-over table that the reader names must be at least ``cutoverMargin`` in the
    /// future; the epoch (the "no data yet" bound) only while the `SELECT` that set it still
    /// gives the epoch.
    private func staleBound(_ cutover: CutoverPlan, reader index: Int, migration: Migration) throws(MigratorError) -> String? {
        guard case .reader(let tables) = cutover.roles[index] else { return nil }
        let margin = Int(cutoverMargin.components.seconds)
        do {
            for table in tables.sorted() {
                let quoted = Self.quotedQualified(table)
                let columns = try connection.rows("DESCRIBE TABLE \(quoted)").compactMap { row -> String? in
                    row.count >= 2 && row[1].hasPrefix("DateTime") && cutover.identifiers[index].contains(String(row[0])) ? String(row[0]) : nil
                }
                for column in columns {
                    let answer = try connection.rows(
                        "SELECT toInt64(toUnixTimestamp(min(\(column)))), toInt64(toUnixTimestamp(now())) FROM \(quoted)"
                    )
                    guard let row = answer.first, row.count == 2, let bound = Int64(row[0]), let now = Int64(row[1]) else { continue }
                    if bound == 0 {
                        let creator = cutover.roles.indices.first { if case .boundCreate(table) = cutover.roles[$0] { return true } else { return false } }
                        guard let creator, let select = cutover.boundSelects[creator] else { continue }
                        let fresh = try connection.scalar(
                            "SELECT toInt64(toUnixTimestamp(\(column))) FROM (\(Self.renderedSelect(migration.statements[creator].text) ?? select))"
                        )
                        if fresh != "0" {
                            return "\(table).\(column) is the epoch (there was no data when it was set), but there is data now"
                        }
                    } else if bound - now < Int64(margin) {
                        return "\(table).\(column) is \(bound - now) s from now, less than the cut-over margin of \(margin) s"
                    }
                }
            }
        } catch {
            throw .clickHouse(error)
        }
        return nil
    }

    /// The `SELECT` of a rendered `CREATE TABLE ... AS SELECT` (with the cluster clauses, if any).
    static func renderedSelect(_ text: String) -> String? { CutoverPlan.selectOfCreate(ParsedStatement(text)) }

    static func quotedQualified(_ table: String) -> String {
        table.split(separator: ".", maxSplits: 1).map { sqlIdentifier(String($0)) }.joined(separator: ".")
    }

    /// Rolls the cut-over window of the reader at `index` back (drops the objects its
    /// statements created, newest first) and returns the statement to resume at; throws when
    /// the window cannot be rolled back or has been tried ``cutoverAttempts`` times.
    private func restartWindow(
        _ cutover: CutoverPlan, reader index: Int, migration: Migration, reason: String, attempts: inout [Int: Int], started: ContinuousClock.Instant
    ) throws(MigratorError) -> Int {
        let location = "\(migration.path):\(migration.statements[index].line)"
        guard let window = cutover.windows[index] else {
            throw .statementFailed(
                "\(location): statement \(index + 1) creates a view that routes rows by a cut-over bound that is stale (\(reason)); rows at or after the bound would be counted nowhere, so it is not created. "
                    + "The statements before it are not all CREATEs of new objects, so schema-tool cannot run the cut-over again by itself (a ledger written by an older schema-tool?): see docs/schema-tool.md, \"Materialized-view evolution\"."
            )
        }
        let earlier = Set(SchemaVerifier(connection: connection, migrations: migrations).declaredObjects(through: migration.version - 1).keys)
        if let clash = window.objects.first(where: { earlier.contains(String($0.split(separator: ".").last ?? "")) && $0.hasPrefix(database + ".") }) {
            throw .statementFailed("\(location): the cut-over bound is stale (\(reason)), and the window cannot be run again: \(clash) is created by an earlier migration")
        }
        attempts[window.start, default: 0] += 1
        guard attempts[window.start]! <= cutoverAttempts else {
            throw .statementFailed(
                "\(location): the cut-over bound was stale \(cutoverAttempts) times in a row (\(reason)): statements \(window.start + 1)-\(index + 1) take longer than the cut-over delay. Raise the delay variable of this migration (e.g. --var ML_CUTOVER_DELAY_SECONDS=60) and run migrate again."
            )
        }
        output("  cut-over bound stale (\(reason)): running statements \(window.start + 1)-\(index + 1) again with a new bound")
        try record(migration, done: window.start, state: .running, error: "cut-over window restarted: \(reason)", started: started)
        for object in window.objects.reversed() {
            var statement = "DROP TABLE IF EXISTS \(Self.quotedQualified(object))"
            if let cluster { statement = ClusterRewriter.rewrite(statement, for: cluster, database: database) }
            do {
                try lock?.ensureHeld()
                _ = try connection.execute(statement, kind: .nonIdempotent)
            } catch {
                throw .statementFailed("\(location): rolling back the cut-over window failed at `\(statement)`: \(error)")
            }
        }
        return window.start
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
    /// existing database whose schema already matches them). Holds the migration lock.
    public func baseline(_ version: Int, lockTimeout: Duration = .seconds(300), lockLease: Duration = .seconds(120)) throws(MigratorError) {
        try withLock(timeout: lockTimeout, lease: lockLease) { () throws(MigratorError) in
            for migration in migrations.migrations where migration.version <= version {
                try record(migration, done: migration.statements.count, state: .baseline, error: "", started: .now)
            }
        }
    }

    /// Ways out of a half-applied or edited migration.
    public enum Repair: Sendable {
        /// Record the current file (and its statements' checksums) as the one the recorded
        /// progress was made with.
        case acceptChecksum(Int)
        /// Mark the failed (or unknown-outcome) statement as done (it was applied by hand, or did run).
        case skipStatement(Int)
        /// Mark the unknown-outcome statement as not run, so that `migrate` runs it again.
        case retryStatement(Int)
        /// Mark the migration applied (its remaining statements were applied by hand).
        case markApplied(Int)
        /// Forget the migration's progress, so that `migrate` runs it from its first statement.
        case reset(Int)
    }

    /// Records `repair` in the ledger, holding the migration lock.
    public func repair(_ repair: Repair, lockTimeout: Duration = .seconds(300), lockLease: Duration = .seconds(120)) throws(MigratorError) {
        try withLock(timeout: lockTimeout, lease: lockLease) { () throws(MigratorError) in
            let ledger: [Int: LedgerEntry]
            do throws(ClickHouseError) { ledger = try self.ledger() } catch { throw .clickHouse(error) }
            let version: Int
            switch repair {
            case .acceptChecksum(let v), .skipStatement(let v), .retryStatement(let v), .markApplied(let v), .reset(let v): version = v
            }
            guard let migration = migrations.migrations.first(where: { $0.version == version }) else {
                throw .inconsistent("no migration file with version \(version)")
            }
            let entry = ledger[version]
            switch repair {
            case .acceptChecksum:
                guard let entry else { throw .inconsistent("migration \(version) is not in the ledger; nothing to accept") }
                try record(
                    migration, done: entry.statementsDone, state: entry.state, error: entry.error, started: .now, queryID: entry.queryID,
                    server: entry.server
                )
            case .skipStatement:
                guard let entry, !entry.isComplete else { throw .inconsistent("migration \(version) is not half-applied") }
                let done = min(entry.statementsDone + 1, migration.statements.count)
                try record(migration, done: done, state: done == migration.statements.count ? .applied : .failed, error: "skipped by repair", started: .now)
            case .retryStatement:
                guard let entry, !entry.isComplete else { throw .inconsistent("migration \(version) is not half-applied") }
                try record(migration, done: entry.statementsDone, state: .failed, error: "to be retried (repair)", started: .now)
            case .markApplied:
                try record(migration, done: migration.statements.count, state: .applied, error: "marked applied by repair", started: .now)
            case .reset:
                try record(migration, done: 0, state: .failed, error: "reset by repair", started: .now)
            }
        }
    }

    static func dateTimeText(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
    }

    /// Appends a ledger row. A failure stops the command (``MigratorError/ledgerWrite(_:)``):
    /// progress that is not recorded would be run again.
    private func record(
        _ migration: Migration, done: Int, state: LedgerEntry.State, error: String, started: ContinuousClock.Instant, queryID: String = "",
        server: String = ""
    ) throws(MigratorError) {
        let duration = ContinuousClock.now - started
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        lastSeq = max(UInt64(Date().timeIntervalSince1970 * 1_000_000), lastSeq + 1)
        let row: [String: Any] = [
            "version": migration.version, "name": migration.name, "checksum": migration.checksum,
            "statements_total": migration.statements.count, "statements_done": done, "state": state.rawValue,
            "error": String(error.prefix(2000)), "recorded_at": Self.dateTimeText(Date()), "duration_ms": milliseconds,
            "applied_by": actor, "seq": lastSeq, "statement_checksums": migration.statementChecksums, "query_id": queryID, "server": server,
        ]
        do {
            try bookkeeping().insert(connection, table: Self.ledgerTable, row: row)
        } catch {
            throw .ledgerWrite(
                "could not record the progress of migration \(migration.version) (\(state.rawValue), \(done) statements done) in the ledger: \(error). Stopped here; run migrate again once the ledger is writable (it resumes from the last recorded statement and checks unrecorded data statements on the server)"
            )
        }
    }
}

/// Why `migrate` (or another ledger command) stopped.
public enum MigratorError: Error, Sendable, CustomStringConvertible {
    case clickHouse(ClickHouseError)
    case inconsistent(String)
    case statementFailed(String)
    case lockTimeout(String)
    /// The lease on the migration lock lapsed (or another process holds it now).
    case lockLost(String)
    /// A ledger row could not be written.
    case ledgerWrite(String)

    public var description: String {
        switch self {
        case .clickHouse(let error): "ClickHouse: \(error)"
        case .inconsistent(let message), .statementFailed(let message), .lockTimeout(let message), .lockLost(let message), .ledgerWrite(let message):
            message
        }
    }
}
