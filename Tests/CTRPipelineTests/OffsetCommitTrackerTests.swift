import CTRWindows
import Testing

@testable import CTRPipeline

@Suite struct OffsetCommitTrackerTests {
    @Test func commitsNeverPassUnacknowledgedOrPendingEvents() {
        var tracker = OffsetCommitTracker(committed: [nil, nil])
        for offset in 0..<10 { tracker.consumed(0, offset: Int64(offset)) }
        tracker.consumed(1, offset: 4)
        tracker.batch(7, dependsOn: [SourceOffset(partition: 0, offset: 3, maxEventTimeBefore: 100)])
        let pending: (SourcePartition) -> SourceOffset? = { $0 == 1 ? SourceOffset(partition: 1, offset: 2, maxEventTimeBefore: 50) : nil }
        let offsets = tracker.offsetsToCommit(pending: pending, maxEventTime: { _ in 999 })
        #expect(offsets[0] == SourceOffset(partition: 0, offset: 3, maxEventTimeBefore: 100), "held at the unacknowledged batch")
        #expect(offsets[1] == SourceOffset(partition: 1, offset: 2, maxEventTimeBefore: 50), "held at the pending window")
        tracker.committed(offsets)
        #expect(tracker.offsetsToCommit(pending: pending, maxEventTime: { _ in 999 }).isEmpty, "nothing moved")
        tracker.acknowledged(7)
        let next = tracker.offsetsToCommit(pending: { _ in nil }, maxEventTime: { _ in 999 })
        #expect(next[0] == SourceOffset(partition: 0, offset: 10, maxEventTimeBefore: 999), "everything consumed is durable")
        #expect(next[1]?.offset == 5)
    }

    @Test func commitMetadataRoundTrips() {
        #expect(CommitMetadata(text: CommitMetadata(maxEventTime: 1_700_000_000_123).text) == CommitMetadata(maxEventTime: 1_700_000_000_123))
        #expect(CommitMetadata(text: "ctr1") == CommitMetadata(maxEventTime: nil))
        #expect(CommitMetadata(text: "something else") == nil)
    }

    @Test func commitsNeverPassAnUnacknowledgedDeadLetter() {
        var tracker = OffsetCommitTracker(committed: [(offset: 3, maxEventTime: 500)])
        for offset in 3..<10 { tracker.consumed(0, offset: Int64(offset)) }
        let held = tracker.offsetsToCommit(pending: { _ in nil }, maxEventTime: { _ in 900 }, deadLettersPendingFrom: { _ in 6 })
        #expect(held[0] == SourceOffset(partition: 0, offset: 6, maxEventTimeBefore: 500), "held at the letter, with the last committed event time")
        let free = tracker.offsetsToCommit(pending: { _ in nil }, maxEventTime: { _ in 900 })
        #expect(free[0] == SourceOffset(partition: 0, offset: 10, maxEventTimeBefore: 900))
    }

    @Test func aCommittedStartIsThePositionBeforeAnythingIsConsumed() {
        let tracker = OffsetCommitTracker(committed: [(offset: 42, maxEventTime: nil), nil])
        #expect(tracker.position(of: 0) == 42)
        #expect(tracker.position(of: 1) == nil)
        #expect(tracker.offsetsToCommit(pending: { _ in nil }, maxEventTime: { _ in nil }).isEmpty)
    }
}
