import CTRWindows
import Testing

@testable import ClickHouseSink

@Suite struct ResultBatchTests {
    @Test func formatsUTCDateTimes() {
        #expect(DateTimeText.format(0) == "1970-01-01 00:00:00")
        #expect(DateTimeText.format(1_700_000_000) == "2023-11-14 22:13:20")
        #expect(DateTimeText.format(951_782_400) == "2000-02-29 00:00:00")
        #expect(DateTimeText.format(-1) == "1969-12-31 23:59:59")
    }

    @Test func revenueIsWrittenAsExactDecimalText() {
        func text(_ micros: UInt64) -> String {
            var bytes: [UInt8] = []
            DecimalText.append(micros: micros, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        #expect(text(0) == "0")
        #expect(text(1) == "0.000001")
        #expect(text(12_500_000) == "12.500000")
        #expect(text(1_000_000_000_123_456) == "1000000000.123456")
        #expect(DecimalText.micros("12.500000") == 12_500_000)
        #expect(DecimalText.micros("0.000001") == 1)
        #expect(DecimalText.micros("3") == 3_000_000)
        #expect(DecimalText.micros("x") == nil)
    }

    @Test func integersAreWrittenExactly() {
        for value: UInt64 in [0, 7, 10, 99, 1_000_000, UInt64.max] {
            var bytes: [UInt8] = []
            DecimalText.appendInteger(value, to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == String(value))
        }
    }

    @Test func tabSeparatedUnescapesByteForByte() {
        #expect(TabSeparated.unescape("a\\tb\\nc\\\\d\\'e") == "a\tb\nc\\d'e")
        #expect(Array(TabSeparated.unescape("\\t\u{301}x").unicodeScalars) == ["\t", "\u{301}", "x"], "a combining mark after an escape")
        #expect(TabSeparated.unescape("plain") == "plain")
    }

    @Test func daysFollowWindowEnd() {
        #expect(ResultBatch.day(of: Timestamp(milliseconds: 86_400_000)) == 1)
        #expect(ResultBatch.day(of: Timestamp(milliseconds: 86_399_999)) == 0)
    }

    /// The RowBinary body, against a byte-by-byte reference of the column order of
    /// `ResultsTable.rowColumns(dimensions:)`.
    @Test func encodesRowsAsRowBinary() {
        let end = Timestamp(milliseconds: 1_700_000_010_000)
        var batch = ResultBatch(id: "b-1", sequence: 0, generation: 3, day: ResultBatch.day(of: end))
        let long = String(repeating: "é", count: 100)
        let rows = [
            ResultRow(
                productID: "p", dimensions: ["c-1", long], windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: end,
                totals: WindowCounts(impressions: 4, clicks: 1, conversions: 2, revenueMicros: 1_500_000),
                delta: WindowCounts(impressions: 1, clicks: 0, conversions: 1, revenueMicros: 500_000), revision: 2,
                emittedAt: Timestamp(milliseconds: 1_700_000_020_500), uniqueUsers: UniqueUsers(impressions: 3, clicks: 1),
                newUsers: UserHashes(impressions: [7, .max], clicks: [])
            ),
            ResultRow(
                productID: "", dimensions: ["", ""], windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: end,
                totals: WindowCounts(), delta: WindowCounts(), revision: 0, emittedAt: end
            ),
        ]
        for row in rows { batch.append(row) }
        var expected: [UInt8] = []
        func fixed<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { expected += $0 } }
        func length(_ count: Int) {
            var rest = count
            repeat {
                expected.append(UInt8(rest & 0x7F) | (rest >> 7 > 0 ? 0x80 : 0))
                rest >>= 7
            } while rest > 0
        }
        func string(_ text: String) {
            length(text.utf8.count)
            expected += Array(text.utf8)
        }
        for row in rows {
            string(row.productID)
            fixed(UInt32(row.windowStart.epochSeconds))
            fixed(UInt32(row.windowEnd.epochSeconds))
            for value in [row.totals.impressions, row.totals.clicks, row.totals.clickThroughRate.bitPattern, row.delta.impressions, row.delta.clicks,
                          row.totals.conversions, row.delta.conversions, row.totals.revenueMicros, row.delta.revenueMicros] {
                fixed(value)
            }
            fixed(row.revision)
            fixed(UInt32(row.emittedAt.epochSeconds))
            string(batch.id)
            fixed(row.uniqueUsers.impressions)
            fixed(row.uniqueUsers.clicks)
            for users in [row.newUsers.impressions, row.newUsers.clicks] {
                length(users.count)
                for user in users { fixed(user) }
            }
            for value in row.dimensions { string(value) }
        }
        #expect(ResultRowEncoder.rowBinary(batch) == expected)
        #expect(expected.count > 200, "a two-byte LEB128 length is covered")
    }

    @Test func encodesRowsAsJSONEachRow() {
        var batch = ResultBatch(id: "b-1", sequence: 0, generation: 3, day: ResultBatch.day(of: Timestamp(milliseconds: 1_700_000_010_000)))
        batch.append(
            ResultRow(
                productID: "a\"b\\c\n", windowStart: Timestamp(milliseconds: 1_700_000_000_000), windowEnd: Timestamp(milliseconds: 1_700_000_010_000),
                totals: WindowCounts(impressions: 4, clicks: 1), delta: WindowCounts(impressions: 1, clicks: 0), revision: 2,
                emittedAt: Timestamp(milliseconds: 1_700_000_020_500)
            )
        )
        let text = String(decoding: ResultRowEncoder.jsonEachRow(batch), as: UTF8.self)
        #expect(
            text == #"{"product_id":"a\"b\\c\u000a","window_start":"2023-11-14 22:13:20","window_end":"2023-11-14 22:13:30","impressions":4,"clicks":1,"ctr":0.25,"impressions_delta":1,"clicks_delta":0,"conversions":0,"conversions_delta":0,"revenue":0,"revenue_delta":0,"revision":2,"emitted_at":"2023-11-14 22:13:40","batch_id":"b-1","unique_impression_users":0,"unique_click_users":0,"impression_user_hashes":[],"click_user_hashes":[]}"# + "\n"
        )
        #expect(batch.rowCount == 1)
        #expect(batch.windowEndRange == 1_700_000_010...1_700_000_010)
    }
}
