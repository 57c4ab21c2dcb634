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
        var result: [String: String] = [:]
        for row in try connection.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()") where row.count == 2 {
            result[String(row[0])] = String(row[1])
        }
        return result
    }

    /// Every difference between the live schema and the migrations applied (`through`).
    public func differences(through version: Int) throws(ClickHouseError) -> [String] {
        let declared = declaredObjects(through: version)
        let live = try liveObjects()
        var problems: [String] = []
        for object in declared.values.sorted(by: { $0.name < $1.name }) {
            guard let engine = live[object.name] else {
                problems.append("missing: \(object.kind.rawValue) \(object.name) (created by migration \(object.migration))")
                continue
            }
            if let expected = object.engine, expected != engine {
                problems.append("engine of \(object.name): expected \(expected) (migration \(object.migration)), found \(engine)")
            }
        }
        return problems
    }

    /// Objects in the database that no migration created (the ledger and lock tables and
    /// materialized views' inner tables excluded).
    public func unmanagedObjects(through version: Int) throws(ClickHouseError) -> [String] {
        let declared = declaredObjects(through: version)
        return try liveObjects().keys.filter { name in
            declared[name] == nil && !name.hasPrefix(".inner") && name != Migrator.ledgerTable && name != MigrationLock.table
        }.sorted()
    }
}
