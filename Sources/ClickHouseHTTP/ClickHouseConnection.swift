import CCurl
import Foundation

/// Where and how to reach a ClickHouse server's HTTP interface.
public struct ClickHouseEndpoint: Sendable, CustomStringConvertible {
    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:8123`. Any path or query is ignored.
    public var url: String
    /// Database that unqualified table names refer to.
    public var database: String
    /// User and password; `nil` means ClickHouse's `default` user without password.
    public var credentials: ClickHouseCredentials?
    /// PEM file with the CA certificates that sign the server's certificate (HTTPS only).
    public var caFile: String?
    /// Longest time one request may take, from connect to the last byte of the answer.
    public var requestTimeout: Duration
    /// Longest time to establish the TCP (and TLS) connection.
    public var connectTimeout: Duration

    public init(
        url: String,
        database: String,
        credentials: ClickHouseCredentials? = nil,
        caFile: String? = nil,
        requestTimeout: Duration = .seconds(30),
        connectTimeout: Duration = .seconds(5)
    ) {
        self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.database = database
        self.credentials = credentials
        self.caFile = caFile
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout
    }

    /// The URL (with any `user:password@` part redacted) and database, never the credentials.
    public var description: String { "\(Self.redacted(url)) (database \(database))" }

    /// `url` with the user-info part (`user:password@`) replaced by `<redacted>@`.
    public static func redacted(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@"),
            !url[scheme.upperBound..<at].contains("/")
        else { return url }
        return String(url[..<scheme.upperBound]) + "<redacted>" + String(url[at...])
    }
}

/// A ClickHouse user and password. Its descriptions never show the password.
public struct ClickHouseCredentials: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    /// Reads `CLICKHOUSE_USER` and `CLICKHOUSE_PASSWORD`, or the password from `passwordFile`
    /// (trailing newline removed). Returns `nil` when neither user nor password is given.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment,
        passwordFile: String? = nil
    ) throws -> ClickHouseCredentials? {
        var password = environment["CLICKHOUSE_PASSWORD"]
        if let passwordFile = passwordFile ?? environment["CLICKHOUSE_PASSWORD_FILE"] {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw ClickHouseConfigurationError(
                    "cannot read the ClickHouse password file \(passwordFile): check that it exists and is readable"
                )
            }
            password = text.trimmingCharacters(in: .newlines)
        }
        let user = environment["CLICKHOUSE_USER"]
        if user == nil && password == nil { return nil }
        return ClickHouseCredentials(user: user ?? "default", password: password ?? "")
    }

    public var description: String { "\(user):<redacted>" }
    public var debugDescription: String { description }
}

/// A configuration problem found before any request is sent.
public struct ClickHouseConfigurationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The answer to a successful request.
public struct ClickHouseResponse: Sendable {
    /// HTTP status (2xx).
    public var status: Int
    /// The body as sent by the server.
    public var body: [UInt8]
    /// Connections libcurl opened for this request (`CURLINFO_NUM_CONNECTS`): 0 when it went
    /// over a reused keep-alive connection, 1 on a fresh one.
    public var newConnections: Int

    /// The body decoded as UTF-8.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The body split into lines, without the trailing empty line (for `TabSeparated` answers).
    public var lines: [Substring] {
        let text = self.text
        guard !text.isEmpty else { return [] }
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast(text.hasSuffix("\n") ? 1 : 0).map { $0 }
    }
}

/// An HTTP client for one ClickHouse server, built on libcurl: reads go over a reused keep-alive
/// connection, writes each over a fresh one (see ``ClickHouseRequestKind``).
///
/// Why writes never reuse a connection: when a reused connection dies before the first byte of
/// the answer, libcurl re-sends the request on a new connection by itself (`Curl_retry_request`,
/// POST bodies included), and the caller only sees the second attempt's outcome. For an
/// `INSERT` that the server applied before the connection died, that is a silent duplicate
/// answered `200`, or a refused reconnect that looks like "never sent". A fresh connection per
/// write costs one TCP (and TLS) handshake: against 18.16 on loopback without TLS, 1,000
/// single-row inserts took 0.6–3.1 ms each on fresh connections and 1.1–3.4 ms on a reused one
/// (three rounds on a shared two-core machine: the difference is below the noise); the sink sends
/// at most a few batches a second.
///
/// A connection is used by one thread at a time (it is not `Sendable`); open one per worker.
/// Requests are blocking: the sink runs them on its own thread.
public final class ClickHouseConnection {
    public let endpoint: ClickHouseEndpoint
    private let handle: UnsafeMutableRawPointer
    /// Whether libcurl's cache may hold an idle connection that the next idempotent request
    /// reuses (then a refused connect may follow a silent re-send on a dead one). Writes neither
    /// use nor close it.
    private var mayHoldIdleConnection = false

    private static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_ALL))
    }()

    public init(endpoint: ClickHouseEndpoint) throws(ClickHouseConfigurationError) {
        _ = Self.globalInit
        guard let handle = curl_easy_init() else {
            throw ClickHouseConfigurationError("libcurl could not create a handle (out of memory?)")
        }
        self.endpoint = endpoint
        self.handle = handle
    }

    deinit {
        curl_easy_cleanup(handle)
    }

    /// Sends `query` to the server, with `body` (if any) as the POST data that follows it, and
    /// returns the answer. The query goes in the URL, so data values belong in `body`.
    ///
    /// A `2xx` answer whose body ends with an exception (the server failed while streaming the
    /// result) is thrown as ``ClickHouseError/server(code:status:message:request:)`` with that
    /// status; see ``ClickHouseError/streamedException(body:exceptionCodeHeader:exceptionTag:trustLastLine:)``.
    ///
    /// - Parameters:
    ///   - settings: ClickHouse settings sent as URL parameters (e.g. `max_execution_time`, or
    ///     ``wholeResult`` for a result that must be complete).
    ///   - queryID: sent as `query_id`, so that the query can be found in `system.processes`.
    ///   - useDatabase: whether to send `database=` (off for `CREATE DATABASE`).
    ///   - kind: how to send it and classify its failures; `nil` infers it from the query
    ///     (``ClickHouseRequestKind/inferred(from:)``: only reads reuse connections).
    public func execute(
        _ query: String,
        body: [UInt8]? = nil,
        settings: [String: String] = [:],
        queryID: String? = nil,
        useDatabase: Bool = true,
        kind: ClickHouseRequestKind? = nil
    ) throws(ClickHouseError) -> ClickHouseResponse {
        var parameters: [(String, String)] = [("query", query)]
        if useDatabase { parameters.append(("database", endpoint.database)) }
        if let queryID { parameters.append(("query_id", queryID)) }
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) { parameters.append((key, value)) }
        let url = endpoint.url + "/?" + parameters.map { "\($0.0)=\(Self.percentEncode($0.1))" }.joined(separator: "&")
        return try perform(
            url: url, body: body ?? [], kind: kind ?? .inferred(from: query), wholeResult: settings["wait_end_of_query"] == "1"
        )
    }

    /// Settings that make the server buffer the whole result before answering
    /// (`wait_end_of_query=1`, an HTTP-interface parameter that 18.16 and current servers
    /// accept): a failure while computing it is then a `500` answer, never a `200` whose result
    /// breaks off, so a `2xx` means the result is complete. For queries whose answer decides what
    /// is skipped or restored (recovery state). Costs server memory (or a temporary file) for
    /// the result.
    public static let wholeResult: [String: String] = ["wait_end_of_query": "1"]

    private static let unreserved: CharacterSet = {
        var set = CharacterSet.alphanumerics
        set.insert(charactersIn: "-._~")
        return set
    }()

    private static func percentEncode(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: unreserved) ?? value
    }

    private final class Exchange {
        var body: [UInt8] = []
        var exceptionCodeHeader: String?
        var exceptionTag: String?
        var serverClosesConnection = false
    }

    private func perform(url: String, body: [UInt8], kind: ClickHouseRequestKind, wholeResult: Bool) throws(ClickHouseError) -> ClickHouseResponse {
        curl_easy_reset(handle)
        let exchange = Exchange()
        let context = Unmanaged.passUnretained(exchange).toOpaque()
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)

        let code: CURLcode = url.withCString { urlPointer in
            body.withUnsafeBufferPointer { bodyPointer in
                errorBuffer.withUnsafeMutableBufferPointer { errorPointer in
                    ccurl_setopt_ptr(handle, CURLOPT_URL, urlPointer)
                    ccurl_setopt_long(handle, CURLOPT_POST, 1)
                    ccurl_setopt_ptr(handle, CURLOPT_POSTFIELDS, bodyPointer.baseAddress ?? UnsafePointer(bitPattern: 1))
                    ccurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
                    ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
                    ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Self.milliseconds(endpoint.requestTimeout))
                    ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(endpoint.connectTimeout))
                    ccurl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1)
                    if kind == .nonIdempotent {
                        ccurl_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1)
                        ccurl_setopt_long(handle, CURLOPT_FORBID_REUSE, 1)
                    }
                    ccurl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorPointer.baseAddress)
                    ccurl_setopt_write_cb(handle) { data, size, count, context in
                        let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
                        let length = size * count
                        data!.withMemoryRebound(to: UInt8.self, capacity: length) {
                            exchange.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
                        }
                        return length
                    }
                    ccurl_setopt_ptr(handle, CURLOPT_WRITEDATA, context)
                    ccurl_setopt_header_cb(handle) { data, size, count, context in
                        let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
                        let length = size * count
                        let line = data!.withMemoryRebound(to: UInt8.self, capacity: length) {
                            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
                        }
                        let lowercased = line.lowercased()
                        func value(_ prefix: String) -> String? {
                            guard lowercased.hasPrefix(prefix) else { return nil }
                            return String(line.dropFirst(prefix.count)).trimmingCharacters(in: .whitespacesAndNewlines)
                        }
                        if let code = value("x-clickhouse-exception-code:") { exchange.exceptionCodeHeader = code }
                        if let tag = value("x-clickhouse-exception-tag:") { exchange.exceptionTag = tag }
                        if value("connection:")?.lowercased() == "close" { exchange.serverClosesConnection = true }
                        return length
                    }
                    ccurl_setopt_ptr(handle, CURLOPT_HEADERDATA, context)
                    // No "Expect: 100-continue" round trip for large bodies.
                    var headers: UnsafeMutablePointer<curl_slist>? = curl_slist_append(nil, "Expect:")
                    headers = curl_slist_append(headers, "Content-Type: text/plain; charset=utf-8")
                    ccurl_setopt_ptr(handle, CURLOPT_HTTPHEADER, headers)
                    defer { curl_slist_free_all(headers) }
                    return withCredentials { curl_easy_perform(handle) }
                }
            }
        }
        let curlMessage = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let couldReuse = mayHoldIdleConnection && kind == .idempotent
        if kind == .idempotent {
            mayHoldIdleConnection = code == CURLE_OK && !exchange.serverClosesConnection
        }

        guard code == CURLE_OK else {
            let message = curlMessage.isEmpty ? String(cString: curl_easy_strerror(code)) : curlMessage
            var failure = Self.transportFailure(code)
            if failure == .connectionRefused && couldReuse { failure = .reconnectRefused }
            throw .transport(failure, message: "\(message) (\(ClickHouseEndpoint.redacted(endpoint.url)))")
        }
        var status = 0
        ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        guard (200..<300).contains(status) else {
            let text = String(decoding: exchange.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let code = ClickHouseError.exceptionCode(header: exchange.exceptionCodeHeader, body: text)
            throw .server(code: code, status: status, message: text, request: kind)
        }
        if let (code, message) = ClickHouseError.streamedException(
            body: exchange.body, exceptionCodeHeader: exchange.exceptionCodeHeader, exceptionTag: exchange.exceptionTag,
            trustLastLine: !wholeResult
        ) {
            throw .server(code: code, status: status, message: message, request: kind)
        }
        var connects = 0
        ccurl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
        return ClickHouseResponse(status: status, body: exchange.body, newConnections: connects)
    }

    private func withCredentials<T>(_ body: () -> T) -> T {
        if let caFile = endpoint.caFile {
            caFile.withCString { _ = ccurl_setopt_ptr(handle, CURLOPT_CAINFO, $0) }
        }
        guard let credentials = endpoint.credentials else { return body() }
        // libcurl copies string options, so the pointers need to live only for the call.
        credentials.user.withCString { _ = ccurl_setopt_ptr(handle, CURLOPT_USERNAME, $0) }
        credentials.password.withCString { _ = ccurl_setopt_ptr(handle, CURLOPT_PASSWORD, $0) }
        ccurl_setopt_long(handle, CURLOPT_HTTPAUTH, 1)  // CURLAUTH_BASIC
        return body()
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    private static func transportFailure(_ code: CURLcode) -> ClickHouseError.TransportFailure {
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .connectionRefused
        case CURLE_OPERATION_TIMEDOUT:
            return .timeout
        case CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE:
            return .connectionReset
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE:
            return .tls
        default:
            return .other
        }
    }
}

extension ClickHouseConnection {
    /// Runs a statement that returns nothing of interest (DDL, `INSERT ... SELECT`).
    public func run(_ statement: String, settings: [String: String] = [:]) throws(ClickHouseError) {
        _ = try execute(statement, settings: settings)
    }

    /// Runs a query and returns its `TabSeparated` rows, each split into fields (escapes kept).
    /// Pass ``ClickHouseConnection/wholeResult`` as `settings` when a truncated result must not
    /// be mistaken for a complete one.
    public func rows(_ query: String, settings: [String: String] = [:]) throws(ClickHouseError) -> [[Substring]] {
        try execute(query, settings: settings).lines.map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
    }

    /// Runs a query that returns a single value and gives it as text.
    public func scalar(_ query: String, settings: [String: String] = [:]) throws(ClickHouseError) -> String {
        try execute(query, settings: settings).text.trimmingCharacters(in: .newlines)
    }
}
