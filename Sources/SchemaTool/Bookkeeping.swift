import ClickHouseHTTP
import Foundation

/// schema-tool's own tables (the ledger and the lock): how they are created and written.
///
/// On a single server they are MergeTree tables. On a cluster they are created `ON CLUSTER`
/// as replicated tables with one ZooKeeper path for the whole cluster, so every host is a
/// replica of the same ledger, and every write uses `insert_quorum` = the number of hosts: a
/// write is acknowledged only once every host has it, so a reader on any host sees it.
struct Bookkeeping: Sendable {
    let endpoint: ClickHouseEndpoint
    let cluster: ClusterTarget?
    /// Hosts that must have a write before it is acknowledged (`nil` on a single server).
    let quorum: Int?

    /// The database, quoted.
    var database: String { sqlIdentifier(endpoint.database) }

    func create(_ connection: ClickHouseConnection, table: String, columns: String, orderBy: String) throws(ClickHouseError) {
        var statement = "CREATE TABLE IF NOT EXISTS \(database).\(table) (\(columns)) ENGINE = MergeTree ORDER BY \(orderBy)"
        if let cluster {
            statement = ClusterRewriter.rewrite(statement, for: cluster.bookkeeping, database: endpoint.database)
        }
        try connection.run(statement)
    }

    /// Appends one row. On a cluster, waits for the quorum; ClickHouse versions that allow one
    /// quorum insert per table at a time refuse concurrent ones (code 286), which are retried.
    func insert(_ connection: ClickHouseConnection, table: String, row: [String: Any]) throws(ClickHouseError) {
        let body = (try? JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])).map(Array.init) ?? []
        let settings = quorum.map { ["insert_quorum": "\($0)", "insert_quorum_timeout": "60000"] } ?? [:]
        var attempt = 0
        while true {
            do {
                _ = try connection.execute("INSERT INTO \(database).\(table) FORMAT JSONEachRow", body: body, settings: settings)
                return
            } catch where error.code == 286 && attempt < 200 {
                attempt += 1
                Thread.sleep(forTimeInterval: 0.05 + Double.random(in: 0..<0.1))
            }
        }
    }
}
