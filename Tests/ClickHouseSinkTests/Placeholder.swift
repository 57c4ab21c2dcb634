import Testing

@Test func placeholder_ClickHouseSinkTests() { #expect(true) }
