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

    /// The row of `row`, one of `emission`'s rows, whose product number stands for `series`,
    /// emitted at processing time `emittedAt`.
    public init(_ row: WindowRow, of emission: WindowEmission, series: SeriesKey, emittedAt: Timestamp) {
        self.init(
            productID: series.product.name, dimensions: series.dimensions, windowStart: emission.windowStart, windowEnd: emission.windowEnd,
            totals: row.totals, delta: row.delta, revision: row.revision, emittedAt: emittedAt, uniqueUsers: row.uniqueUsers,
            newUsers: row.newUsers
        )
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
    ///
    /// Sized first, then written in place: one allocation per batch.
    public static func rowBinary(_ batch: ResultBatch) -> [UInt8] {
        var batchID = batch.id
        return batchID.withUTF8 { id in
            var size = 0
            for row in batch.rows {
                size += fixedBytesPerRow + stringSize(row.productID.utf8.count) + stringSize(id.count)
                    + arraySize(row.newUsers.impressions.count) + arraySize(row.newUsers.clicks.count)
                for value in row.dimensions { size += stringSize(value.utf8.count) }
            }
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                var writer = RowBinaryWriter(buffer)
                for row in batch.rows {
                    writer.string(row.productID)
                    writer.fixed(UInt32(truncatingIfNeeded: row.windowStart.epochSeconds))
                    writer.fixed(UInt32(truncatingIfNeeded: row.windowEnd.epochSeconds))
                    writer.fixed(row.totals.impressions)
                    writer.fixed(row.totals.clicks)
                    writer.fixed(row.totals.clickThroughRate.bitPattern)
                    writer.fixed(row.delta.impressions)
                    writer.fixed(row.delta.clicks)
                    writer.fixed(row.totals.conversions)
                    writer.fixed(row.delta.conversions)
                    writer.fixed(row.totals.revenueMicros)
                    writer.fixed(row.delta.revenueMicros)
                    writer.fixed(row.revision)
                    writer.fixed(UInt32(truncatingIfNeeded: row.emittedAt.epochSeconds))
                    writer.bytes(id)
                    writer.fixed(row.uniqueUsers.impressions)
                    writer.fixed(row.uniqueUsers.clicks)
                    writer.array(row.newUsers.impressions)
                    writer.array(row.newUsers.clicks)
                    for value in row.dimensions { writer.string(value) }
                }
                precondition(writer.offset == size, "RowBinary size computed wrong")
                count = writer.offset
            }
        }
    }

    /// Bytes of a row's fixed-width columns: two `DateTime`s, nine 64-bit counts, sums and the
    /// rate, the revision, `emitted_at`, and the two distinct-user counts.
    private static let fixedBytesPerRow = 4 + 4 + 9 * 8 + 4 + 4 + 2 * 8

    /// Bytes of a LEB128 length `length` and that many bytes.
    private static func stringSize(_ length: Int) -> Int { lengthSize(length) + length }

    private static func arraySize(_ count: Int) -> Int { lengthSize(count) + 8 * count }

    private static func lengthSize(_ length: Int) -> Int {
        var size = 1
        var rest = length >> 7
        while rest > 0 {
            size += 1
            rest >>= 7
        }
        return size
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

/// Writes RowBinary values into a buffer sized beforehand.
struct RowBinaryWriter {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var offset = 0

    init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        base = UnsafeMutableRawPointer(buffer.baseAddress!)
        capacity = buffer.count
    }

    @inline(__always)
    mutating func fixed<T: FixedWidthInteger>(_ value: T) {
        precondition(offset + MemoryLayout<T>.size <= capacity)
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
    }

    @inline(__always)
    mutating func length(_ length: Int) {
        var rest = length
        repeat {
            var byte = UInt8(rest & 0x7F)
            rest >>= 7
            if rest > 0 { byte |= 0x80 }
            fixed(byte)
        } while rest > 0
    }

    mutating func bytes(_ bytes: UnsafeBufferPointer<UInt8>) {
        length(bytes.count)
        precondition(offset + bytes.count <= capacity)
        if let source = bytes.baseAddress { (base + offset).copyMemory(from: source, byteCount: bytes.count) }
        offset += bytes.count
    }

    mutating func string(_ string: String) {
        var string = string
        string.withUTF8 { bytes($0) }
    }

    mutating func array(_ values: [UInt64]) {
        length(values.count)
        for value in values { fixed(value) }
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
