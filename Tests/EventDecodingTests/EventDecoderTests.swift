import CTRWindows
import Testing

@testable import EventDecoding

/// Processing time of the tests: the events below are at or just after it.
let now = Timestamp(milliseconds: 1_700_000_000_000)

@Suite struct EventDecoderTests {
    let decoder = EventDecoder()

    func decode(_ text: String, _ kind: EventKind = .impression) -> Result<DecodedEvent, Rejection> {
        decoder.decode(Array(text.utf8), expecting: kind, now: now)
    }

    func reason(_ text: String, _ kind: EventKind = .impression) -> RejectionReason? {
        if case .failure(let rejection) = decode(text, kind) { return rejection.reason }
        return nil
    }

    @Test func decodesTheContract() throws {
        let event = try decode(#"{"product_id":"p-1","timestamp":1700000000123,"user_id":"u","event_id":"e1"}"#).get()
        #expect(event == DecodedEvent(product: ProductKey("p-1"), timestamp: Timestamp(milliseconds: 1_700_000_000_123), user: StableHash.hash("u")))
        let click = try decode(#" { "event_type" : "click", "timestamp": "2023-11-14T22:13:20.5Z", "product_id": "p-2", "x": [1, {"y": null}, true, -1.5e3] } "#, .click).get()
        #expect(click == DecodedEvent(product: ProductKey("p-2"), timestamp: Timestamp(milliseconds: 1_700_000_000_500)))
    }

    @Test(arguments: [
        ("2023-11-14T22:13:20Z", Int64(1_700_000_000_000)),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T21:13:20.123-0100", 1_700_000_000_123),
        ("2023-11-14 22:13:20.123456789Z", 1_700_000_000_123),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ])
    func parsesISO8601(text: String, milliseconds: Int64) {
        #expect(ISO8601Timestamp.parse(Array(text.utf8)) == milliseconds)
    }

    @Test(arguments: ["2023-11-14T22:13:20", "2023-02-29T00:00:00Z", "2023-11-14T24:00:00Z", "2023-11-14", "x", "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20Z junk"])
    func refusesBadISO8601(text: String) {
        #expect(ISO8601Timestamp.parse(Array(text.utf8)) == nil)
    }

    @Test func unescapesProductIDs() throws {
        let event = try decode(#"{"product_id":"a\"b\\c\n\u00e9\ud83d\ude00'; DROP TABLE x;--","timestamp":1700000000000}"#).get()
        #expect(event.product == ProductKey("a\"b\\c\né😀'; DROP TABLE x;--"))
        let escapedKey = try decode(#"{"product\u005fid":"k","timestamp":1700000000000}"#).get()
        #expect(escapedKey.product == ProductKey("k"))
    }

    @Test(arguments: [
        ("", RejectionReason.notJSON),
        ("hello", .notJSON),
        ("[1,2]", .notObject),
        ("\"text\"", .notObject),
        ("42", .notObject),
        (#"{"product_id":"p","timestamp":1700000000000"#, .notJSON),
        (#"{"product_id":"p","timestamp":1700000000000}x"#, .notJSON),
        (#"{"product_id":"p","timestamp":1700000000000,}"#, .notJSON),
        (#"{"timestamp":1700000000000}"#, .missingField),
        (#"{"product_id":"p"}"#, .missingField),
        (#"{"product_id":7,"timestamp":1700000000000}"#, .wrongType),
        (#"{"product_id":"","timestamp":1700000000000}"#, .invalidProductID),
        (#"{"product_id":"p","timestamp":true}"#, .wrongType),
        (#"{"product_id":"p","timestamp":1700000000000.5}"#, .invalidTimestamp),
        (#"{"product_id":"p","timestamp":"yesterday"}"#, .invalidTimestamp),
        (#"{"product_id":"p","timestamp":99999999999999999999}"#, .timestampOutOfRange),
        (#"{"product_id":"p","timestamp":1}"#, .timestampOutOfRange),
        (#"{"product_id":"p","timestamp":1700000000000,"event_type":"click"}"#, .wrongEventType),
        (#"{"product_id":"p","timestamp":1700000000000,"event_type":1}"#, .wrongType),
        (#"{"product_id":"p","product_id":"q","timestamp":1700000000000}"#, .duplicateField),
        (#"{"product_id":"a\x","timestamp":1700000000000}"#, .notJSON),
        (#"{"product_id":"\ud800","timestamp":1700000000000}"#, .invalidUTF8),
    ])
    func rejectsContractViolations(text: String, expected: RejectionReason) {
        #expect(reason(text) == expected, "\(text)")
    }

    @Test func rejectsInvalidUTF8AndControlCharacters() {
        var bytes = Array(#"{"product_id":"p","timestamp":1700000000000,"x":"#.utf8)
        bytes += [0x22, 0xC3, 0x28, 0x22, 0x7D]
        #expect(decoder.decode(bytes, expecting: .impression, now: now).failureReason == .invalidUTF8)
        let overlong: [UInt8] = Array(#"{"product_id":""#.utf8) + [0xC0, 0xAF] + Array(#"","timestamp":1700000000000}"#.utf8)
        #expect(decoder.decode(overlong, expecting: .impression, now: now).failureReason == .invalidUTF8)
        #expect(reason("{\"product_id\":\"a\u{01}\",\"timestamp\":1700000000000}") == .notJSON)
    }

    @Test func rejectsOversizedLongIDsAndDeepNesting() {
        let small = EventDecoder(maximumMessageBytes: 64)
        #expect(small.decode(Array(#"{"product_id":"p","timestamp":1700000000000,"pad":"0123456789012345678901234567890"}"#.utf8), expecting: .click, now: now).failureReason == .tooLarge)
        let longID = String(repeating: "x", count: 257)
        #expect(reason(#"{"product_id":"\#(longID)","timestamp":1700000000000}"#) == .invalidProductID)
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(reason(#"{"product_id":"p","timestamp":1700000000000,"x":\#(deep)}"#) == .tooDeep)
    }

    @Test func randomBytesNeverCrashAndAlwaysGetAReason() {
        var state: UInt64 = 42
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            return z ^ (z >> 27)
        }
        let seed = Array(#"{"product_id":"p-1","timestamp":1700000000000,"event_type":"impression","u":[1,{"a":"\u00e9"}]}"#.utf8)
        for _ in 0..<20_000 {
            var bytes = seed
            for _ in 0..<Int(next() % 4) + 1 {
                let position = Int(next() % UInt64(bytes.count))
                switch next() % 3 {
                case 0: bytes[position] = UInt8(truncatingIfNeeded: next())
                case 1: bytes.remove(at: position)
                default: bytes.insert(UInt8(truncatingIfNeeded: next()), at: position)
                }
            }
            switch decoder.decode(bytes, expecting: .impression, now: now) {
            case .success(let event): #expect(!event.product.name.utf8.isEmpty)
            case .failure(let rejection): #expect(!rejection.detail.isEmpty)
            }
        }
    }
}

extension Result where Failure == Rejection {
    var failureReason: RejectionReason? {
        if case .failure(let rejection) = self { return rejection.reason }
        return nil
    }
}
