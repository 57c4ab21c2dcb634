import Testing

@Test func placeholder_CTRWindowsTests() { #expect(true) }
