import Foundation

/// Which tier of the test suite runs.
///
/// `scripts/test.sh --unit` runs the unit and property tests only, with no servers, and sets
/// `CTR_TEST_TIER=unit`. It skips integration suites by name: suites named `…IntegrationTests`,
/// `ClusterMigrationTests`, and
/// everything in `EndToEndTests`. An integration test that is not
/// skipped and asks for a server fails at once with a message naming the server, instead of
/// starting it.
public enum TestTier {
    /// The `swift test --skip` pattern of the integration suites (what `scripts/test.sh --unit` skips).
    public static let integrationSuitesPattern = "IntegrationTests|ClusterMigrationTests|EndToEndTests"

    /// Whether only the unit tier runs (`CTR_TEST_TIER=unit`).
    public static var isUnitOnly: Bool { ProcessInfo.processInfo.environment["CTR_TEST_TIER"] == "unit" }

    /// Throws when only the unit tier runs: `server` (e.g. "ClickHouse 18.16 (clickhouse-server)")
    /// is not started there.
    public static func requireServer(_ server: String) throws {
        guard isUnitOnly else { return }
        throw TestSupportError(
            "this test needs \(server), which the unit tier (scripts/test.sh --unit, CTR_TEST_TIER=unit) does not start: "
                + "name its suite …IntegrationTests or put it in EndToEndTests so the unit tier skips it"
        )
    }
}
