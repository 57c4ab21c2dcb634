import Foundation

/// One SQL statement of a migration file, with where it starts.
public struct SQLStatement: Sendable, Hashable {
    /// The statement text without the terminating `;`, trimmed.
    public var text: String
    /// 1-based line of the statement's first character (comments included) in its file.
    public var line: Int
}

/// Splits SQL text into statements at `;`, except inside string literals (`'...'` with `\'`
/// and `''` escapes), quoted identifiers (`` `...` `` and `"..."`) and comments (`-- ...`,
/// `# ...`, `/* ... */`). Statements that hold only comments and white space are dropped.
public enum StatementSplitter {
    public struct Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public static func split(_ text: String) throws(Error) -> [SQLStatement] {
        let characters = Array(text.unicodeScalars)
        var statements: [SQLStatement] = []
        var current = String.UnicodeScalarView()
        var hasContent = false
        var sawNonWhitespace = false
        var line = 1
        var startLine = 1
        var index = 0

        func finish() {
            let statement = String(current).trimmingWhitespace()
            if hasContent && !statement.isEmpty { statements.append(SQLStatement(text: statement, line: startLine)) }
            current = String.UnicodeScalarView()
            hasContent = false
            sawNonWhitespace = false
        }
        func append(_ scalar: Unicode.Scalar) {
            if !sawNonWhitespace && !scalar.properties.isWhitespace {
                sawNonWhitespace = true
                startLine = line
            }
            if scalar == "\n" { line += 1 }
            current.append(scalar)
        }
        func markContent() {
            hasContent = true
        }

        while index < characters.count {
            let scalar = characters[index]
            let next: Unicode.Scalar? = index + 1 < characters.count ? characters[index + 1] : nil
            switch scalar {
            case "'", "\"", "`":
                markContent()
                let quote = scalar
                let openedAt = line
                append(scalar)
                index += 1
                var closed = false
                while index < characters.count {
                    let inner = characters[index]
                    append(inner)
                    index += 1
                    if inner == "\\" && index < characters.count {
                        append(characters[index])
                        index += 1
                    } else if inner == quote {
                        if index < characters.count && characters[index] == quote {
                            append(characters[index])
                            index += 1
                        } else {
                            closed = true
                            break
                        }
                    }
                }
                if !closed { throw Error(line: openedAt, message: "unterminated \(quote == "'" ? "string literal" : "quoted identifier") starting here") }
                continue
            case "-" where next == "-", "#":
                while index < characters.count && characters[index] != "\n" {
                    append(characters[index])
                    index += 1
                }
                continue
            case "/" where next == "*":
                let openedAt = line
                append(scalar)
                append(next!)
                index += 2
                var closed = false
                while index < characters.count {
                    if characters[index] == "*" && index + 1 < characters.count && characters[index + 1] == "/" {
                        append("*")
                        append("/")
                        index += 2
                        closed = true
                        break
                    }
                    append(characters[index])
                    index += 1
                }
                if !closed { throw Error(line: openedAt, message: "unterminated /* comment starting here") }
                continue
            case ";":
                finish()
                index += 1
                continue
            default:
                if !scalar.properties.isWhitespace { markContent() }
                append(scalar)
                index += 1
            }
        }
        finish()
        return statements
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}

/// `WAIT UNTIL <DateTime expression>`: a statement of schema-tool, not of ClickHouse. The tool
/// evaluates the expression on the server and sleeps until the server's clock reaches it; used
/// by materialized-view evolution to let a cut-over time pass before backfilling.
public enum WaitDirective {
    /// The expression, if `statement` is a wait directive.
    public static func expression(in statement: String) -> String? {
        let code = statement.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }
            .joined(separator: "\n").trimmingWhitespace()
        guard code.uppercased().hasPrefix("WAIT UNTIL ") else { return nil }
        return String(code.dropFirst("WAIT UNTIL ".count))
    }
}
