import Foundation
import Synchronization

/// A TCP proxy on loopback in front of a real server that injects faults into HTTP exchanges:
/// answers 5xx or a retryable ClickHouse error itself, resets the connection before or after
/// forwarding the request, or delays the answer.
public final class FaultProxy: @unchecked Sendable {
    public enum Fault: Sendable, Equatable {
        /// Forward both ways.
        case none
        /// Close the client connection without forwarding (the request never arrives).
        case resetBeforeForwarding
        /// Forward the request, wait for the server's answer, then close the client connection
        /// without passing the answer on (the insert lands, its acknowledgement is lost).
        case dropResponse
        /// Answer `status` with a ClickHouse-style error body carrying `code`, without forwarding.
        case error(status: Int, code: Int)
        /// Forward, but hold the answer back for `seconds`.
        case delay(seconds: Double)
    }

    public let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let faults = Mutex<[Fault]>([])
    private let counter = Mutex(0)

    /// Listens on a free loopback port and forwards to `127.0.0.1:upstreamPort`.
    public init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else { throw TestSupportError("proxy cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = descriptor
        Thread { [self] in acceptLoop() }.start()
    }

    /// Applies `faults` to the next connections, one each, in order; later connections pass.
    public func inject(_ faults: [Fault]) {
        self.faults.withLock { $0.append(contentsOf: faults) }
    }

    /// Connections handled so far.
    public var connections: Int { counter.withLock { $0 } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            counter.withLock { $0 += 1 }
            let fault = faults.withLock { $0.isEmpty ? Fault.none : $0.removeFirst() }
            Thread { [self] in handle(client, fault) }.start()
        }
    }

    private func handle(_ client: Int32, _ fault: Fault) {
        defer { close(client) }
        switch fault {
        case .resetBeforeForwarding:
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            return
        case .error(let status, let code):
            _ = readRequest(client)
            let body = "Code: \(code), e.displayText() = DB::Exception: injected by FaultProxy, e.what() = DB::Exception\n"
            let response = "HTTP/1.1 \(status) Injected\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            sendAll(client, Array(response.utf8))
            return
        default:
            break
        }
        guard let request = readRequest(client) else { return }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(upstream) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(upstreamPort).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        // Ask the server to close after answering, so that its answer ends at EOF.
        let rewritten = Self.forceClose(request)
        sendAll(upstream, rewritten)
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(upstream, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response.append(contentsOf: buffer[0..<count])
        }
        switch fault {
        case .dropResponse:
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            return
        case .delay(let seconds):
            Thread.sleep(forTimeInterval: seconds)
        default:
            break
        }
        sendAll(client, response)
    }

    /// Reads one HTTP request (headers and a Content-Length body).
    private func readRequest(_ socket: Int32) -> [UInt8]? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let headerEnd = Self.find([13, 10, 13, 10], in: data) {
                let header = String(decoding: data[0..<headerEnd], as: UTF8.self).lowercased()
                var length = 0
                for line in header.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
                if data.count >= headerEnd + 4 + length { return data }
            }
            let count = recv(socket, &buffer, buffer.count, 0)
            if count <= 0 { return data.isEmpty ? nil : data }
            data.append(contentsOf: buffer[0..<count])
        }
    }

    private static func forceClose(_ request: [UInt8]) -> [UInt8] {
        guard let headerEnd = find([13, 10, 13, 10], in: request) else { return request }
        let header = String(decoding: request[0..<headerEnd], as: UTF8.self)
            .split(separator: "\r\n").filter { !$0.lowercased().hasPrefix("connection:") }.joined(separator: "\r\n")
        return Array((header + "\r\nConnection: close\r\n\r\n").utf8) + request[(headerEnd + 4)...]
    }

    private static func find(_ pattern: [UInt8], in data: [UInt8]) -> Int? {
        guard data.count >= pattern.count else { return nil }
        for index in 0...(data.count - pattern.count) where data[index] == pattern[0] && Array(data[index..<index + pattern.count]) == pattern {
            return index
        }
        return nil
    }

    private func sendAll(_ socket: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let written = bytes[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written <= 0 { return }
            sent += written
        }
    }
}
