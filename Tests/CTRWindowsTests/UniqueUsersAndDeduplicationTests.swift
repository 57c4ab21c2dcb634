import CTRWindows
import Testing

/// Unique users, duplicate events and the replay that rebuilds both after a restart.
@Suite struct UniqueUsersAndDeduplicationTests {
    func t(_ ms: Int64) -> Timestamp { Timestamp(milliseconds: ms) }

    func makeAggregator() -> WindowAggregator {
        WindowAggregator(configuration: WindowConfiguration(), partitionCount: 1, now: t(0))
    }

    @Test func usersAreCountedOncePerWindowAndKind() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 0, user: 10)
        _ = windows.ingest(.impression, 1, at: t(2_000), from: 0, offset: 1, user: 10)
        _ = windows.ingest(.impression, 1, at: t(3_000), from: 0, offset: 2, user: 11)
        _ = windows.ingest(.impression, 1, at: t(3_500), from: 0, offset: 3)
        _ = windows.ingest(.click, 1, at: t(4_000), from: 0, offset: 4, user: 10)
        _ = windows.ingest(.impression, 2, at: t(4_000), from: 0, offset: 5, user: 10)
        _ = windows.ingest(.impression, 1, at: t(12_000), from: 0, offset: 6, user: 10)
        let rows = windows.advance(now: t(1)).flatMap(\.rows)
        #expect(rows.count == 2)
        #expect(rows[0].uniqueUsers == UniqueUsers(impressions: 2, clicks: 1))
        #expect(rows[0].newUsers == UserHashes(impressions: [10, 11], clicks: [10]))
        #expect(rows[0].totals.impressions == 4)
        #expect(rows[1].uniqueUsers == UniqueUsers(impressions: 1, clicks: 0))
    }

    @Test func aLateUpdateCarriesOnlyItsNewUsers() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 0, user: 10)
        _ = windows.ingest(.impression, 1, at: t(12_000), from: 0, offset: 1)
        _ = windows.advance(now: t(1))
        #expect(windows.ingest(.impression, 1, at: t(9_000), from: 0, offset: 2, user: 10) == .lateUpdate)
        #expect(windows.ingest(.impression, 1, at: t(9_000), from: 0, offset: 3, user: 12) == .lateUpdate)
        let row = windows.advance(now: t(2)).flatMap(\.rows).first
        #expect(row?.revision == 1)
        #expect(row?.uniqueUsers == UniqueUsers(impressions: 2, clicks: 0))
        #expect(row?.newUsers == UserHashes(impressions: [12]))
    }

    @Test func anEventWhoseIDTheWindowCountedIsADuplicate() {
        var windows = makeAggregator()
        #expect(windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 0, eventID: 77) == .counted)
        #expect(windows.ingest(.impression, 1, at: t(1_500), from: 0, offset: 1, eventID: 77) == .duplicate)
        #expect(windows.ingest(.impression, 2, at: t(1_500), from: 0, offset: 2, eventID: 77) == .duplicate, "the id names the event, whatever its product")
        #expect(windows.ingest(.click, 1, at: t(1_600), from: 0, offset: 3, eventID: 77) == .counted, "a click is another event")
        #expect(windows.ingest(.impression, 1, at: t(11_000), from: 0, offset: 4, eventID: 77) == .counted, "another window")
        _ = windows.ingest(.impression, 1, at: t(13_000), from: 0, offset: 5)
        let row = windows.advance(now: t(1)).flatMap(\.rows).first
        #expect(row?.totals == WindowCounts(impressions: 1, clicks: 1))
        #expect(windows.ingest(.impression, 1, at: t(9_000), from: 0, offset: 6, eventID: 77) == .duplicate, "within the allowed lateness")
    }

    @Test func windowsThatRememberIdentitiesHoldTheirFirstOffsetUntilTheyExpire() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 5, user: 10)
        _ = windows.ingest(.impression, 1, at: t(13_000), from: 0, offset: 6)
        _ = windows.advance(now: t(1))
        #expect(windows.lowestPendingOffset(of: 0)?.offset == 5, "emitted, but a replay must rebuild its users")
        _ = windows.ingest(.impression, 1, at: t(18_000), from: 0, offset: 7)
        _ = windows.advance(now: t(2))
        #expect(windows.lowestPendingOffset(of: 0)?.offset == 6, "window [0, 10 s) expired at watermark 15 s")
    }

    @Test func plainWindowsReleaseTheirOffsetsOnEmission() {
        var windows = makeAggregator()
        _ = windows.ingest(.impression, 1, at: t(1_000), from: 0, offset: 5)
        _ = windows.ingest(.impression, 1, at: t(13_000), from: 0, offset: 6)
        _ = windows.advance(now: t(1))
        #expect(windows.lowestPendingOffset(of: 0)?.offset == 6)
    }

    /// A restart: the durable row of the window reflects offsets below 3; the replay from the
    /// held offset rebuilds users and ids without counting them again.
    @Test func aReplayRebuildsUsersAndIDsWithoutCountingThemAgain() {
        var first = makeAggregator()
        let events: [(EventKind, Int64, UInt64, UInt64)] = [(.impression, 1_000, 10, 100), (.impression, 2_000, 11, 101), (.click, 2_500, 10, 102)]
        for (offset, event) in events.enumerated() {
            _ = first.ingest(event.0, 1, at: t(event.1), from: 0, offset: Int64(offset), user: event.2, eventID: event.3)
        }
        _ = first.ingest(.impression, 1, at: t(13_000), from: 0, offset: 3)
        let row = first.advance(now: t(1)).flatMap(\.rows).first!
        #expect(row.uniqueUsers == UniqueUsers(impressions: 2, clicks: 1))

        var replay = makeAggregator()
        replay.restore(windowStart: t(0), rows: [RestoredRow(product: 1, totals: row.totals, revision: 0, reflectedBefore: [3], uniqueUsers: row.uniqueUsers)])
        for (offset, event) in events.enumerated() {
            #expect(replay.ingest(event.0, 1, at: t(event.1), from: 0, offset: Int64(offset), user: event.2, eventID: event.3) == .alreadyCounted)
        }
        _ = replay.ingest(.impression, 1, at: t(13_000), from: 0, offset: 3)
        #expect(replay.ingest(.impression, 1, at: t(3_000), from: 0, offset: 4, user: 11, eventID: 101) == .duplicate, "a producer's retry")
        #expect(replay.ingest(.impression, 1, at: t(3_000), from: 0, offset: 5, user: 11, eventID: 103) == .counted)
        #expect(replay.ingest(.impression, 1, at: t(3_000), from: 0, offset: 6, user: 12, eventID: 104) == .counted)
        let update = replay.advance(now: t(2)).flatMap(\.rows).first
        #expect(update?.revision == 1)
        #expect(update?.totals == WindowCounts(impressions: 4, clicks: 1))
        #expect(update?.uniqueUsers == UniqueUsers(impressions: 3, clicks: 1))
        #expect(update?.newUsers == UserHashes(impressions: [12]))
    }
}
