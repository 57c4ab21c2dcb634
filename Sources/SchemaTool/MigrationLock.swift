import ClickHouseHTTP
import Foundation

/// A lease lock in a ClickHouse table, so that concurrent `schema-tool migrate` runs against
/// one database (or, with `--cluster`, against any hosts of the cluster) never both apply
/// migrations.
///
/// ClickHouse has no transactions or compare-and-set, so the lock is a queue in an append-only
/// table: a contender appends a request (holder, request time in microseconds, lease expiry)
/// and the holder is the earliest request (ties broken by holder id) that is neither released
/// nor expired. Two rules make every contender agree on that holder:
/// - a request counts only if its insert was acknowledged within ``settle``/2 of its request
///   time (otherwise the contender withdraws it and asks again);
/// - a contender reads the queue only from its request time + ``settle`` on.
///
/// So any request earlier than mine was acknowledged, and visible on every host, before I
/// first look (clocks of the machines running schema-tool must agree to within ``settle``/2).
/// A contender renews its request every ``lease``/4 from a background thread while it waits
/// and while it works; releasing appends a release row. A holder that dies without releasing
/// blocks others until its lease expires (``lease``, 2 minutes by default, after its last
/// renewal): then the next contender takes over and resumes the dead holder's migration from
/// its last recorded statement.
public final class MigrationLock {
    public static let table = "schema_migrations_lock"

    let connection: ClickHouseConnection
    let bookkeeping: Bookkeeping
    /// `user@host pid N`; each request adds its own random suffix.
    let owner: String
    let lease: Duration
    let settle: Duration
    /// The holder id of the current request (a new one per request: a withdrawn request's id
    /// stays withdrawn for good).
    private(set) var holder: String
    private var requested: UInt64 = 0
    private var heartbeat: Heartbeat?

    init(connection: ClickHouseConnection, bookkeeping: Bookkeeping, holder: String, lease: Duration = .seconds(120), settle: Duration = .seconds(1)) {
        self.connection = connection
        self.bookkeeping = bookkeeping
        self.owner = holder
        self.holder = Self.newHolder(holder)
        self.lease = lease
        self.settle = settle
    }

    private static func newHolder(_ owner: String) -> String {
        var random = SystemRandomNumberGenerator()
        return "\(owner) #\(String(random.next() & 0xFFFF_FFFF, radix: 16))"
    }

    static func prepare(_ connection: ClickHouseConnection, bookkeeping: Bookkeeping) throws(ClickHouseError) {
        try bookkeeping.create(
            connection, table: table, columns: "holder String, requested_us UInt64, expires_us UInt64, released UInt8", orderBy: "requested_us"
        )
    }

    private static func microseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1_000_000) }
    private static func microseconds(_ duration: Duration) -> UInt64 {
        UInt64(duration.components.seconds) * 1_000_000 + UInt64(duration.components.attoseconds / 1_000_000_000_000)
    }

    static func append(
        _ connection: ClickHouseConnection, bookkeeping: Bookkeeping, holder: String, requested: UInt64, lease: Duration, released: Bool
    ) throws(ClickHouseError) {
        let row: [String: Any] = [
            "holder": holder, "requested_us": requested, "expires_us": microseconds() + microseconds(lease), "released": released ? 1 : 0,
        ]
        try bookkeeping.insert(connection, table: table, row: row)
    }

    /// The current holder, if any.
    func currentHolder() throws(ClickHouseError) -> String? {
        let holder = try connection.scalar(
            """
            SELECT holder FROM \(bookkeeping.database).\(Self.table) GROUP BY holder
            HAVING max(released) = 0 AND max(expires_us) > \(Self.microseconds())
            ORDER BY min(requested_us), holder LIMIT 1
            """
        )
        return holder.isEmpty ? nil : holder
    }

    /// Waits until this process holds the lock, renewing its request's lease until ``release()``.
    func acquire(timeout: Duration) throws(MigratorError) {
        let deadline = ContinuousClock.now + timeout
        let sent = try request(deadline: deadline, timeout: timeout)
        // Renew the request while waiting too: an expired request would lose its place.
        heartbeat = Heartbeat(bookkeeping: bookkeeping, holder: holder, requested: requested, lease: lease, renewedAt: sent)
        var reported = false
        while true {
            let current: String?
            do { current = try currentHolder() } catch { throw .clickHouse(error) }
            if current == holder {
                try ensureHeld()
                return
            }
            if let lost = heartbeat?.lostReason {
                release()
                throw .lockLost("lost the request for the migration lock of \(bookkeeping.database) while waiting: \(lost)")
            }
            if ContinuousClock.now > deadline {
                release()
                throw .lockTimeout(
                    "another schema-tool holds the migration lock of \(bookkeeping.database) (\(current ?? "unknown")); waited \(timeout). "
                        + "If that process is dead, its lease expires at most \(lease) after its last renewal."
                )
            }
            if !reported {
                FileHandle.standardError.write(Data("waiting for the migration lock held by \(current ?? "another run")\n".utf8))
                reported = true
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    /// Throws unless this process still holds the lock with more than ``settle``/2 (the clock
    /// difference allowed between contenders) of its lease left (by its own clock, counted from the send time of its last acknowledged renewal), and
    /// the table still names it as the holder. Called before every statement: a holder whose
    /// lease ran out (paused, partitioned, heartbeat failing) stops instead of running
    /// alongside the next holder.
    func ensureHeld() throws(MigratorError) {
        guard let heartbeat else { throw .lockLost("the migration lock of \(bookkeeping.database) is not held") }
        if let lost = heartbeat.lostReason {
            throw .lockLost("the migration lock of \(bookkeeping.database) was lost: \(lost). Nothing more was run; run migrate again")
        }
        let left = heartbeat.renewedAt + lease - ContinuousClock.now
        guard left > settle / 2 else {
            let failure = heartbeat.lastError.map { " (lease renewals fail: \($0))" } ?? ""
            throw .lockLost(
                "the lease on the migration lock of \(bookkeeping.database) is about to expire\(failure); stopped before the next statement. Run migrate again"
            )
        }
        let current: String?
        do { current = try currentHolder() } catch { throw .clickHouse(error) }
        guard current == holder else {
            throw .lockLost(
                "the migration lock of \(bookkeeping.database) is now held by \(current ?? "nobody") (this process's lease expired); stopped before the next statement. Run migrate again"
            )
        }
    }

    /// Appends a request under a new holder id, acknowledged within `settle`/2, and waits until
    /// its request time + `settle` has passed. Returns when the acknowledged request was sent.
    private func request(deadline: ContinuousClock.Instant, timeout: Duration) throws(MigratorError) -> ContinuousClock.Instant {
        let halfSettle = Self.microseconds(settle) / 2
        var sent = ContinuousClock.now
        while true {
            holder = Self.newHolder(owner)
            sent = ContinuousClock.now
            requested = Self.microseconds()
            do {
                try Self.append(connection, bookkeeping: bookkeeping, holder: holder, requested: requested, lease: lease, released: false)
                let acknowledged = Self.microseconds()
                if acknowledged < requested || acknowledged - requested <= halfSettle { break }
                // Acknowledged too late for others to have seen it in time: withdraw it for good
                // and ask again under a new holder id.
                try Self.append(connection, bookkeeping: bookkeeping, holder: holder, requested: requested, lease: lease, released: true)
            } catch {
                throw .clickHouse(error)
            }
            guard ContinuousClock.now < deadline else {
                throw .lockTimeout("ClickHouse acknowledged every request for the migration lock later than \(settle / 2) within \(timeout)")
            }
        }
        let readable = requested + Self.microseconds(settle)
        let now = Self.microseconds()
        if readable > now { Thread.sleep(forTimeInterval: Double(readable - now) / 1_000_000) }
        return sent
    }

    func release() {
        heartbeat?.stop()
        heartbeat = nil
        try? Self.append(connection, bookkeeping: bookkeeping, holder: holder, requested: requested, lease: .zero, released: true)
    }
}

/// Renews a lock request's lease every quarter lease, on its own thread and connection, and
/// records what happened: when the last acknowledged renewal was sent, the last failure, and
/// whether the lease lapsed (then it never renews again: a lapsed lease may have been taken
/// over, and renewing it would make two holders).
private final class Heartbeat: @unchecked Sendable {
    private let condition = NSCondition()
    private var stopped = false
    private var finished = false
    private var _renewedAt: ContinuousClock.Instant
    private var _lastError: String?
    private var _lostReason: String?

    /// When the last acknowledged renewal (or the request) was sent.
    var renewedAt: ContinuousClock.Instant { condition.withLock { _renewedAt } }
    /// The last renewal failure, if the last renewal failed.
    var lastError: String? { condition.withLock { _lastError } }
    /// Why the lease lapsed, once it has.
    var lostReason: String? { condition.withLock { _lostReason } }

    init(bookkeeping: Bookkeeping, holder: String, requested: UInt64, lease: Duration, renewedAt: ContinuousClock.Instant) {
        _renewedAt = renewedAt
        let interval = max(Double(lease.components.seconds) / 4, 0.25)
        let thread = Thread { [self] in
            let connection = try? ClickHouseConnection(endpoint: bookkeeping.endpoint)
            condition.lock()
            while !stopped && _lostReason == nil {
                _ = condition.wait(until: Date(timeIntervalSinceNow: interval))
                if stopped { break }
                condition.unlock()
                let sent = ContinuousClock.now
                var failure: String?
                if let connection {
                    do {
                        try MigrationLock.append(connection, bookkeeping: bookkeeping, holder: holder, requested: requested, lease: lease, released: false)
                    } catch {
                        failure = "\(error)"
                    }
                } else {
                    failure = "cannot create a connection for the heartbeat"
                }
                condition.lock()
                if ContinuousClock.now - _renewedAt >= lease {
                    _lostReason = "its lease ran out at most \(lease) after the last renewal acknowledged in time" + (failure.map { " (\($0))" } ?? "")
                } else if let failure {
                    _lastError = failure
                } else {
                    _renewedAt = sent
                    _lastError = nil
                }
            }
            finished = true
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "schema-tool lock heartbeat"
        thread.start()
    }

    /// Stops renewing and waits for an in-flight renewal to finish.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
    }
}
