import ClickHouseHTTP
import Foundation
import Logging

/// The result of one submitted batch, reported back to the pipeline thread.
public enum SinkCompletion: Sendable, Equatable {
    case written(sequence: UInt64, report: InsertReport)
    /// A later generation of the consumer group fenced the batch: nothing was written.
    case fenced(sequence: UInt64)
    case failed(sequence: UInt64, error: SinkError)

    public static func == (lhs: SinkCompletion, rhs: SinkCompletion) -> Bool {
        switch (lhs, rhs) {
        case (.written(let a, let x), .written(let b, let y)): a == b && x == y
        case (.fenced(let a), .fenced(let b)): a == b
        case (.failed(let a, let x), .failed(let b, let y)): a == b && x.description == y.description
        default: false
        }
    }
}

/// Counters the sink exposes for metrics.
public struct SinkStatistics: Sendable {
    public var batchesWritten = 0
    public var rowsWritten = 0
    public var retries = 0
    public var failures = 0
}

/// Runs inserts on a thread of its own, one batch at a time in submission order, so that the
/// pipeline thread never blocks on ClickHouse (encoding the rows happens here too).
///
/// Batches wait in memory until written; ``bufferedRows`` tells the pipeline when to stop
/// fetching (bounded memory while ClickHouse is unreachable).
public final class SinkWorker: @unchecked Sendable {
    private let condition = NSCondition()
    /// Submitted batches from `queueHead` on; a slot is emptied when its batch is taken, so a
    /// written batch's rows are freed at once, not when the array is next compacted.
    private var queue: [ResultBatch?] = []
    private var queueHead = 0
    private var completions: [SinkCompletion] = []
    private var stopping = false
    private var busy = false
    private var rowsBuffered = 0
    private var statistics = SinkStatistics()
    private var thread: Thread?
    private let store: ResultsStore
    private let observeRetry: @Sendable (ClickHouseError) -> Void
    private let observeInsert: @Sendable (InsertReport) -> Void

    /// - Parameters:
    ///   - observeRetry: called on the sink thread for every failed attempt.
    ///   - observeInsert: called on the sink thread for every batch written.
    public init(
        store: ResultsStore,
        observeRetry: @escaping @Sendable (ClickHouseError) -> Void = { _ in },
        observeInsert: @escaping @Sendable (InsertReport) -> Void = { _ in }
    ) {
        self.store = store
        self.observeRetry = observeRetry
        self.observeInsert = observeInsert
    }

    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "clickhouse-sink"
        self.thread = thread
        thread.start()
    }

    /// Drops every queued batch of a generation below `generation` (their assignment was
    /// revoked or lost): they are never sent. A batch being written is not interrupted; the
    /// fence of the new generation stops it at the server. Returns the dropped sequences.
    @discardableResult
    public func cancel(generationsBelow generation: Int32) -> [UInt64] {
        condition.lock()
        defer { condition.unlock() }
        var kept: [ResultBatch?] = []
        var dropped: [UInt64] = []
        for case let batch? in queue[queueHead...] {
            if batch.generation < generation {
                dropped.append(batch.sequence)
                rowsBuffered -= batch.rowCount
            } else {
                kept.append(batch)
            }
        }
        queue = kept
        queueHead = 0
        return dropped
    }

    /// Queues `batch` for writing.
    public func submit(_ batch: ResultBatch) {
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

    /// Batches the worker holds: queued and not yet taken by the sink thread.
    var heldBatches: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
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
            guard let batch = queue[queueHead] else { preconditionFailure("a queued batch was taken twice") }
            queue[queueHead] = nil
            queueHead += 1
            if queueHead > 64 && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            busy = true
            condition.unlock()

            let completion: SinkCompletion
            do {
                switch try store.write(batch, onRetry: { [observeRetry] error in observeRetry(error) }) {
                case .written(let report):
                    observeInsert(report)
                    completion = .written(sequence: batch.sequence, report: report)
                case .fenced:
                    completion = .fenced(sequence: batch.sequence)
                }
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
            case .fenced:
                break
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
