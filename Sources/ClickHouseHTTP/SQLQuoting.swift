/// `text` as a ClickHouse string literal: quoted, with `\` and `'` escaped, so any bytes
/// round-trip. For the few statements whose values cannot be sent as data.
public func sqlStringLiteral(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}

/// `values` as a ClickHouse array of string literals.
public func sqlStringArray(_ values: [String]) -> String {
    "[" + values.map(sqlStringLiteral).joined(separator: ", ") + "]"
}

/// `name` as a quoted ClickHouse identifier: in backquotes, with `\` and `` ` `` escaped
/// (ClickHouse reads backslash escapes inside backquotes, so `a\` would otherwise swallow the
/// closing quote).
public func sqlIdentifier(_ name: String) -> String {
    "`" + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "`", with: "\\`") + "`"
}
