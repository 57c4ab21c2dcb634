import ClickHouseHTTP
import CTRWindows
import Foundation
import TestSupport
import Testing

@testable import ClickHouseSink

/// The sink thread against the in-memory store: order, cancellation, fencing, failure.
@Suite struct SinkWorkerTests {
    func batch(_ sequence: UInt64, generation: Int32 = 1, rows: Int = 2) -> ResultBatch {
        let end = Timestamp(milliseconds: 1_700_000_010_000)
        var batch = ResultBatch(id: "b-\(sequence)", sequence: sequence, generation: generation, day: ResultBatch.day(of: end))
        for index in 0..<rows {
            batch.append(
                ResultRow(
                    productID: "p\(index)", windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: end,
                    totals: WindowCounts(impressions: 1), delta: WindowCounts(impressions: 1), revision: 0, emittedAt: end
                )
            )
        }
        return batch
    }

    func sequences(_ completions: [SinkCompletion]) -> [UInt64] {
        completions.map {
            switch $0 {
            case .written(let sequence, _), .fenced(let sequence), .failed(let sequence, _): sequence
            }
        }
    }

    func drain(_ sink: SinkWorker, count: Int) -> [SinkCompletion] {
        var completions: [SinkCompletion] = []
        _ = eventually(timeout: 10) {
            completions += sink.takeCompletions()
            return completions.count >= count
        }
        return completions
    }

    @Test func writesBatchesInSubmissionOrderAndCountsBufferedRows() {
        let store = InMemoryResultsStore(consumerGroup: "g")
        let sink = SinkWorker(store: store)
        for sequence in 0..<5 { sink.submit(batch(UInt64(sequence))) }
        sink.start()
        defer { sink.stop() }
        #expect(sequences(drain(sink, count: 5)) == [0, 1, 2, 3, 4])
        #expect(sink.waitUntilIdle(timeout: .seconds(5)))
        #expect(sink.bufferedRows == 0)
        #expect(store.rows.map(\.batchID) == ["b-0", "b-0", "b-1", "b-1", "b-2", "b-2", "b-3", "b-3", "b-4", "b-4"])
    }

    /// Issue 12, item 7: written batches were kept in the queue until 64 had piled up, each with
    /// its rows (about 10 MiB at 50,000 rows), whatever `--buffer-max-rows` said.
    @Test func aWrittenBatchIsNotHeldAnyLonger() {
        let store = InMemoryResultsStore(consumerGroup: "g")
        let sink = SinkWorker(store: store)
        for sequence in 0..<3 { sink.submit(batch(UInt64(sequence))) }
        #expect(sink.heldBatches == 3)
        sink.start()
        defer { sink.stop() }
        #expect(sequences(drain(sink, count: 3)) == [0, 1, 2])
        #expect(sink.waitUntilIdle(timeout: .seconds(5)))
        #expect(sink.heldBatches == 0)
    }

    @Test func cancelledBatchesOfARevokedGenerationAreNeverWritten() {
        let store = InMemoryResultsStore(consumerGroup: "g")
        let sink = SinkWorker(store: store)
        sink.submit(batch(0, generation: 1))
        sink.submit(batch(1, generation: 1))
        sink.submit(batch(2, generation: 2))
        #expect(sink.cancel(generationsBelow: 2) == [0, 1])
        #expect(sink.bufferedRows == 2)
        sink.start()
        defer { sink.stop() }
        #expect(sequences(drain(sink, count: 1)) == [2])
        #expect(Set(store.rows.map(\.batchID)) == ["b-2"])
    }

    @Test func aFencedBatchIsReportedAndWritesNothing() throws {
        let store = InMemoryResultsStore(consumerGroup: "g")
        try store.fence(group: "g", generation: 3) { false }
        let sink = SinkWorker(store: store)
        sink.submit(batch(0, generation: 2))
        sink.start()
        defer { sink.stop() }
        #expect(drain(sink, count: 1) == [.fenced(sequence: 0)])
        #expect(store.rows.isEmpty)
    }

    @Test func aFailureStopsTheSinkAfterReportingIt() {
        let store = InMemoryResultsStore(consumerGroup: "g")
        store.failNextWrites(with: [.server(code: 60, status: 404, message: "Table ctr.ctr_results_raw doesn't exist")])
        let sink = SinkWorker(store: store)
        sink.submit(batch(0))
        sink.submit(batch(1))
        sink.start()
        defer { sink.stop() }
        let completions = drain(sink, count: 1)
        guard case .failed(0, let error) = completions.first else {
            Issue.record("expected a failure, got \(completions)")
            return
        }
        #expect(error.description.contains("schema-tool migrate"))
        #expect(!eventually(timeout: 0.5) { !sink.takeCompletions().isEmpty }, "nothing is written after a failure")
        #expect(store.rows.isEmpty)
    }
}
