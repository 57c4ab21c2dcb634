import Foundation
import Synchronization

/// A TCP relay on loopback in front of ClickHouse that keeps connections alive (unlike
/// `FaultProxy`, which closes each after one answer), so libcurl reuses them as it does in
/// production, and that injects faults into the requests whose first bytes contain a marker
/// (a table name as it appears percent-encoded in the URL).
final class KeepAliveRelay: @unchecked Sendable {
    enum Action: Sendable {
        /// Forward the request; when the server's answer begins, reset the client connection
        /// before passing any byte on (the statement ran, its answer is lost).
        case resetAfterAnswer
        /// Answer `500` with a ClickHouse error without forwarding.
        case fail
        /// Forward, and hold the answer back for `seconds`.
        case delay(seconds: Double)
    }

    struct Rule: Sendable {
        var marker: String
        var action: Action
        /// Matching requests let through before the rule applies.
        var skip = 0
        /// Applies to every matching request after the skipped ones, not just the first.
        var repeats = false
    }

    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let rules: Mutex<[Rule]>
    private let applied = Mutex(0)

    /// Requests a rule was applied to.
    var faults: Int { applied.withLock { $0 } }

    init(upstreamPort: Int, rules: [Rule]) throws {
        self.upstreamPort = upstreamPort
        self.rules = Mutex(rules)
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else { throw RelayError() }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = descriptor
        Thread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }
                Thread { [self] in relay(client) }.start()
            }
        }.start()
    }

    struct RelayError: Error {}

    var url: String { "http://127.0.0.1:\(port)" }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return address
    }

    /// The action for a request that starts with `bytes`, consuming the rule.
    private func action(for bytes: [UInt8]) -> Action? {
        let text = String(decoding: bytes.prefix(4096), as: UTF8.self)
        guard text.hasPrefix("POST ") || text.hasPrefix("GET ") else { return nil }
        return rules.withLock { rules in
            guard let index = rules.firstIndex(where: { text.contains($0.marker) }) else { return nil }
            if rules[index].skip > 0 {
                rules[index].skip -= 1
                return nil
            }
            let action = rules[index].action
            if !rules[index].repeats { rules.remove(at: index) }
            applied.withLock { $0 += 1 }
            return action
        }
    }

    private func relay(_ client: Int32) {
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: upstreamPort)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(client)
            close(upstream)
            return
        }
        // What the server → client direction must do with the next answer.
        let pending = Mutex<Action?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = recv(upstream, &buffer, buffer.count, 0)
                if count <= 0 { break }
                let action = pending.withLock { action -> Action? in
                    defer { action = nil }
                    return action
                }
                if case .resetAfterAnswer = action {
                    var linger = linger(l_onoff: 1, l_linger: 0)
                    setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                    shutdown(client, Int32(SHUT_RDWR))
                    break
                }
                if case .delay(let seconds) = action { Thread.sleep(forTimeInterval: seconds) }
                if !Self.sendAll(client, Array(buffer[0..<count])) { break }
            }
            shutdown(client, Int32(SHUT_RDWR))
            shutdown(upstream, Int32(SHUT_RDWR))
            done.signal()
        }.start()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(client, &buffer, buffer.count, 0)
            if count <= 0 { break }
            let chunk = Array(buffer[0..<count])
            switch action(for: chunk) {
            case .fail:
                let body = "Code: 999, e.displayText() = DB::Exception: injected by KeepAliveRelay, e.what() = DB::Exception\n"
                _ = Self.sendAll(client, Array("HTTP/1.1 500 Injected\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
                shutdown(client, Int32(SHUT_RDWR))
                shutdown(upstream, Int32(SHUT_RDWR))
            case let action?:
                pending.withLock { $0 = action }
                if !Self.sendAll(upstream, chunk) { break }
                continue
            case nil:
                if !Self.sendAll(upstream, chunk) { break }
                continue
            }
            break
        }
        shutdown(upstream, Int32(SHUT_RDWR))
        done.wait()
        close(client)
        close(upstream)
    }

    private static func sendAll(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let written = bytes[sent...].withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written <= 0 { return false }
            sent += written
        }
        return true
    }
}
