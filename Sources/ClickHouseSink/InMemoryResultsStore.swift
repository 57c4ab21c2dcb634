import ClickHouseHTTP
import CTRWindows
import Synchronization

/// ``ResultsStore`` in memory, with the ClickHouse store's semantics (batch provenance, fences,
/// all-or-nothing batches): for tests of the pipeline's state machine and driver. Thread-safe.
public final class InMemoryResultsStore: ResultsStore, Sendable {
    /// A written row with the batch that wrote it.
    public struct StoredRow: Sendable, Hashable {
        public var row: ResultRow
        public var batchID: String
    }

    struct State {
        var rows: [StoredRow] = []
        var batches: [String: ResultBatch] = [:]
        var groupFences: [String: Int32] = [:]
        /// Writes refused by the next `write` calls (for fault injection), front first.
        var failures: [ClickHouseError] = []
    }

    private let state = Mutex(State())
    public let consumerGroup: String

    public init(consumerGroup: String = "test-group") {
        self.consumerGroup = consumerGroup
    }

    /// Every row written, in write order.
    public var rows: [StoredRow] { state.withLock { $0.rows } }

    /// Makes the next writes fail with `errors` (one each), before anything is written.
    public func failNextWrites(with errors: [ClickHouseError]) {
        state.withLock { $0.failures.append(contentsOf: errors) }
    }

    public func checkSchema() throws(StoreError) {}

    public func fence(group: String, generation: Int32, shouldStop: () -> Bool) throws(StoreError) {
        state.withLock { $0.groupFences[group] = max($0.groupFences[group] ?? .min, generation) }
    }

    public func restore(_ request: RestoreRequest) throws(StoreError) -> [StoredWindowRow] {
        state.withLock { state in
            let ours = Set(request.partitions)
            let withoutHistory = Set(request.partitionsWithoutHistory)
            var bound = request.windowEndAfter
            for batch in state.batches.values where batch.positions.contains(where: { withoutHistory.contains($0.partition) }) {
                for row in batch.rows { bound = min(bound ?? row.windowEnd, row.windowEnd - .seconds(1)) }
            }
            guard let bound else { return [] }
            var latest: [String: StoredRow] = [:]
            for stored in state.rows where stored.row.windowEnd > bound {
                let key = "\(stored.row.windowStart.milliseconds)/"
                    + ([stored.row.productID] + stored.row.dimensions).map { $0.utf8.map { String($0) }.joined(separator: ".") }
                    .joined(separator: "/")
                if let existing = latest[key], existing.row.revision >= stored.row.revision { continue }
                latest[key] = stored
            }
            return latest.values.compactMap { stored -> StoredWindowRow? in
                guard let batch = state.batches[stored.batchID] else { return nil }
                let reflected = Dictionary(batch.positions.map { ($0.partition, $0.nextOffset) }, uniquingKeysWith: max)
                guard reflected.keys.contains(where: ours.contains) else { return nil }
                return StoredWindowRow(
                    productID: stored.row.productID, dimensions: stored.row.dimensions, windowStart: stored.row.windowStart,
                    totals: stored.row.totals, revision: stored.row.revision, reflectedBefore: reflected, uniqueUsers: stored.row.uniqueUsers
                )
            }
        }
    }

    public func write(_ batch: ResultBatch, onRetry: (ClickHouseError) -> Void) throws(SinkError) -> WriteOutcome {
        let result: Result<WriteOutcome, SinkError> = state.withLock { state in
            if !state.failures.isEmpty {
                return .failure(SinkError(table: ResultsTable.results, underlying: state.failures.removeFirst()))
            }
            if let fence = state.groupFences[consumerGroup], fence > batch.generation { return .success(.fenced) }
            state.batches[batch.id] = batch
            state.rows.append(contentsOf: batch.rows.map { StoredRow(row: $0, batchID: batch.id) })
            return .success(
                .written(InsertReport(rows: batch.rowCount, retries: 0, duration: .zero, recoveredAmbiguousAttempt: false, resultLatency: .zero))
            )
        }
        return try result.get()
    }
}
