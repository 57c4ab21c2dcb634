import ClickHouseHTTP

/// A replicated ClickHouse cluster that migrations run on (`schema-tool --cluster NAME`).
public struct ClusterTarget: Sendable, Hashable {
    /// The cluster's name in the servers' `remote_servers` (as `system.clusters` lists it).
    public var name: String
    /// ZooKeeper path of each replicated table. schema-tool fills in `{database}` and `{table}`
    /// (so it works on servers that predate those macros); `{shard}` and any other macro are
    /// expanded by each server from its `<macros>`.
    public var replicationPath: String
    /// Replica name, expanded by each server (`{replica}` from its `<macros>`).
    public var replicaName: String

    public init(
        name: String, replicationPath: String = "/clickhouse/tables/{shard}/{database}/{table}", replicaName: String = "{replica}"
    ) {
        self.name = name
        self.replicationPath = replicationPath
        self.replicaName = replicaName
    }

    /// The variant for schema-tool's own ledger and lock tables: every host of the cluster,
    /// whatever its shard, is a replica of one table, so all hosts read the same ledger.
    var bookkeeping: ClusterTarget {
        ClusterTarget(name: name, replicationPath: "/clickhouse/schema_tool/{database}/{table}", replicaName: "{shard}_{replica}")
    }

    /// `ON CLUSTER name`, quoting the name when it is not a plain identifier.
    var onClusterClause: String {
        let plain = !name.isEmpty && name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
        return "ON CLUSTER " + (plain ? name : sqlIdentifier(name))
    }
}

/// Rewrites a rendered DDL statement to run on every host of a ``ClusterTarget``.
///
/// - `CREATE`/`DROP` of tables, views, materialized views, databases and dictionaries,
///   `ALTER TABLE`, `TRUNCATE`, `OPTIMIZE` and `RENAME TABLE` get `ON CLUSTER name` (unless they
///   already have an `ON CLUSTER` clause).
/// - MergeTree-family engines of created tables and of materialized views' inner tables become
///   their `Replicated` variants, with the cluster's ZooKeeper path and replica name as the first
///   arguments. `Log`, `TinyLog` and `StripeLog` become `ReplicatedMergeTree ... ORDER BY
///   tuple()`, so that data one host writes (a cut-over time, for example) is on every host.
/// - Everything else (`INSERT`, `SELECT`, `WAIT UNTIL`, engines that are already replicated or
///   are per-host by nature, such as `Distributed` and `Memory`) is left as it is: an `INSERT`
///   into a replicated table reaches every replica through replication.
public enum ClusterRewriter {
    static let mergeTreeFamily: Set<String> = [
        "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree", "CollapsingMergeTree",
        "VersionedCollapsingMergeTree", "GraphiteMergeTree",
    ]
    static let logFamily: Set<String> = ["Log", "TinyLog", "StripeLog"]

    /// The statement for `cluster`; `database` is the database of unqualified names.
    public static func rewrite(_ statement: String, for cluster: ClusterTarget, database: String) -> String {
        var parsed = ParsedStatement(statement)
        func keyword(_ position: Int, _ word: String) -> Bool { parsed.keyword(position, word) }

        var position = 0
        enum Object { case table, materializedView, other }
        var object = Object.other
        var nameEnd: Int?
        var created: (database: String, name: String)?
        if keyword(0, "CREATE") || keyword(0, "ATTACH") {
            position = 1
            if keyword(position, "TEMPORARY") { position += 1 }
            if keyword(position, "TABLE") {
                object = .table
                position += 1
            } else if keyword(position, "MATERIALIZED") && keyword(position + 1, "VIEW") {
                object = .materializedView
                position += 2
            } else if keyword(position, "VIEW") || keyword(position, "DATABASE") || keyword(position, "DICTIONARY") {
                position += 1
            } else {
                return statement
            }
            if keyword(position, "IF") && keyword(position + 1, "NOT") && keyword(position + 2, "EXISTS") { position += 3 }
            if let name = parsed.qualifiedName(at: position, database: database) {
                nameEnd = name.last
                created = (name.database, name.name)
            }
        } else if keyword(0, "DROP") || keyword(0, "DETACH") || keyword(0, "TRUNCATE") {
            position = 1
            if keyword(position, "TEMPORARY") { position += 1 }
            guard keyword(position, "TABLE") || keyword(position, "VIEW") || keyword(position, "DATABASE") || keyword(position, "DICTIONARY")
            else { return statement }
            position += 1
            if keyword(position, "IF") && keyword(position + 1, "EXISTS") { position += 2 }
            nameEnd = parsed.qualifiedName(at: position, database: database)?.last
        } else if (keyword(0, "ALTER") || keyword(0, "OPTIMIZE")) && keyword(1, "TABLE") {
            nameEnd = parsed.qualifiedName(at: 2, database: database)?.last
        } else if keyword(0, "RENAME") && keyword(1, "TABLE") {
            nameEnd = parsed.significant.count - 1
        } else {
            return statement
        }
        guard let nameEnd else { return statement }

        // The engine clause, before the body of `AS SELECT`, outside parentheses.
        if object != .other, let created, let engine = parsed.engine(after: nameEnd) {
            let table = object == .materializedView ? ".inner." + created.name : created.name
            replicateEngine(at: engine, in: &parsed.tokens, significant: parsed.significant, cluster: cluster, database: created.database, table: table)
        }
        if !(keyword(nameEnd + 1, "ON") && keyword(nameEnd + 2, "CLUSTER")) {
            parsed.tokens[parsed.significant[nameEnd]].text += " " + cluster.onClusterClause
        }
        return parsed.tokens.map(\.text).joined()
    }

    /// The table (`database.name`) that `statement` creates with a `Log`-family engine: a small
    /// coordination table (a cut-over time, say) that on a cluster becomes replicated, and whose
    /// rows every host must have before the migration goes on.
    static func logTableCreated(by statement: String, database: String) -> String? {
        let parsed = ParsedStatement(statement)
        guard parsed.keyword(0, "CREATE") && parsed.keyword(1, "TABLE") else { return nil }
        var position = 2
        if parsed.keyword(2, "IF") && parsed.keyword(3, "NOT") && parsed.keyword(4, "EXISTS") { position = 5 }
        guard let name = parsed.qualifiedName(at: position, database: database), let engine = parsed.engine(after: name.last),
            logFamily.contains(parsed.tokens[parsed.significant[engine]].text)
        else { return nil }
        return name.database + "." + name.name
    }

    /// The table (`database.name`) that an `INSERT INTO` statement writes to.
    static func tableInserted(by statement: String, database: String) -> String? {
        let parsed = ParsedStatement(statement)
        guard parsed.keyword(0, "INSERT") && parsed.keyword(1, "INTO") else { return nil }
        let position = parsed.keyword(2, "TABLE") ? 3 : 2
        return parsed.qualifiedName(at: position, database: database).map { $0.database + "." + $0.name }
    }

    private static func replicateEngine(
        at position: Int, in tokens: inout [SQLToken], significant: [Int], cluster: ClusterTarget, database: String, table: String
    ) {
        let engine = tokens[significant[position]].text
        let path = cluster.replicationPath.replacingOccurrences(of: "{database}", with: database).replacingOccurrences(of: "{table}", with: table)
        let arguments = sqlStringLiteral(path) + ", " + sqlStringLiteral(cluster.replicaName)
        let opens = position + 1 < significant.count && tokens[significant[position + 1]].text == "("
        if mergeTreeFamily.contains(engine) {
            tokens[significant[position]].text = "Replicated" + engine
            if opens {
                let empty = position + 2 < significant.count && tokens[significant[position + 2]].text == ")"
                tokens[significant[position + 1]].text += arguments + (empty ? "" : ", ")
            } else {
                tokens[significant[position]].text += "(" + arguments + ")"
            }
        } else if logFamily.contains(engine) {
            tokens[significant[position]].text = "ReplicatedMergeTree(" + arguments + ") ORDER BY tuple()"
            if opens, position + 2 < significant.count, tokens[significant[position + 2]].text == ")" {
                tokens[significant[position + 1]].text = ""
                tokens[significant[position + 2]].text = ""
            }
        }
    }
}

/// A statement's tokens with the positions of its significant (non-trivia) ones.
struct ParsedStatement {
    var tokens: [SQLToken]
    let significant: [Int]

    init(_ statement: String) {
        let tokens = SQLLexer.tokens(statement)
        self.tokens = tokens
        significant = tokens.indices.filter { tokens[$0].kind != .trivia }
    }

    func keyword(_ position: Int, _ word: String) -> Bool {
        position < significant.count && tokens[significant[position]].isKeyword(word)
    }

    func symbol(_ position: Int, _ text: String) -> Bool {
        position < significant.count && tokens[significant[position]].kind == .symbol && tokens[significant[position]].text == text
    }

    /// The possibly qualified name starting at `position`, and the position of its last token.
    func qualifiedName(at position: Int, database: String) -> (database: String, name: String, last: Int)? {
        guard position < significant.count, let first = tokens[significant[position]].identifier else { return nil }
        if symbol(position + 1, "."), position + 2 < significant.count, let second = tokens[significant[position + 2]].identifier {
            return (first, second, position + 2)
        }
        return (database, first, position)
    }

    /// The position of the engine name in `ENGINE = Name`, after `position`, outside
    /// parentheses and before the body of an `AS SELECT`.
    func engine(after position: Int) -> Int? {
        var depth = 0
        var cursor = position + 1
        while cursor < significant.count {
            let token = tokens[significant[cursor]]
            if token.kind == .symbol && token.text == "(" { depth += 1 }
            if token.kind == .symbol && token.text == ")" { depth -= 1 }
            if depth == 0 && token.isKeyword("SELECT") { return nil }
            if depth == 0 && token.isKeyword("ENGINE") && symbol(cursor + 1, "="), cursor + 2 < significant.count { return cursor + 2 }
            cursor += 1
        }
        return nil
    }
}
