import CTRWindows
import Testing

@testable import EventDecoding

/// Input that must be refused (dead-lettered) rather than counted, because counting it would
/// stop or poison the pipeline: revenue a window cannot store, event times far ahead of
/// processing time, and product ids that only look equal.
@Suite struct PoisonInputTests {
    let decoder = EventDecoder()

    func decode(_ text: String, _ kind: EventKind = .click, now: Timestamp = now) -> Result<DecodedEvent, Rejection> {
        decoder.decode(Array(text.utf8), expecting: kind, now: now)
    }

    /// The revenue in micros, or the rejection reason's code.
    func revenue(_ literal: String) -> String {
        switch decode(#"{"product_id":"p","timestamp":1700000000000,"revenue":\#(literal)}"#) {
        case .success(let event): "\(event.revenueMicros)"
        case .failure(let rejection): rejection.reason.rawValue
        }
    }

    // MARK: Revenue

    @Test func revenueUpToTheBoundIsExact() {
        #expect(EventDecoder.maximumRevenueMicros == 1_000_000_000_000)
        #expect(revenue("0") == "0")
        #expect(revenue("0.000001") == "1")
        #expect(revenue("0.35") == "350000")
        #expect(revenue("999999.999999") == "999999999999")
        #expect(revenue("1000000") == "1000000000000")
        #expect(revenue("1000000.000000") == "1000000000000")
    }

    @Test(arguments: [
        "1000000.000001", "1000001", "9999999", "10000000", "1000000000000", "99999999999999999999999999",
        "-1", "1e3", "0.0000001", "\"5\"", "null",
    ])
    func revenueBeyondTheBoundOrMalformedIsInvalid(literal: String) {
        #expect(revenue(literal) == "invalid_revenue", "\(literal)")
    }

    /// The documented bound: a product's window sum of revenue cannot overflow
    /// `Decimal(18, 6)` (at most 999,999,999,999.999999) unless a window holds a million
    /// events of that product at the maximum, and `UInt64` micro sums hold 18 million.
    @Test func theBoundKeepsWindowSumsStorable() {
        let decimal18x6MaximumMicros: UInt64 = 999_999_999_999_999_999
        #expect(decimal18x6MaximumMicros / EventDecoder.maximumRevenueMicros == 999_999)
        #expect(UInt64.max / EventDecoder.maximumRevenueMicros >= 18_000_000)
    }

    @Test func impressionsIgnoreRevenue() throws {
        let event = try decode(#"{"product_id":"p","timestamp":1700000000000,"revenue":1e99}"#, .impression).get()
        #expect(event.revenueMicros == 0)
    }

    // MARK: Event times ahead of processing time

    @Test func eventTimesUpToTheAllowedFutureAreAccepted() throws {
        #expect(decoder.maximumFuture == Milliseconds(300_000))
        let atLimit = try decode(#"{"product_id":"p","timestamp":1700000300000}"#).get()
        #expect(atLimit.timestamp == Timestamp(milliseconds: 1_700_000_300_000))
        // Far in the past (replays) is not this rule's business.
        #expect((try? decode(#"{"product_id":"p","timestamp":1000000000000}"#).get()) != nil)
    }

    @Test func eventTimesBeyondTheAllowedFutureAreRefused() {
        for text in [
            #"{"product_id":"p","timestamp":1700000300001}"#,
            #"{"product_id":"p","timestamp":4102444799000}"#,
            #"{"product_id":"p","timestamp":"2099-12-31T23:59:59Z"}"#,
        ] {
            guard case .failure(let rejection) = decode(text) else {
                Issue.record("accepted \(text)")
                continue
            }
            #expect(rejection.reason == .timestampInFuture)
            #expect(rejection.detail.contains("ahead of processing time 1700000000000 ms"))
        }
    }

    @Test func theAllowedFutureIsConfigurableAndFollowsNow() {
        let strict = EventDecoder(maximumFuture: Milliseconds(1_000))
        let text = Array(#"{"product_id":"p","timestamp":1700000001500}"#.utf8)
        #expect(strict.decode(text, expecting: .impression, now: now).failureReason == .timestampInFuture)
        #expect(strict.decode(text, expecting: .impression, now: now + Milliseconds(500)).failureReason == nil)
        #expect(decoder.decode(text, expecting: .impression, now: now).failureReason == nil)
    }

    @Test func outOfRangeWinsOverFutureAndExtremeClocksDoNotTrap() {
        let text = Array(#"{"product_id":"p","timestamp":4102444800001}"#.utf8)
        #expect(decoder.decode(text, expecting: .impression, now: now).failureReason == .timestampOutOfRange)
        let wide = EventDecoder(timestampRange: Int64.min...Int64.max, maximumFuture: Milliseconds(Int64.max))
        let extreme = Array(#"{"product_id":"p","timestamp":9223372036854775807}"#.utf8)
        #expect(wide.decode(extreme, expecting: .impression, now: Timestamp(milliseconds: Int64.min)).failureReason == .timestampInFuture)
        #expect(wide.decode(extreme, expecting: .impression, now: Timestamp(milliseconds: Int64.max)).failureReason == nil)
        let early = Array(#"{"product_id":"p","timestamp":-9223372036854775807}"#.utf8)
        #expect(wide.decode(early, expecting: .impression, now: Timestamp(milliseconds: Int64.max)).failureReason == nil)
    }

    @Test func singleTopicEventsFollowTheSameRules() {
        let shape = EventShape.impressionWithClickFlag(clickField: "click")
        let future = Array(#"{"product_id":"p","timestamp":4000000000000,"click":1}"#.utf8)
        #expect(decoder.decode(future, shape: shape, now: now).failureReason == .timestampInFuture)
        let rich = Array(#"{"product_id":"p","timestamp":1700000000000,"click":1,"revenue":2000000}"#.utf8)
        #expect(decoder.decode(rich, shape: shape, now: now).failureReason == .invalidRevenue)
    }

    // MARK: Byte-exact product ids

    @Test func canonicallyEquivalentIdsAreTwoProducts() throws {
        let composed = try decode(#"{"product_id":"caf\u00e9","timestamp":1700000000000}"#).get().product
        let decomposed = try decode(#"{"product_id":"cafe\u0301","timestamp":1700000000000}"#).get().product
        let rawComposed = try decode("{\"product_id\":\"caf\u{E9}\",\"timestamp\":1700000000000}").get().product
        let rawDecomposed = try decode("{\"product_id\":\"cafe\u{301}\",\"timestamp\":1700000000000}").get().product
        // Swift strings call them equal; the products are not.
        #expect(composed.name == decomposed.name)
        #expect(composed != decomposed)
        #expect(Set([composed, decomposed, rawComposed, rawDecomposed]).count == 2)
        #expect(composed == rawComposed && decomposed == rawDecomposed)
        #expect(Array(composed.name.utf8) == [0x63, 0x61, 0x66, 0xC3, 0xA9])
        #expect(Array(decomposed.name.utf8) == [0x63, 0x61, 0x66, 0x65, 0xCC, 0x81])
        #expect(decomposed.name.utf8.lexicographicallyPrecedes(composed.name.utf8))
    }

    @Test func escapesDecodeToTheExactScalars() throws {
        // A letter escape followed by a combining mark stays two scalars.
        let key = try decode(#"{"product_id":"\t\u0301x\u0000","timestamp":1700000000000}"#).get().product
        #expect(Array(key.name.utf8) == [0x09, 0xCC, 0x81, 0x78, 0x00])
        #expect(ProductKey(String(decoding: [0x09, 0xCC, 0x81, 0x78, 0x00] as [UInt8], as: UTF8.self)) == key)
    }

    @Test func productKeysHashByBytes() {
        var seen: [ProductKey: Int] = [:]
        let spellings = ["caf\u{E9}", "cafe\u{301}", "\u{212B}", "\u{C5}", "A\u{30A}", "a-long-product-id-beyond-fifteen-bytes"]
        for (index, spelling) in spellings.enumerated() { seen[ProductKey(spelling), default: index] = index }
        #expect(seen.count == spellings.count)
        #expect(seen[ProductKey("A\u{30A}")] == 4)
    }

    // MARK: Details

    @Test func detailsAreOneLineEvenForHostileInput() {
        let text = Array(#"{"product_id":"p","timestamp":1700000000000,"event_type":"x\ny\u2028z\"\\"}"#.utf8)
        guard case .failure(let rejection) = decoder.decode(text, expecting: .click, now: now) else {
            Issue.record("accepted")
            return
        }
        #expect(rejection.reason == .wrongEventType)
        #expect(!rejection.detail.contains("\n") && !rejection.detail.contains("\u{2028}"))
        #expect(rejection.detail.hasPrefix(#"event_type "x\u{a}y\u{2028}z\"\\" on the clicks topic"#))
    }
}
