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
