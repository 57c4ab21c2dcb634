import Testing

@Test func placeholder_TrafficGeneratorTests() { #expect(true) }
