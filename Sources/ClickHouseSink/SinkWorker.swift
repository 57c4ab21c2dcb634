import ClickHouseHTTP
import Foundation
import Logging

/// The result of one submitted batch, reported back to the pipeline thread.
public enum SinkCompletion: Sendable {
    case written(sequence: UInt64, report: InsertReport)
    case failed(sequence: UInt64, error: SinkError)
}

/// Counters the sink exposes for metrics.
public struct SinkStatistics: Sendable {
    public var batchesWritten = 0
    public var rowsWritten = 0
    public var retries = 0
    public var failures = 0
}

/// Runs inserts on a thread of its own, one batch at a time in submission order, so that the
/// pipeline thread never blocks on ClickHouse.
///
/// Batches wait in memory until written; ``bufferedRows`` tells the pipeline when to stop
/// fetching (bounded memory while ClickHouse is unreachable).
public final class SinkWorker: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [InsertBatch] = []
    private var queueHead = 0
    private var completions: [SinkCompletion] = []
    private var stopping = false
    private var busy = false
    private var rowsBuffered = 0
    private var statistics = SinkStatistics()
    private var thread: Thread?
    private let inserter: ClickHouseInserter
    private let observeRetry: @Sendable (ClickHouseError) -> Void
    private let observeInsert: @Sendable (InsertReport) -> Void

    /// - Parameters:
    ///   - observeRetry: called on the sink thread for every failed attempt.
    ///   - observeInsert: called on the sink thread for every batch written.
    public init(
        inserter: ClickHouseInserter,
        observeRetry: @escaping @Sendable (ClickHouseError) -> Void = { _ in },
        observeInsert: @escaping @Sendable (InsertReport) -> Void = { _ in }
    ) {
        self.inserter = inserter
        self.observeRetry = observeRetry
        self.observeInsert = observeInsert
    }

    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "clickhouse-sink"
        self.thread = thread
        thread.start()
    }

    /// Queues `batch` for writing.
    public func submit(_ batch: InsertBatch) {
        condition.lock()
        queue.append(batch)
        rowsBuffered += batch.rowCount
        condition.signal()
        condition.unlock()
    }

    /// Rows submitted and not yet written.
    public var bufferedRows: Int {
        condition.lock()
        defer { condition.unlock() }
        return rowsBuffered
    }

    public var currentStatistics: SinkStatistics {
        condition.lock()
        defer { condition.unlock() }
        return statistics
    }

    /// Takes the completions reported since the last call.
    public func takeCompletions() -> [SinkCompletion] {
        condition.lock()
        defer { condition.unlock() }
        let taken = completions
        completions.removeAll()
        return taken
    }

    /// Waits until every submitted batch is written or failed, or until `timeout` passes.
    /// Returns whether the sink is idle.
    public func waitUntilIdle(timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeout.milliseconds) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while busy || queueHead < queue.count {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }

    /// Stops the thread after the batch in progress; queued batches are dropped (their
    /// offsets were never committed, so they are consumed again after a restart).
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queueHead == queue.count && !stopping { condition.wait() }
            if stopping {
                condition.unlock()
                return
            }
            let batch = queue[queueHead]
            queueHead += 1
            if queueHead > 64 && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            busy = true
            condition.unlock()

            let completion: SinkCompletion
            do {
                let report = try inserter.insert(batch) { [observeRetry] error in observeRetry(error) }
                observeInsert(report)
                completion = .written(sequence: batch.sequence, report: report)
            } catch {
                completion = .failed(sequence: batch.sequence, error: error)
            }

            condition.lock()
            busy = false
            rowsBuffered -= batch.rowCount
            switch completion {
            case .written(_, let report):
                statistics.batchesWritten += 1
                statistics.rowsWritten += report.rows
                statistics.retries += report.retries
            case .failed:
                statistics.failures += 1
                stopping = true
            }
            completions.append(completion)
            condition.broadcast()
            condition.unlock()
        }
    }
}
