import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import EventDecoding
import Ingest
import Testing

@testable import CTRPipeline

/// The pipeline's rules, one at a time: feed inputs, assert the actions.
@Suite struct PipelineStateMachineTests {
    let impressions0 = TopicPartition(topic: "impressions", partition: 0)
    let clicks0 = TopicPartition(topic: "clicks", partition: 0)
    let t0: Int64 = 1_700_000_000_000

    func makeMachine(batchMaxRows: Int = 100, bufferMaxRows: Int = 1_000) -> PipelineStateMachine {
        PipelineStateMachine(
            configuration: .init(
                windows: WindowConfiguration(), batchMaxRows: batchMaxRows, batchMaxDelay: Milliseconds(250), bufferMaxRows: bufferMaxRows,
                commitInterval: Milliseconds(1_000), writer: "w", topics: [("impressions", .kind(.impression)), ("clicks", .kind(.click))]
            )
        )
    }

    func at(_ offset: Int64) -> Timestamp { Timestamp(milliseconds: t0 + offset) }

    /// A machine that owns impressions:0 in `generation`, recovered with nothing durable.
    func running(generation: Int32 = 5, committed: [TopicPartition: KafkaConsumer.CommittedOffset] = [:], batchMaxRows: Int = 100)
        -> PipelineStateMachine
    {
        var machine = makeMachine(batchMaxRows: batchMaxRows)
        let partitions = [impressions0]
        #expect(machine.assigned(partitions, generation: generation, now: at(0)) == [
            .cancelBatches(generationsBelow: generation), .recover(generation: generation, partitions: partitions),
        ])
        guard case .restore = machine.committedOffsetsRead(committed, now: at(0)).first else {
            Issue.record("expected a restore")
            return machine
        }
        #expect(machine.restored([], now: at(0)) == [.resume(partitions)])
        return machine
    }

    func impression(_ product: String, _ time: Int64) -> Result<DecodedEvent, Rejection> {
        .success(DecodedEvent(productID: product, timestamp: Timestamp(milliseconds: t0 + time)))
    }

    func submitted(_ actions: [PipelineStateMachine.Action]) -> [ResultBatch] {
        actions.compactMap { if case .submit(let batch) = $0 { return batch } else { return nil } }
    }

    @Test func restoreAsksForWindowsThatCanStillReceiveEvents() {
        var machine = makeMachine()
        _ = machine.assigned([clicks0, impressions0], generation: 1, now: at(0))
        let actions = machine.committedOffsetsRead(
            [impressions0: .init(offset: 10, metadata: CommitMetadata(maxEventTime: t0 + 60_000).text)], now: at(0)
        )
        #expect(actions == [
            .restore(RestoreRequest(
                partitions: ["clicks:0", "impressions:0"], windowEndAfter: at(60_000 - 2_000 - 5_000), partitionsWithoutHistory: ["clicks:0"]
            ))
        ])
    }

    @Test func startFromSeeksPartitionsWithoutCommittedOffsetsOnly() {
        var machine = PipelineStateMachine(
            configuration: .init(
                windows: WindowConfiguration(), batchMaxRows: 10, batchMaxDelay: Milliseconds(250), bufferMaxRows: 100,
                commitInterval: Milliseconds(1_000), writer: "w", topics: [("impressions", .kind(.impression)), ("clicks", .kind(.click))],
                startFrom: at(-3_600_000)
            )
        )
        _ = machine.assigned([clicks0, impressions0], generation: 1, now: at(0))
        let actions = machine.committedOffsetsRead([impressions0: .init(offset: 7, metadata: "ctr1")], now: at(0))
        #expect(actions.count == 2)
        #expect(actions.last == .seek([clicks0], to: at(-3_600_000)))
        guard case .notice(let message) = actions.first else {
            Issue.record("expected a notice that the committed partition ignores --start-from")
            return
        }
        #expect(message.contains("--reset-offsets"))
        guard case .restore(let request) = machine.startPositionsFound([clicks0: 40], now: at(0)).first else {
            Issue.record("expected a restore")
            return
        }
        #expect(request.partitionsWithoutHistory == ["clicks:0", "impressions:0"])
        _ = machine.restored([], now: at(0))
        #expect(machine.positions.map(\.position) == [40, 7], "clicks start at the time's offset, impressions resume")
    }

    @Test func emissionsWaitUntilTheReplayReachesWhatRestoredRowsReflect() {
        var machine = makeMachine()
        _ = machine.assigned([impressions0], generation: 1, now: at(0))
        _ = machine.committedOffsetsRead([:], now: at(0))
        let restored = StoredWindowRow(
            productID: "a", windowStart: at(0), totals: WindowCounts(impressions: 2), revision: 0, reflectedBefore: ["impressions:0": 3]
        )
        _ = machine.restored([restored], now: at(0))
        for offset in 0..<3 { _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression("a", 1_000)) }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 1_000, impression("a", 30_000))
        // offsets 0..<3 were already counted; position 1_001 ≥ 3, so the window may fire now.
        let batches = submitted(machine.pollFinished(.init(now: at(1_000))) + machine.pollFinished(.init(now: at(1_300))))
        #expect(batches.flatMap(\.rows).isEmpty, "nothing new in [0, 10 s): no row")
        #expect(machine.counters.alreadyCounted == 3)
    }

    @Test func aBatchTakesAnAdvanceOnlyWhenAllItsRowsFit() {
        var machine = running(batchMaxRows: 3)
        for (offset, product) in ["a", "b"].enumerated() { _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000)) }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 2, impression("c", 12_500))
        #expect(submitted(machine.pollFinished(.init(now: at(10)))).isEmpty, "window [0, 10 s) fired: two rows wait in the open batch")
        for (offset, product) in ["d", "e"].enumerated() {
            _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(3 + offset), impression(product, 11_000))
        }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 5, impression("f", 22_500))
        let batches = submitted(machine.pollFinished(.init(now: at(20))))
        #expect(batches.map { $0.rows.map(\.productID) } == [["a", "b"]], "the next advance's 3 rows do not fit beside 2")
        #expect(batches.first?.positions == [PartitionPosition(partition: "impressions:0", nextOffset: 3)])
        let next = submitted(machine.pollFinished(.init(now: at(400))))
        #expect(next.map { $0.rows.map(\.productID) } == [["c", "d", "e"]])
        #expect(next.first?.positions.last == PartitionPosition(partition: "impressions:0", nextOffset: 6))
    }

    @Test func theOpenBatchLeavesAsSoonAsTheConsumerHasCaughtUp() {
        var machine = running()
        for (offset, product) in ["a", "b"].enumerated() { _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000)) }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 2, impression("c", 12_500))
        #expect(submitted(machine.pollFinished(.init(now: at(10)))).isEmpty, "window [0, 10 s) fired: two rows wait in the open batch")
        #expect(
            submitted(machine.pollFinished(.init(now: at(110), partitionsWithBacklog: [impressions0], pollWasEmpty: true))).isEmpty,
            "an empty poll with a backlog: more messages are on their way"
        )
        #expect(submitted(machine.pollFinished(.init(now: at(120), sourceTrouble: true, pollWasEmpty: true))).isEmpty, "the broker is in trouble")
        let batches = submitted(machine.pollFinished(.init(now: at(130), pollWasEmpty: true)))
        #expect(batches.map { $0.rows.map(\.productID) } == [["a", "b"]], "caught up: the batch leaves before the 250 ms batch delay")
    }

    @Test func theOpenBatchWaitsWhileTheSinkWritesAnEarlierOne() {
        var machine = running()
        for (offset, product) in ["a", "b"].enumerated() { _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000)) }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 2, impression("c", 12_500))
        _ = machine.pollFinished(.init(now: at(10)))
        #expect(
            submitted(machine.pollFinished(.init(now: at(400), sinkBufferedRows: 7))).isEmpty,
            "past the 250 ms batch delay, but ClickHouse still writes 7 rows of an earlier batch"
        )
        #expect(submitted(machine.pollFinished(.init(now: at(410), sinkBufferedRows: 7, pollWasEmpty: true))).isEmpty, "caught up, still busy")
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 3, impression("d", 22_500))
        #expect(submitted(machine.pollFinished(.init(now: at(420), sinkBufferedRows: 7))).isEmpty, "the next window's rows join the batch")
        let batches = submitted(machine.pollFinished(.init(now: at(430))))
        #expect(batches.map { $0.rows.map(\.productID) } == [["a", "b", "c"]], "the sink is idle: one insert for both windows")
    }

    @Test func anEmissionLargerThanTheCapIsSplitIntoBatchesWithOnePosition() {
        var machine = running(batchMaxRows: 2)
        for (offset, product) in ["a", "b", "c", "d", "e"].enumerated() {
            _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000))
        }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 5, impression("z", 12_500))
        let batches = submitted(machine.pollFinished(.init(now: at(10))) + machine.pollFinished(.init(now: at(300))))
        #expect(batches.map { $0.rows.map(\.productID) } == [["a", "b"], ["c", "d"], ["e"]])
        #expect(Set(batches.map(\.positions)) == [[PartitionPosition(partition: "impressions:0", nextOffset: 6)]])
        #expect(Set(batches.map(\.id)).count == 3)
    }

    @Test func commitsWaitForAcknowledgedRowsAndCarryTheEventTime() {
        var machine = running()
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 0, impression("a", 1_000))
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 1, impression("a", 12_500))
        let first = machine.pollFinished(.init(now: at(300))) + machine.pollFinished(.init(now: at(600)))
        let batch = try! #require(submitted(first).first, "the window fired and its batch aged past 250 ms")
        let held = machine.pollFinished(.init(now: at(1_500)))
        #expect(held.contains(.commit([impressions0: .init(offset: 0, metadata: CommitMetadata(maxEventTime: nil).text)])), "offset 0 waits for the batch")
        machine.commitSucceeded()
        _ = machine.batchCompleted(.written(sequence: batch.sequence, report: InsertReport(rows: 1, retries: 0, duration: .zero, recoveredAmbiguousAttempt: false, resultLatency: .zero)))
        let commit = machine.pollFinished(.init(now: at(2_600)))
        #expect(commit.contains(.commit([impressions0: .init(offset: 1, metadata: CommitMetadata(maxEventTime: t0 + 1_000).text)])))
    }

    @Test func aRevocationDropsEverythingAndCommitsNothing() {
        var machine = running(generation: 7)
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 0, impression("a", 1_000))
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 1, impression("a", 12_500))
        _ = machine.pollFinished(.init(now: at(10)))
        #expect(machine.revoked(lost: true) == [.cancelBatches(generationsBelow: 8)])
        #expect(machine.pollFinished(.init(now: at(5_000))).isEmpty, "no assignment: nothing to write or commit")
        #expect(machine.consumed(topicIndex: 0, partition: 0, offset: 2, impression("a", 13_000)) == .handled)
    }

    @Test func aFencedBatchDeposesTheMachineUntilTheRevocation() {
        var machine = running()
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 0, impression("a", 1_000))
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 1, impression("a", 12_500))
        let batch = try! #require(submitted(machine.pollFinished(.init(now: at(300))) + machine.pollFinished(.init(now: at(600)))).first)
        #expect(machine.batchCompleted(.fenced(sequence: batch.sequence)) == [.pause([impressions0])])
        #expect(machine.pollFinished(.init(now: at(5_000))).isEmpty, "deposed: no commit")
    }

    @Test func backpressurePausesAtTheBufferLimitAndResumesBelowHalf() {
        var machine = makeMachine(bufferMaxRows: 10)
        _ = machine.assigned([clicks0, impressions0], generation: 1, now: at(0))
        _ = machine.committedOffsetsRead([:], now: at(0))
        _ = machine.restored([], now: at(0))
        #expect(machine.pollFinished(.init(now: at(10), sinkBufferedRows: 10)).contains(.pause([clicks0, impressions0])))
        #expect(!machine.pollFinished(.init(now: at(20), sinkBufferedRows: 5)).contains(.resume([clicks0, impressions0])))
        #expect(machine.pollFinished(.init(now: at(30), sinkBufferedRows: 4)).contains(.resume([clicks0, impressions0])))
        #expect(machine.pollFinished(.init(now: at(40), deadLettersFull: true)).contains(.pause([clicks0, impressions0])), "the dead-letter topic is full")
        #expect(!machine.pollFinished(.init(now: at(50), deadLettersFull: true)).contains(.resume([clicks0, impressions0])))
        #expect(machine.pollFinished(.init(now: at(60))).contains(.resume([clicks0, impressions0])))
    }

    /// Issue 12, item 8: a partition silent because the machine paused it is not idle. While
    /// the dead-letter topic is unavailable for longer than the idle timeout (and the idle
    /// close), the lagging partition must keep holding the watermark back, so that its next
    /// event is counted as the first run without the pause would have counted it.
    @Test func partitionsPausedForBackpressureNeverBecomeIdle() {
        var machine = makeMachine()
        _ = machine.assigned([clicks0, impressions0], generation: 1, now: at(0))
        _ = machine.committedOffsetsRead([:], now: at(0))
        _ = machine.restored([], now: at(0))
        #expect(machine.consumed(topicIndex: 0, partition: 0, offset: 0, impression("a", 20_000)) == .handled)
        #expect(machine.consumed(topicIndex: 1, partition: 0, offset: 0, impression("a", 1_000)) == .handled)
        _ = machine.pollFinished(.init(now: at(10)))
        #expect(machine.counters.watermarkMilliseconds == t0 + 1_000 - 2_000, "clicks:0 holds the watermark back")
        #expect(machine.pollFinished(.init(now: at(20), deadLettersFull: true)).contains(.pause([clicks0, impressions0])))
        // Paused past the idle timeout and the idle close, with no backlog known.
        for now in stride(from: Int64(1_000), through: 70_000, by: 1_000) {
            _ = machine.pollFinished(.init(now: at(now), deadLettersFull: true))
        }
        #expect(machine.counters.watermarkMilliseconds == t0 + 1_000 - 2_000)
        #expect(machine.pollFinished(.init(now: at(70_010))).contains(.resume([clicks0, impressions0])))
        // clicks:0's next event, 1 s after its last one: counted, not too late.
        #expect(machine.consumed(topicIndex: 1, partition: 0, offset: 1, impression("a", 2_000)) == .handled)
        #expect(machine.counters.rejected.isEmpty)
    }

    @Test func openWindowStateAtItsBoundPausesThePartitionsAheadUntilWindowsClose() {
        var machine = PipelineStateMachine(
            configuration: .init(
                windows: WindowConfiguration(), batchMaxRows: 100, batchMaxDelay: Milliseconds(250), bufferMaxRows: 1_000,
                commitInterval: Milliseconds(1_000), writer: "w", topics: [("impressions", .kind(.impression)), ("clicks", .kind(.click))],
                maxOpenProductWindows: 4
            )
        )
        _ = machine.assigned([clicks0, impressions0], generation: 1, now: at(0))
        _ = machine.committedOffsetsRead([:], now: at(0))
        _ = machine.restored([], now: at(0))
        for (offset, product) in ["a", "b", "c", "d"].enumerated() {
            _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000))
        }
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 4, impression("e", 41_000))
        // clicks:0 has no data yet and holds the watermark back: impressions:0 is ahead.
        #expect(machine.pollFinished(.init(now: at(10))) == [.pause([impressions0])])
        #expect(machine.pollFinished(.init(now: at(20))).isEmpty, "paused once")
        // clicks:0 goes idle after the idle timeout: the watermark moves, windows close.
        let actions = machine.pollFinished(.init(now: at(30_020)))
        #expect(actions.contains(.resume([impressions0])), "\(actions)")
    }

    @Test func aWindowLargerThanTheBoundIsNotPaused() {
        var machine = PipelineStateMachine(
            configuration: .init(
                windows: WindowConfiguration(), batchMaxRows: 100, batchMaxDelay: Milliseconds(250), bufferMaxRows: 1_000,
                commitInterval: Milliseconds(1_000), writer: "w", topics: [("impressions", .kind(.impression))], maxOpenProductWindows: 2
            )
        )
        _ = machine.assigned([impressions0], generation: 1, now: at(0))
        _ = machine.committedOffsetsRead([:], now: at(0))
        _ = machine.restored([], now: at(0))
        for (offset, product) in ["a", "b", "c"].enumerated() {
            _ = machine.consumed(topicIndex: 0, partition: 0, offset: Int64(offset), impression(product, 1_000))
        }
        #expect(machine.pollFinished(.init(now: at(10))).isEmpty, "the only partition holds the watermark: pausing it could not close the window")
    }

    @Test func refusedMessagesAreDeadLettered() {
        var machine = running()
        let rejection = Rejection(.notJSON, "x")
        #expect(machine.consumed(topicIndex: 0, partition: 0, offset: 0, .failure(rejection)) == .deadLetter(rejection))
        _ = machine.consumed(topicIndex: 0, partition: 0, offset: 1, impression("a", 100_000))
        _ = machine.pollFinished(.init(now: at(10)))
        guard case .deadLetter(let late) = machine.consumed(topicIndex: 0, partition: 0, offset: 2, impression("a", 1_000)) else {
            Issue.record("expected too late")
            return
        }
        #expect(late.reason == .tooLate)
        #expect(machine.counters.rejected == [.notJSON: 1, .tooLate: 1])
    }
}
