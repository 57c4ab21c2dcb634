import CTRWindows

/// One row of `ctr_results_raw`, ready to write: a series' counts in a window as of one
/// emission.
public struct ResultRow: Sendable, Hashable {
    /// The product id, byte for byte as received.
    public var productID: String
    /// Values of the configured dimensions, in the order of the store's dimension columns.
    public var dimensions: [String]
    public var windowStart: Timestamp
    public var windowEnd: Timestamp
    /// Cumulative counts of the window as of this emission.
    public var totals: WindowCounts
    /// Change since the previous emission of the same (product, window).
    public var delta: WindowCounts
    public var revision: UInt32
    /// Processing time of the emission.
    public var emittedAt: Timestamp
    /// Distinct users of the window as of this emission.
    public var uniqueUsers: UniqueUsers
    /// Users first seen in the window since its previous emission (they feed the roll-ups'
    /// `uniqCombined` sketches).
    public var newUsers: UserHashes

    public init(
        productID: String, dimensions: [String] = [], windowStart: Timestamp, windowEnd: Timestamp, totals: WindowCounts,
        delta: WindowCounts, revision: UInt32, emittedAt: Timestamp, uniqueUsers: UniqueUsers = UniqueUsers(),
        newUsers: UserHashes = UserHashes()
    ) {
        self.productID = productID
        self.dimensions = dimensions
        self.uniqueUsers = uniqueUsers
        self.newUsers = newUsers
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.totals = totals
        self.delta = delta
        self.revision = revision
        self.emittedAt = emittedAt
    }

    public static func == (lhs: ResultRow, rhs: ResultRow) -> Bool {
        lhs.productID.utf8.elementsEqual(rhs.productID.utf8)
            && lhs.dimensions.count == rhs.dimensions.count
            && zip(lhs.dimensions, rhs.dimensions).allSatisfy { $0.utf8.elementsEqual($1.utf8) }
            && lhs.windowStart == rhs.windowStart
            && lhs.windowEnd == rhs.windowEnd && lhs.totals == rhs.totals && lhs.delta == rhs.delta
            && lhs.revision == rhs.revision && lhs.emittedAt == rhs.emittedAt && lhs.uniqueUsers == rhs.uniqueUsers
            && lhs.newUsers == rhs.newUsers
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ProductKey(productID))
        hasher.combine(windowStart)
        hasher.combine(revision)
    }
}

/// The consumer position of one source partition: every message below `nextOffset` was
/// consumed and reflected in the windows before the emission that carries it.
public struct PartitionPosition: Sendable, Hashable {
    /// `topic:partition`.
    public var partition: String
    /// The next offset to consume.
    public var nextOffset: Int64

    public init(partition: String, nextOffset: Int64) {
        self.partition = partition
        self.nextOffset = nextOffset
    }
}

/// The rows one `INSERT` writes, with what they reflect.
///
/// - All rows fall on the same UTC day of `window_end` and number at most the batch cap, so that
///   the insert is one part of one partition of `ctr_results_raw`: all or nothing.
/// - ``positions`` is the batch's provenance, written once per batch (in `ctr_batches`, before
///   the rows): every row of the batch reflects every event of its (product, window) at an offset
///   below the position of the event's partition. Recovery relies on it (see
///   `docs/exactly-once.md`).
public struct ResultBatch: Sendable, Equatable {
    /// Unique id of the batch, also the prefix of its `query_id`s.
    public let id: String
    /// Sequence number in the order batches were created (used for offset commits).
    public let sequence: UInt64
    /// The consumer-group generation whose assignment produced the batch: a later generation's
    /// fence refuses it.
    public let generation: Int32
    /// UTC day (days since the epoch) of every row's `window_end`.
    public let day: Int64
    public private(set) var rows: [ResultRow] = []
    /// Consumer positions of every assigned partition at the batch's last emission.
    public var positions: [PartitionPosition] = []
    /// Processing time at which the first row was added (the result latency runs from here).
    public private(set) var firstRowAt: Timestamp?

    public init(id: String, sequence: UInt64, generation: Int32, day: Int64) {
        self.id = id
        self.sequence = sequence
        self.generation = generation
        self.day = day
    }

    public var rowCount: Int { rows.count }

    /// UTC day of `time` (days since 1970-01-01).
    public static func day(of time: Timestamp) -> Int64 {
        let milliseconds = time.milliseconds
        return milliseconds >= 0 ? milliseconds / 86_400_000 : (milliseconds - 86_399_999) / 86_400_000
    }

    /// Appends `row`, which must fall on ``day``.
    public mutating func append(_ row: ResultRow) {
        precondition(Self.day(of: row.windowEnd) == day, "rows of a batch share the UTC day of window_end")
        if firstRowAt == nil { firstRowAt = row.emittedAt }
        rows.append(row)
    }

    /// Lowest and highest `window_end` of the rows, in epoch seconds.
    public var windowEndRange: ClosedRange<Int64>? {
        guard let first = rows.first else { return nil }
        var range = first.windowEnd.epochSeconds...first.windowEnd.epochSeconds
        for row in rows.dropFirst() {
            let end = row.windowEnd.epochSeconds
            if end < range.lowerBound { range = end...range.upperBound } else if end > range.upperBound { range = range.lowerBound...end }
        }
        return range
    }
}

/// Result rows as ClickHouse input: `RowBinary` (what the sink sends) or `JSONEachRow`, in the
/// columns of ``ResultsTable/rowColumns(dimensions:)``.
public enum ResultRowEncoder {
    /// The body of a `FORMAT RowBinary` insert of `batch`'s rows: little-endian fixed-width
    /// numbers, `DateTime` as UInt32 seconds, `Decimal(18, 6)` as Int64 micro-units, strings as
    /// a LEB128 length and the bytes, arrays as a LEB128 count and the elements.
    public static func rowBinary(_ batch: ResultBatch) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(batch.rowCount * 140)
        var batchID = batch.id
        let idBytes = batchID.withUTF8 { Array($0) }
        for row in batch.rows {
            var product = row.productID
            product.withUTF8 { appendString($0, to: &body) }
            appendFixed(UInt32(truncatingIfNeeded: row.windowStart.epochSeconds), to: &body)
            appendFixed(UInt32(truncatingIfNeeded: row.windowEnd.epochSeconds), to: &body)
            appendFixed(row.totals.impressions, to: &body)
            appendFixed(row.totals.clicks, to: &body)
            appendFixed(row.totals.clickThroughRate.bitPattern, to: &body)
            appendFixed(row.delta.impressions, to: &body)
            appendFixed(row.delta.clicks, to: &body)
            appendFixed(row.totals.conversions, to: &body)
            appendFixed(row.delta.conversions, to: &body)
            appendFixed(row.totals.revenueMicros, to: &body)
            appendFixed(row.delta.revenueMicros, to: &body)
            appendFixed(row.revision, to: &body)
            appendFixed(UInt32(truncatingIfNeeded: row.emittedAt.epochSeconds), to: &body)
            idBytes.withUnsafeBufferPointer { appendString($0, to: &body) }
            appendFixed(row.uniqueUsers.impressions, to: &body)
            appendFixed(row.uniqueUsers.clicks, to: &body)
            appendArray(row.newUsers.impressions, to: &body)
            appendArray(row.newUsers.clicks, to: &body)
            for var value in row.dimensions { value.withUTF8 { appendString($0, to: &body) } }
        }
        return body
    }

    @inline(__always)
    private static func appendArray(_ values: [UInt64], to body: inout [UInt8]) {
        appendLength(values.count, to: &body)
        for value in values { appendFixed(value, to: &body) }
    }

    @inline(__always)
    private static func appendLength(_ count: Int, to body: inout [UInt8]) {
        var length = count
        repeat {
            var byte = UInt8(length & 0x7F)
            length >>= 7
            if length > 0 { byte |= 0x80 }
            body.append(byte)
        } while length > 0
    }

    @inline(__always)
    private static func appendFixed<T: FixedWidthInteger>(_ value: T, to body: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { body.append(contentsOf: $0) }
    }

    @inline(__always)
    private static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to body: inout [UInt8]) {
        appendLength(bytes.count, to: &body)
        body.append(contentsOf: bytes)
    }

    /// The body of an insert of `batch`'s rows, with the dimension columns `dimensions`.
    public static func jsonEachRow(_ batch: ResultBatch, dimensions: [String] = []) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(batch.rowCount * 300)
        for row in batch.rows { append(row, batchID: batch.id, dimensions: dimensions, to: &body) }
        return body
    }

    static func append(_ row: ResultRow, batchID: String, dimensions: [String], to body: inout [UInt8]) {
        body.append(contentsOf: #"{"product_id":"#.utf8)
        JSONText.appendString(row.productID, to: &body)
        body.append(contentsOf: #","window_start":""#.utf8)
        DateTimeText.append(row.windowStart.epochSeconds, to: &body)
        body.append(contentsOf: #"","window_end":""#.utf8)
        DateTimeText.append(row.windowEnd.epochSeconds, to: &body)
        appendField(#"","impressions":"#, row.totals.impressions, &body)
        appendField(#","clicks":"#, row.totals.clicks, &body)
        body.append(contentsOf: #","ctr":"#.utf8)
        body.append(contentsOf: String(row.totals.clickThroughRate).utf8)
        appendField(#","impressions_delta":"#, row.delta.impressions, &body)
        appendField(#","clicks_delta":"#, row.delta.clicks, &body)
        appendField(#","conversions":"#, row.totals.conversions, &body)
        appendField(#","conversions_delta":"#, row.delta.conversions, &body)
        body.append(contentsOf: #","revenue":"#.utf8)
        DecimalText.append(micros: row.totals.revenueMicros, to: &body)
        body.append(contentsOf: #","revenue_delta":"#.utf8)
        DecimalText.append(micros: row.delta.revenueMicros, to: &body)
        appendField(#","revision":"#, UInt64(row.revision), &body)
        body.append(contentsOf: #","emitted_at":""#.utf8)
        DateTimeText.append(row.emittedAt.epochSeconds, to: &body)
        body.append(contentsOf: #"","batch_id":"#.utf8)
        JSONText.appendString(batchID, to: &body)
        appendField(#","unique_impression_users":"#, row.uniqueUsers.impressions, &body)
        appendField(#","unique_click_users":"#, row.uniqueUsers.clicks, &body)
        body.append(contentsOf: #","impression_user_hashes":["#.utf8)
        body.append(contentsOf: row.newUsers.impressions.map(String.init).joined(separator: ",").utf8)
        body.append(contentsOf: #"],"click_user_hashes":["#.utf8)
        body.append(contentsOf: row.newUsers.clicks.map(String.init).joined(separator: ",").utf8)
        body.append(UInt8(ascii: "]"))
        for (name, value) in zip(dimensions, row.dimensions) {
            body.append(UInt8(ascii: ","))
            JSONText.appendString(name, to: &body)
            body.append(UInt8(ascii: ":"))
            JSONText.appendString(value, to: &body)
        }
        body.append(contentsOf: "}\n".utf8)
    }

    @inline(__always)
    private static func appendField(_ name: StaticString, _ value: UInt64, _ body: inout [UInt8]) {
        body.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        DecimalText.appendInteger(value, to: &body)
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
    /// Appends the decimal digits of `value`.
    public static func appendInteger(_ value: UInt64, to body: inout [UInt8]) {
        if value < 10 {
            body.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for UInt64.max's 20 digits
        withUnsafeMutableBytes(of: &digits) { buffer in
            var remaining = value
            var index = buffer.count
            while remaining > 0 {
                index -= 1
                buffer[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            }
            body.append(contentsOf: buffer[index...])
        }
    }

    public static func append(micros: UInt64, to body: inout [UInt8]) {
        appendInteger(micros / 1_000_000, to: &body)
        let fraction = micros % 1_000_000
        guard fraction > 0 else { return }
        let digits = String(fraction)
        body.append(UInt8(ascii: "."))
        body.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 6 - digits.utf8.count))
        body.append(contentsOf: digits.utf8)
    }

    /// The exact decimal text of `micros`.
    public static func string(micros: UInt64) -> String {
        var bytes: [UInt8] = []
        append(micros: micros, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
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
