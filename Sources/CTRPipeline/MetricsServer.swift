import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.0 server for `/metrics` (Prometheus text), `/health` (live) and `/ready`
/// (consuming and able to write), on its own thread. One request per connection.
public final class MetricsServer: @unchecked Sendable {
    private let socketDescriptor: Int32
    public let port: Int
    private let render: @Sendable () -> String
    private let isReady: @Sendable () -> Bool

    /// Binds `host:port` (port 0 picks a free port, see ``port``).
    ///
    /// - Parameters:
    ///   - render: the metrics in the Prometheus text format.
    ///   - isReady: whether `/ready` answers 200.
    public init(
        host: String = "0.0.0.0", port: Int, render: @escaping @Sendable () -> String, isReady: @escaping @Sendable () -> Bool
    ) throws(PipelineError) {
        self.render = render
        self.isReady = isReady
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw PipelineError("cannot create the metrics socket: \(String(cString: strerror(errno)))") }
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(descriptor)
            throw PipelineError("invalid metrics host \(host): use an IPv4 address such as 0.0.0.0 or 127.0.0.1")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw PipelineError("cannot listen on \(host):\(port) for metrics: \(reason); choose another --metrics-port")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.socketDescriptor = descriptor
    }

    /// Starts serving on a background thread.
    public func start() {
        let thread = Thread { [self] in serve() }
        thread.name = "metrics-http"
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(socketDescriptor, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            respond(client)
            close(client)
        }
    }

    private func respond(_ client: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(client, &buffer, buffer.count, 0)
        guard count > 0 else { return }
        let requestLine = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = requestLine.split(separator: " ")
        let path = parts.count >= 2 ? String(parts[1].split(separator: "?").first ?? "") : ""
        let (status, contentType, body): (String, String, String)
        switch path {
        case "/metrics":
            (status, contentType, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render())
        case "/health", "/healthz", "/live":
            (status, contentType, body) = ("200 OK", "text/plain", "ok\n")
        case "/ready", "/readyz":
            let ready = isReady()
            (status, contentType, body) = ready ? ("200 OK", "text/plain", "ready\n") : ("503 Service Unavailable", "text/plain", "not ready\n")
        default:
            (status, contentType, body) = ("404 Not Found", "text/plain", "try /metrics, /health or /ready\n")
        }
        let bodyBytes = Array(body.utf8)
        let head = "HTTP/1.0 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        let response = Array(head.utf8) + bodyBytes
        var sent = 0
        while sent < response.count {
            let written = response[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return }
            sent += written
        }
    }
}
