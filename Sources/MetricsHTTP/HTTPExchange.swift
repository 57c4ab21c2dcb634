/// The request head of one HTTP/1.x exchange, as far as the metrics server needs it.
public struct HTTPRequestHead: Equatable, Sendable {
    public var method: String
    /// The path without its query string.
    public var path: String

    public init(method: String, path: String) {
        self.method = method
        self.path = path
    }

    /// The outcome of looking at the bytes received so far on a connection.
    public enum ParseResult: Equatable, Sendable {
        /// The head is not complete yet (no empty line) and within ``maximumHeadBytes``.
        case needMoreBytes
        case complete(HTTPRequestHead)
        /// The bytes cannot become a request the server answers; the reason is for the response body.
        case invalid(status: HTTPResponse.Status, reason: String)
    }

    /// The largest request head accepted; anything longer is answered 431 and closed.
    public static let maximumHeadBytes = 8192

    /// Parses `bytes`, everything received so far on a connection. Pure: the same bytes give the
    /// same result, so the caller just appends and asks again.
    ///
    /// The head ends at the first empty line (`\r\n\r\n`, or `\n\n` from lenient clients). Only the
    /// request line is interpreted; header fields are ignored.
    public static func parse(_ bytes: [UInt8]) -> ParseResult {
        guard let end = headEnd(bytes) else {
            return bytes.count > maximumHeadBytes
                ? .invalid(status: .requestHeaderFieldsTooLarge, reason: "request head longer than \(maximumHeadBytes) bytes")
                : .needMoreBytes
        }
        guard end <= maximumHeadBytes else {
            return .invalid(status: .requestHeaderFieldsTooLarge, reason: "request head longer than \(maximumHeadBytes) bytes")
        }
        let lineEnd = bytes[..<end].firstIndex(of: UInt8(ascii: "\n")) ?? end
        var line = bytes[..<lineEnd]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)) else {
            return .invalid(status: .badRequest, reason: "malformed request line")
        }
        let target = parts[1]
        let pathBytes = target.prefix { $0 != UInt8(ascii: "?") }
        return .complete(HTTPRequestHead(method: String(decoding: parts[0], as: UTF8.self), path: String(decoding: pathBytes, as: UTF8.self)))
    }

    /// The index just past the empty line ending the head, if there is one.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        var index = 0
        while let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) {
            let next = newline + 1
            if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
            if next + 1 < bytes.count, bytes[next] == UInt8(ascii: "\r"), bytes[next + 1] == UInt8(ascii: "\n") { return next + 2 }
            index = next
        }
        return nil
    }
}

/// A complete HTTP/1.0 response; the connection is closed after it.
public struct HTTPResponse: Equatable, Sendable {
    public enum Status: Int, Sendable {
        case ok = 200
        case badRequest = 400
        case notFound = 404
        case methodNotAllowed = 405
        case requestHeaderFieldsTooLarge = 431
        case serviceUnavailable = 503

        var reasonPhrase: String {
            switch self {
            case .ok: "OK"
            case .badRequest: "Bad Request"
            case .notFound: "Not Found"
            case .methodNotAllowed: "Method Not Allowed"
            case .requestHeaderFieldsTooLarge: "Request Header Fields Too Large"
            case .serviceUnavailable: "Service Unavailable"
            }
        }
    }

    public var status: Status
    public var contentType: String
    public var body: String

    public init(status: Status, contentType: String = "text/plain; charset=utf-8", body: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// The bytes on the wire; a `HEAD` request gets the head only (with the body's length).
    public func serialized(includeBody: Bool = true) -> [UInt8] {
        let body = Array(body.utf8)
        let head = "HTTP/1.0 \(status.rawValue) \(status.reasonPhrase)\r\nContent-Type: \(contentType)\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return includeBody ? Array(head.utf8) + body : Array(head.utf8)
    }
}

/// The liveness verdict `/health` reports.
public enum HealthStatus: Equatable, Sendable {
    case healthy
    /// Not live; the reason is the response body (and what a probe's log shows).
    case unhealthy(reason: String)
}

/// What the server serves. Each closure is called on the server's thread for every request to
/// its path, so it must be thread-safe and quick.
public struct MetricsEndpoints: Sendable {
    /// The Prometheus text exposition for `/metrics`.
    public var metrics: @Sendable () -> String
    /// `/health` (also `/healthz`, `/live`): 200 when healthy, 503 with the reason otherwise.
    public var health: @Sendable () -> HealthStatus
    /// `/ready` (also `/readyz`): 200 when true, 503 otherwise.
    public var ready: @Sendable () -> Bool

    public init(
        metrics: @escaping @Sendable () -> String, health: @escaping @Sendable () -> HealthStatus, ready: @escaping @Sendable () -> Bool
    ) {
        self.metrics = metrics
        self.health = health
        self.ready = ready
    }

    /// The response to one request.
    public func respond(to request: HTTPRequestHead) -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else {
            return HTTPResponse(status: .methodNotAllowed, body: "only GET and HEAD\n")
        }
        switch request.path {
        case "/metrics":
            return HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics())
        case "/health", "/healthz", "/live":
            switch health() {
            case .healthy: return HTTPResponse(status: .ok, body: "ok\n")
            case .unhealthy(let reason): return HTTPResponse(status: .serviceUnavailable, body: "unhealthy: \(reason)\n")
            }
        case "/ready", "/readyz":
            return ready() ? HTTPResponse(status: .ok, body: "ready\n") : HTTPResponse(status: .serviceUnavailable, body: "not ready\n")
        default:
            return HTTPResponse(status: .notFound, body: "try /metrics, /health or /ready\n")
        }
    }
}
