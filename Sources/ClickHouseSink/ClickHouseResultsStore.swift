import ClickHouseHTTP
import CTRWindows
import Foundation
import Logging

/// ``ResultsStore`` on a ClickHouse server (18.16 or current) over HTTP.
///
/// A batch is written in four requests on the store's own HTTP session:
/// 1. its rows go, as `RowBinary`, into a session-scoped `Memory` table (`ctr_staging`), which is
///    not durable;
/// 2. its provenance goes into `ctr_batches` (harmless if repeated);
/// 3. one `INSERT INTO ctr_results_raw ... SELECT ... FROM ctr_staging` moves the rows, with a
///    `throwIf` that refuses the insert when the staged rows are not exactly the batch, when a
///    later generation of the consumer group has written its fence, or when this writer has
///    raised its own fence since the attempt began (an older attempt that reaches the server
///    late). The whole batch is one block, so one part: all or nothing.
/// 4. after a failure that may have applied the insert, the writer raises its own fence, waits
///    until no attempt of the batch is running, and counts the batch's rows: all of them means
///    written; none means send again (the older attempts can no longer land).
public final class ClickHouseResultsStore: ResultsStore {
    public let connection: ClickHouseConnection
    /// Identifies this writer (one aggregator process) in batch ids, query ids and fences.
    public let writer: String
    public let consumerGroup: String
    public let policy: RetryPolicy
    /// The largest number of rows a batch may have; the block-size settings of every insert
    /// are pinned to at least this, so a batch is one block.
    public let maxBatchRows: Int
    /// The dimension columns written with every row (`--dimensions`), in the order of
    /// ``ResultRow/dimensions``.
    public let dimensions: [String]
    private let logger: Logger
    private let sleep: (Duration) -> Void
    private let session: String
    private var writerFence: Int64 = 0
    private var stagingReady = false
    private var random = SystemRandomNumberGenerator()

    public init(
        endpoint: ClickHouseEndpoint,
        writer: String,
        consumerGroup: String,
        policy: RetryPolicy,
        maxBatchRows: Int,
        dimensions: [String] = [],
        logger: Logger,
        sleep: @escaping (Duration) -> Void = threadSleep
    ) throws(StoreError) {
        do {
            connection = try ClickHouseConnection(endpoint: endpoint)
        } catch {
            throw StoreError("cannot set up the ClickHouse client: \(error)")
        }
        self.writer = writer
        self.consumerGroup = consumerGroup
        self.policy = policy
        self.maxBatchRows = maxBatchRows
        self.dimensions = dimensions
        self.logger = logger
        self.sleep = sleep
        var random = SystemRandomNumberGenerator()
        session = "\(writer)-\(String(random.next() & 0xFFFF_FFFF, radix: 36))"
    }

    /// The prefix of every batch id and query id of `writer`.
    public static func queryPrefix(writer: String) -> String { "ctr-agg-\(writer)-" }

    private var groupScope: String { "group:\(consumerGroup)" }
    private var writerScope: String { "writer:\(writer)" }

    // MARK: Schema

    public func checkSchema() throws(StoreError) {
        let expected = Set([ResultsTable.results, ResultsTable.batches, ResultsTable.fences])
        let present = try retrying("check the schema") { connection throws(ClickHouseError) in
            try connection.execute(
                "SELECT name FROM system.tables WHERE database = \(sqlStringLiteral(connection.endpoint.database)) AND name IN ("
                    + expected.sorted().map(sqlStringLiteral).joined(separator: ", ") + ")",
                useDatabase: false
            ).lines.map(String.init)
        }
        let missing = expected.subtracting(present)
        guard missing.isEmpty else {
            let database = connection.endpoint.database
            throw StoreError(
                "tables \(missing.sorted().joined(separator: ", ")) do not exist in database \(database): run "
                    + "`schema-tool migrate --clickhouse-url \(ClickHouseEndpoint.redacted(connection.endpoint.url)) --database \(database)` first"
            )
        }
        try checkColumns()
    }

    /// Every column this writer writes exists in the results table with its type.
    private func checkColumns() throws(StoreError) {
        let database = connection.endpoint.database
        let lines = try retrying("read the columns of \(ResultsTable.results)") { connection throws(ClickHouseError) in
            try connection.execute(
                "SELECT name, type FROM system.columns WHERE database = \(sqlStringLiteral(database)) AND table = "
                    + sqlStringLiteral(ResultsTable.results),
                useDatabase: false
            ).lines
        }
        var present: [String: String] = [:]
        for line in lines {
            let fields = line.split(separator: "\t", maxSplits: 1)
            if fields.count == 2 { present[TabSeparated.unescape(fields[0])] = TabSeparated.unescape(fields[1]) }
        }
        let migrate = "run `schema-tool migrate --clickhouse-url \(ClickHouseEndpoint.redacted(connection.endpoint.url)) --database \(database)`"
        for column in ResultsTable.rowColumns(dimensions: dimensions) {
            guard let type = present[column.name] else {
                if dimensions.contains(column.name) {
                    throw StoreError(
                        "dimension \(column.name) has no column in \(database).\(ResultsTable.results): \(migrate) (it creates "
                            + ResultsTable.standardDimensions.joined(separator: ", ") + "), or add it with `ALTER TABLE "
                            + "\(database).\(ResultsTable.results) ADD COLUMN \(column.name) String DEFAULT ''`"
                    )
                }
                throw StoreError("column \(column.name) is missing from \(database).\(ResultsTable.results): \(migrate)")
            }
            guard type == column.type || (column.type == "DateTime('UTC')" && type.hasPrefix("DateTime")) else {
                throw StoreError("column \(database).\(ResultsTable.results).\(column.name) is \(type), this version writes \(column.type)")
            }
        }
    }

    // MARK: Fencing

    public func fence(group: String, generation: Int32, shouldStop: () -> Bool) throws(StoreError) {
        _ = try retrying("write the fence of generation \(generation)") { connection throws(ClickHouseError) in
            try connection.execute(
                "INSERT INTO \(ResultsTable.fences) (scope, token, writer, created_at) VALUES "
                    + "(\(sqlStringLiteral("group:\(group)")), \(generation), \(sqlStringLiteral(writer)), now())"
            )
        }
        // An insert that checked its fence before ours landed is still running: wait for it.
        let others = "query_id LIKE 'ctr-agg-%' AND NOT startsWith(query_id, \(sqlStringLiteral(Self.queryPrefix(writer: writer))))"
        var waiting = Set(try running(where: others))
        var lastLog = ContinuousClock.now
        while !waiting.isEmpty && !shouldStop() {
            if ContinuousClock.now - lastLog >= .seconds(5) {
                lastLog = .now
                logger.warning("waiting for inserts of earlier owners to finish", metadata: ["queries": "\(waiting.sorted())"])
            }
            sleep(.milliseconds(50))
            waiting.formIntersection(try running(where: others))
        }
    }

    private func running(where condition: String) throws(StoreError) -> [String] {
        try retrying("list running inserts") { connection throws(ClickHouseError) in
            try connection.execute("SELECT query_id FROM system.processes WHERE \(condition)").lines.map(String.init)
        }
    }

    // MARK: Restore

    public func restore(_ request: RestoreRequest) throws(StoreError) -> [StoredWindowRow] {
        var bound = request.windowEndAfter?.epochSeconds
        if !request.partitionsWithoutHistory.isEmpty {
            let fields = try retrying("read the batches of partitions without history") { connection throws(ClickHouseError) in
                try connection.execute(
                    "SELECT count(), toUnixTimestamp(min(window_end_min)) FROM \(ResultsTable.batches) WHERE hasAny(partitions, "
                        + sqlStringArray(request.partitionsWithoutHistory) + ")",
                    settings: Self.completeAnswer
                ).text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\t")
            }
            if fields.count == 2, let count = Int(fields[0]), count > 0, let oldest = Int64(fields[1]) {
                bound = min(bound ?? .max, oldest - 1)
            }
        }
        guard let bound else { return [] }
        let after = "toDateTime(\(bound), 'UTC')"
        let dimensionColumns = dimensions.map { ", " + sqlIdentifier($0) }.joined()
        let rows = try retrying("read back windows") { connection throws(ClickHouseError) in
            try connection.execute(
                """
                SELECT product_id, toUnixTimestamp(window_start), max(revision), argMax(impressions, revision), \
                argMax(clicks, revision), argMax(conversions, revision), toString(argMax(revenue, revision)), \
                argMax(batch_id, revision), arrayStringConcat(argMax(source_partitions, revision), ','), \
                arrayStringConcat(arrayMap(x -> toString(x), argMax(source_offsets, revision)), ','), \
                argMax(unique_impression_users, revision), argMax(unique_click_users, revision)\(dimensionColumns) \
                FROM \(ResultsTable.results) WHERE window_end > \(after) GROUP BY window_start, product_id\(dimensionColumns)
                """,
                settings: Self.completeAnswer
            ).lines
        }
        guard !rows.isEmpty else { return [] }
        let ours = Set(request.partitions)
        let batchLines = try retrying("read back batch provenance") { connection throws(ClickHouseError) in
            try connection.execute(
                """
                SELECT batch_id, arrayStringConcat(partitions, ','), arrayStringConcat(arrayMap(x -> toString(x), next_offsets), ',') \
                FROM \(ResultsTable.batches) WHERE window_end_max > \(after) AND hasAny(partitions, \(sqlStringArray(request.partitions)))
                """,
                settings: Self.completeAnswer
            ).lines
        }
        var provenance: [String: [String: Int64]] = [:]
        for line in batchLines {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 3 else { throw StoreError("unexpected answer reading ctr_batches: \(line)") }
            provenance[String(fields[0])] = try Self.positions(fields[1], fields[2], plusOne: false)
        }
        var restored: [StoredWindowRow] = []
        for line in rows {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 12 + dimensions.count, let start = Int64(fields[1]), let revision = UInt32(fields[2]),
                let impressions = UInt64(fields[3]), let clicks = UInt64(fields[4]), let conversions = UInt64(fields[5]),
                let revenue = DecimalText.micros(fields[6]), let impressionUsers = UInt64(fields[10]), let clickUsers = UInt64(fields[11])
            else { throw StoreError("unexpected answer reading \(ResultsTable.results): \(line)") }
            let reflected: [String: Int64]
            if fields[8].isEmpty {
                guard let batch = provenance[String(fields[7])] else { continue }
                reflected = batch
            } else {
                // Rows written before provenance moved to ctr_batches carry the highest offset
                // per partition their window reflected.
                reflected = try Self.positions(fields[8], fields[9], plusOne: true)
            }
            guard reflected.keys.contains(where: ours.contains) else { continue }
            restored.append(
                StoredWindowRow(
                    productID: TabSeparated.unescape(fields[0]),
                    dimensions: fields[12...].map { TabSeparated.unescape($0) },
                    windowStart: Timestamp(milliseconds: start * 1000),
                    totals: WindowCounts(impressions: impressions, clicks: clicks, conversions: conversions, revenueMicros: revenue),
                    revision: revision,
                    reflectedBefore: reflected,
                    uniqueUsers: UniqueUsers(impressions: impressionUsers, clicks: clickUsers)
                )
            )
        }
        return restored
    }

    private static func positions(_ names: Substring, _ offsets: Substring, plusOne: Bool) throws(StoreError) -> [String: Int64] {
        let nameList = names.split(separator: ",")
        let offsetList = offsets.split(separator: ",")
        guard nameList.count == offsetList.count else { throw StoreError("provenance arrays of different lengths: \(names) / \(offsets)") }
        var result: [String: Int64] = [:]
        for (name, offset) in zip(nameList, offsetList) {
            guard let value = Int64(offset) else { throw StoreError("bad offset in provenance: \(offset)") }
            result[String(name)] = max(result[String(name)] ?? .min, plusOne ? value + 1 : value)
        }
        return result
    }

    /// Recovery reads must see a complete answer or an error, never a truncated 200.
    private static let completeAnswer = ClickHouseConnection.wholeResult

    // MARK: Write

    public func write(_ batch: ResultBatch, onRetry: (ClickHouseError) -> Void) throws(SinkError) -> WriteOutcome {
        precondition(batch.rowCount <= maxBatchRows, "a batch must not exceed maxBatchRows")
        let started = ContinuousClock.now
        let body = ResultRowEncoder.rowBinary(batch)
        var machine = InsertRetryStateMachine(policy: policy)
        var action = machine.start()
        var recovered = false
        while true {
            switch action {
            case .send(let attempt), .retry(_, let attempt):
                if case .retry(let delay, _) = action { sleep(delay) }
                guard let next = attemptInsert(batch, body: body, attempt: attempt, machine: &machine, onRetry: onRetry) else {
                    return .fenced
                }
                action = next
            case .verify(let delay):
                sleep(delay)
                do throws(ClickHouseError) {
                    switch try verify(batch) {
                    case .written:
                        recovered = true
                        action = machine.verified(applied: true)
                    case .absent:
                        action = machine.verified(applied: false)
                    case .fenced:
                        return .fenced
                    }
                } catch {
                    onRetry(error)
                    action = machine.verificationFailed(error, fraction: fraction())
                }
            case .succeed:
                let report = InsertReport(
                    rows: batch.rowCount, retries: machine.retries, duration: .now - started, recoveredAmbiguousAttempt: recovered,
                    resultLatency: .milliseconds(WallClock.now().milliseconds - (batch.firstRowAt?.milliseconds ?? WallClock.now().milliseconds))
                )
                return .written(report)
            case .fail(let error):
                throw SinkError(table: ResultsTable.results, underlying: error)
            }
        }
    }

    private func fraction() -> Double { Double.random(in: 0..<1, using: &random) }

    /// Why an attempt failed: a step that writes nothing durable (staging, provenance: repeating
    /// it is harmless), the insert itself, or a fence.
    private enum AttemptFailure: Error {
        case beforeInsert(ClickHouseError)
        case insert(ClickHouseError)
        case fenced
    }

    /// One attempt; `nil` when a later generation fenced the batch.
    private func attemptInsert(
        _ batch: ResultBatch, body: [UInt8], attempt: Int, machine: inout InsertRetryStateMachine, onRetry: (ClickHouseError) -> Void
    ) -> InsertRetryStateMachine.Action? {
        do throws(AttemptFailure) {
            try send(batch, body: body, attempt: attempt)
            return machine.sent()
        } catch {
            switch error {
            case .fenced:
                return nil
            case .beforeInsert(let error):
                logger.warning("staging a batch failed", metadata: ["batch": "\(batch.id)", "attempt": "\(attempt)", "error": "\(error)"])
                onRetry(error)
                stagingReady = false
                return machine.sendFailed(error, mayHaveBeenApplied: false, fraction: fraction())
            case .insert(let error):
                logger.warning(
                    "insert failed",
                    metadata: ["batch": "\(batch.id)", "attempt": "\(attempt)", "error": "\(error)", "retryable": "\(error.isRetryable)"]
                )
                onRetry(error)
                return machine.sendFailed(error, mayHaveBeenApplied: true, fraction: fraction())
            }
        }
    }

    private func send(_ batch: ResultBatch, body: [UInt8], attempt: Int) throws(AttemptFailure) {
        let session = ["session_id": session, "session_timeout": "600"]
        let blocks = String(max(maxBatchRows, 65_536))
        let rowColumns = ResultsTable.rowColumns(dimensions: dimensions)
        let columns = rowColumns.map { sqlIdentifier($0.name) }.joined(separator: ", ")
        do throws(ClickHouseError) {
            if !stagingReady {
                let definition = rowColumns.map { "\(sqlIdentifier($0.name)) \($0.type)" }.joined(separator: ", ")
                _ = try connection.execute(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS \(ResultsTable.staging) (\(definition)) ENGINE = Memory", settings: session
                )
                stagingReady = true
            }
            _ = try connection.execute("TRUNCATE TABLE \(ResultsTable.staging)", settings: session)
            _ = try connection.execute(
                "INSERT INTO \(ResultsTable.staging) FORMAT RowBinary", body: body,
                settings: session.merging(["max_insert_block_size": blocks]) { $1 }
            )
            if let range = batch.windowEndRange {
                _ = try connection.execute(
                    "INSERT INTO \(ResultsTable.batches) (\(ResultsTable.batchColumns.joined(separator: ", "))) VALUES ("
                        + [
                            sqlStringLiteral(batch.id), sqlStringLiteral(writer), sqlStringLiteral(consumerGroup), String(batch.generation), "now()",
                            "toDateTime(\(range.lowerBound), 'UTC')", "toDateTime(\(range.upperBound), 'UTC')", String(batch.rowCount),
                            sqlStringArray(batch.positions.map(\.partition)), "[" + batch.positions.map { String($0.nextOffset) }.joined(separator: ",") + "]",
                        ].joined(separator: ", ") + ")"
                )
            }
        } catch {
            throw .beforeInsert(error)
        }
        let refusal = """
            (SELECT count() FROM \(ResultsTable.staging) WHERE batch_id = \(sqlStringLiteral(batch.id))) != \(batch.rowCount) \
            OR (SELECT max(token) FROM \(ResultsTable.fences) WHERE scope = \(sqlStringLiteral(groupScope))) > \(batch.generation) \
            OR (SELECT max(token) FROM \(ResultsTable.fences) WHERE scope = \(sqlStringLiteral(writerScope))) > \(writerFence)
            """
        do throws(ClickHouseError) {
            _ = try connection.execute(
                "INSERT INTO \(ResultsTable.results) (\(columns)) SELECT \(columns) FROM \(ResultsTable.staging) "
                    + "WHERE batch_id = \(sqlStringLiteral(batch.id)) AND throwIf(\(refusal)) = 0",
                settings: session.merging([
                    "max_block_size": blocks, "min_insert_block_size_rows": blocks, "max_insert_block_size": blocks,
                    "min_insert_block_size_bytes": "0", "max_threads": "1",
                ]) { $1 },
                queryID: "\(batch.id)-a\(attempt)"
            )
        } catch {
            guard error.code == 395 else { throw .insert(error) }
            // The refusal: find out which condition held.
            if (try? fenceToken(groupScope)).map({ $0 > Int64(batch.generation) }) == true { throw .fenced }
            throw .beforeInsert(error)
        }
    }

    private func fenceToken(_ scope: String) throws(ClickHouseError) -> Int64 {
        let text = try connection.execute("SELECT max(token) FROM \(ResultsTable.fences) WHERE scope = \(sqlStringLiteral(scope))").text
        return Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    private enum Verification { case written, absent, fenced }

    /// After an attempt that may have been applied: raises this writer's fence so that no older
    /// attempt can land any more, waits until none is running, then counts the batch's rows.
    private func verify(_ batch: ResultBatch) throws(ClickHouseError) -> Verification {
        let next = max(writerFence, try fenceToken(writerScope)) + 1
        _ = try connection.execute(
            "INSERT INTO \(ResultsTable.fences) (scope, token, writer, created_at) VALUES "
                + "(\(sqlStringLiteral(writerScope)), \(next), \(sqlStringLiteral(writer)), now())"
        )
        writerFence = next
        let attempts = "startsWith(query_id, \(sqlStringLiteral(batch.id + "-a")))"
        while try connection.execute("SELECT count() FROM system.processes WHERE \(attempts)").text.hasPrefix("0") == false {
            sleep(.milliseconds(50))
        }
        guard let range = batch.windowEndRange else { return .written }
        let counted = try connection.execute(
            """
            SELECT count() FROM \(ResultsTable.results) WHERE window_end >= toDateTime(\(range.lowerBound), 'UTC') \
            AND window_end <= toDateTime(\(range.upperBound), 'UTC') AND batch_id = \(sqlStringLiteral(batch.id))
            """,
            settings: Self.completeAnswer
        ).text.trimmingCharacters(in: .whitespacesAndNewlines)
        if counted == String(batch.rowCount) { return .written }
        if counted == "0" {
            return try fenceToken(groupScope) > Int64(batch.generation) ? .fenced : .absent
        }
        throw ClickHouseError.server(
            code: nil, status: 200,
            message: "batch \(batch.id) has \(counted) of its \(batch.rowCount) rows in \(ResultsTable.results): a batch must land whole; "
                + "check that no user profile lowers max_insert_block_size below \(maxBatchRows)"
        )
    }

    // MARK: Queries with retry

    private func retrying<T>(_ what: String, _ query: (ClickHouseConnection) throws(ClickHouseError) -> T) throws(StoreError) -> T {
        var attempt = 0
        while true {
            do throws(ClickHouseError) {
                return try query(connection)
            } catch {
                attempt += 1
                guard error.isRetryable else { throw StoreError("cannot \(what) in ClickHouse: \(error)", underlying: error) }
                if let maximum = policy.maximumAttempts, attempt >= maximum {
                    throw StoreError("cannot \(what) in ClickHouse after \(attempt) attempts: \(error)", underlying: error)
                }
                logger.warning("ClickHouse query failed; retrying", metadata: ["what": "\(what)", "error": "\(error)", "attempt": "\(attempt)"])
                sleep(policy.delay(beforeRetry: attempt, fraction: fraction()))
            }
        }
    }
}

/// ClickHouse's `TabSeparated` escaping, undone byte by byte (a combining mark after an escape
/// stays a separate character).
enum TabSeparated {
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(field.utf8.count)
        var iterator = field.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "\\"), let next = iterator.next() else {
                bytes.append(byte)
                continue
            }
            switch next {
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "0"): bytes.append(0x00)
            case UInt8(ascii: "a"): bytes.append(0x07)
            case UInt8(ascii: "v"): bytes.append(0x0B)
            default: bytes.append(next)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
