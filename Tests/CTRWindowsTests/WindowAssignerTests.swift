import CTRWindows
import Testing

@Suite struct WindowAssignerTests {
    let assigner = WindowAssigner(size: .seconds(10))

    @Test(arguments: [
        (Int64(0), Int64(0)), (9_999, 0), (10_000, 10_000), (10_001, 10_000),
        (1_700_000_005_123, 1_700_000_000_000), (-1, -10_000), (-10_000, -10_000), (-10_001, -20_000),
    ])
    func alignsToTheEpoch(time: Int64, expectedStart: Int64) {
        #expect(assigner.windowStart(for: Timestamp(milliseconds: time)).milliseconds == expectedStart)
    }

    @Test func windowEndIsExclusive() {
        let start = assigner.windowStart(for: Timestamp(milliseconds: 25_000))
        #expect(assigner.windowEnd(forStart: start).milliseconds == 30_000)
        #expect(assigner.windowStart(for: Timestamp(milliseconds: 29_999)) == start)
        #expect(assigner.windowStart(for: Timestamp(milliseconds: 30_000)) != start)
    }

    @Test func configurationValidation() {
        #expect(WindowConfiguration().validate() == nil)
        #expect(WindowConfiguration(windowSize: Milliseconds(1500)).validate() != nil)
        #expect(WindowConfiguration(allowedLateness: Milliseconds(-1)).validate() != nil)
    }
}
