import Foundation
import Synchronization

/// A keep-alive HTTP proxy on loopback in front of a real ClickHouse server that injects faults:
/// `scripts/fault-proxy.py` (the same proxy the fault campaign uses), run as a child process and
/// driven through its stdin/stdout command protocol.
///
/// Faults are queued; each applies to one request (or one INSERT request, see ``Requests``), in
/// order; later ones pass. Connections are kept alive both ways, so a client that reuses
/// connections really reuses them through the proxy.
public final class FaultProxy: @unchecked Sendable {
    /// Which requests the queued faults apply to.
    public enum Requests: String, Sendable {
        /// Every request, in the order the proxy reads them.
        case all
        /// INSERT requests only; other requests (reads, verification queries) always pass.
        case inserts = "insert"
    }

    public enum Fault: Sendable, Equatable {
        /// Forward both ways.
        case none
        /// Reset the client connection without forwarding (the request never arrives).
        case resetBeforeForwarding
        /// Forward the request, wait for the server's whole answer (the insert is applied), then
        /// reset the client connection before any byte of the answer.
        case dropResponse
        /// Like ``dropResponse``, but close the client connection cleanly (an empty reply).
        case closeAfterApply
        /// Like ``dropResponse``, then refuse new connections for `seconds`.
        case refuseAfterApply(seconds: Double)
        /// Answer `status` with a ClickHouse-style error body carrying `code`, without forwarding.
        case error(status: Int, code: Int)
        /// Forward, wait for the answer (the insert is applied), and replace it with `status` and
        /// an error body carrying `code`.
        case errorAfterApply(status: Int, code: Int)
        /// Forward, but hold the answer back for `seconds`.
        case delay(seconds: Double)
        /// Hold the request before forwarding until ``release()`` (or `seconds`, if given), then
        /// forward it: a straggler that reaches the server after its client gave up.
        case hold(seconds: Double?)

        var mode: String {
            switch self {
            case .none: "pass"
            case .resetBeforeForwarding: "reset_before"
            case .dropResponse: "reset_after_apply"
            case .closeAfterApply: "close_after_apply"
            case .refuseAfterApply(let seconds): "refuse_after_apply:\(seconds)"
            case .error(let status, let code): "error_before:\(status):\(code)"
            case .errorAfterApply(let status, let code): "error_after_apply:\(status):\(code)"
            case .delay(let seconds): "delay:\(seconds)"
            case .hold(let seconds): seconds.map { "hold:\($0)" } ?? "hold"
            }
        }
    }

    /// The proxy's counters.
    public struct Statistics: Decodable, Sendable {
        /// Client connections accepted.
        public var connections: Int
        /// Requests read from clients.
        public var requests: Int
        /// INSERT requests read from clients.
        public var insertsReceived: Int
        /// INSERT requests sent to the server (each may have been applied).
        public var insertsForwarded: Int
        /// INSERT requests that arrived on a client connection that had carried a request before.
        public var insertsOnReusedConnection: Int
        /// Requests held right now.
        public var held: Int

        enum CodingKeys: String, CodingKey {
            case connections, requests, held
            case insertsReceived = "inserts_received", insertsForwarded = "inserts_forwarded"
            case insertsOnReusedConnection = "inserts_on_reused_connection"
        }

        public init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            func count(_ key: CodingKeys) throws -> Int { try container.decodeIfPresent(Int.self, forKey: key) ?? 0 }
            connections = try count(.connections)
            requests = try count(.requests)
            insertsReceived = try count(.insertsReceived)
            insertsForwarded = try count(.insertsForwarded)
            insertsOnReusedConnection = try count(.insertsOnReusedConnection)
            held = try count(.held)
        }
    }

    public let port: Int
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let exchange = Mutex<[UInt8]>([])

    /// Starts the proxy on a free loopback port, forwarding to `127.0.0.1:upstreamPort`, with
    /// faults applying to `faultsApplyTo`.
    public init(upstreamPort: Int, faultsApplyTo requests: Requests = .all) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", PackagePaths.root.appendingPathComponent("scripts/fault-proxy.py").path, "--upstream-port", "\(upstreamPort)",
            "--match", requests.rawValue,
        ]
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let descriptor = output.fileHandleForReading.fileDescriptor
        let first = exchange.withLock { buffered in Self.readLine(descriptor, &buffered) }
        guard let first, first.hasPrefix("listening "), let port = Int(first.dropFirst("listening ".count)) else {
            process.terminate()
            throw TestSupportError("scripts/fault-proxy.py did not start: \(first ?? "no output")")
        }
        self.port = port
    }

    deinit {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    /// Applies `faults` to the next requests (or INSERT requests), one each, in order; later ones pass.
    public func inject(_ faults: [Fault]) {
        for fault in faults { _ = command("inject \(fault.mode)") }
    }

    /// Forwards every held request now; returns how many there were.
    @discardableResult
    public func release() -> Int {
        Int(command("release").split(separator: " ").last ?? "") ?? 0
    }

    /// Refuses new connections for `seconds` (connections already open stay).
    public func refuseConnections(for seconds: Double) {
        _ = command("refuse \(seconds)")
    }

    /// The proxy's counters now.
    public func statistics() throws -> Statistics {
        try JSONDecoder().decode(Statistics.self, from: Data(command("stats").utf8))
    }

    /// Client connections accepted so far.
    public var connections: Int { (try? statistics().connections) ?? 0 }

    private func command(_ line: String) -> String {
        exchange.withLock { buffered in
            input.fileHandleForWriting.write(Data((line + "\n").utf8))
            return Self.readLine(output.fileHandleForReading.fileDescriptor, &buffered) ?? ""
        }
    }

    /// Reads up to the next newline from `descriptor`, keeping what follows in `buffered`.
    private static func readLine(_ descriptor: Int32, _ buffered: inout [UInt8]) -> String? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let newline = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let count = read(descriptor, &chunk, chunk.count)
            if count <= 0 { return nil }
            buffered.append(contentsOf: chunk[..<count])
        }
    }
}
