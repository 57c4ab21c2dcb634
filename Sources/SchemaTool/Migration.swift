import Foundation

/// A problem with the migration files, found before anything runs.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One migration file: `NNNN_name.sql` in the migrations directory.
public struct Migration: Sendable, Hashable {
    public var version: Int
    public var name: String
    public var path: String
    /// SHA-256 of the file's bytes (before templating).
    public var checksum: String
    /// The statements, templated.
    public var statements: [SQLStatement]
}

/// Reads, validates and templates the migrations directory.
public struct MigrationSet: Sendable {
    public var migrations: [Migration]

    /// Loads every `NNNN_name.sql` in `directory`, in version order.
    ///
    /// Refuses, naming the file and line: a file name without a version, a duplicate version,
    /// a gap in the numbering, a statement that cannot be split (unterminated string or
    /// comment), and a `${NAME}` that `variables` does not define.
    public init(directory: String, variables: [String: String]) throws(MigrationError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
        } catch {
            throw MigrationError("cannot read the migrations directory \(directory): \(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for file in names {
            let path = (directory as NSString).appendingPathComponent(file)
            let stem = String(file.dropLast(4))
            let digits = stem.prefix(while: { $0.isASCII && $0.isNumber })
            guard !digits.isEmpty, let version = Int(digits), stem.dropFirst(digits.count).first == "_" else {
                throw MigrationError("\(path): migration files are named NNNN_description.sql (e.g. 0004_add_revenue.sql); rename it")
            }
            if let clash = migrations.first(where: { $0.version == version }) {
                throw MigrationError("\(path): version \(version) is also used by \(clash.path); give one of them the next free number")
            }
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw MigrationError("\(path): cannot read the file as UTF-8")
            }
            let statements: [SQLStatement]
            do {
                statements = try StatementSplitter.split(text)
            } catch {
                throw MigrationError("\(path):\(error.line): \(error.message)")
            }
            var rendered: [SQLStatement] = []
            for statement in statements {
                do {
                    rendered.append(SQLStatement(text: try Template.render(statement.text, variables: variables), line: statement.line))
                } catch {
                    throw MigrationError(
                        "\(path):\(statement.line + error.lineOffset): undefined variable ${\(error.name)}; pass --var \(error.name)=VALUE or set SCHEMA_VAR_\(error.name)"
                    )
                }
            }
            migrations.append(
                Migration(version: version, name: String(stem.dropFirst(digits.count + 1)), path: path, checksum: SHA256.hex(Array(data)), statements: rendered)
            )
        }
        for (index, migration) in migrations.enumerated() {
            let expected = index + 1
            if migration.version != expected {
                throw MigrationError(
                    "\(migration.path): expected version \(expected) here, found \(migration.version); versions must be 1, 2, 3, ... without gaps"
                )
            }
        }
        self.migrations = migrations
    }
}

/// `${NAME}` substitution; `${NAME:-default}` uses `default` when `NAME` is undefined.
public enum Template {
    public struct UndefinedVariable: Error, Sendable {
        public var name: String
        /// Lines between the statement's first line and the variable.
        public var lineOffset: Int
    }

    public static func render(_ text: String, variables: [String: String]) throws(UndefinedVariable) -> String {
        var result = ""
        var rest = Substring(text)
        while let open = rest.range(of: "${") {
            result += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                result += rest[open.lowerBound...]
                return result
            }
            let expression = String(rest[open.upperBound..<close])
            // ${NAME:-default} falls back to the default when NAME is not defined.
            let parts = expression.components(separatedBy: ":-")
            let name = parts[0]
            let fallback = parts.count > 1 ? parts.dropFirst().joined(separator: ":-") : nil
            guard let value = variables[name] ?? fallback else {
                let offset = text[..<open.lowerBound].filter { $0 == "\n" }.count
                throw UndefinedVariable(name: name, lineOffset: offset)
            }
            result += value
            rest = rest[rest.index(after: close)...]
        }
        result += rest
        return result
    }
}
