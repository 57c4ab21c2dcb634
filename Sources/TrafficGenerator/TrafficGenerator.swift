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

    public init(
        products: Int = 1_000, meanCTR: Double = 0.015, seed: UInt64 = 1, startTime: Timestamp, eventRate: Double = 1_000,
        disorder: Milliseconds = Milliseconds(1_000), lateFraction: Double = 0, tooLateFraction: Double = 0,
        tooLateLag: Milliseconds = .seconds(120), invalidFraction: Double = 0, clickDelay: ClosedRange<Int64> = 200...3_000,
        conversionRate: Double = 0, revenuePerClick: Double = 0, revenuePerConversion: Double = 0, singleTopic: Bool = false
    ) {
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
}

/// A deterministic stream of impressions and clicks: the same configuration yields the same
/// messages in the same order.
///
/// Clicks follow an impression of the same product and user after ``TrafficConfiguration/clickDelay``,
/// with the product's click-through rate.
public struct TrafficGenerator: IteratorProtocol, Sendable {
    public let configuration: TrafficConfiguration
    private var random: SplitMix64
    private var clickRates: [Double]
    private var pendingEvents = EventQueue()
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
        nominal = Double(configuration.startTime.milliseconds)
        head = configuration.startTime
    }

    /// The product id string of product number `index`.
    public static func productName(_ index: Int) -> String {
        let digits = String(index)
        return "p-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// The per-product click-through rates drawn for this stream.
    public var productClickRates: [Double] { clickRates }

    public mutating func next() -> GeneratedMessage? {
        nominal += 1000 / configuration.eventRate
        let now = Int64(nominal)
        head = Timestamp(milliseconds: now)
        sequence += 1
        if random.unit() < configuration.invalidFraction {
            return invalidMessage(now)
        }
        let product: Int
        let user: Int
        var topic: InputTopic
        var clicked = false
        var revenue: UInt64 = 0
        if let pending = pendingEvents.peek(), pending.time <= now {
            _ = pendingEvents.pop()
            (product, user, topic) = (pending.product, pending.user, pending.kind == .conversion ? .conversions : .clicks)
            revenue = pending.revenueMicros
        } else {
            product = Int(random.next() % UInt64(clickRates.count))
            user = Int(random.next() % 100_000)
            topic = configuration.singleTopic ? .events : .impressions
            if random.unit() < clickRates[product] {
                let clickRevenue = randomAmount(mean: configuration.revenuePerClick)
                if configuration.singleTopic {
                    clicked = true
                    revenue = clickRevenue
                } else {
                    let delay = Int64.random(in: configuration.clickDelay, using: &random)
                    pendingEvents.push(PendingEvent(time: now + delay, product: product, user: user, kind: .click, revenueMicros: clickRevenue))
                }
                if random.unit() < configuration.conversionRate {
                    let delay = Int64.random(in: 1_000...10_000, using: &random)
                    pendingEvents.push(
                        PendingEvent(
                            time: now + delay, product: product, user: user, kind: .conversion,
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
        return GeneratedMessage(
            topic: topic,
            key: Array(name.utf8),
            value: Self.eventJSON(
                product: name, user: "u-\(user)", timestamp: timestamp, kind: topic.kind, eventID: "e-\(sequence)",
                revenueMicros: revenue > 0 ? revenue : nil,
                clickFlag: topic == .events ? clicked : nil
            ),
            expectation: tooLate ? .tooLate : .counted(product: name, timestamp: Timestamp(milliseconds: timestamp), counts: counts)
        )
    }

    /// A uniformly random amount in [0, 2 × mean], in whole cents, as micro-units.
    private mutating func randomAmount(mean: Double) -> UInt64 {
        guard mean > 0 else { return 0 }
        return UInt64((random.unit() * 2 * mean * 100).rounded(.down)) * 10_000
    }

    /// A valid event, e.g. to advance the watermark at the end of a stream.
    public static func event(
        product: String, timestamp: Timestamp, topic: InputTopic, eventID: String, user: String = "u-0", clicked: Bool = false
    ) -> GeneratedMessage {
        let counts = topic.counts(clicked: clicked, revenueMicros: 0)
        return GeneratedMessage(
            topic: topic, key: Array(product.utf8),
            value: eventJSON(
                product: product, user: user, timestamp: timestamp.milliseconds, kind: topic.kind, eventID: eventID,
                revenueMicros: nil, clickFlag: topic == .events ? clicked : nil
            ),
            expectation: .counted(product: product, timestamp: timestamp, counts: counts)
        )
    }

    /// An event in the documented JSON contract; strings are escaped.
    static func eventJSON(
        product: String, user: String, timestamp: Int64, kind: EventKind, eventID: String, revenueMicros: UInt64?, clickFlag: Bool?
    ) -> [UInt8] {
        var json: [UInt8] = []
        json.reserveCapacity(128)
        json.append(contentsOf: #"{"event_id":"#.utf8)
        appendJSONString(eventID, to: &json)
        json.append(contentsOf: #","product_id":"#.utf8)
        appendJSONString(product, to: &json)
        json.append(contentsOf: #","user_id":"#.utf8)
        appendJSONString(user, to: &json)
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
    var user: Int
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
