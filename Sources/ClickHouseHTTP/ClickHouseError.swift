import Foundation

/// A failure talking to ClickHouse over HTTP, with what a user needs to act on it.
///
/// Two families: the request never got a ClickHouse answer (``transport(_:message:)``), or the
/// server answered with an exception (``server(code:status:message:)``). ``isRetryable`` tells
/// them apart for the sink's retry logic; ``mayHaveBeenApplied`` tells whether an insert could
/// have landed despite the failure (the answer was lost, not the request).
public enum ClickHouseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request did not get an HTTP answer.
    case transport(TransportFailure, message: String)
    /// The server answered with a non-2xx status. `code` is ClickHouse's exception code when the
    /// `X-ClickHouse-Exception-Code` header or the body carried one.
    case server(code: Int?, status: Int, message: String)

    /// How a request failed before ClickHouse answered it.
    public enum TransportFailure: String, Sendable, Equatable {
        /// Nothing listens on the address, or DNS failed: the request was never sent.
        case connectionRefused
        /// The connection dropped after (part of) the request was sent.
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
        case .server(let code, let status, _):
            if let code {
                return Self.retryableServerCodes.contains(code)
            }
            return status >= 500 || status == 429 || status == 408
        }
    }

    /// Whether an insert that failed this way could nevertheless have been applied by the
    /// server (its answer was lost, or the server was still working on it).
    public var mayHaveBeenApplied: Bool {
        switch self {
        case .transport(let failure, _):
            return failure == .connectionReset || failure == .timeout || failure == .other
        case .server(let code, let status, _):
            // A 5xx without an exception code may come from a proxy that lost the answer.
            return code == nil && status >= 500
        }
    }

    /// ClickHouse's exception code, if any.
    public var code: Int? {
        if case .server(let code, _, _) = self { return code }
        return nil
    }

    public var description: String {
        switch self {
        case .transport(let failure, let message):
            return "ClickHouse unreachable (\(failure.rawValue)): \(message)"
        case .server(let code, let status, let message):
            let codeText = code.map { "code \($0), " } ?? ""
            return "ClickHouse error (\(codeText)HTTP \(status)): \(message)"
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
}
