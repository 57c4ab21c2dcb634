import CTRWindows

/// The exact counts the aggregator must produce for the messages sent, per (product, window),
/// written as the producer's `--truth-file`.
public struct Truth: Sendable {
    /// A (product, window); products are compared byte for byte, as the aggregator and
    /// ClickHouse compare them (NFC and NFD spellings are two products).
    public struct Key: Hashable, Sendable, Comparable {
        public var product: String
        public var windowStart: Int64

        public init(product: String, windowStart: Int64) {
            self.product = product
            self.windowStart = windowStart
        }

        public static func == (lhs: Key, rhs: Key) -> Bool {
            lhs.windowStart == rhs.windowStart && ProductKey(lhs.product) == ProductKey(rhs.product)
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(windowStart)
            hasher.combine(ProductKey(product))
        }

        /// By window, then by the product id's bytes.
        public static func < (lhs: Key, rhs: Key) -> Bool {
            lhs.windowStart != rhs.windowStart ? lhs.windowStart < rhs.windowStart : lhs.product.utf8.lexicographicallyPrecedes(rhs.product.utf8)
        }
    }

    public let assigner: WindowAssigner
    public private(set) var counts: [Key: WindowCounts] = [:]
    public private(set) var sent: [InputTopic: Int] = [:]
    public private(set) var tooLate = 0
    public private(set) var invalid: [String: Int] = [:]
    public private(set) var maxEventTime: Int64 = .min

    public init(windowSize: Milliseconds) {
        assigner = WindowAssigner(size: windowSize)
    }

    /// Records a message that was delivered.
    public mutating func record(_ message: GeneratedMessage) {
        sent[message.topic, default: 0] += 1
        switch message.expectation {
        case .counted(let product, let timestamp, let added):
            let key = Key(product: product, windowStart: assigner.windowStart(for: timestamp).milliseconds)
            var value = counts[key] ?? WindowCounts()
            value.impressions += added.impressions
            value.clicks += added.clicks
            value.conversions += added.conversions
            value.revenueMicros += added.revenueMicros
            counts[key] = value
            maxEventTime = max(maxEventTime, timestamp.milliseconds)
        case .tooLate:
            tooLate += 1
        case .invalid(let kind):
            invalid[kind, default: 0] += 1
        }
    }

    /// Everything counted, over all windows.
    public var totals: WindowCounts {
        counts.values.reduce(into: WindowCounts()) {
            $0.impressions += $1.impressions
            $0.clicks += $1.clicks
            $0.conversions += $1.conversions
            $0.revenueMicros += $1.revenueMicros
        }
    }

    /// The truth as JSON. Windows ending after `finalWatermark` are marked `"open": true`: the
    /// aggregator's watermark does not pass them, so they are not expected in ClickHouse yet.
    public func json(finalWatermark: Timestamp?) -> [UInt8] {
        var out: [UInt8] = []
        func append(_ text: String) { out.append(contentsOf: text.utf8) }
        append("{\n  \"window_ms\": \(assigner.size.value),\n")
        append("  \"final_watermark_ms\": \(finalWatermark.map { String($0.milliseconds) } ?? "null"),\n")
        append("  \"events_sent\": {\"impressions\": \(sent[.impressions] ?? 0), \"clicks\": \(sent[.clicks] ?? 0), ")
        append("\"conversions\": \(sent[.conversions] ?? 0), \"events\": \(sent[.events] ?? 0)},\n")
        append("  \"too_late_sent\": \(tooLate),\n")
        append("  \"invalid_sent\": \(invalid.values.reduce(0, +)),\n")
        append("  \"invalid_by_kind\": {" + invalid.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "},\n")
        let counted = totals
        append("  \"counted\": {\"impressions\": \(counted.impressions), \"clicks\": \(counted.clicks), ")
        append("\"conversions\": \(counted.conversions), \"revenue_micros\": \(counted.revenueMicros)},\n")
        append("  \"windows\": [\n")
        for (index, key) in counts.keys.sorted().enumerated() {
            let value = counts[key]!
            let end = key.windowStart + assigner.size.value
            let open = finalWatermark.map { end > $0.milliseconds } ?? true
            var product: [UInt8] = []
            TrafficGenerator.appendJSONString(key.product, to: &product)
            append("    {\"product_id\": \(String(decoding: product, as: UTF8.self)), \"window_start_ms\": \(key.windowStart), ")
            append("\"impressions\": \(value.impressions), \"clicks\": \(value.clicks), \"conversions\": \(value.conversions), ")
            append("\"revenue_micros\": \(value.revenueMicros), \"open\": \(open)}")
            append(index + 1 < counts.count ? ",\n" : "\n")
        }
        append("  ]\n}\n")
        return out
    }
}
