import Testing

@Test func placeholder_SchemaToolTests() { #expect(true) }
