import Foundation
import Synchronization

/// A two-replica ClickHouse cluster (one ZooKeeper, two servers, one shard) for the test
/// process, started once from `scripts/clickhouse-cluster.sh` and stopped when the process exits.
public enum ClickHouseTestCluster {
    /// The cluster's name in the servers' `remote_servers`.
    public static let name = "ctr_cluster"

    private static let state = Mutex<Result<[String], TestSupportError>?>(nil)
    nonisolated(unsafe) static var stopDirectory: String?

    /// The replicas' HTTP URLs, starting the cluster on first use.
    public static func replicaURLs() throws -> [String] {
        try state.withLock { state -> Result<[String], TestSupportError> in
            if let state { return state }
            let started = start()
            state = started
            return started
        }.get()
    }

    private static func start() -> Result<[String], TestSupportError> {
        let script = PackagePaths.root.appendingPathComponent("scripts/clickhouse-cluster.sh").path
        do {
            try TestTier.requireServer("a two-replica ClickHouse cluster (Debian's zookeeper and clickhouse-server, started by scripts/clickhouse-cluster.sh)")
            let directory = try PackagePaths.temporaryDirectory("ctr-cluster")
            var failure = ""
            for _ in 0..<3 {
                let base = PackagePaths.freePortRange(count: 7)
                let result = try ChildProcess.run(script, ["start", directory.path, "\(base)", name])
                if result.status == 0 {
                    stopDirectory = directory.path
                    atexit {
                        if let directory = ClickHouseTestCluster.stopDirectory {
                            _ = try? ChildProcess.run(PackagePaths.root.appendingPathComponent("scripts/clickhouse-cluster.sh").path, ["stop", directory])
                            if ProcessInfo.processInfo.environment["CTR_TEST_KEEP"] == nil { try? FileManager.default.removeItem(atPath: directory) }
                        }
                    }
                    return .success(["http://127.0.0.1:\(base + 1)", "http://127.0.0.1:\(base + 4)"])
                }
                failure = result.stdout + result.stderr
                _ = try? ChildProcess.run(script, ["stop", directory.path])
            }
            return .failure(TestSupportError("cannot start the ClickHouse cluster: \(failure)"))
        } catch let error as TestSupportError {
            return .failure(error)
        } catch {
            return .failure(TestSupportError("cannot start the ClickHouse cluster: \(error)"))
        }
    }
}
