import CTRWindows
import Testing

@Suite struct WatermarksTests {
    func t(_ ms: Int64) -> Timestamp { Timestamp(milliseconds: ms) }

    @Test func isTheMinimumOverPartitionsMinusOutOfOrderness() {
        var marks = Watermarks(partitionCount: 2, outOfOrderness: .seconds(2), idleTimeout: .seconds(30), now: t(0))
        marks.observe(t(50_000), on: 0)
        #expect(marks.advance(now: t(1)) == nil, "partition 1 has no data yet and holds the watermark")
        marks.observe(t(20_000), on: 1)
        #expect(marks.advance(now: t(2)) == t(18_000))
        marks.observe(t(30_000), on: 1)
        #expect(marks.advance(now: t(3)) == t(28_000))
    }

    @Test func neverMovesBackwards() {
        var marks = Watermarks(partitionCount: 1, outOfOrderness: .seconds(2), idleTimeout: .seconds(30), now: t(0))
        marks.observe(t(20_000), on: 0)
        #expect(marks.advance(now: t(1)) == t(18_000))
        marks.observe(t(5_000), on: 0)
        #expect(marks.advance(now: t(2)) == t(18_000))
    }

    @Test func idlePartitionStopsHoldingTheWatermarkUntilItSeesDataAgain() {
        var marks = Watermarks(partitionCount: 2, outOfOrderness: .seconds(2), idleTimeout: .seconds(30), now: t(0))
        marks.observe(t(10_000), on: 0)
        marks.observe(t(10_000), on: 1)
        #expect(marks.advance(now: t(0)) == t(8_000))
        marks.observe(t(60_000), on: 0)
        #expect(marks.advance(now: t(29_999)) == t(8_000), "not idle before the timeout")
        #expect(!marks.isIdle(1))
        marks.observe(t(61_000), on: 0)
        #expect(marks.advance(now: t(30_000)) == t(59_000), "idle exactly at the timeout")
        #expect(marks.isIdle(1))
        marks.observe(t(40_000), on: 1)
        #expect(marks.advance(now: t(30_001)) == t(59_000), "active again, but the watermark does not go back")
        #expect(!marks.isIdle(1))
        marks.observe(t(70_000), on: 0)
        marks.observe(t(62_000), on: 1)
        #expect(marks.advance(now: t(30_002)) == t(60_000))
    }

    @Test func partitionWithoutDataIsIgnoredAfterTheIdleTimeout() {
        var marks = Watermarks(partitionCount: 2, outOfOrderness: .seconds(2), idleTimeout: .seconds(30), now: t(0))
        marks.observe(t(10_000), on: 0)
        #expect(marks.advance(now: t(29_000)) == nil)
        marks.observe(t(11_000), on: 0)
        #expect(marks.advance(now: t(30_000)) == t(9_000))
    }

    @Test func allIdleUsesTheMaximumSoAStoppedStreamStillCloses() {
        var marks = Watermarks(partitionCount: 2, outOfOrderness: .seconds(2), idleTimeout: .seconds(30), now: t(0))
        marks.observe(t(10_000), on: 0)
        marks.observe(t(50_000), on: 1)
        #expect(marks.advance(now: t(0)) == t(8_000))
        #expect(marks.advance(now: t(30_000)) == t(48_000))
    }
}
