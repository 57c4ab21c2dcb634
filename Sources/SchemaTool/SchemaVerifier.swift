import ClickHouseHTTP
import Foundation

/// An object a migration creates, as read from its `CREATE` statement.
public struct DeclaredObject: Sendable, Hashable {
    public enum Kind: String, Sendable { case table, materializedView = "materialized view", view }
    public var name: String
    public var kind: Kind
    /// The engine name for tables (`MergeTree`, ...), `MaterializedView` or `View`.
    public var engine: String?
    public var migration: Int
}

/// Compares the live schema with what the applied migrations create.
public struct SchemaVerifier {
    let connection: ClickHouseConnection
    let migrations: MigrationSet

    public init(connection: ClickHouseConnection, migrations: MigrationSet) {
        self.connection = connection
        self.migrations = migrations
    }

    /// Objects created (and not dropped later) by the migrations up to `version`.
    public func declaredObjects(through version: Int) -> [String: DeclaredObject] {
        var objects: [String: DeclaredObject] = [:]
        let create = try? NSRegularExpression(
            pattern: #"^\s*(?:--[^\n]*\n\s*)*CREATE\s+(TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:[`"]?[\w.$]+[`"]?\.)?[`"]?(\w+)[`"]?"#,
            options: [.caseInsensitive]
        )
        let drop = try? NSRegularExpression(
            pattern: #"^\s*(?:--[^\n]*\n\s*)*DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?(?:[`"]?[\w.$]+[`"]?\.)?[`"]?(\w+)[`"]?"#,
            options: [.caseInsensitive]
        )
        let engine = try? NSRegularExpression(pattern: #"ENGINE\s*=\s*(\w+)"#, options: [.caseInsensitive])
        for migration in migrations.migrations where migration.version <= version {
            for statement in migration.statements {
                let text = statement.text
                let range = NSRange(text.startIndex..., in: text)
                if let match = create?.firstMatch(in: text, range: range),
                    let kindRange = Range(match.range(at: 1), in: text), let nameRange = Range(match.range(at: 2), in: text)
                {
                    let kindText = text[kindRange].uppercased()
                    let kind: DeclaredObject.Kind = kindText.hasPrefix("MATERIALIZED") ? .materializedView : (kindText == "VIEW" ? .view : .table)
                    var engineName: String?
                    switch kind {
                    case .table:
                        if let match = engine?.firstMatch(in: text, range: range), let engineRange = Range(match.range(at: 1), in: text) {
                            engineName = String(text[engineRange])
                        }
                    case .materializedView: engineName = "MaterializedView"
                    case .view: engineName = "View"
                    }
                    let name = String(text[nameRange])
                    objects[name] = DeclaredObject(name: name, kind: kind, engine: engineName, migration: migration.version)
                } else if let match = drop?.firstMatch(in: text, range: range), let nameRange = Range(match.range(at: 1), in: text) {
                    objects.removeValue(forKey: String(text[nameRange]))
                }
            }
        }
        return objects
    }

    /// Live tables of the database as name → engine.
    public func liveObjects() throws(ClickHouseError) -> [String: String] {
        try objects(in: connection)
    }

    /// Every difference between the live schema and the migrations applied (`through`).
    ///
    /// The applied migrations' DDL is replayed into a ``ScratchDatabase`` on the same server
    /// (`INSERT`s and `WAIT UNTIL`s skipped), which is then compared with the live database,
    /// object by object: existence, engine (its `Replicated` variant on a cluster), columns with
    /// their types and defaults in order, and for views their `TO` target and `SELECT`. The
    /// scratch database is dropped afterwards.
    public func differences(through version: Int) throws(ClickHouseError) -> [String] {
        let scratchDatabase = try ScratchDatabase(beside: connection.endpoint)
        defer { scratchDatabase.drop() }
        let scratch = scratchDatabase.connection
        let scratchName = scratchDatabase.name
        do {
            if let failure = try scratchDatabase.replay(migrations, through: version, includingData: false) {
                return ["cannot replay \(failure.location) (statement \(failure.statement)) in a scratch database to compare with: \(failure.error)"]
            }
        } catch {
            return [error.description]
        }

        let expected = try objects(in: scratch)
        let live = try liveObjects()
        let liveDatabase = connection.endpoint.database
        func normalized(_ text: String) -> String {
            text.replacingOccurrences(of: "`\(scratchName)`.", with: "\(liveDatabase).").replacingOccurrences(of: "\(scratchName).", with: "\(liveDatabase).")
        }
        var problems: [String] = []
        for (name, declaredEngine) in expected.sorted(by: { $0.key < $1.key }) {
            guard let actualEngine = live[name] else {
                problems.append("missing: \(declaredEngine) \(name)")
                continue
            }
            let engine = expectedEngine(declaredEngine)
            if engine != actualEngine {
                problems.append("engine of \(name): expected \(engine), found \(actualEngine)")
            }
            let expectedColumns = try columns(of: name, in: scratch)
            let actualColumns = try columns(of: name, in: connection)
            for column in expectedColumns where !actualColumns.contains(column) {
                let found = actualColumns.first { $0.name == column.name }
                problems.append(
                    "column \(name).\(column.name): expected \(column), found \(found.map(String.init(describing:)) ?? "no such column")"
                )
            }
            for column in actualColumns where !expectedColumns.contains(where: { $0.name == column.name }) {
                problems.append("column \(name).\(column.name) (\(column.type)) is not defined by the applied migrations")
            }
            if expectedColumns.map(\.name) != actualColumns.map(\.name) && Set(expectedColumns.map(\.name)) == Set(actualColumns.map(\.name)) {
                problems.append("columns of \(name) are in another order than the migrations define")
            }
            if declaredEngine == "View" || declaredEngine == "MaterializedView" {
                let expectedDefinition = Self.viewDefinition(normalized(try createQuery(name, in: scratch)))
                let actualDefinition = Self.viewDefinition(try createQuery(name, in: connection))
                if expectedDefinition.target != actualDefinition.target {
                    problems.append("view \(name) writes to \(actualDefinition.target ?? "its inner table"), expected \(expectedDefinition.target ?? "its inner table")")
                }
                if expectedDefinition.select != actualDefinition.select {
                    problems.append("SELECT of view \(name) differs:\n  expected: \(expectedDefinition.select)\n  found:    \(actualDefinition.select)")
                }
            }
        }
        for (name, engine) in live.sorted(by: { $0.key < $1.key }) where expected[name] == nil && !Self.isBookkeeping(name) {
            problems.append("unexpected: \(engine) \(name) is in the database but no applied migration creates it")
        }
        return problems
    }

    static func isBookkeeping(_ name: String) -> Bool {
        name == Migrator.ledgerTable || name == MigrationLock.table
    }

    /// The engine the live object should have: on a cluster, the replicated variant that
    /// ``ClusterRewriter`` creates.
    private func expectedEngine(_ engine: String) -> String {
        guard migrations.cluster != nil else { return engine }
        if ClusterRewriter.mergeTreeFamily.contains(engine) { return "Replicated" + engine }
        if ClusterRewriter.logFamily.contains(engine) { return "ReplicatedMergeTree" }
        return engine
    }

    /// Name → engine of every object in the connection's database.
    private func objects(in connection: ClickHouseConnection) throws(ClickHouseError) -> [String: String] {
        var result: [String: String] = [:]
        for row in try connection.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()") where row.count == 2 {
            result[String(row[0])] = String(row[1])
        }
        return result
    }

    struct Column: Hashable, CustomStringConvertible {
        var name: String
        var type: String
        var defaultKind: String
        var defaultExpression: String
        var description: String { defaultKind.isEmpty ? type : "\(type) \(defaultKind) \(defaultExpression)" }
    }

    private func columns(of table: String, in connection: ClickHouseConnection) throws(ClickHouseError) -> [Column] {
        try connection.rows("DESCRIBE TABLE \(sqlIdentifier(table))").compactMap { row in
            row.count >= 4 ? Column(name: String(row[0]), type: String(row[1]), defaultKind: String(row[2]), defaultExpression: String(row[3])) : nil
        }
    }

    private func createQuery(_ table: String, in connection: ClickHouseConnection) throws(ClickHouseError) -> String {
        try connection.scalar("SHOW CREATE TABLE \(sqlIdentifier(table))")
    }

    /// A view's `TO` target and its `SELECT`, from the server's `SHOW CREATE` text.
    static func viewDefinition(_ query: String) -> (target: String?, select: String) {
        guard let range = query.range(of: " AS SELECT ") else { return (nil, query) }
        let head = query[..<range.lowerBound]
        var target: String?
        if let to = head.range(of: " TO ") {
            target = head[to.upperBound...].split(separator: " ").first.map(String.init)
        }
        return (target, String(query[range.lowerBound...]))
    }

    /// Objects in the database that no migration created (the ledger and lock tables and
    /// materialized views' inner tables excluded).
    public func unmanagedObjects(through version: Int) throws(ClickHouseError) -> [String] {
        let declared = declaredObjects(through: version)
        return try liveObjects().keys.filter { name in
            declared[name] == nil && !name.hasPrefix(".inner") && !Self.isBookkeeping(name)
        }.sorted()
    }
}
