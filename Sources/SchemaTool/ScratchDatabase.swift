import ClickHouseHTTP
import Foundation

/// A throwaway database on the same server that migrations are replayed into: `verify`
/// compares the live schema with it, and `migrate` runs the pending migrations there first (a
/// dry run), so that a statement the server rejects stops the run before anything changes.
///
/// Replays run the migrations rendered with `${DATABASE}` = the scratch database and without a
/// cluster. They run schema statements (`CREATE`, `ALTER`, `DROP`, `RENAME`, ...) and, with
/// `includingData`, `INSERT`s into scratch tables, reading at most one row of their `SELECT`
/// (`max_rows_to_read` = 1 with `read_overflow_mode` = `break`); never `WAIT UNTIL`.
struct ScratchDatabase {
    /// Why a replay stopped.
    struct Failure {
        var migration: Migration
        /// 1-based number of the statement in its migration.
        var statement: Int
        var error: ClickHouseError

        var location: String { "\(migration.path):\(migration.statements[statement - 1].line)" }
    }

    let name: String
    let connection: ClickHouseConnection

    /// Creates an empty database `_schema_tool_scratch_*` on the server of `endpoint`.
    init(beside endpoint: ClickHouseEndpoint) throws(ClickHouseError) {
        var random = SystemRandomNumberGenerator()
        name = "_schema_tool_scratch_\(ProcessInfo.processInfo.processIdentifier)_\(random.next() % 1_000_000)"
        var scratchEndpoint = endpoint
        scratchEndpoint.database = name
        do {
            connection = try ClickHouseConnection(endpoint: scratchEndpoint)
        } catch {
            throw .transport(.other, message: error.description)
        }
        _ = try connection.execute("CREATE DATABASE \(sqlIdentifier(name))", useDatabase: false)
    }

    /// Drops the database (call it when done, also after a failure).
    func drop() {
        _ = try? connection.execute("DROP DATABASE IF EXISTS \(sqlIdentifier(name))", useDatabase: false)
    }

    /// Replays `migrations` up to `version`, stopping at the first statement the server rejects.
    func replay(_ migrations: MigrationSet, through version: Int, includingData: Bool) throws(MigrationError) -> Failure? {
        var variables = migrations.variables
        variables["DATABASE"] = name
        let rendered = try migrations.rendered(variables: variables, cluster: nil)
        let settings = ["max_rows_to_read": "1", "read_overflow_mode": "break"]
        for migration in rendered.migrations where migration.version <= version {
            for (index, statement) in migration.statements.enumerated() {
                let inserted = ClusterRewriter.tableInserted(by: statement.text, database: name)
                let writesScratch = includingData && inserted?.hasPrefix(name + ".") == true
                guard Self.definesSchema(statement.text) || writesScratch else { continue }
                do {
                    try connection.run(statement.text, settings: writesScratch ? settings : [:])
                } catch {
                    return Failure(migration: migration, statement: index + 1, error: error)
                }
            }
        }
        return nil
    }

    /// Whether a statement changes the schema, as opposed to moving data (`INSERT`, `SELECT`,
    /// `OPTIMIZE`, `SYSTEM`) or waiting.
    static func definesSchema(_ statement: String) -> Bool {
        guard WaitDirective.expression(in: statement) == nil,
            let first = SQLLexer.tokens(statement).first(where: { $0.kind != .trivia })
        else { return false }
        return ["CREATE", "ALTER", "DROP", "RENAME", "ATTACH", "DETACH"].contains { first.isKeyword($0) }
    }
}
