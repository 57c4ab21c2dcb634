import Foundation

/// `ctr-dev-broker` running as a child process.
public final class DevBrokerProcess: @unchecked Sendable {
    public let child: ChildProcess
    public let bootstrapServers: String
    public let controlFile: URL

    public init(partitions: Int = 3, topics: String = "impressions,clicks,ctr-dlq", directory: URL) throws {
        let bootstrapFile = directory.appendingPathComponent("bootstrap.txt")
        controlFile = directory.appendingPathComponent("broker-control")
        try TestTier.requireServer("the Kafka-protocol dev broker (ctr-dev-broker)")
        child = try ChildProcess(
            PackagePaths.builtExecutable("ctr-dev-broker"),
            ["--partitions", "\(partitions)", "--topics", topics, "--bootstrap-file", bootstrapFile.path, "--control-file", controlFile.path],
            logDirectory: directory, name: "dev-broker"
        )
        guard eventually(timeout: 20, { FileManager.default.fileExists(atPath: bootstrapFile.path) }) else {
            throw TestSupportError("ctr-dev-broker did not write \(bootstrapFile.path): \(child.stderr)")
        }
        bootstrapServers = try String(contentsOf: bootstrapFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Sends a fault-injection command (see `ctr-dev-broker --help`).
    public func control(_ command: String) throws {
        let handle = try FileHandle(forWritingTo: controlFile)
        handle.write(Data((command + "\n").utf8))
        try handle.close()
    }

    deinit { child.stop() }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
