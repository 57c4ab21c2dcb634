import ClickHouseHTTP
import Foundation
import Synchronization

/// A private ClickHouse server for the test process, started once from
/// `scripts/clickhouse-local.sh` (generated config, free ports, temporary data directory) and
/// stopped when the process exits.
public enum ClickHouseTestServer {
    private static let state = Mutex<Result<URL, TestSupportError>?>(nil)
    private static let counter = Atomic<Int>(0)

    /// The server's base URL, starting the server on first use.
    public static func url() throws -> String {
        let result = state.withLock { state -> Result<URL, TestSupportError> in
            if let state { return state }
            let started = start()
            state = started
            return started
        }
        return try result.get().absoluteString
    }

    private static func start() -> Result<URL, TestSupportError> {
        if let external = ProcessInfo.processInfo.environment["CTR_TEST_CLICKHOUSE_URL"], let url = URL(string: external) {
            return .success(url)
        }
        do {
            try TestTier.requireServer("ClickHouse 18.16 (Debian's clickhouse-server, started by scripts/clickhouse-local.sh)")
            let directory = try PackagePaths.temporaryDirectory("ctr-clickhouse")
            let port = PackagePaths.freePort()
            let script = PackagePaths.root.appendingPathComponent("scripts/clickhouse-local.sh").path
            let result = try ChildProcess.run(script, ["start", directory.path, "\(port)", "\(PackagePaths.freePort())"])
            guard result.status == 0 else {
                return .failure(TestSupportError("cannot start ClickHouse: \(result.stdout)\(result.stderr)"))
            }
            stopDirectory = directory.path
            atexit {
                if let directory = ClickHouseTestServer.stopDirectory {
                    let script = PackagePaths.root.appendingPathComponent("scripts/clickhouse-local.sh").path
                    _ = try? ChildProcess.run(script, ["stop", directory])
                    try? FileManager.default.removeItem(atPath: directory)
                }
            }
            return .success(URL(string: "http://127.0.0.1:\(port)")!)
        } catch let error as TestSupportError {
            return .failure(error)
        } catch {
            return .failure(TestSupportError("cannot start ClickHouse: \(error)"))
        }
    }

    nonisolated(unsafe) static var stopDirectory: String?

    /// An endpoint for a new, empty database with a unique name.
    public static func makeDatabase(prefix: String = "test") throws -> ClickHouseEndpoint {
        let url = try url()
        let name = "\(prefix)_\(ProcessInfo.processInfo.processIdentifier)_\(counter.wrappingAdd(1, ordering: .relaxed).newValue)"
        let endpoint = ClickHouseEndpoint(url: url, database: name)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        _ = try connection.execute("DROP DATABASE IF EXISTS \(name)", useDatabase: false)
        _ = try connection.execute("CREATE DATABASE \(name)", useDatabase: false)
        return endpoint
    }

    /// Runs `schema-tool migrate` for `endpoint`'s database.
    public static func migrate(_ endpoint: ClickHouseEndpoint) throws {
        let result = try ChildProcess.run(
            PackagePaths.builtExecutable("schema-tool"),
            ["migrate", "--clickhouse-url", endpoint.url, "--database", endpoint.database,
             "--migrations-dir", PackagePaths.root.appendingPathComponent("migrations").path]
        )
        guard result.status == 0 else { throw TestSupportError("schema-tool migrate failed: \(result.stderr)") }
    }
}
