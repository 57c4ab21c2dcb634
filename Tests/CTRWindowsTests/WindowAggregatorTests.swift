import CTRWindows
import Testing

@Suite struct WindowAggregatorTests {
    func t(_ ms: Int64) -> Timestamp { Timestamp(milliseconds: ms) }

    /// One partition, default rules (10 s windows, 2 s out-of-orderness, 5 s lateness).
    func makeAggregator(partitions: Int = 1) -> WindowAggregator {
        WindowAggregator(configuration: WindowConfiguration(), partitionCount: partitions, now: t(0))
    }

    @Test func windowFiresOnceWhenTheWatermarkReachesItsEnd() {
        var windows = makeAggregator()
        #expect(windows.ingest(.impression, 7, at: t(1_000), from: 0, offset: 0) == .counted)
        #expect(windows.ingest(.click, 7, at: t(9_999), from: 0, offset: 1) == .counted)
        #expect(windows.ingest(.impression, 7, at: t(11_999), from: 0, offset: 2) == .counted)
        #expect(windows.advance(now: t(1)).isEmpty, "watermark 9_999 < window end 10_000")
        #expect(windows.ingest(.impression, 8, at: t(12_000), from: 0, offset: 3) == .counted)
        let emissions = windows.advance(now: t(2))
        #expect(emissions.count == 1, "watermark exactly at the window end fires it")
        let emission = try! #require(emissions.first)
        #expect(emission.windowStart == t(0))
        #expect(emission.windowEnd == t(10_000))
        #expect(emission.rows == [WindowRow(product: 7, totals: .init(impressions: 1, clicks: 1), delta: .init(impressions: 1, clicks: 1), revision: 0)])
        #expect(emission.firstNewOffsets == [SourceOffset(partition: 0, offset: 0)])
        #expect(windows.advance(now: t(3)).isEmpty, "fires once")
    }

    @Test func lateEventsWithinLatenessProduceRevisionsWithDeltas() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 0)
        _ = windows.ingest(.impression, 1, at: t(13_000), from: 0, offset: 1)
        #expect(windows.advance(now: t(1)).count == 1)
        #expect(windows.ingest(.click, 1, at: t(9_000), from: 0, offset: 2) == .lateUpdate)
        #expect(windows.ingest(.impression, 1, at: t(9_500), from: 0, offset: 3) == .lateUpdate)
        let second = windows.advance(now: t(2))
        #expect(second.map(\.rows) == [[WindowRow(product: 1, totals: .init(impressions: 2, clicks: 1), delta: .init(impressions: 1, clicks: 1), revision: 1)]])
        #expect(second.first?.firstNewOffsets == [SourceOffset(partition: 0, offset: 2, maxEventTimeBefore: 13_000)])
    }

    @Test func eventsAtOrPastEndPlusLatenessAreTooLate() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 0)
        _ = windows.ingest(.impression, 1, at: t(16_999), from: 0, offset: 1)
        _ = windows.advance(now: t(1))  // watermark 14_999
        #expect(windows.ingest(.click, 1, at: t(9_000), from: 0, offset: 2) == .lateUpdate, "14_999 < 10_000 + 5_000")
        _ = windows.ingest(.impression, 1, at: t(17_000), from: 0, offset: 3)
        _ = windows.advance(now: t(2))  // watermark 15_000
        #expect(windows.ingest(.click, 1, at: t(9_000), from: 0, offset: 4) == .tooLate(windowStart: t(0)))
        #expect(windows.advance(now: t(3)).isEmpty, "too-late events change nothing")
    }

    @Test func windowStateIsDroppedAfterTheLateness() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 0)
        _ = windows.ingest(.impression, 2, at: t(30_000), from: 0, offset: 1)
        #expect(windows.openWindowCount == 2)
        _ = windows.advance(now: t(1))
        #expect(windows.openWindowCount == 1)
        #expect(windows.openProductWindowCount == 1)
    }

    @Test func minimumOverPartitionsHoldsWindowsOpen() {
        var windows = makeAggregator(partitions: 2)
        _ = windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 0)
        _ = windows.ingest(.impression, 1, at: t(40_000), from: 0, offset: 1)
        #expect(windows.advance(now: t(1)).isEmpty, "partition 1 has no data yet")
        _ = windows.ingest(.click, 1, at: t(6_000), from: 1, offset: 0)
        #expect(windows.advance(now: t(2)).isEmpty, "partition 1 is at 4_000")
        _ = windows.ingest(.click, 1, at: t(12_000), from: 1, offset: 1)
        let emissions = windows.advance(now: t(3))
        #expect(emissions.map(\.rows.first?.totals) == [WindowCounts(impressions: 1, clicks: 1)])
        #expect(emissions.first?.firstNewOffsets == [SourceOffset(partition: 0, offset: 0), SourceOffset(partition: 1, offset: 0)])
    }

    @Test func pendingOffsetsTrackWhatIsNotYetEmitted() {
        var windows = makeAggregator(partitions: 2)
        #expect(windows.lowestPendingOffset(of: 0) == nil)
        _ = windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 10)
        _ = windows.ingest(.impression, 1, at: t(15_000), from: 0, offset: 11)
        _ = windows.ingest(.impression, 1, at: t(15_000), from: 1, offset: 3)
        #expect(windows.lowestPendingOffset(of: 0) == SourceOffset(partition: 0, offset: 10, maxEventTimeBefore: nil))
        #expect(windows.lowestPendingOffset(of: 1)?.offset == 3)
        _ = windows.ingest(.impression, 1, at: t(12_000), from: 1, offset: 4)
        _ = windows.advance(now: t(1))  // watermark 10_000: first window emitted
        #expect(
            windows.lowestPendingOffset(of: 0) == SourceOffset(partition: 0, offset: 11, maxEventTimeBefore: 5_000),
            "resuming at offset 11 restores partition 0's highest event time before it"
        )
        #expect(windows.lowestPendingOffset(of: 1)?.offset == 3)
    }

    @Test func restoredWatermarkJudgesReplayedEventsLikeTheFirstRun() {
        var first = makeAggregator()
        _ = first.ingest(.impression, 1, at: t(40_000), from: 0, offset: 0)
        _ = first.advance(now: t(1))
        #expect(first.ingest(.click, 1, at: t(5_000), from: 0, offset: 1) == .tooLate(windowStart: t(0)))

        var resumed = makeAggregator()
        resumed.restoreWatermark(of: 0, maxEventTime: t(40_000))
        _ = resumed.advance(now: t(1))
        #expect(resumed.watermark == t(38_000), "the watermark is defined before any replayed event")
        #expect(resumed.ingest(.click, 1, at: t(5_000), from: 0, offset: 1) == .tooLate(windowStart: t(0)))
    }

    @Test func restoredProductsSkipWhatTheirRowReflectsAndContinueRevisions() {
        var windows = makeAggregator(partitions: 2)
        windows.restore(
            windowStart: t(0),
            rows: [
                RestoredRow(product: 1, totals: .init(impressions: 3, clicks: 1), revision: 2, reflectedBefore: [7, 0]),
                RestoredRow(product: 2, totals: .init(impressions: 1), revision: 0, reflectedBefore: [4, 0]),
            ]
        )
        #expect(windows.ingest(.impression, 1, at: t(5_000), from: 0, offset: 5) == .alreadyCounted)
        #expect(windows.ingest(.click, 1, at: t(5_000), from: 0, offset: 6) == .alreadyCounted)
        #expect(windows.ingest(.impression, 2, at: t(5_000), from: 0, offset: 5) == .counted, "product 2's row reflects less")
        #expect(windows.ingest(.click, 1, at: t(5_000), from: 0, offset: 7) == .counted)
        #expect(windows.ingest(.click, 1, at: t(5_000), from: 1, offset: 0) == .counted, "nothing of partition 1 was reflected")
        #expect(windows.ingest(.impression, 3, at: t(5_000), from: 0, offset: 1) == .counted, "a product without a row counts from scratch")
        #expect(windows.ingest(.impression, 1, at: t(12_500), from: 0, offset: 8) == .counted, "later windows start fresh")
        #expect(windows.ingest(.impression, 1, at: t(12_500), from: 1, offset: 1) == .counted)
        let emissions = windows.advance(now: t(1))
        #expect(
            emissions.first?.rows == [
                WindowRow(product: 1, totals: .init(impressions: 3, clicks: 3), delta: .init(impressions: 0, clicks: 2), revision: 3),
                WindowRow(product: 2, totals: .init(impressions: 2), delta: .init(impressions: 1), revision: 1),
                WindowRow(product: 3, totals: .init(impressions: 1), delta: .init(impressions: 1), revision: 0),
            ]
        )
    }

    @Test func revenueThatWouldOverflowTheWindowIsRefused() {
        var windows = makeAggregator()
        let big = WindowCounts.maximumRevenueMicros / 2 + 1
        #expect(windows.ingest(.click, 1, at: t(1_000), from: 0, offset: 0, revenueMicros: big) == .counted)
        #expect(windows.ingest(.click, 1, at: t(1_000), from: 0, offset: 1, revenueMicros: big) == .revenueOverflow(windowStart: t(0)))
        #expect(windows.ingest(.click, 2, at: t(1_000), from: 0, offset: 2, revenueMicros: big) == .counted, "another product's window is fine")
        _ = windows.ingest(.impression, 1, at: t(20_000), from: 0, offset: 3)
        #expect(windows.advance(now: t(1)).first?.rows.map(\.totals.revenueMicros) == [big, big])
    }

    @Test func windowsOfAStreamThatStoppedFireAfterCloseIdleAfter() {
        var configuration = WindowConfiguration()
        configuration.closeIdleAfter = .seconds(60)
        var windows = WindowAggregator(configuration: configuration, partitionCount: 1, now: t(0))
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 0)
        #expect(windows.advance(now: t(1)).isEmpty, "the event's poll: the watermark is -1 s")
        #expect(windows.advance(now: t(60_000)).isEmpty, "quiet for less than a minute")
        #expect(windows.advance(now: t(60_001)).first?.rows.map(\.totals.impressions) == [1], "quiet for a minute: the window fires")
        #expect(windows.watermark == t(10_000))
        #expect(windows.ingest(.impression, 1, at: t(9_000), from: 0, offset: 1) == .lateUpdate, "within lateness of the raised watermark")
        #expect(windows.advance(now: t(60_002)).first?.rows.first?.revision == 1)
    }

    @Test func productsOfExpiredWindowsAreReleased() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 0)
        _ = windows.ingest(.impression, 2, at: t(1_000), from: 0, offset: 1)
        _ = windows.ingest(.impression, 2, at: t(11_000), from: 0, offset: 2)
        _ = windows.ingest(.impression, 3, at: t(17_500), from: 0, offset: 3)
        _ = windows.advance(now: t(1))
        #expect(windows.takeReleasedProducts().sorted() == [1], "product 2 is still in window [10 s, 20 s)")
        #expect(windows.openProductCount == 2)
    }

    @Test func rowsOfAnEmissionAreOrderedByProduct() {
        var windows = makeAggregator()
        for (offset, product) in [ProductID(9), 3, 5, 3].enumerated() {
            _ = windows.ingest(.impression, product, at: t(1_000), from: 0, offset: Int64(offset))
        }
        _ = windows.ingest(.impression, 1, at: t(20_000), from: 0, offset: 4)
        #expect(windows.advance(now: t(1)).first?.rows.map(\.product) == [3, 5, 9])
    }
}
