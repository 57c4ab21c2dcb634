import ClickHouseHTTP
import Testing

@testable import SchemaTool

@Suite struct StatementSplitterTests {
    @Test func splitsOnSemicolonsOutsideStringsIdentifiersAndComments() throws {
        let sql = """
            -- leading comment; not a statement
            CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;
            /* block; comment */
            INSERT INTO a VALUES ('it\\'s; ok'), ('two '' quotes;');
            SELECT `odd;name`, "also;odd" FROM a # trailing; comment
            ;
            SELECT 1
            """
        let statements = try StatementSplitter.split(sql)
        #expect(statements.count == 4)
        #expect(statements[0].text.hasSuffix("CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory"))
        #expect(statements[0].line == 1)
        #expect(statements[1].text.contains("('it\\'s; ok'), ('two '' quotes;')"))
        #expect(statements[1].line == 3)
        #expect(statements[2].text.contains("`odd;name`, \"also;odd\""))
        #expect(statements[3].text == "SELECT 1")
        #expect(statements[3].line == 7)
    }

    @Test func onlyCommentsMakeNoStatement() throws {
        #expect(try StatementSplitter.split("-- nothing\n/* here */\n# at all\n;\n").isEmpty)
    }

    @Test func reportsUnterminatedStringsAndComments() {
        #expect(throws: StatementSplitter.Error(line: 2, message: "unterminated string literal starting here")) {
            try StatementSplitter.split("SELECT 1;\nSELECT 'oops;\n")
        }
        #expect(throws: StatementSplitter.Error(line: 1, message: "unterminated /* comment starting here")) {
            try StatementSplitter.split("/* never closed")
        }
    }

    @Test func templatesVariablesAndRefusesUndefinedOnes() throws {
        #expect(try Template.render("CREATE TABLE ${DATABASE}.t ON CLUSTER ${CLUSTER}", variables: ["DATABASE": "d", "CLUSTER": "c"]) == "CREATE TABLE d.t ON CLUSTER c")
        #expect(throws: Template.Failure.self) { try Template.render("SELECT ${NOPE}", variables: [:]) }
        #expect(try Template.render("SELECT '${X:-fallback}'", variables: [:]) == "SELECT 'fallback'", "strings are templated")
    }

    /// Values are never spliced raw: escaped inside quotes, numbers or identifiers elsewhere,
    /// numbers where the default is one.
    @Test func templateValuesAreEscapedOrValidated() throws {
        #expect(try Template.render("SELECT 'a${X}b'", variables: ["X": "it's \\"]) == "SELECT 'ait\\'s \\\\b'")
        #expect(try Template.render("SELECT now() + ${D:-15}", variables: ["D": "30"]) == "SELECT now() + 30")
        #expect(try Template.render("SELECT now() + ${D:-15}", variables: ["D": "-2.5"]) == "SELECT now() + -2.5")
        for (text, variables) in [
            ("SELECT now() + ${D:-15}", ["D": "15; DROP TABLE x"]), ("SELECT now() + ${D:-15}", ["D": "abc"]),
            ("SELECT * FROM ${DATABASE}.t", ["DATABASE": "a.b` x"]), ("SELECT ${X}", ["X": "1 OR 1"]),
        ] {
            do {
                _ = try Template.render(text, variables: variables)
                Issue.record("\(variables) must be refused in \(text)")
            } catch {
                guard case .invalidValue = error.problem else { Issue.record("\(error.problem)"); continue }
            }
        }
    }

    @Test func sqlIdentifierEscapesBackslashAndBackquote() {
        #expect(sqlIdentifier("a\\") == "`a\\\\`")
        #expect(sqlIdentifier("a`b") == "`a\\`b`")
        #expect(sqlStringLiteral("a\\'") == "'a\\\\\\''")
    }

    @Test func commentsAreNotTemplatedAndErrorsNameTheRightLine() throws {
        let text = "-- use ${NAME} for names\n/* ${OTHER}\n */ SELECT ${DATABASE}\n# ${X}\nFROM ${MISSING}"
        #expect(
            try Template.render("-- use ${NAME} for names\nSELECT ${DATABASE}.t", variables: ["DATABASE": "d"]) == "-- use ${NAME} for names\nSELECT d.t"
        )
        do {
            _ = try Template.render(text, variables: ["DATABASE": "d"])
            Issue.record("an undefined variable in code must be refused")
        } catch {
            #expect(error.name == "MISSING")
            #expect(error.lineOffset == 4)
        }
    }

    @Test func sha256MatchesKnownVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array(String(repeating: "a", count: 1000).utf8)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}
