import Foundation
import CTRWindows

/// What the generated stream looks like.
public struct TrafficConfiguration: Sendable {
    /// Number of products, named `p-000000`, `p-000001`, ...
    public var products: Int
    /// Mean of the per-product click-through rates (each product's rate is drawn once from a
    /// log-normal distribution around it, capped at 0.5). The default, 1.5 %, puts most products
    /// between about 0.5 % and 4 %, as display advertising sees.
    public var meanCTR: Double
    public var seed: UInt64
    /// Event time of the first event.
    public var startTime: Timestamp
    /// Events per second of event time (impressions and clicks together).
    public var eventRate: Double
    /// Every event's timestamp lags its nominal time by a uniform random amount up to this
    /// (keep it below the aggregator's out-of-orderness, 2 s by default).
    public var disorder: Milliseconds
    /// Fraction of events sent late: 2 to 6 s behind the stream, which the aggregator still
    /// counts as late updates (out-of-orderness 2 s + allowed lateness 5 s).
    public var lateFraction: Double
    /// Fraction of events sent too late: ``tooLateLag`` to 1.5 × ``tooLateLag`` behind the
    /// stream (only once the stream is ``tooLateLag`` + 30 s old), which the aggregator refuses
    /// as long as its partitions are consumed within about ``tooLateLag`` − 20 s of event time
    /// of each other (always true for a consumer that keeps up).
    public var tooLateFraction: Double
    public var tooLateLag: Milliseconds
    /// Fraction of messages that break the event contract.
    public var invalidFraction: Double
    /// Delay of a click after its impression, in event time.
    public var clickDelay: ClosedRange<Int64>
    /// Fraction of clicks followed by a conversion (purchase) 1 to 10 s later; 0 sends none.
    public var conversionRate: Double
    /// Mean revenue of a click (cost per click), in currency units; 0 sends no click revenue.
    public var revenuePerClick: Double
    /// Mean revenue of a conversion (order value), in currency units.
    public var revenuePerConversion: Double
    /// Single-topic mode: impressions carry a `click` flag (and the click's revenue) instead of
    /// separate click events.
    public var singleTopic: Bool
    /// Number of campaigns, named `cmp-0001`, `cmp-0002`, ...; an impression's campaign is drawn
    /// with a Zipf skew (exponent 1: with 20 campaigns the first gets about 23 % of the traffic,
    /// the last under 2 %), independently of its product, so that a product runs in many campaigns.
    public var campaigns: Int
    /// Size of the user pool, named `u-0`, `u-1`, ...; users are drawn with a Zipf-like skew
    /// (exponent 0.6: with 100,000 users the most active sees about 0.3 % of the impressions).
    public var users: Int
    /// Fraction of impressions without `user_id` (their clicks and conversions have none either).
    public var anonymousFraction: Double
    /// Fraction of valid events sent a second time, byte for byte (same `event_id`), as a
    /// producer's retry would: within 500 ms of event time after the original.
    public var duplicateFraction: Double
    /// Whether events carry `campaign_id`, `country` and `device_type` (they are drawn either way).
    public var emitsDimensions: Bool

    public init(
        products: Int = 1_000, meanCTR: Double = 0.015, seed: UInt64 = 1, startTime: Timestamp, eventRate: Double = 1_000,
        disorder: Milliseconds = Milliseconds(1_000), lateFraction: Double = 0, tooLateFraction: Double = 0,
        tooLateLag: Milliseconds = .seconds(120), invalidFraction: Double = 0, clickDelay: ClosedRange<Int64> = 200...3_000,
        conversionRate: Double = 0, revenuePerClick: Double = 0, revenuePerConversion: Double = 0, singleTopic: Bool = false,
        campaigns: Int = 20, users: Int = 100_000, anonymousFraction: Double = 0, duplicateFraction: Double = 0, emitsDimensions: Bool = true
    ) {
        self.campaigns = campaigns
        self.users = users
        self.anonymousFraction = anonymousFraction
        self.duplicateFraction = duplicateFraction
        self.emitsDimensions = emitsDimensions
        self.conversionRate = conversionRate
        self.revenuePerClick = revenuePerClick
        self.revenuePerConversion = revenuePerConversion
        self.singleTopic = singleTopic
        self.tooLateLag = tooLateLag
        self.products = products
        self.meanCTR = meanCTR
        self.seed = seed
        self.startTime = startTime
        self.eventRate = eventRate
        self.disorder = disorder
        self.lateFraction = lateFraction
        self.tooLateFraction = tooLateFraction
        self.invalidFraction = invalidFraction
        self.clickDelay = clickDelay
    }
}

/// The input topics.
public enum InputTopic: Int, Sendable, Hashable, CaseIterable {
    case impressions, clicks, conversions
    /// Single-topic mode: impressions with a click flag.
    case events

    public var kind: EventKind {
        switch self {
        case .impressions, .events: .impression
        case .clicks: .click
        case .conversions: .conversion
        }
    }

    /// What one message of this topic adds to its (product, window).
    func counts(clicked: Bool, revenueMicros: UInt64) -> WindowCounts {
        switch self {
        case .impressions: WindowCounts(impressions: 1, revenueMicros: revenueMicros)
        case .clicks: WindowCounts(clicks: 1, revenueMicros: revenueMicros)
        case .conversions: WindowCounts(conversions: 1, revenueMicros: revenueMicros)
        case .events: WindowCounts(impressions: 1, clicks: clicked ? 1 : 0, revenueMicros: revenueMicros)
        }
    }
}

/// The dimensions an event carries: `campaign_id`, `country` and `device_type`.
public struct EventDimensions: Sendable, Hashable {
    public var campaignID: String
    /// ISO 3166-1 alpha-2 code.
    public var country: String
    /// `mobile`, `desktop` or `tablet`.
    public var deviceType: String

    /// The field names, as in the event JSON and `ctr-aggregator --dimensions`.
    public static let fieldNames = ["campaign_id", "country", "device_type"]

    public init(campaignID: String, country: String, deviceType: String) {
        self.campaignID = campaignID
        self.country = country
        self.deviceType = deviceType
    }

    /// The value of the field `name`; "" for a field events do not carry (as the aggregator
    /// reads a missing field).
    public func value(named name: String) -> String {
        switch name {
        case "campaign_id": campaignID
        case "country": country
        case "device_type": deviceType
        default: ""
        }
    }
}

/// One message to publish, with what the aggregator is expected to make of it.
public struct GeneratedMessage: Sendable {
    public enum Expectation: Sendable, Hashable {
        /// A valid event the aggregator counts: what it adds to its (product, window).
        case counted(product: String, timestamp: Timestamp, counts: WindowCounts)
        /// A valid event behind the allowed lateness.
        case tooLate
        /// A contract violation of the named kind.
        case invalid(String)
    }

    public var topic: InputTopic
    public var key: [UInt8]
    public var value: [UInt8]
    public var expectation: Expectation
    /// The event's dimensions; `nil` when it carries none (every dimension reads as "").
    public var dimensions: EventDimensions? = nil
    /// The event's `user_id`; `nil` when it has none.
    public var user: String? = nil
    /// The event's `event_id` (`nil` for an invalid message).
    public var eventID: String? = nil
    /// Whether this is the second copy of an earlier message (same bytes, same `event_id`), as a
    /// producer's retry sends it: an aggregator deduplicating on `event_id` does not count it.
    public var isDuplicate = false
}

/// Country codes with their share of traffic (a heavy head, as a global ad network sees) and
/// a click-through-rate factor (normalized by the generator to a traffic-weighted mean of 1).
let countryTable: [(code: String, weight: Double, ctrFactor: Double)] = [
    ("US", 28, 1.0), ("IN", 10, 1.35), ("GB", 7, 0.9), ("DE", 6, 0.8), ("BR", 5, 1.3), ("FR", 5, 0.85), ("JP", 5, 0.7),
    ("CA", 4, 0.95), ("MX", 3, 1.2), ("ID", 3, 1.45), ("IT", 3, 0.9), ("ES", 3, 0.95), ("AU", 2.5, 0.9), ("KR", 2, 0.75),
    ("NL", 2, 0.8), ("PL", 1.5, 1.05), ("TR", 1.5, 1.25), ("PH", 1.5, 1.5), ("VN", 1.5, 1.4), ("SE", 1, 0.8), ("AR", 1, 1.2),
    ("ZA", 1, 1.1), ("NG", 1, 1.6), ("EG", 1, 1.4), ("SA", 1, 1.0),
]

/// Device types with their share of traffic and click-through-rate factor (mobile clicks more,
/// accidental taps included).
let deviceTable: [(name: String, weight: Double, ctrFactor: Double)] = [("mobile", 60, 1.15), ("desktop", 30, 0.75), ("tablet", 10, 1.0)]

/// A categorical distribution drawn by inverting its cumulative weights.
struct WeightedChoice: Sendable {
    private let cumulative: [Double]

    init(weights: [Double]) {
        let total = weights.reduce(0, +)
        var sum = 0.0
        cumulative = weights.map {
            sum += $0
            return sum / total
        }
    }

    /// The index for a uniform draw `unit` in [0, 1).
    func index(_ unit: Double) -> Int {
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if unit < cumulative[middle] { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

/// An index in `0..<count` with a Zipf-like skew: the continuous power law x^-`exponent` on
/// [1, `count` + 1), inverted at the uniform draw `unit` in [0, 1). Index 0 is the most likely.
func zipfIndex(_ unit: Double, count: Int, exponent: Double) -> Int {
    let n = Double(count) + 1
    let x: Double
    if abs(exponent - 1) < 1e-9 {
        x = exp(unit * log(n))
    } else {
        let power = 1 - exponent
        x = pow(1 + unit * (pow(n, power) - 1), 1 / power)
    }
    return min(count - 1, max(0, Int(x) - 1))
}

/// The dimensions and user of an impression, which its click and conversion carry too.
struct Audience: Sendable {
    var campaign: Int
    var country: Int
    var device: Int
    /// `nil`: an anonymous user.
    var user: Int?
}

/// A deterministic stream of impressions and clicks: the same configuration yields the same
/// messages in the same order.
///
/// Clicks follow an impression of the same product and user after ``TrafficConfiguration/clickDelay``,
/// with the product's click-through rate times the factors of the impression's campaign, country
/// and device (each with a traffic-weighted mean of 1, so the mean rate stays the product's).
/// A click and its conversion carry the impression's user and dimensions. Campaigns, countries,
/// devices, anonymous users and duplicates are drawn from a second generator, so that they do not
/// shift the draws of products, users and times. A duplicate takes the place of a new message in
/// the stream (event time advances per message).
public struct TrafficGenerator: IteratorProtocol, Sendable {
    public let configuration: TrafficConfiguration
    private var random: SplitMix64
    /// Draws of campaigns, countries, devices, anonymous users and duplicates.
    private var audienceRandom: SplitMix64
    private var clickRates: [Double]
    private let campaignNames: [String]
    private let campaignFactors: [Double]
    private let countryChoice: WeightedChoice
    private let countryFactors: [Double]
    private let deviceChoice: WeightedChoice
    private let deviceFactors: [Double]
    private var pendingEvents = EventQueue()
    /// Copies of sent messages waiting for their retry, in order of their due time.
    private var pendingDuplicates: [(due: Int64, message: GeneratedMessage)] = []
    private var nextDuplicate = 0
    private let eventIDPrefix: String
    private var nominal: Double
    private var sequence: UInt64 = 0
    /// Highest nominal event time so far.
    public private(set) var head: Timestamp

    public init(configuration: TrafficConfiguration) {
        self.configuration = configuration
        var random = SplitMix64(seed: configuration.seed)
        clickRates = (0..<max(1, configuration.products)).map { _ in
            // Log-normal around the mean: exp(N(0, 0.5²)) has mean exp(0.125).
            let u1 = max(random.unit(), 1e-12)
            let u2 = random.unit()
            let normal = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
            return min(0.5, configuration.meanCTR * exp(0.5 * normal - 0.125))
        }
        self.random = random
        var audienceRandom = SplitMix64(seed: configuration.seed ^ 0x5EED_D1A5_0000_0001)
        let campaigns = max(1, configuration.campaigns)
        campaignNames = (0..<campaigns).map { Self.campaignName($0) }
        // Each campaign's CTR factor: log-normal, exp(N(0, 0.3²)), normalized to a traffic-weighted mean of 1.
        let rawCampaignFactors = (0..<campaigns).map { _ in
            let u1 = max(audienceRandom.unit(), 1e-12)
            let u2 = audienceRandom.unit()
            return exp(0.3 * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
        }
        let campaignShares = (0..<campaigns).map { index in
            log(Double(index + 2) / Double(index + 1)) / log(Double(campaigns) + 1)
        }
        campaignFactors = Self.normalized(rawCampaignFactors, weights: campaignShares)
        countryChoice = WeightedChoice(weights: countryTable.map(\.weight))
        countryFactors = Self.normalized(countryTable.map(\.ctrFactor), weights: countryTable.map(\.weight))
        deviceChoice = WeightedChoice(weights: deviceTable.map(\.weight))
        deviceFactors = Self.normalized(deviceTable.map(\.ctrFactor), weights: deviceTable.map(\.weight))
        self.audienceRandom = audienceRandom
        eventIDPrefix = "e-\(configuration.seed)-\(configuration.startTime.milliseconds)-"
        nominal = Double(configuration.startTime.milliseconds)
        head = configuration.startTime
    }

    /// `factors` divided by their mean weighted by `weights`.
    private static func normalized(_ factors: [Double], weights: [Double]) -> [Double] {
        let mean = zip(factors, weights).reduce(0) { $0 + $1.0 * $1.1 } / weights.reduce(0, +)
        return factors.map { $0 / mean }
    }

    /// The product id string of product number `index`.
    public static func productName(_ index: Int) -> String {
        let digits = String(index)
        return "p-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// The campaign id string of campaign number `index` (0-based): `cmp-0001` for 0.
    public static func campaignName(_ index: Int) -> String {
        let digits = String(index + 1)
        return "cmp-" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The per-product click-through rates drawn for this stream.
    public var productClickRates: [Double] { clickRates }

    /// The click-through-rate factor of each campaign (traffic-weighted mean 1).
    public var campaignClickFactors: [Double] { campaignFactors }

    public mutating func next() -> GeneratedMessage? {
        nominal += 1000 / configuration.eventRate
        let now = Int64(nominal)
        head = Timestamp(milliseconds: now)
        if nextDuplicate < pendingDuplicates.count, pendingDuplicates[nextDuplicate].due <= now {
            var duplicate = pendingDuplicates[nextDuplicate].message
            nextDuplicate += 1
            if nextDuplicate >= 1_024 && nextDuplicate * 2 >= pendingDuplicates.count {
                pendingDuplicates.removeFirst(nextDuplicate)
                nextDuplicate = 0
            }
            duplicate.isDuplicate = true
            return duplicate
        }
        sequence += 1
        if random.unit() < configuration.invalidFraction {
            return invalidMessage(now)
        }
        let product: Int
        let audience: Audience
        var topic: InputTopic
        var clicked = false
        var revenue: UInt64 = 0
        if let pending = pendingEvents.peek(), pending.time <= now {
            _ = pendingEvents.pop()
            (product, audience, topic) = (pending.product, pending.audience, pending.kind == .conversion ? .conversions : .clicks)
            revenue = pending.revenueMicros
        } else {
            product = Int(random.next() % UInt64(clickRates.count))
            let userDraw = Double(random.next() >> 11) * 0x1.0p-53
            audience = Audience(
                campaign: campaignIndex(audienceRandom.unit()),
                country: countryChoice.index(audienceRandom.unit()),
                device: deviceChoice.index(audienceRandom.unit()),
                user: audienceRandom.unit() < configuration.anonymousFraction
                    ? nil : zipfIndex(userDraw, count: max(1, configuration.users), exponent: 0.6)
            )
            topic = configuration.singleTopic ? .events : .impressions
            let rate = min(
                0.5, clickRates[product] * campaignFactors[audience.campaign] * countryFactors[audience.country] * deviceFactors[audience.device]
            )
            if random.unit() < rate {
                let clickRevenue = randomAmount(mean: configuration.revenuePerClick)
                if configuration.singleTopic {
                    clicked = true
                    revenue = clickRevenue
                } else {
                    let delay = Int64.random(in: configuration.clickDelay, using: &random)
                    pendingEvents.push(PendingEvent(time: now + delay, product: product, audience: audience, kind: .click, revenueMicros: clickRevenue))
                }
                if random.unit() < configuration.conversionRate {
                    let delay = Int64.random(in: 1_000...10_000, using: &random)
                    pendingEvents.push(
                        PendingEvent(
                            time: now + delay, product: product, audience: audience, kind: .conversion,
                            revenueMicros: randomAmount(mean: configuration.revenuePerConversion)
                        )
                    )
                }
            }
        }
        var timestamp = now - Int64(random.unit() * Double(configuration.disorder.value))
        let name = Self.productName(product)
        let roll = random.unit()
        let lag = configuration.tooLateLag.value
        var tooLate = false
        if roll < configuration.tooLateFraction && now - configuration.startTime.milliseconds >= lag + 30_000 {
            timestamp = now - lag - Int64(random.unit() * Double(lag / 2))
            tooLate = true
        } else if roll < configuration.tooLateFraction + configuration.lateFraction {
            timestamp = now - 2_000 - Int64(random.unit() * 4_000)
        }
        let counts = topic.counts(clicked: clicked, revenueMicros: revenue)
        let dimensions = configuration.emitsDimensions
            ? EventDimensions(
                campaignID: campaignNames[audience.campaign], country: countryTable[audience.country].code,
                deviceType: deviceTable[audience.device].name
            ) : nil
        let user = audience.user.map { "u-\($0)" }
        let eventID = eventIDPrefix + String(sequence)
        let message = GeneratedMessage(
            topic: topic,
            key: Array(name.utf8),
            value: Self.eventJSON(
                product: name, user: user, timestamp: timestamp, kind: topic.kind, eventID: eventID,
                revenueMicros: revenue > 0 ? revenue : nil,
                clickFlag: topic == .events ? clicked : nil, dimensions: dimensions
            ),
            expectation: tooLate ? .tooLate : .counted(product: name, timestamp: Timestamp(milliseconds: timestamp), counts: counts),
            dimensions: dimensions, user: user, eventID: eventID
        )
        if configuration.duplicateFraction > 0 && audienceRandom.unit() < configuration.duplicateFraction {
            // Due times stay in order, each at most 500 ms after its original's nominal time: a
            // late original (at most 6 s behind) is still within the 7 s the aggregator accepts.
            let due = max(now + Int64(audienceRandom.unit() * 500), pendingDuplicates.last?.due ?? .min)
            pendingDuplicates.append((due, message))
        }
        return message
    }

    private func campaignIndex(_ unit: Double) -> Int {
        zipfIndex(unit, count: campaignNames.count, exponent: 1)
    }

    /// A uniformly random amount in [0, 2 × mean], in whole cents, as micro-units.
    private mutating func randomAmount(mean: Double) -> UInt64 {
        guard mean > 0 else { return 0 }
        return UInt64((random.unit() * 2 * mean * 100).rounded(.down)) * 10_000
    }

    /// A valid event, e.g. to advance the watermark at the end of a stream.
    public static func event(
        product: String, timestamp: Timestamp, topic: InputTopic, eventID: String, user: String = "u-0", clicked: Bool = false,
        dimensions: EventDimensions? = nil
    ) -> GeneratedMessage {
        let counts = topic.counts(clicked: clicked, revenueMicros: 0)
        return GeneratedMessage(
            topic: topic, key: Array(product.utf8),
            value: eventJSON(
                product: product, user: user, timestamp: timestamp.milliseconds, kind: topic.kind, eventID: eventID,
                revenueMicros: nil, clickFlag: topic == .events ? clicked : nil, dimensions: dimensions
            ),
            expectation: .counted(product: product, timestamp: timestamp, counts: counts),
            dimensions: dimensions, user: user, eventID: eventID
        )
    }

    /// An event in the documented JSON contract; strings are escaped. `user` `nil` leaves
    /// `user_id` out, `dimensions` `nil` the dimension fields.
    static func eventJSON(
        product: String, user: String?, timestamp: Int64, kind: EventKind, eventID: String, revenueMicros: UInt64?, clickFlag: Bool?,
        dimensions: EventDimensions? = nil
    ) -> [UInt8] {
        var json: [UInt8] = []
        json.reserveCapacity(dimensions == nil ? 128 : 192)
        json.append(contentsOf: #"{"event_id":"#.utf8)
        appendJSONString(eventID, to: &json)
        json.append(contentsOf: #","product_id":"#.utf8)
        appendJSONString(product, to: &json)
        if let user {
            json.append(contentsOf: #","user_id":"#.utf8)
            appendJSONString(user, to: &json)
        }
        if let dimensions {
            json.append(contentsOf: #","campaign_id":"#.utf8)
            appendJSONString(dimensions.campaignID, to: &json)
            json.append(contentsOf: #","country":"#.utf8)
            appendJSONString(dimensions.country, to: &json)
            json.append(contentsOf: #","device_type":"#.utf8)
            appendJSONString(dimensions.deviceType, to: &json)
        }
        if let clickFlag {
            json.append(contentsOf: #","click":"#.utf8)
            json.append(clickFlag ? UInt8(ascii: "1") : UInt8(ascii: "0"))
        } else {
            json.append(contentsOf: #","event_type":""#.utf8)
            json.append(contentsOf: kind.eventTypeName.utf8)
            json.append(UInt8(ascii: "\""))
        }
        if let revenueMicros {
            json.append(contentsOf: #","revenue":"#.utf8)
            json.append(contentsOf: String(revenueMicros / 1_000_000).utf8)
            json.append(UInt8(ascii: "."))
            let fraction = String(revenueMicros % 1_000_000)
            json.append(contentsOf: String(repeating: "0", count: 6 - fraction.count).utf8)
            json.append(contentsOf: fraction.utf8)
        }
        json.append(contentsOf: #","timestamp":"#.utf8)
        json.append(contentsOf: String(timestamp).utf8)
        json.append(UInt8(ascii: "}"))
        return json
    }

    static func appendJSONString(_ text: String, to json: inout [UInt8]) {
        json.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                json.append(UInt8(ascii: "\\"))
                json.append(byte)
            case 0..<0x20:
                json.append(contentsOf: Array(String(format: "\\u%04x", byte).utf8))
            default:
                json.append(byte)
            }
        }
        json.append(UInt8(ascii: "\""))
    }

    private mutating func invalidMessage(_ now: Int64) -> GeneratedMessage {
        let product = TrafficGenerator.productName(Int(random.next() % UInt64(clickRates.count)))
        let kinds: [(String, String, InputTopic)] = [
            ("not_json", "this is not json {", .impressions),
            ("missing_field", #"{"timestamp":\#(now)}"#, .impressions),
            ("invalid_timestamp", #"{"product_id":"\#(product)","timestamp":"yesterday"}"#, .clicks),
            ("wrong_event_type", #"{"product_id":"\#(product)","timestamp":\#(now),"event_type":"click"}"#, .impressions),
            ("invalid_product_id", #"{"product_id":"","timestamp":\#(now)}"#, .clicks),
            ("not_object", "[1,2,3]", .clicks),
        ]
        let (kind, text, topic) = kinds[Int(random.next() % UInt64(kinds.count))]
        return GeneratedMessage(topic: topic, key: Array(product.utf8), value: Array(text.utf8), expectation: .invalid(kind))
    }
}

extension EventKind {
    var eventTypeName: String {
        switch self {
        case .impression: "impression"
        case .click: "click"
        case .conversion: "conversion"
        }
    }
}

struct PendingEvent: Sendable {
    var time: Int64
    var product: Int
    var audience: Audience
    var kind: EventKind
    var revenueMicros: UInt64
}

/// A binary min-heap of scheduled clicks and conversions by time.
struct EventQueue: Sendable {
    private var heap: [PendingEvent] = []

    func peek() -> PendingEvent? { heap.first }

    mutating func push(_ click: PendingEvent) {
        heap.append(click)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].time < heap[parent].time else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> PendingEvent? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && heap[left].time < heap[smallest].time { smallest = left }
            if right < heap.count && heap[right].time < heap[smallest].time { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
