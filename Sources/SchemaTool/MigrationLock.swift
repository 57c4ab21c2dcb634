import ClickHouseHTTP
import Foundation

/// A lease lock in a ClickHouse table, so that concurrent `schema-tool migrate` runs against
/// one database never both apply migrations.
///
/// ClickHouse has no transactions or compare-and-set, so the lock is a queue: every contender
/// appends a row (holder, time of request in microseconds, lease expiry) and then reads the
/// table back; the holder is the earliest request (ties broken by holder id) that is neither
/// released nor expired. All contenders read the same rows once their inserts are
/// acknowledged, so they agree on one holder; the others wait and read again. Releasing
/// appends a release row. A holder that dies without releasing blocks others only until its
/// lease expires (``lease``, 10 minutes by default): then the next contender takes over, and
/// resumes the dead holder's migration from its last recorded statement.
public struct MigrationLock {
    public static let table = "schema_migrations_lock"

    let connection: ClickHouseConnection
    let database: String
    let holder: String
    let lease: Duration

    init(connection: ClickHouseConnection, database: String, holder: String, lease: Duration = .seconds(600)) {
        self.connection = connection
        self.database = database
        var random = SystemRandomNumberGenerator()
        self.holder = "\(holder) #\(String(random.next() & 0xFFFF_FFFF, radix: 16))"
        self.lease = lease
    }

    static func prepare(_ connection: ClickHouseConnection, database: String) throws(ClickHouseError) {
        try connection.run(
            """
            CREATE TABLE IF NOT EXISTS \(database).\(table) (
                holder String, requested_us UInt64, expires_us UInt64, released UInt8
            ) ENGINE = MergeTree ORDER BY requested_us
            """
        )
    }

    private static func microseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1_000_000) }

    private func append(requested: UInt64, released: Bool) throws(ClickHouseError) {
        let expires = requested + UInt64(lease.components.seconds) * 1_000_000
        let row: [String: Any] = ["holder": holder, "requested_us": requested, "expires_us": expires, "released": released ? 1 : 0]
        let body = (try? JSONSerialization.data(withJSONObject: row)).map(Array.init) ?? []
        _ = try connection.execute("INSERT INTO \(database).\(Self.table) FORMAT JSONEachRow", body: body)
    }

    /// The current holder, if any.
    func currentHolder() throws(ClickHouseError) -> String? {
        let now = Self.microseconds()
        let holder = try connection.scalar(
            """
            SELECT holder FROM \(database).\(Self.table) GROUP BY holder
            HAVING max(released) = 0 AND max(expires_us) > \(now)
            ORDER BY min(requested_us), holder LIMIT 1
            """
        )
        return holder.isEmpty ? nil : holder
    }

    /// Waits until this process holds the lock.
    func acquire(timeout: Duration) throws(MigratorError) {
        let deadline = ContinuousClock.now + timeout
        do {
            try append(requested: Self.microseconds(), released: false)
        } catch {
            throw .clickHouse(error)
        }
        var reported = false
        while true {
            let current: String?
            do { current = try currentHolder() } catch { throw .clickHouse(error) }
            if current == holder { return }
            if ContinuousClock.now > deadline {
                release()
                throw .lockTimeout(
                    "another schema-tool holds the migration lock of \(database) (\(current ?? "unknown")); waited \(timeout). "
                        + "If that process is dead, its lease expires \(lease) after it started."
                )
            }
            if !reported {
                FileHandle.standardError.write(Data("waiting for the migration lock held by \(current ?? "another run")\n".utf8))
                reported = true
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    func release() {
        try? append(requested: Self.microseconds(), released: true)
    }
}
