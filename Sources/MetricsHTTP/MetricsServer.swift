import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where and how the metrics server listens.
public struct MetricsServerConfiguration: Sendable {
    /// The address to bind: an IPv4 or IPv6 literal or a host name. `127.0.0.1` keeps the
    /// endpoints on the machine; a container binds `0.0.0.0` so that Prometheus and probes reach it.
    public var host: String
    /// The port; 0 picks a free one (see ``MetricsServer/port``).
    public var port: Int
    /// How long a client may take to send its whole request head after connecting.
    public var readTimeout: Duration
    /// How long a client may take to receive the whole response once it is ready.
    public var writeTimeout: Duration
    /// Connections open at once. When a new connection would exceed it, the oldest open connection
    /// is closed, so a newly connecting probe is always served.
    public var maximumConnections: Int

    public init(
        host: String = "127.0.0.1", port: Int, readTimeout: Duration = .seconds(5), writeTimeout: Duration = .seconds(10),
        maximumConnections: Int = 64
    ) {
        self.host = host
        self.port = port
        self.readTimeout = readTimeout
        self.writeTimeout = writeTimeout
        self.maximumConnections = maximumConnections
    }
}

/// An error setting up the server, with the address it concerns.
public struct MetricsServerError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// A small HTTP/1.0 server for `/metrics`, `/health` and `/ready` (see ``MetricsEndpoints``), on
/// one thread of its own, independent of the pipeline thread.
///
/// Connections are served concurrently by one `poll(2)` loop over non-blocking sockets: a client
/// that connects and sends nothing, or requests `/metrics` and never reads, occupies only its own
/// connection until its read or write timeout closes it, never the loop. At most
/// ``MetricsServerConfiguration/maximumConnections`` are open; beyond that the oldest is closed.
/// An `accept` failure (`EMFILE` and the like) pauses accepting with backoff (``AcceptBackoff``)
/// and never ends the loop. One request per connection; every response closes it.
public final class MetricsServer: @unchecked Sendable {
    /// The port bound (the one chosen when the configuration said 0).
    public let port: Int
    public let configuration: MetricsServerConfiguration

    private let listener: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let endpoints: MetricsEndpoints
    private let onAcceptError: @Sendable (String) -> Void
    private let lifecycle = NSLock()
    private var started = false
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)
    private let openConnections = Atomic<Int>(0)

    /// Connections open now (accepted, not yet closed), as of the server thread's latest round.
    public var connectionCount: Int { openConnections.load(ordering: .relaxed) }

    /// Binds and listens; serving starts with ``start()``.
    ///
    /// - Parameter onAcceptError: told, on the server thread, about every `accept` failure that
    ///   pauses accepting (for a log line).
    public init(
        configuration: MetricsServerConfiguration, endpoints: MetricsEndpoints, onAcceptError: @escaping @Sendable (String) -> Void = { _ in }
    ) throws(MetricsServerError) {
        self.configuration = configuration
        self.endpoints = endpoints
        self.onAcceptError = onAcceptError
        guard configuration.maximumConnections > 0 else { throw MetricsServerError(description: "the metrics server needs at least one connection") }
        let (listener, port) = try Self.listen(host: configuration.host, port: configuration.port)
        var pipeDescriptors: [Int32] = [0, 0]
        guard pipe(&pipeDescriptors) == 0 else {
            close(listener)
            throw MetricsServerError(description: "cannot create the metrics server's wake-up pipe: \(Self.errorText())")
        }
        pipeDescriptors.forEach(Self.makeNonBlocking)
        self.listener = listener
        self.port = port
        self.wakeRead = pipeDescriptors[0]
        self.wakeWrite = pipeDescriptors[1]
    }

    deinit {
        stop()
    }

    /// Starts serving on a background thread named `metrics-http`.
    public func start() {
        lifecycle.lock()
        defer { lifecycle.unlock() }
        guard !started, !stopped else { return }
        started = true
        let thread = Thread { [self] in
            serve()
            finished.signal()
        }
        thread.name = "metrics-http"
        thread.start()
    }

    /// Stops serving, closes every connection and the listening socket, and returns once the
    /// server thread has ended. Idempotent.
    public func stop() {
        lifecycle.lock()
        let wasRunning = started && !stopped
        let alreadyStopped = stopped
        stopped = true
        lifecycle.unlock()
        guard !alreadyStopped else { return }
        if wasRunning {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
            finished.wait()
        }
        close(listener)
        close(wakeRead)
        close(wakeWrite)
    }

    // MARK: The loop

    private struct Connection {
        enum Phase {
            case reading([UInt8])
            case writing([UInt8], sent: Int)
        }

        let descriptor: Int32
        var deadline: ContinuousClock.Instant
        var phase: Phase
    }

    private func serve() {
        var connections: [Connection] = []
        var backoff = AcceptBackoff()
        var acceptPausedUntil: ContinuousClock.Instant?
        defer {
            connections.forEach { close($0.descriptor) }
            openConnections.store(0, ordering: .relaxed)
        }
        while true {
            var now = ContinuousClock.now
            connections.removeAll { connection in
                guard connection.deadline <= now else { return false }
                close(connection.descriptor)
                return true
            }
            openConnections.store(connections.count, ordering: .relaxed)
            if let until = acceptPausedUntil, until <= now { acceptPausedUntil = nil }

            var descriptors = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let listening = acceptPausedUntil == nil
            descriptors.append(pollfd(fd: listening ? listener : -1, events: Int16(POLLIN), revents: 0))
            for connection in connections {
                let events: Int32 = if case .reading = connection.phase { POLLIN } else { POLLOUT }
                descriptors.append(pollfd(fd: connection.descriptor, events: Int16(events), revents: 0))
            }
            let wakeAt = ([acceptPausedUntil].compactMap { $0 } + connections.map(\.deadline)).min()
            let timeout = wakeAt.map { Self.milliseconds(until: $0, from: now) } ?? -1
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready < 0 {
                if errno != EINTR { usleep(10_000) }
                continue
            }
            if descriptors[0].revents != 0 { return }
            now = ContinuousClock.now

            var closed = Set<Int32>()
            for (index, polled) in descriptors.enumerated().dropFirst(2) where polled.revents != 0 {
                let slot = index - 2
                if !advance(&connections[slot], now: now) {
                    close(connections[slot].descriptor)
                    closed.insert(connections[slot].descriptor)
                }
            }
            if !closed.isEmpty { connections.removeAll { closed.contains($0.descriptor) } }

            if listening, descriptors[1].revents != 0 {
                acceptPausedUntil = acceptAll(into: &connections, backoff: &backoff, now: now)
            }
            openConnections.store(connections.count, ordering: .relaxed)
        }
    }

    /// Accepts until the backlog is empty; returns when accepting should resume if it must pause.
    private func acceptAll(into connections: inout [Connection], backoff: inout AcceptBackoff, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK { return nil }
                switch backoff.failed(errno: code) {
                case .retry:
                    continue
                case .pause(let delay):
                    onAcceptError("metrics server: accept failed (\(Self.errorText(code))); pausing accepts for \(delay), open connections \(connections.count)")
                    return now + delay
                }
            }
            backoff.succeeded()
            Self.makeNonBlocking(client)
            if connections.count >= configuration.maximumConnections {
                close(connections.removeFirst().descriptor)
            }
            connections.append(Connection(descriptor: client, deadline: now + configuration.readTimeout, phase: .reading([])))
        }
    }

    /// Reads or writes what the socket allows; false when the connection is done.
    private func advance(_ connection: inout Connection, now: ContinuousClock.Instant) -> Bool {
        switch connection.phase {
        case .reading(var received):
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = recv(connection.descriptor, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            if count == 0 { return false }
            received.append(contentsOf: chunk[0..<count])
            let response: [UInt8]
            switch HTTPRequestHead.parse(received) {
            case .needMoreBytes:
                connection.phase = .reading(received)
                return true
            case .complete(let request):
                response = endpoints.respond(to: request).serialized(includeBody: request.method != "HEAD")
            case .invalid(let status, let reason):
                response = HTTPResponse(status: status, body: reason + "\n").serialized()
            }
            connection.phase = .writing(response, sent: 0)
            connection.deadline = now + configuration.writeTimeout
            return flush(&connection)
        case .writing:
            return flush(&connection)
        }
    }

    /// Sends what the socket takes of the response; false once all of it is sent (or on an error).
    private func flush(_ connection: inout Connection) -> Bool {
        guard case .writing(let response, var sent) = connection.phase else { return true }
        while sent < response.count {
            let written = response[sent...].withUnsafeBytes { send(connection.descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if written < 0 {
                guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return false }
                connection.phase = .writing(response, sent: sent)
                return true
            }
            sent += written
        }
        shutdown(connection.descriptor, Int32(SHUT_WR))
        return false
    }

    // MARK: Setup

    private static func listen(host: String, port: Int) throws(MetricsServerError) -> (Int32, Int) {
        guard (0...65535).contains(port) else { throw MetricsServerError(description: "metrics port \(port) is not in 0...65535") }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0, let first = results else {
            throw MetricsServerError(description: "invalid metrics host \(host): \(String(cString: gai_strerror(status))); use an address such as 127.0.0.1, 0.0.0.0 or ::")
        }
        defer { freeaddrinfo(results) }
        let descriptor = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw MetricsServerError(description: "cannot create the metrics socket: \(errorText())") }
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        guard bind(descriptor, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0, Glibc.listen(descriptor, 128) == 0 else {
            let reason = errorText()
            close(descriptor)
            throw MetricsServerError(description: "cannot listen on \(host):\(port) for metrics: \(reason); choose another --metrics-port or --metrics-host")
        }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        let family = Int32(address.ss_family)
        let bound: UInt16 = withUnsafePointer(to: &address) { pointer in
            if family == AF_INET6 {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
        return (descriptor, Int(bound))
    }

    private static func makeNonBlocking(_ descriptor: Int32) {
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
    }

    private static func milliseconds(until deadline: ContinuousClock.Instant, from now: ContinuousClock.Instant) -> Int32 {
        guard deadline > now else { return 0 }
        let (seconds, attoseconds) = (deadline - now).components
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: milliseconds)
    }

    private static func errorText(_ code: Int32 = errno) -> String {
        String(cString: strerror(code))
    }
}
