import CTRWindows

/// One row of `ctr_results_raw`, ready to write.
public struct ResultRow: Sendable, Hashable {
    public var productID: String
    public var windowStart: Timestamp
    public var windowEnd: Timestamp
    public var totals: WindowCounts
    public var delta: WindowCounts
    public var revision: UInt32
    /// Processing time of the emission.
    public var emittedAt: Timestamp
    /// `topic:partition` of every partition that fed the window, with the highest offset its
    /// counts reflect (see ``WindowEmission/includedThrough``).
    public var sources: SourceOffsets

    public init(
        productID: String, windowStart: Timestamp, windowEnd: Timestamp, totals: WindowCounts, delta: WindowCounts,
        revision: UInt32, emittedAt: Timestamp, sources: SourceOffsets
    ) {
        self.productID = productID
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.totals = totals
        self.delta = delta
        self.revision = revision
        self.emittedAt = emittedAt
        self.sources = sources
    }

    public static func == (lhs: ResultRow, rhs: ResultRow) -> Bool {
        lhs.productID == rhs.productID && lhs.windowStart == rhs.windowStart && lhs.windowEnd == rhs.windowEnd
            && lhs.totals == rhs.totals && lhs.delta == rhs.delta && lhs.revision == rhs.revision
            && lhs.emittedAt == rhs.emittedAt && lhs.sources == rhs.sources
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(productID)
        hasher.combine(windowStart)
        hasher.combine(revision)
    }
}

/// The `source_partitions` and `source_offsets` of the rows of one emission, encoded once.
public struct SourceOffsets: Sendable, Hashable {
    public let sources: [String]
    public let offsets: [Int64]
    let partitionsJSON: [UInt8]
    let offsetsJSON: [UInt8]

    public init(_ sources: [(name: String, offset: Int64)]) {
        self.sources = sources.map(\.name)
        self.offsets = sources.map(\.offset)
        var partitions: [UInt8] = [UInt8(ascii: "[")]
        for (index, source) in sources.enumerated() {
            if index > 0 { partitions.append(UInt8(ascii: ",")) }
            JSONText.appendString(source.name, to: &partitions)
        }
        partitions.append(UInt8(ascii: "]"))
        partitionsJSON = partitions
        offsetsJSON = Array(("[" + sources.map { String($0.offset) }.joined(separator: ",") + "]").utf8)
    }

    public static func == (lhs: SourceOffsets, rhs: SourceOffsets) -> Bool {
        lhs.sources == rhs.sources && lhs.offsets == rhs.offsets
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(sources)
        hasher.combine(offsets)
    }
}

/// Rows written by one `INSERT`, encoded as `JSONEachRow`.
///
/// All rows of a batch fall on the same UTC day of `window_end`, so that the insert touches one
/// partition of `ctr_results_raw` and is atomic on every ClickHouse version (an insert of fewer
/// than `max_insert_block_size` rows into one partition is written as one part, or not at all).
/// Every row carries the batch's ``id`` in `batch_id`, which lets a retry find out whether an
/// earlier attempt landed.
public struct InsertBatch: Sendable {
    /// Unique id of the batch, also the prefix of its `query_id`s.
    public let id: String
    /// Sequence number in the order batches were created (used for offset commits).
    public let sequence: UInt64
    /// UTC day (days since the epoch) of every row's `window_end`.
    public let day: Int64
    public private(set) var rowCount = 0
    public private(set) var body: [UInt8] = []
    /// Lowest and highest `window_end` of the rows, in epoch seconds.
    public private(set) var windowEndRange: ClosedRange<Int64>?
    /// When the first row was appended: the result latency of the batch runs from here to
    /// ClickHouse's acknowledgement.
    public private(set) var firstRowAt: ContinuousClock.Instant?

    public init(id: String, sequence: UInt64, day: Int64) {
        self.id = id
        self.sequence = sequence
        self.day = day
    }

    /// UTC day of `time` (days since 1970-01-01).
    public static func day(of time: Timestamp) -> Int64 {
        let milliseconds = time.milliseconds
        return milliseconds >= 0 ? milliseconds / 86_400_000 : (milliseconds - 86_399_999) / 86_400_000
    }

    /// Appends `row`, which must fall on ``day``.
    public mutating func append(_ row: ResultRow) {
        precondition(Self.day(of: row.windowEnd) == day, "rows of a batch share the UTC day of window_end")
        let end = row.windowEnd.epochSeconds
        if firstRowAt == nil { firstRowAt = .now }
        windowEndRange = windowEndRange.map { min($0.lowerBound, end)...max($0.upperBound, end) } ?? end...end
        rowCount += 1
        body.append(contentsOf: #"{"product_id":"#.utf8)
        JSONText.appendString(row.productID, to: &body)
        body.append(contentsOf: #","window_start":""#.utf8)
        DateTimeText.append(row.windowStart.epochSeconds, to: &body)
        body.append(contentsOf: #"","window_end":""#.utf8)
        DateTimeText.append(end, to: &body)
        body.append(contentsOf: #"","impressions":"#.utf8)
        body.append(contentsOf: String(row.totals.impressions).utf8)
        body.append(contentsOf: #","clicks":"#.utf8)
        body.append(contentsOf: String(row.totals.clicks).utf8)
        body.append(contentsOf: #","ctr":"#.utf8)
        body.append(contentsOf: String(row.totals.clickThroughRate).utf8)
        body.append(contentsOf: #","impressions_delta":"#.utf8)
        body.append(contentsOf: String(row.delta.impressions).utf8)
        body.append(contentsOf: #","clicks_delta":"#.utf8)
        body.append(contentsOf: String(row.delta.clicks).utf8)
        body.append(contentsOf: #","conversions":"#.utf8)
        body.append(contentsOf: String(row.totals.conversions).utf8)
        body.append(contentsOf: #","conversions_delta":"#.utf8)
        body.append(contentsOf: String(row.delta.conversions).utf8)
        body.append(contentsOf: #","revenue":"#.utf8)
        DecimalText.append(micros: row.totals.revenueMicros, to: &body)
        body.append(contentsOf: #","revenue_delta":"#.utf8)
        DecimalText.append(micros: row.delta.revenueMicros, to: &body)
        body.append(contentsOf: #","revision":"#.utf8)
        body.append(contentsOf: String(row.revision).utf8)
        body.append(contentsOf: #","emitted_at":""#.utf8)
        DateTimeText.append(row.emittedAt.epochSeconds, to: &body)
        body.append(contentsOf: #"","source_partitions":"#.utf8)
        body.append(contentsOf: row.sources.partitionsJSON)
        body.append(contentsOf: #","source_offsets":"#.utf8)
        body.append(contentsOf: row.sources.offsetsJSON)
        body.append(contentsOf: #","batch_id":"#.utf8)
        JSONText.appendString(id, to: &body)
        body.append(contentsOf: "}\n".utf8)
    }
}

/// JSON string encoding.
enum JSONText {
    private static let hex = Array("0123456789abcdef".utf8)

    static func appendString(_ string: String, to body: inout [UInt8]) {
        body.append(UInt8(ascii: "\""))
        var string = string
        let plain = string.withUTF8 { bytes in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return false }
            body.append(contentsOf: bytes)
            return true
        }
        if plain {
            body.append(UInt8(ascii: "\""))
            return
        }
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): body.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): body.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0..<0x20:
                body.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                body.append(hex[Int(byte >> 4)])
                body.append(hex[Int(byte & 0xF)])
            default: body.append(byte)
            }
        }
        body.append(UInt8(ascii: "\""))
    }
}

/// Exact decimal text of micro-units, as ClickHouse reads `Decimal(18, 6)`.
public enum DecimalText {
    public static func append(micros: UInt64, to body: inout [UInt8]) {
        body.append(contentsOf: String(micros / 1_000_000).utf8)
        let fraction = micros % 1_000_000
        guard fraction > 0 else { return }
        let digits = String(fraction)
        body.append(UInt8(ascii: "."))
        body.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 6 - digits.utf8.count))
        body.append(contentsOf: digits.utf8)
    }

    /// Micro-units of a non-negative decimal text such as `12.5` or `3.000001`.
    public static func micros<S: StringProtocol>(_ text: S) -> UInt64? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = UInt64(parts[0]) else { return nil }
        var fraction: UInt64 = 0
        if parts.count == 2 {
            let digits = parts[1]
            guard digits.count <= 6, digits.allSatisfy(\.isNumber) else { return nil }
            fraction = (UInt64(digits) ?? 0) * [1, 100_000, 10_000, 1_000, 100, 10, 1][digits.count]
        }
        return whole * 1_000_000 + fraction
    }
}

/// `YYYY-MM-DD hh:mm:ss` in UTC, as ClickHouse reads `DateTime('UTC')`.
public enum DateTimeText {
    public static func append(_ epochSeconds: Int64, to body: inout [UInt8]) {
        let days = epochSeconds >= 0 ? epochSeconds / 86_400 : (epochSeconds - 86_399) / 86_400
        let secondsOfDay = epochSeconds - days * 86_400
        let (year, month, day) = civil(fromDays: days)
        appendDigits(year, 4, &body)
        body.append(UInt8(ascii: "-"))
        appendDigits(month, 2, &body)
        body.append(UInt8(ascii: "-"))
        appendDigits(day, 2, &body)
        body.append(UInt8(ascii: " "))
        appendDigits(secondsOfDay / 3600, 2, &body)
        body.append(UInt8(ascii: ":"))
        appendDigits(secondsOfDay / 60 % 60, 2, &body)
        body.append(UInt8(ascii: ":"))
        appendDigits(secondsOfDay % 60, 2, &body)
    }

    /// The text of `epochSeconds`.
    public static func format(_ epochSeconds: Int64) -> String {
        var bytes: [UInt8] = []
        append(epochSeconds, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func appendDigits(_ value: Int64, _ width: Int, _ body: inout [UInt8]) {
        var divisor: Int64 = 1
        for _ in 1..<width { divisor *= 10 }
        var remaining = value
        while divisor > 0 {
            body.append(UInt8(ascii: "0") + UInt8(remaining / divisor % 10))
            remaining %= divisor
            divisor /= 10
        }
    }

    /// Howard Hinnant's `civil_from_days`.
    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
