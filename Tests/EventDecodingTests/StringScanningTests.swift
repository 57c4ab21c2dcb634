import Testing
import Foundation

@testable import EventDecoding

/// The eight-bytes-at-a-time string scan against a byte-by-byte reference.
@Suite struct StringScanningTests {
    /// The index of the first byte of `word` (little-endian) that is a quote, a backslash, a
    /// control character or not ASCII.
    func firstSpecialByte(_ word: UInt64) -> Int? {
        (0..<8).first { position in
            let byte = UInt8(truncatingIfNeeded: word >> (8 * position))
            return byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 || byte >= 0x80
        }
    }

    @Test func theLowestFlaggedByteIsTheFirstSpecialOne() {
        var generator = SystemRandomNumberGenerator()
        // Bytes near every boundary the bit tricks depend on, and random ones.
        let interesting: [UInt8] = [0x00, 0x01, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7E, 0x7F, 0x80, 0x81, 0xA2, 0xDC, 0xFF, 0x41]
        for _ in 0..<50_000 {
            var word: UInt64 = 0
            for position in 0..<8 {
                let byte = Bool.random(using: &generator)
                    ? interesting.randomElement(using: &generator)!
                    : UInt8(ascii: "a") + UInt8.random(in: 0..<26, using: &generator)
                word |= UInt64(byte) << (8 * position)
            }
            let flagged = JSONScanner.specialBytes(word)
            let expected = firstSpecialByte(word)
            #expect((flagged == 0) == (expected == nil), "word \(String(word, radix: 16))")
            if let expected, flagged != 0 {
                #expect(flagged.trailingZeroBitCount / 8 == expected, "word \(String(word, radix: 16))")
            }
        }
    }

    @Test func stringsOfEveryLengthAndPositionOfASpecialByteDecodeAsBefore() {
        let decoder = EventDecoder()
        for length in 0...40 {
            for special in ["", "\\\"", "\\\\", "\\u00e9", "é", "\u{1F600}"] {
                for position in stride(from: 0, through: length, by: 3) {
                    var name = String(repeating: "x", count: length)
                    name.insert(contentsOf: special, at: name.index(name.startIndex, offsetBy: position))
                    let json = #"{"product_id":"\#(name)","timestamp":1700000000000,"event_type":"click"}"#
                    let expected = name.replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
                        .replacingOccurrences(of: "\\u00e9", with: "é")
                    let result = decoder.decode(Array(json.utf8), expecting: .click, now: .init(milliseconds: 1_700_000_000_000))
                    if expected.isEmpty {
                        #expect(throws: Rejection.self) { try result.get() }
                    } else {
                        #expect((try? result.get())?.product.name == expected, "\(json)")
                    }
                }
            }
        }
        // A control character or a lone continuation byte anywhere in a string is refused.
        for position in 0..<20 {
            for bad: UInt8 in [0x01, 0x1F, 0x80, 0xFF] {
                var bytes = Array(#"{"product_id":"abcdefghijklmnopqrst","timestamp":1700000000000}"#.utf8)
                bytes[15 + position] = bad
                #expect(throws: Rejection.self) { try decoder.decode(bytes, expecting: .impression, now: .init(milliseconds: 1_700_000_000_000)).get() }
            }
        }
    }
}

/// The fast paths for the contract's field names and for integer timestamps against the general
/// ones: a decoder with a click field (single-topic shape) looks up every key by scanning it as
/// a string and reads every timestamp through the number grammar, so both shapes must agree on
/// every event whatever its spelling. (`revenue` is left out: an impression skips it, a
/// single-topic event reads it for its click.) A failure names the event's text, which is all
/// it takes to replay it.
@Suite struct FastPathTests {
    static let keys = [
        "product_id", "timestamp", "event_type", "product_idx", "product_i", "Product_id", "timestamps", "timestam",
        "event_typ", "event_type_", "revenue_", "revenu", #"product\u005fid"#, #"timestam\u0070"#, "event_id", "p",
    ]
    static let timestamps = [
        "1700000000123", "1700000000123.0", "1700000000123e0", "1700000000123E+1", "17000000001230000000", "170000000012300000",
        "0", "01700000000123", "-1700000000123", "1700000000123 ", #""2023-11-14T22:13:20Z""#, "1700000000123x",
    ]

    @Test func keysAndTimestampsDecodeAsOnTheGeneralPath() {
        let decoder = EventDecoder()
        var random = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            var fields: [String] = []
            for _ in 0..<Int.random(in: 1...5, using: &random) {
                let key = Self.keys.randomElement(using: &random)!
                let value = key.hasPrefix("time")
                    ? Self.timestamps.randomElement(using: &random)!
                    : key == "event_type" ? #""impression""# : #""v\#(Int.random(in: 0..<9, using: &random))""#
                let space = Bool.random(using: &random) ? " " : ""
                fields.append("\"\(key)\"\(space):\(space)\(value)")
            }
            fields.insert(#""click":0"#, at: Int.random(in: 0...fields.count, using: &random))
            let text = "{" + fields.joined(separator: ",") + "}"
            let fast = decoder.decode(Array(text.utf8), shape: .kind(.impression), now: now)
            let general = decoder.decode(Array(text.utf8), shape: .impressionWithClickFlag(clickField: "click"), now: now)
            switch (fast, general) {
            case (.success(let a), .success(let b)):
                #expect(a.product == b.product && a.timestamp == b.timestamp, "\(text)")
            case (.failure(let a), .failure(let b)):
                #expect(a.reason == b.reason, "\(text): \(a) against \(b)")
            default:
                Issue.record("\(text): \(fast) against \(general)")
            }
        }
    }
}
