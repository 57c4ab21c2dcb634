/// How schema-tool runs the cut-over statements of a materialized-view evolution
/// (docs/schema-tool.md, "Materialized-view evolution"), read from the statements themselves so
/// that every migration written in that pattern is covered, shipped or future.
///
/// A *cut-over table* is a table the migration creates with a `Log`-family engine. A statement
/// that creates it (`CREATE TABLE ... AS SELECT`) or appends to it (`INSERT INTO`) writes a
/// *bound*; a `CREATE MATERIALIZED VIEW` that names it is a *reader*, which routes rows by the
/// bounds (`emitted_at >= (SELECT min(start) FROM cut-over)`). A row is lost when a reader is
/// created after a bound it reads has passed: rows at or beyond the bound inserted before the
/// reader existed are counted nowhere. Two rules prevent that:
///
/// - **Deferred bound**: an `INSERT` of a bound that is followed by idempotent DDL
///   (`DROP ... IF EXISTS`, `CREATE ... IF NOT EXISTS`) creating readers of the same table runs
///   *after* those readers. Until then the table's `min()` still gives the far-future bound the
///   table was created with, so the new readers cover nothing and the old ones everything; the
///   deferred `INSERT` then moves the bound in one step. Time can only narrow coverage, never
///   open a gap, however long the readers take or however late a resumed run creates them.
///   The group runs as one unit: progress is recorded after the deferred `INSERT`, and a run
///   resumed inside the group runs the whole group again (every statement of it is idempotent).
/// - **Refreshed bound**: before and after creating a reader of a table created earlier in the
///   same migration, the bounds it reads must be at least the cut-over margin in the future
///   (or be the epoch while the bound's `SELECT` still gives the epoch). Otherwise the *window*
///   (the statements from the table's `CREATE` to the reader, all `CREATE`s of new objects, so
///   nothing has been backfilled yet) is rolled back, newest object first, and run again, which
///   computes a new bound.
struct CutoverPlan: Sendable {
    enum Role: Sendable, Equatable {
        /// Creates the cut-over table (`database.name`).
        case boundCreate(String)
        /// Appends a bound to the cut-over table.
        case boundInsert(String)
        /// Creates a materialized view that reads these cut-over tables.
        case reader(Set<String>)
        case other
    }

    /// One role per statement.
    let roles: [Role]
    /// The statements' texts.
    let texts: [String]
    /// Every identifier of every statement (for the columns a reader names).
    let identifiers: [Set<String>]
    /// 0-based statement indices, in execution order, grouped into units that are recorded
    /// (and resumed) as a whole.
    let units: [[Int]]
    /// The `SELECT` of each `boundCreate` statement (`CREATE TABLE ... AS SELECT`), by index.
    let boundSelects: [Int: String]
    /// For a reader: the window that is rolled back and run again when its bounds are stale:
    /// the index of the `CREATE` of the table, and the objects (`database.name`) its statements
    /// create, in order. `nil` when the window is not only `CREATE`s.
    let windows: [Int: (start: Int, objects: [String])]

    /// `statements` rendered without a cluster (so cut-over tables keep their `Log` engines);
    /// `database` is the database of unqualified names.
    init(statements: [SQLStatement], database: String) {
        let parsed = statements.map { ParsedStatement($0.text) }
        var tables = Set<String>()
        var roles: [Role] = []
        var selects: [Int: String] = [:]
        for (index, statement) in statements.enumerated() {
            if let table = ClusterRewriter.logTableCreated(by: statement.text, database: database) {
                tables.insert(table)
                roles.append(.boundCreate(table))
                selects[index] = Self.selectOfCreate(parsed[index])
            } else if let table = ClusterRewriter.tableInserted(by: statement.text, database: database), tables.contains(table) {
                roles.append(.boundInsert(table))
            } else if parsed[index].keyword(0, "CREATE") && parsed[index].keyword(1, "MATERIALIZED") && parsed[index].keyword(2, "VIEW") {
                let read = tables.filter { Self.names(parsed[index], table: $0, database: database) }
                roles.append(read.isEmpty ? .other : .reader(read))
            } else {
                roles.append(.other)
            }
        }
        self.roles = roles
        self.texts = statements.map(\.text)
        self.boundSelects = selects
        self.identifiers = parsed.map { statement in Set(statement.significant.compactMap { statement.tokens[$0].identifier }) }

        // Deferred bounds.
        var units: [[Int]] = []
        var index = 0
        while index < statements.count {
            if case .boundInsert(let table) = roles[index] {
                var cursor = index + 1
                var lastReader: Int?
                while cursor < statements.count, Self.isIdempotentDDL(parsed[cursor], sparing: table, database: database) {
                    if case .reader(let read) = roles[cursor], read.contains(table) { lastReader = cursor }
                    cursor += 1
                }
                if let lastReader {
                    units.append(Array(index + 1...lastReader) + [index])
                    index = lastReader + 1
                    continue
                }
            }
            units.append([index])
            index += 1
        }
        self.units = units

        // Refresh windows.
        var windows: [Int: (start: Int, objects: [String])] = [:]
        for (index, role) in roles.enumerated() {
            guard case .reader(let read) = role else { continue }
            let starts = roles.indices.filter { position in
                if case .boundCreate(let table) = roles[position], read.contains(table), position < index { return true }
                return false
            }
            guard let start = starts.min() else { continue }
            var objects: [String] = []
            var onlyCreates = true
            for position in start...index {
                guard parsed[position].keyword(0, "CREATE"), let name = Self.createdObject(parsed[position], database: database) else {
                    onlyCreates = false
                    break
                }
                objects.append(name)
            }
            if onlyCreates { windows[index] = (start, objects) }
        }
        self.windows = windows
    }

    /// The units to run when statements `0..<done` are done: a unit that was partly done (a
    /// ledger written before deferral existed) is split into single statements.
    func units(from done: Int) -> [[Int]] {
        units.flatMap { unit -> [[Int]] in
            if unit.allSatisfy({ $0 >= done }) { return [unit] }
            return unit.filter { $0 >= done }.map { [$0] }
        }
    }

    /// Whether `statement` names `table` (`database.name`), qualified or not.
    static func names(_ statement: ParsedStatement, table: String, database: String) -> Bool {
        let parts = table.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return false }
        for position in statement.significant.indices where statement.tokens[statement.significant[position]].identifier == parts[1] {
            if position >= 2, statement.symbol(position - 1, ".") {
                if statement.tokens[statement.significant[position - 2]].identifier == parts[0] { return true }
            } else if parts[0] == database {
                return true
            }
        }
        return false
    }

    /// `DROP TABLE|VIEW IF EXISTS` of another object than `table`, or `CREATE TABLE|VIEW|MATERIALIZED
    /// VIEW IF NOT EXISTS` that neither populates nor fills a table from a `SELECT`.
    static func isIdempotentDDL(_ statement: ParsedStatement, sparing table: String, database: String) -> Bool {
        if statement.keyword(0, "DROP") && (statement.keyword(1, "TABLE") || statement.keyword(1, "VIEW")) && statement.keyword(2, "IF")
            && statement.keyword(3, "EXISTS")
        {
            guard let name = statement.qualifiedName(at: 4, database: database) else { return false }
            return name.database + "." + name.name != table
        }
        guard statement.keyword(0, "CREATE") else { return false }
        var position = 1
        let materialized = statement.keyword(1, "MATERIALIZED")
        if materialized { position += 1 }
        guard statement.keyword(position, "VIEW") || (!materialized && statement.keyword(position, "TABLE")) else { return false }
        guard statement.keyword(position + 1, "IF") && statement.keyword(position + 2, "NOT") && statement.keyword(position + 3, "EXISTS") else {
            return false
        }
        let words = statement.significant.map { statement.tokens[$0] }
        if words.contains(where: { $0.isKeyword("POPULATE") }) { return false }
        if statement.keyword(position, "TABLE") && selectOfCreate(statement) != nil { return false }
        return true
    }

    /// `database.name` of the object a `CREATE` statement creates.
    static func createdObject(_ statement: ParsedStatement, database: String) -> String? {
        var position = 1
        if statement.keyword(position, "TEMPORARY") { position += 1 }
        if statement.keyword(position, "MATERIALIZED") { position += 1 }
        guard statement.keyword(position, "TABLE") || statement.keyword(position, "VIEW") else { return nil }
        position += 1
        if statement.keyword(position, "IF") && statement.keyword(position + 1, "NOT") && statement.keyword(position + 2, "EXISTS") { position += 3 }
        return statement.qualifiedName(at: position, database: database).map { $0.database + "." + $0.name }
    }

    /// The `SELECT ...` of `CREATE TABLE ... AS SELECT ...` (outside parentheses), if any.
    static func selectOfCreate(_ statement: ParsedStatement) -> String? {
        var depth = 0
        for position in statement.significant.indices {
            let token = statement.tokens[statement.significant[position]]
            if token.kind == .symbol && token.text == "(" { depth += 1 }
            if token.kind == .symbol && token.text == ")" { depth -= 1 }
            if depth == 0 && token.isKeyword("AS") && statement.keyword(position + 1, "SELECT") {
                return statement.tokens[statement.significant[position + 1]...].map(\.text).joined()
            }
        }
        return nil
    }
}
