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
