import Dispatch
import Foundation
import Synchronization

/// Paths of the package and of its built executables, for tests that run the binaries as a
/// user would.
public enum PackagePaths {
    /// The package root (found from this file's path).
    public static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Directory of the built products: `CTR_BIN_DIR` if set, else the debug build folder.
    public static var binaries: URL {
        if let directory = ProcessInfo.processInfo.environment["CTR_BIN_DIR"] { return URL(fileURLWithPath: directory) }
        return root.appendingPathComponent(".build/debug")
    }

    public static func executable(_ name: String) -> String { binaries.appendingPathComponent(name).path }

    /// The path of a built executable, or an error saying how to build it.
    public static func builtExecutable(_ name: String) throws -> String {
        let path = executable(name)
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSupportError("\(name) is not built (expected at \(path)): run `swift build` first, or set CTR_BIN_DIR")
        }
        return path
    }

    /// A file of `Tests/Fixtures` (the repository carries every file its tests read).
    public static func fixture(_ name: String) -> URL { root.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name) }

    /// The migrations the package ships.
    public static var migrationsDirectory: String { root.appendingPathComponent("migrations").path }

    /// A fresh directory holding `files` (name: text), e.g. migrations of a test's own.
    public static func directory(_ files: [String: String]) throws -> String {
        let url = try temporaryDirectory("migrations")
        for (name, text) in files { try text.write(to: url.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return url.path
    }

    /// Number of migrations the package ships (later work adds more).
    public static var shippedMigrationCount: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: migrationsDirectory)) ?? []).filter { $0.hasSuffix(".sql") }.count
    }

    /// A fresh temporary directory.
    public static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A TCP port that was free a moment ago.
    public static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The first of `count` consecutive loopback ports that are free now, below the ephemeral
    /// range (for servers whose ports are derived from a base, like scripts/clickhouse-cluster.sh).
    public static func freePortRange(count: Int) -> Int {
        func isFree(_ port: Int) -> Bool {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(descriptor) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            } == 0
        }
        while true {
            let base = Int.random(in: 20_000..<30_000)
            if (base..<base + count).allSatisfy(isFree) { return base }
        }
    }
}

/// The outcome of a finished command.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// A child process whose output goes to files, stopped when the test is done.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    public let stdoutFile: URL
    public let stderrFile: URL

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], logDirectory: URL, name: String) throws {
        stdoutFile = logDirectory.appendingPathComponent("\(name).out")
        stderrFile = logDirectory.appendingPathComponent("\(name).err")
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
    }

    public var stdout: String { (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Whether the process has not exited yet.
    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits up to `timeout` seconds for the exit; kills it after that.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, timeout: Double = 30) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { stop(signal: SIGKILL, timeout: 5) }
    }

    /// Runs the built `schema-tool` with `arguments` to completion.
    public static func schemaTool(_ arguments: [String]) throws -> CommandResult {
        try run(PackagePaths.builtExecutable("schema-tool"), arguments)
    }

    /// Runs a command to completion and returns its status and output.
    ///
    /// Standard output and standard error are drained concurrently (and `input` is written
    /// concurrently), so a child that fills one pipe while the other is being read cannot
    /// deadlock it.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: Data? = nil) throws -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inputPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
        do {
            try process.run()
        } catch {
            throw TestSupportError("cannot run \(executable): \(error)")
        }
        let group = DispatchGroup()
        let stderrData = OutputBuffer()
        DispatchQueue.global().async(group: group) {
            let data = err.fileHandleForReading.readDataToEndOfFile()
            stderrData.data.withLock { $0 = data }
        }
        if let input {
            let writer = inputPipe.fileHandleForWriting
            DispatchQueue.global().async(group: group) {
                writer.write(input)
                try? writer.close()
            }
        }
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return CommandResult(
            status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
            stderr: String(decoding: stderrData.data.withLock { $0 }, as: UTF8.self)
        )
    }
}

/// Output collected on another thread.
private final class OutputBuffer: Sendable {
    let data = Mutex(Data())
}

/// Polls `condition` until it holds or `timeout` seconds pass; returns whether it held.
public func eventually(timeout: Double, interval: Double = 0.2, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: interval)
    }
    return try condition()
}
