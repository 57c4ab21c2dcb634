import ClickHouseHTTP
import CTRWindows
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

/// What writing one batch cost.
public struct InsertReport: Sendable, Equatable {
    public var rows: Int
    public var retries: Int
    public var duration: Duration
    /// Whether a retry found the rows already written by an attempt whose answer was lost.
    public var recoveredAmbiguousAttempt: Bool
    /// From the batch's first row (its window passed by the watermark) to the acknowledgement.
    public var resultLatency: Duration

    public init(rows: Int, retries: Int, duration: Duration, recoveredAmbiguousAttempt: Bool, resultLatency: Duration) {
        self.rows = rows
        self.retries = retries
        self.duration = duration
        self.recoveredAmbiguousAttempt = recoveredAmbiguousAttempt
        self.resultLatency = resultLatency
    }
}

/// The processing-time clock: wall-clock milliseconds since the Unix epoch, UTC. The only place
/// the pipeline reads it; pure modules receive the readings as input.
public enum WallClock {
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(milliseconds: Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}

/// Blocks the calling thread for `duration`.
public func threadSleep(_ duration: Duration) {
    Thread.sleep(forTimeInterval: Double(duration.milliseconds) / 1000)
}
