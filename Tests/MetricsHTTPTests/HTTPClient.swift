import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A raw TCP client for the metrics server tests: it can connect and stay silent, send a request
/// and never read, or read a whole response. Every blocking read has a receive timeout as a
/// fail-safe, so a server that never answers fails the test instead of hanging it.
final class RawClient {
    let descriptor: Int32

    /// Connects to 127.0.0.1:`port`; a `receiveBuffer` shrinks the socket's receive buffer first
    /// (a client that reads slowly, or never).
    init(port: Int, receiveBuffer: Int32? = nil, failSafe: Int = 60) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ClientError("socket: \(String(cString: strerror(errno)))") }
        if var size = receiveBuffer {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: failSafe, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // On a throw the (fully initialized) object is released and deinit closes the socket.
        guard connected == 0 else { throw ClientError("connect to port \(port): \(String(cString: strerror(errno)))") }
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ClientError("send: \(String(cString: strerror(errno)))") }
            sent += count
        }
    }

    /// Reads until the server closes the connection; throws when the fail-safe timeout passes first.
    func readToEnd() throws -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 { return received }
            if count < 0 {
                if errno == ECONNRESET { return received }
                throw ClientError("recv after \(received.count) bytes: \(String(cString: strerror(errno)))")
            }
            received.append(contentsOf: buffer[0..<count])
        }
    }

    /// Sends `GET path` and returns the status code and body.
    func get(_ path: String) throws -> (status: Int, body: String) {
        try send("GET \(path) HTTP/1.1\r\nHost: test\r\n\r\n")
        let text = String(decoding: try readToEnd(), as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
            throw ClientError("not an HTTP response: \(text.prefix(200))")
        }
        return (status, String(text[headEnd.upperBound...]))
    }
}

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Waits until `condition` holds, checking every `interval`; false if `timeout` (a fail-safe, not
/// a performance threshold) passes first.
func waitUntil(timeout: Duration = .seconds(60), interval: Duration = .milliseconds(10), _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: Double(interval.components.attoseconds) / 1e18 + Double(interval.components.seconds))
    }
    return try condition()
}
