/// One lexical token of a ClickHouse statement, as far as schema-tool needs to understand it.
struct SQLToken: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        /// A keyword, identifier or number.
        case word
        /// `` `name` `` or `"name"`.
        case quotedIdentifier
        /// `'text'`.
        case string
        /// White space or a comment.
        case trivia
        /// Any other single character: `(`, `)`, `,`, `.`, `=`, ...
        case symbol
    }

    var kind: Kind
    var text: String

    /// Whether this is the keyword `keyword` (case-insensitive).
    func isKeyword(_ keyword: String) -> Bool {
        kind == .word && text.caseInsensitiveCompare(keyword) == .orderedSame
    }

    /// Whether this is a comment (`-- ...`, `# ...`, `/* ... */`) rather than white space.
    var isComment: Bool {
        kind == .trivia && (text.hasPrefix("--") || text.hasPrefix("#") || text.hasPrefix("/*"))
    }

    /// The identifier this token names, unquoted (`nil` for strings, symbols and trivia).
    var identifier: String? {
        switch kind {
        case .word: text
        case .quotedIdentifier: String(text.dropFirst().dropLast())
        default: nil
        }
    }
}

/// Splits one statement into ``SQLToken``s; concatenating their texts gives the statement back.
/// Quoting and comments follow the same rules as ``StatementSplitter`` (which has already
/// rejected unterminated ones).
enum SQLLexer {
    static func tokens(_ text: String) -> [SQLToken] {
        let scalars = Array(text.unicodeScalars)
        var tokens: [SQLToken] = []
        var index = 0
        func take(_ end: Int, _ kind: SQLToken.Kind) {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars[index..<min(end, scalars.count)])
            tokens.append(SQLToken(kind: kind, text: String(view)))
            index = min(end, scalars.count)
        }
        func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
            scalar == "_" || scalar == "$" || scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)
        }
        while index < scalars.count {
            let scalar = scalars[index]
            let next: Unicode.Scalar? = index + 1 < scalars.count ? scalars[index + 1] : nil
            switch scalar {
            case "'", "`", "\"":
                var end = index + 1
                while end < scalars.count {
                    if scalars[end] == "\\" {
                        end += 2
                    } else if scalars[end] == scalar {
                        if end + 1 < scalars.count && scalars[end + 1] == scalar { end += 2 } else { break }
                    } else {
                        end += 1
                    }
                }
                take(end + 1, scalar == "'" ? .string : .quotedIdentifier)
            case "-" where next == "-", "#":
                var end = index
                while end < scalars.count && scalars[end] != "\n" { end += 1 }
                take(end, .trivia)
            case "/" where next == "*":
                var end = index + 2
                while end + 1 < scalars.count && !(scalars[end] == "*" && scalars[end + 1] == "/") { end += 1 }
                take(end + 2, .trivia)
            case _ where scalar.properties.isWhitespace:
                var end = index
                while end < scalars.count && scalars[end].properties.isWhitespace { end += 1 }
                take(end, .trivia)
            case _ where isWordScalar(scalar):
                var end = index
                while end < scalars.count && isWordScalar(scalars[end]) { end += 1 }
                take(end, .word)
            default:
                take(index + 1, .symbol)
            }
        }
        return tokens
    }
}
