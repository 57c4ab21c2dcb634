import CTRWindows
import Foundation
import Testing

@testable import TrafficGenerator

/// The fields of an event the dimensional truth depends on, decoded with Foundation's JSON
/// parser (independent of the generator's writer).
private struct EventFields {
    var object: [String: Any]

    init?(_ value: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any], object["product_id"] is String else {
            return nil
        }
        self.object = object
    }

    func string(_ name: String) -> String? { object[name] as? String }
    var product: String { string("product_id")! }
    var timestamp: Int64 { (object["timestamp"] as! NSNumber).int64Value }
    var eventID: String? { string("event_id") }
    var user: String? { string("user_id") }
    /// As the aggregator reads a dimension: a missing field is "".
    func dimension(_ name: String) -> String { string(name) ?? "" }
}

private let start = Timestamp(milliseconds: 1_700_000_000_000)
private let dimensionNames = EventDimensions.fieldNames

private func messages(_ configuration: TrafficConfiguration, count: Int) -> [GeneratedMessage] {
    var generator = TrafficGenerator(configuration: configuration)
    return (0..<count).map { _ in generator.next()! }
}

@Suite struct TrafficDimensionsTests {
    let configuration = TrafficConfiguration(
        products: 40, meanCTR: 0.05, seed: 9, startTime: start, eventRate: 500, lateFraction: 0.02, tooLateFraction: 0.01,
        tooLateLag: .seconds(10), invalidFraction: 0.005, conversionRate: 0.2, revenuePerClick: 0.3, revenuePerConversion: 4,
        campaigns: 12, users: 2_000, anonymousFraction: 0.05, duplicateFraction: 0.03
    )

    /// Every valid event carries a campaign, a country and a device with the configured skew,
    /// and a click or conversion carries its impression's user and dimensions.
    @Test func eventsCarrySkewedDimensionsAndClicksInheritThem() {
        var campaigns: [String: Int] = [:]
        var countries: [String: Int] = [:]
        var devices: [String: Int] = [:]
        var users: [String: Int] = [:]
        var impressions = Set<[String]>()
        var impressionCount = 0
        var anonymous = 0
        for message in messages(configuration, count: 60_000) where !message.isDuplicate {
            if case .invalid = message.expectation { continue }
            guard let event = EventFields(message.value) else {
                Issue.record("a valid message is an event")
                continue
            }
            if case .tooLate = message.expectation {
                if message.topic == .impressions {
                    impressions.insert([event.product, event.user ?? "-", event.dimension("campaign_id"), event.dimension("country"), event.dimension("device_type")])
                }
                continue
            }
            let campaign = event.dimension("campaign_id")
            #expect(campaign.wholeMatch(of: /cmp-\d{4}/) != nil, "campaign id \(campaign)")
            #expect(message.dimensions == EventDimensions(campaignID: campaign, country: event.dimension("country"), deviceType: event.dimension("device_type")))
            #expect(message.user == event.user && message.eventID == event.eventID)
            let identity = [event.product, event.user ?? "-", campaign, event.dimension("country"), event.dimension("device_type")]
            switch message.topic {
            case .impressions:
                impressionCount += 1
                impressions.insert(identity)
                campaigns[campaign, default: 0] += 1
                countries[event.dimension("country"), default: 0] += 1
                devices[event.dimension("device_type"), default: 0] += 1
                if let user = event.user { users[user, default: 0] += 1 } else { anonymous += 1 }
            case .clicks, .conversions:
                let follows = impressions.contains(identity)
                #expect(follows, "a \(message.topic) carries its impression's product, user and dimensions: \(identity)")
            case .events:
                Issue.record("no single-topic events in two-topic mode")
            }
        }
        let total = Double(impressionCount)
        #expect(Set(campaigns.keys).isSubset(of: Set((0..<12).map { TrafficGenerator.campaignName($0) })))
        #expect(campaigns["cmp-0001"]! > campaigns["cmp-0002"]! && campaigns["cmp-0002"]! > campaigns["cmp-0012"]!, "Zipf over campaigns: \(campaigns)")
        #expect(abs(Double(campaigns["cmp-0001"]!) / total - log(2) / log(13)) < 0.02)
        #expect(countries.max { $0.value < $1.value }?.key == "US" && countries.count > 15, "a heavy head of countries: \(countries)")
        #expect(Set(countries.keys).isSubset(of: Set(countryTable.map(\.code))))
        for (device, share) in [("mobile", 0.6), ("desktop", 0.3), ("tablet", 0.1)] {
            #expect(abs(Double(devices[device] ?? 0) / total - share) < 0.02, "\(device): \(devices)")
        }
        #expect(devices.count == 3)
        #expect(abs(Double(anonymous) / total - 0.05) < 0.01, "anonymous impressions: \(anonymous) of \(impressionCount)")
        // Skewed users: the most active user sees far more than a uniform pool would give it.
        let busiest = users.values.max() ?? 0
        #expect(Double(busiest) > 10 * total / 2_000, "the busiest user has \(busiest) impressions")
        #expect(users.count <= 2_000)
    }

    /// Event ids are unique except for duplicates, which repeat an earlier valid message byte for
    /// byte within 500 ms of event time.
    @Test func duplicatesRepeatAnEarlierMessageSoonAfter() {
        var generator = TrafficGenerator(configuration: configuration)
        var sentAt: [String: (head: Int64, value: [UInt8])] = [:]
        var duplicates = 0
        var valid = 0
        for _ in 0..<40_000 {
            let message = generator.next()!
            let head = generator.head.milliseconds
            if case .invalid = message.expectation {
                #expect(!message.isDuplicate)
                continue
            }
            guard let id = EventFields(message.value)?.eventID else {
                Issue.record("a valid message has an event_id")
                continue
            }
            if message.isDuplicate {
                duplicates += 1
                guard let original = sentAt.removeValue(forKey: id) else {
                    Issue.record("duplicate \(id) repeats no earlier message (or repeats one twice)")
                    continue
                }
                #expect(original.value == message.value)
                #expect(head - original.head <= 500 + 2, "within 500 ms of event time: \(head - original.head)")
            } else {
                valid += 1
                #expect(sentAt[id] == nil, "event ids are unique: \(id)")
                sentAt[id] = (head, message.value)
            }
        }
        #expect(abs(Double(duplicates) / Double(valid) - 0.03) < 0.005, "\(duplicates) duplicates of \(valid) events")
        var other = configuration
        other.startTime = start + .seconds(1)
        #expect(
            messages(other, count: 10).compactMap(\.eventID).allSatisfy { sentAt[$0] == nil },
            "another start time gives other event ids (two producers do not collide)"
        )
    }

    /// The dimensional truth equals an independent reference computed from the decoded events:
    /// counts of every copy, counts without duplicates (first event id per kind and key), and
    /// distinct users of the counted impressions and clicks.
    @Test func dimensionalTruthMatchesAnIndependentReference() throws {
        let stream = messages(configuration, count: 25_000)
        var truth = Truth(windowSize: .seconds(10), dimensions: dimensionNames, countsUsers: true)
        struct Reference {
            var all = WindowCounts()
            var deduplicated = WindowCounts()
            var impressionUsers = Set<String>()
            var clickUsers = Set<String>()
        }
        var reference: [Truth.Key: Reference] = [:]
        var seen = Set<[String]>()
        for message in stream {
            truth.record(message)
            guard case .counted(_, _, let counts) = message.expectation, let event = EventFields(message.value) else { continue }
            let key = Truth.Key(
                product: event.product, dimensions: dimensionNames.map(event.dimension),
                windowStart: event.timestamp - ((event.timestamp % 10_000) + 10_000) % 10_000
            )
            var entry = reference[key] ?? Reference()
            func add(_ target: inout WindowCounts) {
                target.impressions += counts.impressions
                target.clicks += counts.clicks
                target.conversions += counts.conversions
                target.revenueMicros += counts.revenueMicros
            }
            add(&entry.all)
            if seen.insert(["\(message.topic)", event.eventID!, "\(key.windowStart)"]).inserted { add(&entry.deduplicated) }
            if let user = event.user {
                if counts.impressions > 0 { entry.impressionUsers.insert(user) }
                if counts.clicks > 0 { entry.clickUsers.insert(user) }
            }
            reference[key] = entry
        }
        #expect(truth.duplicatesSent > 0 && truth.duplicateTotals.impressions > 0)
        #expect(Set(truth.counts.keys) == Set(reference.keys))
        var differing = 0
        for (key, expected) in reference {
            let users = truth.users[key] ?? Truth.Users()
            if truth.counts[key] != expected.all || truth.deduplicatedCounts(key) != expected.deduplicated
                || users.impressions.count != expected.impressionUsers.count || users.clicks.count != expected.clickUsers.count
            {
                differing += 1
            }
        }
        #expect(differing == 0, "\(differing) of \(reference.count) keys differ")
        #expect(reference.values.contains { $0.impressionUsers.count >= 2 }, "some keys have several users")

        // The truth file carries the same, per key, under the field names.
        let json = try #require(try JSONSerialization.jsonObject(with: Data(truth.json(finalWatermark: nil))) as? [String: Any])
        #expect(json["dimensions"] as? [String] == dimensionNames)
        #expect(json["counts_users"] as? Bool == true)
        #expect((json["duplicates_sent"] as? Int) == truth.duplicatesSent)
        let windows = try #require(json["windows"] as? [[String: Any]])
        #expect(windows.count == reference.count)
        for window in windows {
            let key = Truth.Key(
                product: window["product_id"] as! String, dimensions: dimensionNames.map { window[$0] as! String },
                windowStart: (window["window_start_ms"] as! NSNumber).int64Value
            )
            let expected = try #require(reference[key])
            #expect((window["impressions"] as! Int) - (window["duplicate_impressions"] as? Int ?? 0) == Int(expected.deduplicated.impressions))
            #expect((window["clicks"] as! Int) - (window["duplicate_clicks"] as? Int ?? 0) == Int(expected.deduplicated.clicks))
            #expect((window["clicks"] as! Int) == Int(expected.all.clicks))
            #expect(window["unique_impression_users"] as? Int == expected.impressionUsers.count)
            #expect(window["unique_click_users"] as? Int == expected.clickUsers.count)
        }
    }

    /// Without dimensions and users the truth keeps today's shape: one entry per (product, window),
    /// no user counts.
    @Test func perProductTruthSumsOverDimensions() throws {
        let stream = messages(configuration, count: 10_000)
        var perProduct = Truth(windowSize: .seconds(10))
        var dimensional = Truth(windowSize: .seconds(10), dimensions: dimensionNames)
        for message in stream {
            perProduct.record(message)
            dimensional.record(message)
        }
        var summed: [Truth.Key: WindowCounts] = [:]
        for (key, value) in dimensional.counts {
            summed[Truth.Key(product: key.product, windowStart: key.windowStart), default: WindowCounts()].accumulate(value)
        }
        #expect(summed == perProduct.counts)
        #expect(perProduct.users.isEmpty && dimensional.users.isEmpty)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(perProduct.json(finalWatermark: nil))) as? [String: Any])
        let window = try #require((json["windows"] as? [[String: Any]])?.first)
        #expect(window["campaign_id"] == nil && window["unique_impression_users"] == nil)
    }

    @Test func withoutDimensionsEventsLeaveTheFieldsOut() {
        var plain = configuration
        plain.emitsDimensions = false
        for message in messages(plain, count: 2_000) {
            guard case .counted = message.expectation, let event = EventFields(message.value) else { continue }
            #expect(event.string("campaign_id") == nil && event.string("country") == nil && event.string("device_type") == nil)
            #expect(message.dimensions == nil)
        }
        var truth = Truth(windowSize: .seconds(10), dimensions: dimensionNames)
        truth.record(TrafficGenerator.event(product: "p", timestamp: start, topic: .impressions, eventID: "e"))
        #expect(truth.counts.keys.first?.dimensions == ["", "", ""], "a missing dimension reads as the empty string")
    }

    /// Dimension values and users are compared byte for byte, as the aggregator hashes them.
    @Test func dimensionValuesAndUsersAreComparedByteForByte() {
        var truth = Truth(windowSize: .seconds(10), dimensions: ["campaign_id"], countsUsers: true)
        for (campaign, user) in [("caf\u{E9}", "jos\u{E9}"), ("cafe\u{301}", "jose\u{301}"), ("caf\u{E9}", "jose\u{301}")] {
            let dimensions = EventDimensions(campaignID: campaign, country: "US", deviceType: "mobile")
            truth.record(TrafficGenerator.event(product: "p", timestamp: start, topic: .impressions, eventID: "e", user: user, dimensions: dimensions))
        }
        #expect(truth.counts.count == 2)
        #expect(truth.users[Truth.Key(product: "p", dimensions: ["caf\u{E9}"], windowStart: start.milliseconds)]?.impressions.count == 2)
    }

    @Test func zipfIndexStaysInRangeAndFavoursTheHead() {
        #expect(zipfIndex(0, count: 20, exponent: 1) == 0 && zipfIndex(0.999_999_9, count: 20, exponent: 1) == 19)
        #expect(zipfIndex(0, count: 100, exponent: 0.6) == 0 && zipfIndex(0.999_999_9, count: 100, exponent: 0.6) == 99)
        #expect(zipfIndex(0.5, count: 1, exponent: 0.6) == 0)
        let choice = WeightedChoice(weights: [1, 2, 1])
        #expect([0.0, 0.24, 0.25, 0.74, 0.75, 0.99].map(choice.index) == [0, 0, 1, 1, 2, 2])
    }
}
