import CTRWindows
import Testing

@testable import EventDecoding

@Suite struct DimensionsAndIdentityTests {
    let decoder = EventDecoder(dimensionFields: ["campaign_id", "country", "slot"], deduplicationField: "event_id")

    func decode(_ text: String) -> Result<DecodedEvent, Rejection> {
        decoder.decode(Array(text.utf8), expecting: .impression, now: now)
    }

    @Test func dimensionsAreReadInTheirConfiguredOrder() throws {
        let event = try decode(#"{"slot":7,"country":"DE","product_id":"p","timestamp":1700000000000,"campaign_id":"c\u00e9"}"#).get()
        #expect(event.dimensions == ["cé", "DE", "7"])
    }

    @Test func aMissingDimensionIsTheEmptyString() throws {
        let event = try decode(#"{"product_id":"p","timestamp":1700000000000,"country":"FR"}"#).get()
        #expect(event.dimensions == ["", "FR", ""])
    }

    @Test(arguments: [
        #"{"product_id":"p","timestamp":1700000000000,"country":null}"#,
        #"{"product_id":"p","timestamp":1700000000000,"country":1.5}"#,
        #"{"product_id":"p","timestamp":1700000000000,"country":true}"#,
        #"{"product_id":"p","timestamp":1700000000000,"country":["DE"]}"#,
        #"{"product_id":"p","timestamp":1700000000000,"country":{"code":"DE"}}"#,
    ])
    func aDimensionThatIsNotAStringOrIntegerIsRefused(text: String) {
        #expect(decode(text).failureReason == .invalidDimension)
    }

    @Test func aDimensionLongerThan256BytesIsRefused() {
        let long = String(repeating: "x", count: 257)
        #expect(decode(#"{"product_id":"p","timestamp":1700000000000,"country":"\#(long)"}"#).failureReason == .invalidDimension)
        let limit = String(repeating: "x", count: 256)
        #expect((try? decode(#"{"product_id":"p","timestamp":1700000000000,"country":"\#(limit)"}"#).get())?.dimensions[1] == limit)
    }

    @Test func usersAndEventIDsAreHashedFromTheirText() throws {
        let text = try decode(#"{"product_id":"p","timestamp":1700000000000,"user_id":"42","event_id":"e-1"}"#).get()
        let integer = try decode(#"{"product_id":"p","timestamp":1700000000000,"user_id":42,"event_id":"e\u002d1"}"#).get()
        #expect(text.user == StableHash.hash("42"))
        #expect(integer.user == text.user)
        #expect(integer.eventID == StableHash.hash("e-1"))
        #expect(text.eventID == integer.eventID)
        let none = try decode(#"{"product_id":"p","timestamp":1700000000000,"user_id":null}"#).get()
        #expect(none.user == nil && none.eventID == nil)
        #expect(decode(#"{"product_id":"p","timestamp":1700000000000,"user_id":{"id":1}}"#).failureReason == .wrongType)
    }

    @Test func withoutADeduplicationFieldEventIDsAreIgnored() throws {
        let event = try EventDecoder().decode(Array(#"{"product_id":"p","timestamp":1700000000000,"event_id":"e"}"#.utf8), expecting: .click, now: now).get()
        #expect(event.eventID == nil)
        #expect(event.dimensions.isEmpty)
    }

    @Test func theHashIsStableAcrossProcesses() {
        #expect(StableHash.hash("u-1") != StableHash.hash("u-2"))
        #expect(StableHash.hash("u-1") == StableHash.hash("u-1"))
    }

    @Test func fieldNamesAreValidated() {
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["country", "country"], deduplicationField: nil, clickField: nil) }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["product_id"], deduplicationField: nil, clickField: nil) }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["user_id"], deduplicationField: nil, clickField: nil) }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["1st"], deduplicationField: nil, clickField: nil) }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["a-b"], deduplicationField: nil, clickField: nil) }
        #expect(throws: FieldNameError.self) {
            try EventDecoder.validateFieldNames(dimensions: (1...9).map { "d\($0)" }, deduplicationField: nil, clickField: nil)
        }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["c"], deduplicationField: "c", clickField: nil) }
        #expect(throws: FieldNameError.self) { try EventDecoder.validateFieldNames(dimensions: ["click"], deduplicationField: nil, clickField: "click") }
        #expect(throws: Never.self) {
            try EventDecoder.validateFieldNames(
                dimensions: ["campaign_id", "country", "device_type"], deduplicationField: "event_id", clickField: "click"
            )
        }
    }
}
