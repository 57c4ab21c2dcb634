import ClickHouseHTTP
import Foundation
import Logging

/// A failure that stops the sink: not retryable, or out of attempts.
public struct SinkError: Error, Sendable, CustomStringConvertible {
    public var table: String
    public var underlying: ClickHouseError

    public init(table: String, underlying: ClickHouseError) {
        self.table = table
        self.underlying = underlying
    }

    /// What the user can do about it.
    public var advice: String {
        switch underlying.code {
        case 60, 16, 47, 81:
            return "create or upgrade the schema with `schema-tool migrate --clickhouse-url URL --database DB`, and check --database"
        case 192, 193, 194, 516:
            return "check CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (or the password file) and the user's grants"
        case 26, 27, 53, 62, 70, 72, 117:
            return "the schema of the table does not match this aggregator version: run `schema-tool verify` and `schema-tool migrate`"
        default:
            if case .transport(.tls, _) = underlying {
                return "check the HTTPS URL and --clickhouse-ca-file"
            }
            return underlying.isRetryable
                ? "ClickHouse kept failing; check its health, then restart the aggregator: nothing acknowledged was lost"
                : "see the server's message above"
        }
    }

    public var description: String {
        "writing to \(table) failed: \(underlying). What to do: \(advice)"
    }
}

/// What an insert cost.
public struct InsertReport: Sendable {
    public var rows: Int
    public var retries: Int
    public var duration: Duration
    /// Whether a retry found the rows already written by an attempt whose answer was lost.
    public var recoveredAmbiguousAttempt: Bool
    /// From the batch's first row (its window passed by the watermark) to the acknowledgement.
    public var resultLatency: Duration
}

/// Writes ``InsertBatch``es into `ctr_results_raw`, retrying as ``InsertRetryStateMachine``
/// says, and never writing a batch twice.
///
/// Blocking: runs on the sink's own thread.
public final class ClickHouseInserter {
    public let connection: ClickHouseConnection
    public let table: String
    public let policy: RetryPolicy
    private let logger: Logger
    private let sleep: (Duration) -> Void
    private var random = SystemRandomNumberGenerator()

    public init(
        connection: ClickHouseConnection,
        table: String = "ctr_results_raw",
        policy: RetryPolicy,
        logger: Logger,
        sleep: @escaping (Duration) -> Void = ClickHouseInserter.threadSleep
    ) {
        self.connection = connection
        self.table = table
        self.policy = policy
        self.logger = logger
        self.sleep = sleep
    }

    /// Blocks the calling thread for `duration`.
    public static func threadSleep(_ duration: Duration) {
        Thread.sleep(forTimeInterval: Double(duration.milliseconds) / 1000)
    }

    private func fraction() -> Double { Double.random(in: 0..<1, using: &random) }

    /// Inserts `batch`, retrying retryable failures. Returns once the rows are durable.
    public func insert(_ batch: InsertBatch, onRetry: (ClickHouseError) -> Void = { _ in }) throws(SinkError) -> InsertReport {
        let started = ContinuousClock.now
        var machine = InsertRetryStateMachine(policy: policy)
        var action = machine.start()
        var recovered = false
        while true {
            switch action {
            case .send(let attempt):
                action = send(batch, attempt: attempt, machine: &machine, onRetry: onRetry)
            case .retry(let delay, let attempt):
                sleep(delay)
                action = send(batch, attempt: attempt, machine: &machine, onRetry: onRetry)
            case .verify(let delay):
                sleep(delay)
                do {
                    let applied = try isApplied(batch)
                    recovered = applied
                    action = machine.verified(applied: applied)
                } catch {
                    onRetry(error)
                    action = machine.verificationFailed(error, fraction: fraction())
                }
            case .succeed:
                let now = ContinuousClock.now
                return InsertReport(
                    rows: batch.rowCount, retries: machine.retries, duration: now - started,
                    recoveredAmbiguousAttempt: recovered, resultLatency: now - (batch.firstRowAt ?? started)
                )
            case .fail(let error):
                throw SinkError(table: table, underlying: error)
            }
        }
    }

    private func send(
        _ batch: InsertBatch, attempt: Int, machine: inout InsertRetryStateMachine, onRetry: (ClickHouseError) -> Void
    ) -> InsertRetryStateMachine.Action {
        do {
            _ = try connection.execute(
                "INSERT INTO \(table) FORMAT JSONEachRow",
                body: batch.body,
                settings: ["input_format_skip_unknown_fields": "0"],
                queryID: "\(batch.id)-a\(attempt)"
            )
            return machine.sent()
        } catch {
            logger.warning(
                "insert failed",
                metadata: ["batch": "\(batch.id)", "attempt": "\(attempt)", "error": "\(error)", "retryable": "\(error.isRetryable)"]
            )
            onRetry(error)
            return machine.sendFailed(error, fraction: fraction())
        }
    }

    /// Whether the rows of `batch` are in the table. First waits until no attempt of the batch
    /// is still running on the server, so that the answer cannot change afterwards.
    func isApplied(_ batch: InsertBatch) throws(ClickHouseError) -> Bool {
        while try connection.scalar("SELECT count() FROM system.processes WHERE query_id LIKE '\(batch.id)-a%'") != "0" {
            sleep(.milliseconds(100))
        }
        guard let range = batch.windowEndRange else { return true }
        let count = try connection.scalar(
            """
            SELECT count() FROM \(table) WHERE window_end >= toDateTime(\(range.lowerBound), 'UTC') \
            AND window_end <= toDateTime(\(range.upperBound), 'UTC') AND batch_id = '\(batch.id)'
            """
        )
        return count != "0"
    }
}
