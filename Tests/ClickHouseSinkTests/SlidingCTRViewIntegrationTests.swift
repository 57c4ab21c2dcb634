import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// `ctr_sliding_ctr` (migration 0009) against a real ClickHouse: sums over the last 1 and 5
/// minutes of 10-second rows, late updates counted once.
@Suite struct SlidingCTRViewIntegrationTests {
    @Test func slidesEveryTenSecondsOverSumsOfDeltas() throws {
        let endpoint = try ClickHouseTestServer.makeDatabase(prefix: "sliding")
        try ClickHouseTestServer.migrate(endpoint)
        let connection = try ClickHouseConnection(endpoint: endpoint)
        let now = Int64(Date().timeIntervalSince1970)
        let latestEnd = (now - 20) / 10 * 10
        // Windows ending 0, 10, ..., 400 s before latestEnd: impressions 10 each, clicks 1 each,
        // and the newest window got a late update (revision 1: +5 impressions, +1 click).
        var values: [String] = []
        for age in stride(from: 0, through: 400, by: 10) {
            let end = latestEnd - Int64(age)
            values.append("('p', toDateTime(\(end - 10), 'UTC'), toDateTime(\(end), 'UTC'), 10, 1, 10, 1, 0, 'b')")
        }
        values.append("('p', toDateTime(\(latestEnd - 10), 'UTC'), toDateTime(\(latestEnd), 'UTC'), 15, 2, 5, 1, 1, 'b')")
        _ = try connection.execute(
            "INSERT INTO ctr_results_raw (product_id, window_start, window_end, impressions, clicks, impressions_delta, clicks_delta, "
                + "revision, batch_id) VALUES " + values.joined(separator: ", ")
        )
        let row = try connection.execute(
            "SELECT impressions_1m, clicks_1m, impressions_5m, clicks_5m, round(ctr_5m, 6) FROM ctr_sliding_ctr "
                + "WHERE product_id = 'p' AND period_end = toDateTime(\(latestEnd), 'UTC')"
        ).lines.map { $0.split(separator: "\t").map(String.init) }
        // 1 minute: 6 windows (65 impressions, 7 clicks); 5 minutes: 30 windows (305, 31).
        #expect(row == [["65", "7", "305", "31", "\(Double(31) / 305)".prefix(8).description]])
        let periods = try connection.scalar("SELECT count() FROM ctr_sliding_ctr WHERE product_id = 'p'")
        #expect(Int(periods) ?? 0 >= 41, "one row per 10-second step")
    }
}
