import Foundation

/// Whether a request may safely run twice, which decides how it is sent and how its failures
/// are classified.
public enum ClickHouseRequestKind: Sendable, Hashable {
    /// A read (or anything without effect): sent on a reused keep-alive connection, which libcurl
    /// may transparently re-send when that connection turns out to be dead.
    case idempotent
    /// A statement that must not run twice (every `INSERT`, DDL, mutations): sent on a fresh
    /// connection that is closed afterwards (`CURLOPT_FRESH_CONNECT` and `CURLOPT_FORBID_REUSE`),
    /// so that libcurl never re-sends it on its own. Once it may have reached the server, every
    /// failure of it, a coded server error included, has ``ClickHouseError/mayHaveBeenApplied``.
    case nonIdempotent

    /// The kind of `query`: reads (`SELECT`, `WITH`, `SHOW`, `DESCRIBE`, `EXISTS`, `EXPLAIN`,
    /// `CHECK`) are idempotent; everything else is not.
    public static func inferred(from query: String) -> ClickHouseRequestKind {
        var rest = Substring(query)
        while true {
            rest = rest.drop(while: { $0.isWhitespace || $0 == "(" })
            if rest.hasPrefix("--") {
                rest = rest.drop(while: { $0 != "\n" })
            } else if rest.hasPrefix("/*"), let end = rest.range(of: "*/") {
                rest = rest[end.upperBound...]
            } else {
                break
            }
        }
        let keyword = rest.prefix(while: { $0.isLetter }).uppercased()
        return readKeywords.contains(keyword) ? .idempotent : .nonIdempotent
    }

    private static let readKeywords: Set<String> = ["SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK"]
}

/// A failure talking to ClickHouse over HTTP, with what a user needs to act on it.
///
/// Two families: the request never got a ClickHouse answer (``transport(_:message:)``), or the
/// server answered with an exception (``server(code:status:message:request:)``), also inside a
/// `200` answer whose result broke off. ``isRetryable`` tells them apart for the sink's retry
/// logic; ``mayHaveBeenApplied`` tells whether a write could have landed despite the failure.
public enum ClickHouseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request did not get an HTTP answer.
    case transport(TransportFailure, message: String)
    /// The server answered with an exception: a non-2xx status, or a `200` whose body ends with
    /// one (the server failed while streaming the result). `code` is ClickHouse's exception code
    /// when the `X-ClickHouse-Exception-Code` header or the body carried one. `request` is the
    /// kind of the failed request: for a ``ClickHouseRequestKind/nonIdempotent`` one the server
    /// may have applied part or all of it before failing (a materialized view fails after the
    /// base table's part was committed: "while pushing to view").
    case server(code: Int?, status: Int, message: String, request: ClickHouseRequestKind = .idempotent)

    /// How a request failed before ClickHouse answered it.
    public enum TransportFailure: String, Sendable, Equatable {
        /// Nothing listens on the address, or DNS failed, on a fresh connection: the request was
        /// provably never sent.
        case connectionRefused
        /// A reused keep-alive connection died and libcurl's reconnect (on which it re-sends the
        /// request) was refused: the request may have reached the server on the dead connection.
        case reconnectRefused
        /// The connection dropped after (part of) the request was sent, or the server closed it
        /// without answering.
        case connectionReset
        /// The server did not answer within the request timeout.
        case timeout
        /// TLS handshake or certificate failure.
        case tls
        /// Anything else libcurl reported.
        case other
    }

    /// ClickHouse exception codes that mean "try again later": the server is overloaded, a
    /// replica or ZooKeeper is unavailable, a network hop between servers failed, too many parts.
    public static let retryableServerCodes: Set<Int> = [
        3, 23, 32, 33, 159, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 999,
    ]

    /// Whether the same request may succeed if sent again later.
    public var isRetryable: Bool {
        switch self {
        case .transport(let failure, _):
            return failure != .tls
        case .server(let code, let status, _, _):
            if let code {
                return Self.retryableServerCodes.contains(code)
            }
            return status >= 500 || status == 429 || status == 408
        }
    }

    /// Whether a write that failed this way could nevertheless have been applied by the server,
    /// in whole or in part: its answer was lost, the server was still working on it, or the
    /// server failed after writing (part of) it. Only a failure that provably sent nothing
    /// (connection refused on a fresh connection, DNS, TLS) is `false`; so is a coded server
    /// error of an ``ClickHouseRequestKind/idempotent`` request (a read has nothing to apply).
    public var mayHaveBeenApplied: Bool {
        switch self {
        case .transport(let failure, _):
            return failure != .connectionRefused && failure != .tls
        case .server(let code, let status, _, let request):
            if request == .nonIdempotent { return true }
            // A 5xx without an exception code may come from a proxy that lost the answer.
            return code == nil && status >= 500
        }
    }

    /// ClickHouse's exception code, if any.
    public var code: Int? {
        if case .server(let code, _, _, _) = self { return code }
        return nil
    }

    /// Whether the server reported the failure as raised by a materialized view, i.e. after the
    /// base table's part was written (`... while pushing to view db.view`).
    public var raisedByView: Bool {
        if case .server(_, _, let message, _) = self { return message.contains("while pushing to view") }
        return false
    }

    public var description: String {
        switch self {
        case .transport(let failure, let message):
            return "ClickHouse unreachable (\(failure.rawValue)): \(message)"
        case .server(let code, let status, let message, _):
            let codeText = code.map { "code \($0), " } ?? ""
            let streamed = status < 300 ? ", after the result began" : ""
            return "ClickHouse error (\(codeText)HTTP \(status)\(streamed)): \(message)"
        }
    }

    /// Extracts the exception code from a ClickHouse HTTP error answer.
    ///
    /// Current servers send `X-ClickHouse-Exception-Code`; every version starts the body with
    /// `Code: N, e.displayText() = ...` (18.x) or `Code: N. DB::Exception: ...` (current).
    public static func exceptionCode(header: String?, body: String) -> Int? {
        if let header, let code = Int(header.trimmingCharacters(in: .whitespacesAndNewlines)) {
            return code
        }
        guard let range = body.range(of: "Code: ") else { return nil }
        let digits = body[range.upperBound...].prefix(while: { $0.isASCII && $0.isNumber })
        return Int(digits)
    }

    /// The exception that ends the body of a `2xx` answer, if any: ClickHouse sends the status
    /// and headers before the result, so a failure while streaming the result can only append
    /// the exception to the body.
    ///
    /// Recognised: a non-zero `X-ClickHouse-Exception-Code` header; the tagged trailer of
    /// ClickHouse 25.11+ (`__exception__` followed by the `X-ClickHouse-Exception-Tag` value);
    /// and a last line that is a whole exception in the 18.x (`Code: N, e.displayText() = ...,
    /// e.what() = ...`) or current (`Code: N. DB::Exception: ...`) form. The last rule cannot
    /// tell such an exception from a result row that spells one (a single `String` column of
    /// attacker-chosen values); queries that must not be misread either way should ask for
    /// `wait_end_of_query=1` (the server then answers 500 on a failure) and skip this rule.
    ///
    /// - Returns: the exception's code (if it has one) and text.
    public static func streamedException(
        body: [UInt8], exceptionCodeHeader: String?, exceptionTag: String?, trustLastLine: Bool = true
    ) -> (code: Int?, message: String)? {
        let tail = String(decoding: body.suffix(16_384), as: UTF8.self)
        if let header = exceptionCodeHeader, let code = Int(header.trimmingCharacters(in: .whitespaces)), code != 0 {
            return (code, lastLine(of: tail))
        }
        if let tag = exceptionTag?.trimmingCharacters(in: .whitespaces), !tag.isEmpty,
            let marker = tail.range(of: "__exception__"), tail[marker.upperBound...].contains(tag)
        {
            let text = tail[marker.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
            return (exceptionCode(header: nil, body: text), text)
        }
        guard trustLastLine else { return nil }
        let line = lastLine(of: tail)
        guard line.hasPrefix("Code: ") else { return nil }
        let afterCode = line.dropFirst("Code: ".count)
        let digits = afterCode.prefix(while: { $0.isASCII && $0.isNumber })
        guard let code = Int(digits) else { return nil }
        let rest = afterCode.dropFirst(digits.count)
        let old = rest.hasPrefix(", e.displayText() = ") && rest.contains("e.what() = ")
        let current = rest.hasPrefix(". DB::Exception: ")
        return old || current ? (code, line) : nil
    }

    private static func lastLine(of text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let newline = trimmed.lastIndex(of: "\n") else { return trimmed }
        return String(trimmed[trimmed.index(after: newline)...])
    }
}
