import CTRWindows

/// The exact counts the aggregator must produce for the messages sent, per (product,
/// dimensions, window), written as the producer's `--truth-file`.
///
/// - Dimensions: the key holds the values of ``dimensionNames`` (those an aggregator runs with
///   as `--dimensions`; empty: per product, as without the flag). A message without dimensions
///   has "" for each, as the aggregator reads a missing field.
/// - Duplicates (messages flagged ``GeneratedMessage/isDuplicate``) are counted in ``counts``, as
///   an aggregator without `--dedup-field` counts them, and also in ``duplicateCounts``, which an
///   aggregator with `--dedup-field event_id` must leave out.
/// - Unique users (``countsUsers``): the distinct `user_id` values among the counted
///   impressions and among the counted clicks of a key; memory grows with the events, so it is
///   off unless asked for.
public struct Truth: Sendable {
    /// A (product, dimension values, window). Products and dimension values are compared byte
    /// for byte, as the aggregator and ClickHouse compare them (NFC and NFD spellings differ).
    public struct Key: Hashable, Sendable, Comparable {
        public var product: String
        /// The values of the truth's ``Truth/dimensionNames``, in their order.
        public var dimensions: [String]
        public var windowStart: Int64

        public init(product: String, dimensions: [String] = [], windowStart: Int64) {
            self.product = product
            self.dimensions = dimensions
            self.windowStart = windowStart
        }

        public static func == (lhs: Key, rhs: Key) -> Bool {
            lhs.windowStart == rhs.windowStart && lhs.product.utf8.elementsEqual(rhs.product.utf8)
                && lhs.dimensions.count == rhs.dimensions.count
                && zip(lhs.dimensions, rhs.dimensions).allSatisfy { $0.utf8.elementsEqual($1.utf8) }
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(windowStart)
            hasher.combine(ProductKey(product))
            for value in dimensions { hasher.combine(ProductKey(value)) }
        }

        /// By window, then by the bytes of the product id, then of each dimension value.
        public static func < (lhs: Key, rhs: Key) -> Bool {
            if lhs.windowStart != rhs.windowStart { return lhs.windowStart < rhs.windowStart }
            for (left, right) in zip([lhs.product] + lhs.dimensions, [rhs.product] + rhs.dimensions) where !left.utf8.elementsEqual(right.utf8) {
                return left.utf8.lexicographicallyPrecedes(right.utf8)
            }
            return lhs.dimensions.count < rhs.dimensions.count
        }
    }

    /// The distinct users of a key, by the bytes of their `user_id`.
    public struct Users: Sendable, Hashable {
        public var impressions: Set<ProductKey> = []
        public var clicks: Set<ProductKey> = []
    }

    public let assigner: WindowAssigner
    /// The dimensions of the key, e.g. `["campaign_id", "country", "device_type"]`.
    public let dimensionNames: [String]
    /// Whether unique users are counted.
    public let countsUsers: Bool
    /// What every copy of the counted messages adds up to.
    public private(set) var counts: [Key: WindowCounts] = [:]
    /// What the duplicate copies among them add up to (keys without duplicates are absent).
    public private(set) var duplicateCounts: [Key: WindowCounts] = [:]
    /// The distinct users per key (only with ``countsUsers``).
    public private(set) var users: [Key: Users] = [:]
    public private(set) var sent: [InputTopic: Int] = [:]
    /// Duplicate copies sent, whatever became of them.
    public private(set) var duplicatesSent = 0
    public private(set) var tooLate = 0
    public private(set) var invalid: [String: Int] = [:]
    public private(set) var maxEventTime: Int64 = .min

    /// - Parameters:
    ///   - dimensions: the dimension fields of the key, in order (at most 8, as the aggregator).
    ///   - countsUsers: whether to count unique users per key.
    public init(windowSize: Milliseconds, dimensions: [String] = [], countsUsers: Bool = false) {
        assigner = WindowAssigner(size: windowSize)
        dimensionNames = dimensions
        self.countsUsers = countsUsers
    }

    /// The key of a counted message at `timestamp`.
    public func key(of message: GeneratedMessage, product: String, timestamp: Timestamp) -> Key {
        Key(
            product: product, dimensions: dimensionNames.map { message.dimensions?.value(named: $0) ?? "" },
            windowStart: assigner.windowStart(for: timestamp).milliseconds
        )
    }

    /// Records a message that was delivered.
    public mutating func record(_ message: GeneratedMessage) {
        sent[message.topic, default: 0] += 1
        if message.isDuplicate { duplicatesSent += 1 }
        switch message.expectation {
        case .counted(let product, let timestamp, let added):
            let key = key(of: message, product: product, timestamp: timestamp)
            counts[key, default: WindowCounts()].accumulate(added)
            if message.isDuplicate {
                duplicateCounts[key, default: WindowCounts()].accumulate(added)
            }
            if countsUsers {
                var entry = users[key] ?? Users()
                if let user = message.user {
                    if added.impressions > 0 { entry.impressions.insert(ProductKey(user)) }
                    if added.clicks > 0 { entry.clicks.insert(ProductKey(user)) }
                }
                users[key] = entry
            }
            maxEventTime = max(maxEventTime, timestamp.milliseconds)
        case .tooLate:
            tooLate += 1
        case .invalid(let kind):
            invalid[kind, default: 0] += 1
        }
    }

    /// What an aggregator deduplicating on `event_id` counts for `key`.
    public func deduplicatedCounts(_ key: Key) -> WindowCounts? {
        guard var value = counts[key] else { return nil }
        if let duplicates = duplicateCounts[key] {
            value.impressions -= duplicates.impressions
            value.clicks -= duplicates.clicks
            value.conversions -= duplicates.conversions
            value.revenueMicros -= duplicates.revenueMicros
        }
        return value
    }

    /// Everything counted, over all windows (every copy of a duplicate).
    public var totals: WindowCounts {
        counts.values.reduce(into: WindowCounts()) { $0.accumulate($1) }
    }

    /// What the duplicate copies added to ``totals``.
    public var duplicateTotals: WindowCounts {
        duplicateCounts.values.reduce(into: WindowCounts()) { $0.accumulate($1) }
    }

    /// The truth as JSON. Windows ending after `finalWatermark` are marked `"open": true`: the
    /// aggregator's watermark does not pass them, so they are not expected in ClickHouse yet.
    ///
    /// Each window carries its dimension values under their field names, the counts of every
    /// copy (`impressions`, ...), what duplicates added (`duplicate_impressions`, ..., only where
    /// nonzero), and with ``countsUsers`` `unique_impression_users` and `unique_click_users`.
    public func json(finalWatermark: Timestamp?) -> [UInt8] {
        var out: [UInt8] = []
        func append(_ text: String) { out.append(contentsOf: text.utf8) }
        func quoted(_ text: String) -> String {
            var bytes: [UInt8] = []
            TrafficGenerator.appendJSONString(text, to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        append("{\n  \"window_ms\": \(assigner.size.value),\n")
        append("  \"final_watermark_ms\": \(finalWatermark.map { String($0.milliseconds) } ?? "null"),\n")
        append("  \"dimensions\": [" + dimensionNames.map(quoted).joined(separator: ", ") + "],\n")
        append("  \"counts_users\": \(countsUsers),\n")
        append("  \"events_sent\": {\"impressions\": \(sent[.impressions] ?? 0), \"clicks\": \(sent[.clicks] ?? 0), ")
        append("\"conversions\": \(sent[.conversions] ?? 0), \"events\": \(sent[.events] ?? 0)},\n")
        append("  \"duplicates_sent\": \(duplicatesSent),\n")
        append("  \"too_late_sent\": \(tooLate),\n")
        append("  \"invalid_sent\": \(invalid.values.reduce(0, +)),\n")
        append("  \"invalid_by_kind\": {" + invalid.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "},\n")
        let counted = totals
        append("  \"counted\": {\"impressions\": \(counted.impressions), \"clicks\": \(counted.clicks), ")
        append("\"conversions\": \(counted.conversions), \"revenue_micros\": \(counted.revenueMicros)},\n")
        let duplicates = duplicateTotals
        append("  \"counted_duplicates\": {\"impressions\": \(duplicates.impressions), \"clicks\": \(duplicates.clicks), ")
        append("\"conversions\": \(duplicates.conversions), \"revenue_micros\": \(duplicates.revenueMicros)},\n")
        append("  \"windows\": [\n")
        for (index, key) in counts.keys.sorted().enumerated() {
            let value = counts[key]!
            let end = key.windowStart + assigner.size.value
            let open = finalWatermark.map { end > $0.milliseconds } ?? true
            append("    {\"product_id\": \(quoted(key.product)), ")
            for (name, dimension) in zip(dimensionNames, key.dimensions) {
                append("\(quoted(name)): \(quoted(dimension)), ")
            }
            append("\"window_start_ms\": \(key.windowStart), ")
            append("\"impressions\": \(value.impressions), \"clicks\": \(value.clicks), \"conversions\": \(value.conversions), ")
            append("\"revenue_micros\": \(value.revenueMicros), ")
            if let duplicate = duplicateCounts[key] {
                append("\"duplicate_impressions\": \(duplicate.impressions), \"duplicate_clicks\": \(duplicate.clicks), ")
                append("\"duplicate_conversions\": \(duplicate.conversions), \"duplicate_revenue_micros\": \(duplicate.revenueMicros), ")
            }
            if countsUsers {
                let entry = users[key] ?? Users()
                append("\"unique_impression_users\": \(entry.impressions.count), \"unique_click_users\": \(entry.clicks.count), ")
            }
            append("\"open\": \(open)}")
            append(index + 1 < counts.count ? ",\n" : "\n")
        }
        append("  ]\n}\n")
        return out
    }
}

extension WindowCounts {
    /// Adds `other` field by field.
    mutating func accumulate(_ other: WindowCounts) {
        impressions += other.impressions
        clicks += other.clicks
        conversions += other.conversions
        revenueMicros += other.revenueMicros
    }
}
