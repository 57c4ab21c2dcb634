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
    /// The statements, templated (and rewritten for the cluster, if any).
    public var statements: [SQLStatement]
    /// The statements as written in the file, before templating.
    public var template: [SQLStatement]

    /// SHA-256 of each statement as written (before templating), recorded in the ledger so that
    /// a half-applied migration resumes only if the statements it already ran are unchanged.
    public var statementChecksums: [String] { template.map { SHA256.hex(Array($0.text.utf8)) } }
}

/// Reads, validates and templates the migrations directory.
public struct MigrationSet: Sendable {
    public var migrations: [Migration]
    /// The values of `${NAME}`s the statements were rendered with.
    public var variables: [String: String]
    /// The cluster the statements were rewritten for (see ``ClusterRewriter``).
    public var cluster: ClusterTarget?

    /// Loads every `NNNN_name.sql` in `directory`, in version order.
    ///
    /// Refuses, naming the file and line: a file name without a version, a duplicate version,
    /// a gap in the numbering, a statement that cannot be split (unterminated string or
    /// comment), and a `${NAME}` that `variables` does not define. With a `cluster`, DDL is
    /// rewritten by ``ClusterRewriter`` (`${DATABASE}` is the database of unqualified names).
    public init(directory: String, variables: [String: String], cluster: ClusterTarget? = nil) throws(MigrationError) {
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
            migrations.append(
                Migration(
                    version: version, name: String(stem.dropFirst(digits.count + 1)), path: path, checksum: SHA256.hex(Array(data)),
                    statements: try Self.render(statements, path: path, variables: variables, cluster: cluster), template: statements
                )
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
        self.variables = variables
        self.cluster = cluster
    }

    /// The same migrations rendered with other variables or for another cluster (or none).
    public func rendered(variables: [String: String], cluster: ClusterTarget?) throws(MigrationError) -> MigrationSet {
        var copy = self
        copy.variables = variables
        copy.cluster = cluster
        for index in copy.migrations.indices {
            let migration = copy.migrations[index]
            copy.migrations[index].statements = try Self.render(migration.template, path: migration.path, variables: variables, cluster: cluster)
        }
        return copy
    }

    private static func render(
        _ statements: [SQLStatement], path: String, variables: [String: String], cluster: ClusterTarget?
    ) throws(MigrationError) -> [SQLStatement] {
        var rendered: [SQLStatement] = []
        for statement in statements {
            var text: String
            do {
                text = try Template.render(statement.text, variables: variables)
            } catch {
                switch error.problem {
                case .undefined:
                    throw MigrationError(
                        "\(path):\(statement.line + error.lineOffset): undefined variable ${\(error.name)}; pass --var \(error.name)=VALUE or set SCHEMA_VAR_\(error.name)"
                    )
                case .invalidValue(let expected):
                    throw MigrationError("\(path):\(statement.line + error.lineOffset): ${\(error.name)} must be \(expected)")
                }
            }
            if let cluster { text = ClusterRewriter.rewrite(text, for: cluster, database: variables["DATABASE"] ?? "default") }
            rendered.append(SQLStatement(text: text, line: statement.line))
        }
        return rendered
    }
}

/// `${NAME}` substitution; `${NAME:-default}` uses `default` when `NAME` is undefined.
/// Comments are left as they are (a `${NAME}` in a comment is documentation, not a use).
///
/// Values are never spliced into SQL unchecked: inside a string literal or quoted identifier a
/// value is escaped for it; elsewhere it must be a number or a plain identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`), and a variable whose default is a number must be a number.
public enum Template {
    public struct Failure: Error, Sendable {
        public enum Problem: Sendable, Equatable {
            case undefined
            /// The value cannot stand where the variable is; the text says what it must be.
            case invalidValue(String)
        }

        public var name: String
        /// Lines between the statement's first line and the variable.
        public var lineOffset: Int
        public var problem: Problem
    }

    public static func render(_ text: String, variables: [String: String]) throws(Failure) -> String {
        var result = ""
        var code = ""
        var lines = 0
        func flush() throws(Failure) {
            do {
                result += try renderCode(code, variables: variables, quote: nil)
            } catch {
                throw Failure(name: error.name, lineOffset: lines + error.lineOffset, problem: error.problem)
            }
            lines += code.filter { $0 == "\n" }.count
            code = ""
        }
        for token in SQLLexer.tokens(text) {
            switch token.kind {
            case .trivia where token.isComment:
                try flush()
                result += token.text
            case .string, .quotedIdentifier:
                try flush()
                do {
                    result += try renderCode(token.text, variables: variables, quote: token.text.unicodeScalars.first)
                } catch {
                    throw Failure(name: error.name, lineOffset: lines + error.lineOffset, problem: error.problem)
                }
            default:
                code += token.text
                continue
            }
            lines += token.text.filter { $0 == "\n" }.count
        }
        try flush()
        return result
    }

    static func isNumber(_ text: String) -> Bool {
        text.range(of: #"^[+-]?[0-9]+(\.[0-9]+)?$"#, options: .regularExpression) != nil
    }

    static func isIdentifier(_ text: String) -> Bool {
        text.range(of: #"^[A-Za-z_][A-Za-z0-9_]*$"#, options: .regularExpression) != nil
    }

    /// Substitutes the variables of `text`; `quote` is the quote character when `text` is a
    /// quoted token (values are then escaped for it), `nil` for SQL code.
    private static func renderCode(_ text: String, variables: [String: String], quote: Unicode.Scalar?) throws(Failure) -> String {
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
            let offset = text[..<open.lowerBound].filter { $0 == "\n" }.count
            guard let value = variables[name] ?? fallback else {
                throw Failure(name: name, lineOffset: offset, problem: .undefined)
            }
            if let fallback, isNumber(fallback), !isNumber(value) {
                throw Failure(name: name, lineOffset: offset, problem: .invalidValue("a number (its default is \(fallback)), got '\(value)'"))
            }
            if let quote {
                result += value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: String(quote), with: "\\" + String(quote))
            } else {
                guard isNumber(value) || isIdentifier(value) else {
                    throw Failure(
                        name: name, lineOffset: offset,
                        problem: .invalidValue("a number or a plain identifier ([A-Za-z_][A-Za-z0-9_]*) where it is used outside quotes, got '\(value)'")
                    )
                }
                result += value
            }
            rest = rest[rest.index(after: close)...]
        }
        result += rest
        return result
    }
}
