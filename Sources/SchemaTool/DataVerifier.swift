import ClickHouseHTTP
import Foundation

/// `schema-tool verify --data`: every object derived from the source table (`ctr_results_raw`)
/// holds what the applied migrations' views compute from the source's rows.
///
/// What to compare is derived from the migrations themselves, so it follows every column or
/// object a later migration adds: the applied migrations are replayed into a scratch database
/// (as a new installation: every cut-over bound is the epoch, so each view sees every row), the
/// source's *settled* rows (windows ending before the server's `now()` minus the settle
/// interval) are copied into it, and each object whose contents that changed is derived. Each
/// derived object is read through one canonical query, on the scratch and on the live
/// database, and the two are compared row by row by key:
///
/// - tables with `AggregateFunction` columns: grouped by the other columns, each aggregate
///   finalised with its `-Merge` combinator; key: the other columns;
/// - other MergeTree-family tables: `FINAL`; key: the sorting key (all columns without one);
/// - views: `SELECT *`; key: the columns that are not numbers;
/// - materialized views are compared through their target (or `.inner.`) table.
///
/// Windows still open do not count: a second scratch database receives the unsettled rows, and
/// every key they produce is left out of the comparison. The live objects are read before the
/// unsettled rows are, so a row that arrives meanwhile is among them. Floating-point values are
/// compared with a relative tolerance of 1e-9 (sums of floats depend on the merge order).
public struct DataVerifier {
    let connection: ClickHouseConnection
    let migrations: MigrationSet
    /// The table everything else is derived from.
    public var source = "ctr_results_raw"
    /// The column whose value says a row's window is closed once it is before the cut-off.
    public var windowColumn = "window_end"
    /// How long after its end a window still receives rows (late updates, batching, retries).
    public var settle: Duration = .seconds(300)
    /// Differences listed per object before the rest is only counted.
    public var listed = 10

    public init(connection: ClickHouseConnection, migrations: MigrationSet) {
        self.connection = connection
        self.migrations = migrations
    }

    /// The outcome of a comparison.
    public struct Report: Sendable {
        /// Per-object differences, each a headline followed by indented details.
        public var differences: [String] = []
        /// Objects compared, with the number of settled rows each.
        public var compared: [(object: String, rows: Int)] = []
        /// Server time (`YYYY-MM-DD hh:mm:ss`, UTC) before which windows counted as settled.
        public var cutoff = ""
        /// Derived objects not compared because their definition reads the clock.
        public var skipped: [String] = []
    }

    struct Canonical {
        var query: String
        var columns: [String]
        var keyColumns: [Int]
        /// Whether rows are compared as a multiset (no key beyond the whole row).
        var wholeRow: Bool
    }

    /// Compares the objects derived from ``source`` with what the migrations up to `version`
    /// compute from its settled rows.
    public func compare(through version: Int) throws(ClickHouseError) -> Report {
        var report = Report()
        let seconds = settle.components.seconds
        let cutoff = try connection.scalar("SELECT toUnixTimestamp(now()) - \(seconds)")
        report.cutoff = try connection.scalar("SELECT toString(toDateTime(\(cutoff), 'UTC'))")
        let settled = "\(sqlIdentifier(windowColumn)) < toDateTime(\(cutoff))"

        let expected = try ScratchDatabase(beside: connection.endpoint)
        defer { expected.drop() }
        if let failure = try replay(into: expected, through: version) { report.differences.append(failure); return report }
        // Nothing to derive from before the migration that creates the source is applied.
        guard try expected.connection.scalar("EXISTS TABLE \(sqlIdentifier(source))") == "1" else { return report }
        let empty = try counts(in: expected.connection)
        try copy(into: expected, where: settled)
        let filled = try counts(in: expected.connection)
        var derived: [String] = []
        for object in filled.keys.sorted() where filled[object] != empty[object] && object != source {
            // A view that reads the clock (`now()`) answers differently from one read to the
            // next: there is no fixed content to compare.
            if Self.readsTheClock(try expected.connection.scalar("SHOW CREATE TABLE \(sqlIdentifier(object))")) {
                report.skipped.append(object)
            } else {
                derived.append(object)
            }
        }
        if derived.isEmpty { return report }

        var canonical: [String: Canonical] = [:]
        for object in derived { canonical[object] = try self.canonical(object, in: expected.connection) }
        // Live first, then the unsettled rows: a row inserted meanwhile is among the latter.
        var live: [String: Result<[[String]], ClickHouseError>] = [:]
        for object in derived {
            do { live[object] = .success(try rows(canonical[object]!.query, in: connection)) } catch { live[object] = .failure(error) }
        }
        let open = try ScratchDatabase(beside: connection.endpoint)
        defer { open.drop() }
        if let failure = try replay(into: open, through: version) { report.differences.append(failure); return report }
        try copy(into: open, where: "NOT (\(settled))")

        for object in derived {
            let shape = canonical[object]!
            let found: [[String]]
            switch live[object]! {
            case .success(let rows): found = rows
            case .failure(let error):
                report.differences.append("\(object): cannot read it in \(connection.endpoint.database): \(error)")
                continue
            }
            let wanted = try rows(shape.query, in: expected.connection)
            let unsettled = Set(try rows(shape.query, in: open.connection).map { key(of: $0, shape) })
            let (problems, compared) = differences(object, shape, expected: wanted, found: found, unsettled: unsettled)
            report.differences += problems
            report.compared.append((object, compared))
        }
        return report
    }

    private func replay(into scratch: ScratchDatabase, through version: Int) throws(ClickHouseError) -> String? {
        do {
            if let failure = try scratch.replay(migrations, through: version, includingData: true) {
                return "cannot replay \(failure.location) (statement \(failure.statement)) in a scratch database to compute the expected data: \(failure.error)"
            }
        } catch {
            return error.description
        }
        return nil
    }

    /// `count()` of every table and view (materialized views excluded: their tables are listed).
    private func counts(in scratch: ClickHouseConnection) throws(ClickHouseError) -> [String: String] {
        var result: [String: String] = [:]
        for row in try scratch.rows("SELECT name, engine FROM system.tables WHERE database = currentDatabase()") where row.count == 2 {
            guard row[1] != "MaterializedView" else { continue }
            let name = String(row[0])
            result[name] = try scratch.scalar("SELECT count() FROM \(sqlIdentifier(name))")
        }
        return result
    }

    /// Copies the source's rows matching `condition` from the live database into `scratch`
    /// (its ordinary and `DEFAULT` columns; the scratch computes the others).
    private func copy(into scratch: ScratchDatabase, where condition: String) throws(ClickHouseError) {
        let columns = try scratch.connection.rows("DESCRIBE TABLE \(sqlIdentifier(source))").compactMap { row -> String? in
            row.count >= 3 && row[2] != "MATERIALIZED" && row[2] != "ALIAS" ? sqlIdentifier(String(row[0])) : nil
        }.joined(separator: ", ")
        let live = sqlIdentifier(connection.endpoint.database) + "." + sqlIdentifier(source)
        try scratch.connection.run("INSERT INTO \(sqlIdentifier(source)) (\(columns)) SELECT \(columns) FROM \(live) WHERE \(condition)")
    }

    private func canonical(_ object: String, in scratch: ClickHouseConnection) throws(ClickHouseError) -> Canonical {
        let described = try scratch.rows("DESCRIBE TABLE \(sqlIdentifier(object))").compactMap { row in
            row.count >= 2 ? (name: String(row[0]), type: String(row[1])) : nil
        }
        let info = try scratch.rows(
            "SELECT engine, sorting_key FROM system.tables WHERE database = currentDatabase() AND name = \(sqlStringLiteral(object))"
        ).first ?? []
        let engine = info.first.map(String.init) ?? ""
        let sortingKey = info.count > 1 ? info[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } : []
        let names = described.map(\.name)
        let quoted = sqlIdentifier(object)
        if engine == "View" {
            let keys = described.indices.filter { !Self.isNumeric(described[$0].type) }
            return Canonical(query: "SELECT * FROM \(quoted)", columns: names, keyColumns: keys, wholeRow: keys.isEmpty)
        }
        if described.contains(where: { $0.type.hasPrefix("AggregateFunction(") }) {
            let plain = described.filter { !$0.type.hasPrefix("AggregateFunction(") }.map { sqlIdentifier($0.name) }
            let select = described.map { column -> String in
                guard let merge = Self.merge(column.type) else { return sqlIdentifier(column.name) }
                return "\(merge)(\(sqlIdentifier(column.name))) AS \(sqlIdentifier(column.name))"
            }
            let group = plain.isEmpty ? "" : " GROUP BY " + plain.joined(separator: ", ")
            let keys = described.indices.filter { !described[$0].type.hasPrefix("AggregateFunction(") }
            return Canonical(query: "SELECT \(select.joined(separator: ", ")) FROM \(quoted)\(group)", columns: names, keyColumns: keys, wholeRow: false)
        }
        let final = engine.hasSuffix("MergeTree") && engine != "MergeTree" ? " FINAL" : ""
        let keys = sortingKey.compactMap { names.firstIndex(of: $0) }
        let wholeRow = keys.isEmpty || keys.count != sortingKey.count || final.isEmpty
        return Canonical(query: "SELECT * FROM \(quoted)\(final)", columns: names, keyColumns: wholeRow ? Array(names.indices) : keys, wholeRow: wholeRow)
    }

    /// `sumMerge` for `AggregateFunction(sum, UInt64)`, `quantilesMerge(0.5)` for
    /// `AggregateFunction(quantiles(0.5), Float64)`.
    static func merge(_ type: String) -> String? {
        guard type.hasPrefix("AggregateFunction("), type.hasSuffix(")") else { return nil }
        let inner = type.dropFirst("AggregateFunction(".count).dropLast()
        var depth = 0
        var function = ""
        for character in inner {
            if character == "(" { depth += 1 }
            if character == ")" { depth -= 1 }
            if character == "," && depth == 0 { break }
            function.append(character)
        }
        function = function.trimmingCharacters(in: .whitespaces)
        if let open = function.firstIndex(of: "(") {
            return String(function[..<open]) + "Merge" + String(function[open...])
        }
        return function + "Merge"
    }

    /// Whether a definition calls `now()`, `today()` or `yesterday()`.
    static func readsTheClock(_ definition: String) -> Bool {
        let code = SQLLexer.tokens(definition).filter { $0.kind == .word }.map { $0.text.lowercased() }
        return code.contains { ["now", "today", "yesterday", "now64"].contains($0) }
    }

    static func isNumeric(_ type: String) -> Bool {
        var type = type
        for wrapper in ["Nullable(", "LowCardinality("] where type.hasPrefix(wrapper) { type = String(type.dropFirst(wrapper.count).dropLast()) }
        return ["UInt", "Int", "Float", "Decimal"].contains { type.hasPrefix($0) }
    }

    private func rows(_ query: String, in connection: ClickHouseConnection) throws(ClickHouseError) -> [[String]] {
        try connection.rows(query).map { $0.map(String.init) }
    }

    private func key(of row: [String], _ shape: Canonical) -> [String] {
        shape.keyColumns.map { $0 < row.count ? row[$0] : "" }
    }

    private func differences(
        _ object: String, _ shape: Canonical, expected: [[String]], found: [[String]], unsettled: Set<[String]>
    ) -> (problems: [String], compared: Int) {
        var wanted: [[String]: [[String]]] = [:]
        var have: [[String]: [[String]]] = [:]
        for row in expected where !unsettled.contains(key(of: row, shape)) { wanted[key(of: row, shape), default: []].append(row) }
        for row in found where !unsettled.contains(key(of: row, shape)) { have[key(of: row, shape), default: []].append(row) }
        var lines: [String] = []
        var missing = 0
        var unexpected = 0
        var differing = 0
        func describe(_ key: [String]) -> String { "(" + zip(shape.keyColumns, key).map { "\(shape.columns[$0.0])=\($0.1)" }.joined(separator: ", ") + ")" }
        for key in Set(wanted.keys).union(have.keys).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let expectedRows = wanted[key] ?? []
            let foundRows = have[key] ?? []
            if shape.wholeRow {
                if expectedRows.count != foundRows.count {
                    if expectedRows.count > foundRows.count { missing += 1 } else { unexpected += 1 }
                    if lines.count < listed { lines.append("  row \(describe(key)): expected \(expectedRows.count) time(s), found \(foundRows.count)") }
                }
                continue
            }
            guard let expectedRow = expectedRows.first else {
                unexpected += 1
                if lines.count < listed { lines.append("  unexpected \(describe(key)): \(render(foundRows[0], shape)) (no settled source row gives it)") }
                continue
            }
            guard let foundRow = foundRows.first else {
                missing += 1
                if lines.count < listed { lines.append("  missing \(describe(key)): expected \(render(expectedRow, shape))") }
                continue
            }
            let columns = shape.columns.indices.filter { !shape.keyColumns.contains($0) && !Self.same(value(expectedRow, $0), value(foundRow, $0)) }
            if !columns.isEmpty || foundRows.count != expectedRows.count {
                differing += 1
                if lines.count < listed {
                    let details = columns.map { "\(shape.columns[$0]) expected \(value(expectedRow, $0)), found \(value(foundRow, $0))" }
                        + (foundRows.count != expectedRows.count ? ["\(foundRows.count) rows for the key, expected \(expectedRows.count)"] : [])
                    lines.append("  \(describe(key)): " + details.joined(separator: "; "))
                }
            }
        }
        let total = wanted.values.reduce(0) { $0 + $1.count }
        guard missing + unexpected + differing > 0 else { return ([], total) }
        let headline = "\(object): \(differing) of \(total) settled rows differ, \(missing) missing, \(unexpected) unexpected"
        let rest = missing + unexpected + differing - lines.count
        return ([([headline] + lines + (rest > 0 ? ["  ... and \(rest) more"] : [])).joined(separator: "\n")], total)
    }

    private func value(_ row: [String], _ index: Int) -> String { index < row.count ? row[index] : "" }

    private func render(_ row: [String], _ shape: Canonical) -> String {
        shape.columns.indices.filter { !shape.keyColumns.contains($0) }.map { "\(shape.columns[$0])=\(value(row, $0))" }.joined(separator: ", ")
    }

    /// Equal as text, or as floating-point numbers within a relative 1e-9.
    static func same(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        guard let x = Double(a), let y = Double(b) else { return false }
        return abs(x - y) <= 1e-9 * max(1, abs(x), abs(y))
    }
}
