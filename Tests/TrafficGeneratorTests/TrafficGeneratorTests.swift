import CTRWindows
import Foundation
import Testing

@testable import TrafficGenerator

/// A message's value decoded with Foundation's JSON parser: an oracle independent of the
/// generator's own JSON writer.
private struct DecodedEvent {
    var product: String
    var user: String?
    var timestamp: Int64
    var eventType: String?
    var clickFlag: Int?
    var revenueMicros: UInt64

    init?(_ value: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
            let product = object["product_id"] as? String, !product.isEmpty,
            let timestamp = (object["timestamp"] as? NSNumber)?.int64Value
        else { return nil }
        self.product = product
        self.timestamp = timestamp
        user = object["user_id"] as? String
        eventType = object["event_type"] as? String
        clickFlag = (object["click"] as? NSNumber)?.intValue
        // Revenue is read from the text, exactly (a JSON number parser gives a Double).
        let text = String(decoding: value, as: UTF8.self)
        if object["revenue"] != nil, let range = text.range(of: #""revenue":([0-9]+)\.([0-9]{1,6})"#, options: .regularExpression) {
            let number = text[range].dropFirst(#""revenue":"#.count).split(separator: ".")
            let fraction = String(number[1]) + String(repeating: "0", count: 6 - number[1].count)
            revenueMicros = UInt64(number[0])! * 1_000_000 + UInt64(fraction)!
        } else {
            revenueMicros = 0
        }
    }

    /// What this event adds to its window, judged from the topic and the payload alone.
    func counts(topic: InputTopic) -> WindowCounts {
        switch topic {
        case .impressions: WindowCounts(impressions: 1, revenueMicros: revenueMicros)
        case .clicks: WindowCounts(clicks: 1, revenueMicros: revenueMicros)
        case .conversions: WindowCounts(conversions: 1, revenueMicros: revenueMicros)
        case .events: WindowCounts(impressions: 1, clicks: clickFlag == 1 ? 1 : 0, revenueMicros: revenueMicros)
        }
    }
}

private let start = Timestamp(milliseconds: 1_700_000_000_000)

private func messages(_ configuration: TrafficConfiguration, count: Int) -> [GeneratedMessage] {
    var generator = TrafficGenerator(configuration: configuration)
    return (0..<count).map { _ in generator.next()! }
}

private func fixture(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
}

@Suite struct TrafficGeneratorTests {
    let busy = TrafficConfiguration(
        products: 50, meanCTR: 0.05, seed: 42, startTime: start, eventRate: 500, lateFraction: 0.02, tooLateFraction: 0.01,
        tooLateLag: .seconds(10), invalidFraction: 0.01, conversionRate: 0.2, revenuePerClick: 0.3, revenuePerConversion: 4
    )

    @Test func theSameSeedGivesTheSameStream() {
        let first = messages(busy, count: 5_000)
        let second = messages(busy, count: 5_000)
        #expect(first.map(\.value) == second.map(\.value))
        #expect(first.map(\.topic) == second.map(\.topic))
        #expect(first.map(\.key) == second.map(\.key))
        #expect(first.map(\.expectation) == second.map(\.expectation))

        var other = busy
        other.seed = 43
        #expect(messages(other, count: 5_000).map(\.value) != first.map(\.value), "another seed gives another stream")
    }

    /// The truth file's counts are exactly what the messages say, decoded independently.
    @Test func truthEqualsWhatWasSent() {
        let stream = messages(busy, count: 25_000)  // 50 s of event time: too-late events start after 40 s
        var truth = Truth(windowSize: .seconds(10))
        var expected: [Truth.Key: WindowCounts] = [:]
        var tooLate = 0
        var invalid: [String: Int] = [:]
        let assigner = WindowAssigner(size: .seconds(10))
        for message in stream {
            truth.record(message)
            switch message.expectation {
            case .counted(let product, let timestamp, let counts):
                let event = DecodedEvent(message.value)
                #expect(event != nil, "a counted message is a valid event: \(String(decoding: message.value, as: UTF8.self))")
                guard let event else { continue }
                #expect(event.product == product && event.timestamp == timestamp.milliseconds)
                #expect(message.key == Array(product.utf8), "the key is the product id")
                #expect(event.counts(topic: message.topic) == counts)
                if let type = event.eventType {
                    #expect(type == ["impressions": "impression", "clicks": "click", "conversions": "conversion"]["\(message.topic)"])
                }
                let key = Truth.Key(product: event.product, windowStart: assigner.windowStart(for: Timestamp(milliseconds: event.timestamp)).milliseconds)
                var value = expected[key] ?? WindowCounts()
                let added = event.counts(topic: message.topic)
                value.impressions += added.impressions
                value.clicks += added.clicks
                value.conversions += added.conversions
                value.revenueMicros += added.revenueMicros
                expected[key] = value
            case .tooLate:
                tooLate += 1
            case .invalid(let kind):
                invalid[kind, default: 0] += 1
                #expect(DecodedEvent(message.value) == nil || kind == "wrong_event_type", "an invalid message is not a valid event (\(kind))")
            }
        }
        let mismatched = Set(truth.counts.keys).union(expected.keys).filter { truth.counts[$0] != expected[$0] }
        #expect(mismatched.isEmpty, "\(mismatched.count) windows differ, e.g. \(mismatched.first.map { "\($0): \(String(describing: truth.counts[$0])) vs \(String(describing: expected[$0]))" } ?? "")")
        #expect(truth.tooLate == tooLate && tooLate > 0)
        #expect(truth.invalid == invalid && invalid.count == 6, "every kind of invalid message occurs: \(invalid)")
        #expect(truth.sent.values.reduce(0, +) == stream.count)

        // The JSON truth file carries the same totals.
        let json = try? JSONSerialization.jsonObject(with: Data(truth.json(finalWatermark: nil))) as? [String: Any]
        let counted = json?["counted"] as? [String: Int]
        let totals = truth.totals
        #expect(counted?["impressions"] == Int(totals.impressions) && counted?["clicks"] == Int(totals.clicks))
        #expect(counted?["revenue_micros"] == Int(totals.revenueMicros))
        #expect((json?["windows"] as? [Any])?.count == expected.count)
    }

    /// Event time advances at the configured rate; disorder, late and too-late events stay in
    /// their bounds; every click and conversion follows an impression of the same product and user.
    @Test func eventTimesAndCausality() {
        var generator = TrafficGenerator(configuration: busy)
        var impressions = Set<String>()
        var late = 0
        let count = 25_000
        var tooLate = 0
        for _ in 0..<count {
            let message = generator.next()!
            let head = generator.head.milliseconds
            guard case .counted = message.expectation, let event = DecodedEvent(message.value) else {
                if case .tooLate = message.expectation, let event = DecodedEvent(message.value) {
                    tooLate += 1
                    if message.topic == .impressions { impressions.insert("\(event.product)/\(event.user ?? "")") }
                    #expect(head - event.timestamp >= 10_000 && head - event.timestamp <= 15_000, "too late: 1 to 1.5 lags behind")
                }
                continue
            }
            let behind = head - event.timestamp
            #expect(behind >= 0 && behind <= 6_000, "at most 6 s behind the stream's head")
            if behind >= Int64(busy.disorder.value) { late += 1 }
            let pair = "\(event.product)/\(event.user ?? "")"
            switch message.topic {
            case .impressions: impressions.insert(pair)
            case .clicks:
                let followsImpression = impressions.contains(pair)
                #expect(followsImpression, "a click follows an impression of the same product and user")
            case .conversions:
                let followsImpression = impressions.contains(pair)
                #expect(followsImpression, "a conversion follows an impression of the same product and user")
            case .events: Issue.record("no single-topic events in two-topic mode")
            }
        }
        #expect(generator.head.milliseconds == start.milliseconds + Int64(count) * 1_000 / 500, "500 events per second of event time")
        #expect(late > 0 && tooLate > 0)
    }

    /// Over a long stream the observed rates are those configured (deterministic for the seed;
    /// the bounds are several standard deviations wide).
    @Test func ratesMatchTheConfiguration() {
        let configuration = TrafficConfiguration(
            products: 200, meanCTR: 0.015, seed: 7, startTime: start, eventRate: 1_000, invalidFraction: 0.002,
            conversionRate: 0.03, revenuePerClick: 0.30, revenuePerConversion: 4
        )
        let stream = messages(configuration, count: 300_000)
        var truth = Truth(windowSize: .seconds(10))
        stream.forEach { truth.record($0) }
        let totals = truth.totals
        let ctr = Double(totals.clicks) / Double(totals.impressions)
        let cvr = Double(totals.conversions) / Double(totals.clicks)
        let ecpm = Double(totals.revenueMicros) / 1e6 / Double(totals.impressions) * 1_000
        let meanDrawn = TrafficGenerator(configuration: configuration).productClickRates.reduce(0, +) / 200
        #expect(abs(meanDrawn - 0.015) < 0.003, "per-product rates are drawn around the mean: \(meanDrawn)")
        #expect(abs(ctr - meanDrawn) < 0.0015, "CTR \(ctr)")
        #expect(abs(cvr - 0.03) < 0.012, "CVR \(cvr)")
        // eCPM = 1000 × CTR × (revenue per click + CVR × revenue per conversion) ≈ 6.3
        let expectedECPM = 1_000 * ctr * (0.30 + cvr * 4)
        #expect(abs(ecpm - expectedECPM) < 0.1 * expectedECPM, "eCPM \(ecpm), expected about \(expectedECPM)")
        #expect(ecpm > 0.5 && ecpm < 20, "a realistic display eCPM: \(ecpm)")
        let invalid = Double(truth.invalid.values.reduce(0, +)) / Double(stream.count)
        #expect(abs(invalid - 0.002) < 0.0005, "invalid fraction \(invalid)")
    }

    @Test func productDefaultsAreRealistic() {
        let defaults = TrafficConfiguration(startTime: start)
        #expect(defaults.meanCTR >= 0.005 && defaults.meanCTR <= 0.05)
        let rates = TrafficGenerator(configuration: defaults).productClickRates.sorted()
        let (p5, p95) = (rates[rates.count / 20], rates[rates.count * 19 / 20])
        #expect(p5 >= 0.003 && p95 <= 0.06, "most products between 0.3 % and 6 %: p5 \(p5), p95 \(p95)")
    }

    @Test func singleTopicModeFlagsClicksOnImpressions() {
        var configuration = busy
        configuration.singleTopic = true
        configuration.conversionRate = 0
        configuration.invalidFraction = 0
        configuration.tooLateFraction = 0
        var flagged = 0
        for message in messages(configuration, count: 10_000) {
            #expect(message.topic == .events)
            guard case .counted(_, _, let counts) = message.expectation, let event = DecodedEvent(message.value) else {
                Issue.record("every message is counted")
                continue
            }
            #expect(event.clickFlag == Int(counts.clicks))
            #expect(event.eventType == nil)
            #expect((event.revenueMicros > 0) == (counts.revenueMicros > 0) && counts.revenueMicros == event.revenueMicros)
            flagged += Int(counts.clicks)
        }
        #expect(flagged > 0)
    }

    @Test func productNamesAndEscaping() {
        #expect(TrafficGenerator.productName(0) == "p-000000")
        #expect(TrafficGenerator.productName(1_234_567) == "p-1234567")
        let message = TrafficGenerator.event(product: "a\"b\\c\u{1}", timestamp: start, topic: .clicks, eventID: "e")
        #expect(DecodedEvent(message.value)?.product == "a\"b\\c\u{1}")
    }
}

@Suite struct AvazuReplayTests {
    @Test func theSampleRowsBecomeImpressionsAndClicksInTheirHour() throws {
        let text = try String(contentsOf: fixture("avazu_sample.csv"), encoding: .utf8)
        let lines = text.split(separator: "\n")
        let replay = try AvazuReplay(headerLine: String(lines[0]), productColumn: "site_id")
        var clicks = 0
        var products = Set<String>()
        let hourStart = Timestamp.utc(year: 2014, month: 10, day: 21, hour: 0).milliseconds
        for (index, line) in lines.dropFirst().enumerated() {
            let row = try replay.row(line, line: index + 2)
            #expect(row == (try replay.row(line, line: index + 2)), "placement in the hour is deterministic")
            #expect((hourStart..<hourStart + 3_600_000).contains(row.impressionTime.milliseconds))
            #expect(row.clickTime > row.impressionTime && row.clickTime.milliseconds < hourStart + 3_600_000)
            clicks += row.clicked ? 1 : 0
            products.insert(row.product)
        }
        #expect(lines.count - 1 == 100 && clicks == 20)
        #expect(products.contains("1fbe01fe"))
    }

    @Test func badRowsNameTheirLine() throws {
        let replay = try AvazuReplay(headerLine: "id,click,hour,site_id", productColumn: "site_id")
        #expect(throws: AvazuRowError.self) { try replay.row("1,2,14102100,a", line: 3) }
        do {
            _ = try replay.row("1,1,14132100,a", line: 7)
            Issue.record("month 13 is refused")
        } catch {
            #expect(error.line == 7 && error.message.contains("not a valid YYMMDDHH"))
        }
        #expect(throws: AvazuRowError.self) { try AvazuReplay(headerLine: "id,click,hour", productColumn: "site_id") }
    }
}
