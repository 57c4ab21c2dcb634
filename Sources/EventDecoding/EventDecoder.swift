import CTRWindows

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A valid event, as decoded from one message.
public struct DecodedEvent: Sendable, Hashable {
    /// The `product_id`, unescaped, compared byte for byte (NFC and NFD spellings of the same
    /// text are two products).
    public var product: ProductKey
    /// Event time.
    public var timestamp: Timestamp
    /// `revenue` in micro-units of the currency (0 when absent).
    public var revenueMicros: UInt64
    /// Single-topic mode: whether the impression was clicked.
    public var clicked: Bool
    /// Values of the decoder's ``EventDecoder/dimensionFields``, in their order: a string as
    /// received (byte for byte), an integer as its JSON text, `""` when the field is absent.
    /// Empty when no dimensions are configured.
    public var dimensions: [String]
    /// ``StableHash`` of the `user_id` text (a string's bytes, an integer's JSON text); `nil`
    /// when the event has no user (field absent or `null`).
    public var user: UInt64?
    /// ``StableHash`` of the deduplication field's text (see ``EventDecoder/deduplicationField``);
    /// `nil` when no field is configured or the event has none.
    public var eventID: UInt64?

    public init(
        product: ProductKey, timestamp: Timestamp, revenueMicros: UInt64 = 0, clicked: Bool = false, dimensions: [String] = [],
        user: UInt64? = nil, eventID: UInt64? = nil
    ) {
        self.product = product
        self.timestamp = timestamp
        self.revenueMicros = revenueMicros
        self.clicked = clicked
        self.dimensions = dimensions
        self.user = user
        self.eventID = eventID
    }

    /// An event of the product whose id is `productID` (compared byte for byte as a ``ProductKey``).
    public init(
        productID: String, timestamp: Timestamp, revenueMicros: UInt64 = 0, clicked: Bool = false, dimensions: [String] = [],
        user: UInt64? = nil, eventID: UInt64? = nil
    ) {
        self.init(
            product: ProductKey(productID), timestamp: timestamp, revenueMicros: revenueMicros, clicked: clicked, dimensions: dimensions,
            user: user, eventID: eventID
        )
    }
}

/// What a message is expected to be.
public enum EventShape: Sendable, Hashable {
    /// An event of one kind, from a topic of that kind (`event_type` must match if present).
    case kind(EventKind)
    /// Single-topic mode: an impression that is also a click when the field `clickField` is 1
    /// (or `true`). `event_type`, if present, is ignored.
    case impressionWithClickFlag(clickField: String)
}

/// Decodes and validates the JSON event contract without building a JSON tree.
///
/// Contract: a JSON object with `product_id` (non-empty string, at most
/// ``maximumProductIDBytes`` bytes of UTF-8) and `timestamp` (integer epoch milliseconds, or an
/// ISO-8601 date-time string with `Z` or a UTC offset) within ``timestampRange`` and at most
/// ``maximumFuture`` ahead of the processing time passed to `decode`; optional `event_type`,
/// which must equal the expected kind (`"impression"`, `"click"` or `"conversion"`); optional
/// `revenue` on clicks and conversions (a non-negative decimal number with at most 6 decimals,
/// at most ``maximumRevenueMicros``, kept exactly as integer micro-units); optional `user_id`
/// (string, integer or `null`); the configured ``dimensionFields`` (string or integer, at most
/// ``maximumDimensionBytes``, absent = `""`) and ``deduplicationField`` (string, integer or
/// `null`); every other field is ignored, but the whole value must still be well-formed JSON
/// and valid UTF-8.
///
/// Pure: no clock, no I/O. It scans the bytes once and allocates only the product id string
/// (not at all for ids of up to 15 bytes).
public struct EventDecoder: Sendable {
    public static let maximumProductIDBytes = 256
    /// Longest accepted dimension value, in bytes of UTF-8 (or of an integer's text).
    public static let maximumDimensionBytes = 256
    /// Most dimensions a window key may have besides the product.
    public static let maximumDimensionCount = 8
    /// The field whose distinct values are counted as unique users.
    public static let userField = "user_id"

    /// Largest accepted `revenue` of one event, in micro-units: 1,000,000 currency units
    /// (10^12 micros).
    ///
    /// Why this bound: a window's revenue is stored as `Decimal(18, 6)`, at most
    /// 999,999,999,999.999999 units, i.e. just under 10^18 micros. With at most 10^6 units per
    /// event, a product's window sum can only overflow after a million maximal events of that
    /// product in one window, far beyond any real purchase or click price (no click or order
    /// is worth a million, and a window is 10 s), while the aggregator's `UInt64` micro sums
    /// (1.8 × 10^19) hold 18 million of them. The window-sum overflow check stays in the
    /// window state; this bound only makes reaching it require a flood of absurd values.
    public static let maximumRevenueMicros: UInt64 = 1_000_000_000_000

    /// Default of ``maximumFuture``: 5 minutes.
    public static let defaultMaximumFuture = Milliseconds(300_000)

    /// Largest accepted message value, in bytes.
    public var maximumMessageBytes: Int
    /// Deepest accepted nesting of arrays and objects (the event object itself is depth 1).
    public var maximumDepth: Int
    /// Accepted event times, in epoch milliseconds (UTC).
    public var timestampRange: ClosedRange<Int64>
    /// How far an event time may be ahead of the processing time given to `decode` (producer
    /// clocks drift, and a broker may hold messages briefly). Later events are refused with
    /// ``RejectionReason/timestampInFuture``: counted, one of them would move its partition's
    /// watermark past every real event and pin its offset until the clock catches up.
    public var maximumFuture: Milliseconds
    /// Top-level fields whose values, with the product, form the window key (at most
    /// ``maximumDimensionCount``; see ``DecodedEvent/dimensions``).
    public let dimensionFields: [String]
    /// The field that identifies an event for deduplication (`--dedup-field`), if any.
    public let deduplicationField: String?

    /// 2000-01-01T00:00:00Z through 2100-01-01T00:00:00Z.
    public static let defaultTimestampRange: ClosedRange<Int64> = 946_684_800_000...4_102_444_800_000

    public init(
        maximumMessageBytes: Int = 64 * 1024,
        maximumDepth: Int = 16,
        timestampRange: ClosedRange<Int64> = EventDecoder.defaultTimestampRange,
        maximumFuture: Milliseconds = EventDecoder.defaultMaximumFuture,
        dimensionFields: [String] = [],
        deduplicationField: String? = nil
    ) {
        self.maximumMessageBytes = maximumMessageBytes
        self.maximumDepth = maximumDepth
        self.timestampRange = timestampRange
        self.maximumFuture = maximumFuture
        self.dimensionFields = dimensionFields
        self.deduplicationField = deduplicationField
        fieldNames = FieldNames(dimensions: dimensionFields, deduplication: deduplicationField)
    }

    /// The byte spellings of the optional fields, computed once.
    private var fieldNames: FieldNames

    /// Checks the names given to `--dimensions` and `--dedup-field`: at most
    /// ``maximumDimensionCount`` distinct dimensions, each a plain identifier (letters, digits
    /// and `_`, not starting with a digit, so that it can name a ClickHouse column), none of
    /// them a field the contract already gives a meaning to.
    public static func validateFieldNames(dimensions: [String], deduplicationField: String?, clickField: String?) throws(FieldNameError) {
        guard dimensions.count <= maximumDimensionCount else {
            throw FieldNameError("--dimensions names \(dimensions.count) fields; at most \(maximumDimensionCount) are allowed")
        }
        let reserved = ["product_id", "timestamp", "event_type", "revenue", userField] + (clickField.map { [$0] } ?? [])
        var seen: Set<String> = []
        for name in dimensions + (deduplicationField.map { [$0] } ?? []) {
            let flag = dimensions.contains(name) ? "--dimensions" : "--dedup-field"
            guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first),
                name.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) })
            else {
                throw FieldNameError("\(flag): \(Self.quoted(name)) is not a field name: use letters, digits and _, not starting with a digit")
            }
            guard !reserved.contains(name) else {
                throw FieldNameError("\(flag): \(name) already has a meaning in the event contract; name another field")
            }
            guard seen.insert(name).inserted else { throw FieldNameError("\(flag): \(name) is named twice") }
        }
    }

    static func quoted(_ text: String) -> String { JSONScanner.quoted(text) }

    /// Decodes `bytes` as an event of kind `expected`, received at processing time `now`.
    public func decode(_ bytes: UnsafeRawBufferPointer, expecting expected: EventKind, now: Timestamp) -> Result<DecodedEvent, Rejection> {
        decode(bytes, shape: .kind(expected), now: now)
    }

    /// Decodes `bytes` as an event of the given shape, received at processing time `now`
    /// (epoch milliseconds, UTC; only used to refuse event times more than ``maximumFuture``
    /// ahead of it).
    public func decode(_ bytes: UnsafeRawBufferPointer, shape: EventShape, now: Timestamp) -> Result<DecodedEvent, Rejection> {
        guard bytes.count <= maximumMessageBytes else {
            return .failure(Rejection(.tooLarge, "value is \(bytes.count) bytes, the limit is \(maximumMessageBytes)"))
        }
        var scanner = JSONScanner(bytes: bytes, maximumDepth: maximumDepth, names: fieldNames)
        do {
            return .success(try scanner.event(shape: shape, timestampRange: timestampRange, now: now, maximumFuture: maximumFuture))
        } catch {
            return .failure(error)
        }
    }

    /// Decodes `bytes` as an event of kind `expected`, received at processing time `now`.
    public func decode(_ bytes: [UInt8], expecting expected: EventKind, now: Timestamp) -> Result<DecodedEvent, Rejection> {
        bytes.withUnsafeBytes { decode($0, expecting: expected, now: now) }
    }

    /// Decodes `bytes` as an event of the given shape, received at processing time `now`.
    public func decode(_ bytes: [UInt8], shape: EventShape, now: Timestamp) -> Result<DecodedEvent, Rejection> {
        bytes.withUnsafeBytes { decode($0, shape: shape, now: now) }
    }
}

extension EventKind {
    /// The `event_type` value of this kind.
    public var eventTypeName: String {
        switch self {
        case .impression: "impression"
        case .click: "click"
        case .conversion: "conversion"
        }
    }
}

private let quote = UInt8(ascii: "\"")
private let backslash = UInt8(ascii: "\\")

/// A single-pass JSON scanner over bytes, strict per RFC 8259.
/// A field name given to `--dimensions` or `--dedup-field` that cannot be used, and why.
public struct FieldNameError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// Names of the optional fields a decoder looks for, as bytes.
struct FieldNames: Sendable {
    var dimensions: [[UInt8]]
    var deduplication: [UInt8]?

    init(dimensions: [String], deduplication: String?) {
        self.dimensions = dimensions.map { Array($0.utf8) }
        self.deduplication = deduplication.map { Array($0.utf8) }
    }
}

/// A field name with its closing quote (at most 16 bytes) as two little-endian words and masks:
/// the 16 bytes at a key's first character match it when both masked words are equal, which
/// tells a key without scanning it as a string first.
struct QuotedName: Sendable {
    let head: UInt64
    let tail: UInt64
    let headMask: UInt64
    let tailMask: UInt64
    /// Bytes of the name and its closing quote.
    let length: Int

    init(_ name: StaticString) {
        let bytes = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount) + [UInt8(ascii: "\"")]
        precondition(bytes.count <= 16, "a quoted name is at most 16 bytes")
        func word(_ range: Range<Int>) -> (value: UInt64, mask: UInt64) {
            var value: UInt64 = 0
            var mask: UInt64 = 0
            for (shift, index) in range.enumerated() where index < bytes.count {
                value |= UInt64(bytes[index]) << (8 * UInt64(shift))
                mask |= 0xFF << (8 * UInt64(shift))
            }
            return (value, mask)
        }
        (head, headMask) = word(0..<8)
        (tail, tailMask) = word(8..<16)
        length = bytes.count
    }

    /// Whether the 16 bytes at `offset` of `bytes` start with the name and its closing quote.
    @inline(__always)
    func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) & headMask == head
            && UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)) & tailMask == tail
    }
}

struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    let maximumDepth: Int
    let names: FieldNames
    var index = 0

    init(bytes: UnsafeRawBufferPointer, maximumDepth: Int, names: FieldNames = FieldNames(dimensions: [], deduplication: nil)) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        self.names = names
    }

    private enum Field {
        case productID, timestamp, eventType, revenue, clickFlag, user, eventID, dimension(Int), other
    }

    mutating func event(
        shape: EventShape, timestampRange: ClosedRange<Int64>, now: Timestamp, maximumFuture: Milliseconds
    ) throws(Rejection) -> DecodedEvent {
        let clickField: [UInt8]?
        let expected: EventKind?
        switch shape {
        case .kind(let kind): (clickField, expected) = (nil, kind)
        case .impressionWithClickFlag(let field): (clickField, expected) = (Array(field.utf8), nil)
        }
        skipWhitespace()
        guard index < bytes.count else { throw Rejection(.notJSON, "value is empty") }
        guard bytes[index] == UInt8(ascii: "{") else {
            let first = bytes[index]
            if first == quote || first == UInt8(ascii: "[") || first == UInt8(ascii: "-") || (first >= 0x30 && first <= 0x39)
                || first == UInt8(ascii: "t") || first == UInt8(ascii: "f") || first == UInt8(ascii: "n")
            {
                try skipValue(depth: 0)
                skipWhitespace()
                if index == bytes.count { throw Rejection(.notObject, "value is JSON but not an object") }
            }
            throw Rejection(.notJSON, "expected '{' at byte \(index)")
        }
        index += 1
        var productID: ProductKey?
        var timestamp: Int64?
        var sawEventType = false
        var revenue: UInt64?
        var clicked: Bool?
        var dimensions: [String] = names.dimensions.isEmpty ? [] : Array(repeating: "", count: names.dimensions.count)
        // Bit `position` set: that dimension was read (at most 8 of them).
        var dimensionsSeen: UInt8 = 0
        var user: UInt64??
        var eventID: UInt64??
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipWhitespace()
                let field = try key(clickField: clickField)
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                switch field {
                case .productID:
                    guard productID == nil else { throw Rejection(.duplicateField, "product_id appears twice") }
                    productID = try productIDValue()
                case .timestamp:
                    guard timestamp == nil else { throw Rejection(.duplicateField, "timestamp appears twice") }
                    timestamp = try timestampValue()
                case .eventType:
                    guard !sawEventType else { throw Rejection(.duplicateField, "event_type appears twice") }
                    sawEventType = true
                    if let expected { try eventTypeValue(expected) } else { try skipValue(depth: 1) }
                case .revenue where expected == .impression:
                    try skipValue(depth: 1)
                case .revenue:
                    guard revenue == nil else { throw Rejection(.duplicateField, "revenue appears twice") }
                    revenue = try revenueValue()
                case .clickFlag:
                    guard clicked == nil else { throw Rejection(.duplicateField, "the click field appears twice") }
                    clicked = try clickFlagValue()
                case .user:
                    guard user == nil else { throw Rejection(.duplicateField, "\(EventDecoder.userField) appears twice") }
                    user = .some(try identityValue(named: Self.userFieldBytes))
                case .eventID:
                    guard eventID == nil else { throw Rejection(.duplicateField, "\(fieldName(names.deduplication)) appears twice") }
                    eventID = .some(try identityValue(named: names.deduplication ?? []))
                case .dimension(let position):
                    guard dimensionsSeen & (1 << position) == 0 else {
                        throw Rejection(.duplicateField, "\(fieldName(names.dimensions[position])) appears twice")
                    }
                    dimensions[position] = try dimensionValue(named: names.dimensions[position])
                    dimensionsSeen |= 1 << position
                case .other:
                    try skipValue(depth: 1)
                }
                skipWhitespace()
                guard index < bytes.count else { throw Rejection(.notJSON, "object not closed at byte \(index)") }
                let next = bytes[index]
                index += 1
                if next == UInt8(ascii: ",") { continue }
                if next == UInt8(ascii: "}") { break }
                throw Rejection(.notJSON, "expected ',' or '}' at byte \(index - 1)")
            }
        }
        skipWhitespace()
        guard index == bytes.count else { throw Rejection(.notJSON, "unexpected data after the object at byte \(index)") }
        guard let productID else { throw Rejection(.missingField, "product_id is required") }
        guard let timestamp else { throw Rejection(.missingField, "timestamp is required") }
        guard timestampRange.contains(timestamp) else {
            throw Rejection(
                .timestampOutOfRange,
                "timestamp \(timestamp) ms is outside the accepted range \(timestampRange.lowerBound)...\(timestampRange.upperBound) ms"
            )
        }
        let ahead = timestamp.subtractingReportingOverflow(now.milliseconds)
        guard ahead.overflow ? now.milliseconds > 0 : ahead.partialValue <= maximumFuture.value else {
            throw Rejection(
                .timestampInFuture,
                "timestamp \(timestamp) ms is \(ahead.overflow ? "far" : "\(ahead.partialValue) ms") ahead of processing time \(now.milliseconds) ms; at most \(maximumFuture.value) ms are accepted"
            )
        }
        if clickField != nil && clicked == nil {
            throw Rejection(.missingField, "the click field \(String(decoding: clickField!, as: UTF8.self)) is required in single-topic mode")
        }
        return DecodedEvent(
            product: productID, timestamp: Timestamp(milliseconds: timestamp), revenueMicros: revenue ?? 0, clicked: clicked ?? false,
            dimensions: dimensions, user: user ?? nil, eventID: eventID ?? nil
        )
    }

    // MARK: Fields

    /// The contract's own field names, for the fast path of ``key(clickField:)``.
    private static let coreFields: [(name: QuotedName, field: Field)] = [
        (QuotedName("product_id"), .productID), (QuotedName("timestamp"), .timestamp), (QuotedName("event_type"), .eventType),
        (QuotedName("revenue"), .revenue),
    ]

    private mutating func key(clickField: [UInt8]?) throws(Rejection) -> Field {
        guard peek() == quote else { throw Rejection(.notJSON, "expected a field name at byte \(index)") }
        let start = index + 1
        // Fast path: one of the contract's names, spelled without escapes, is told by two word
        // comparisons, without scanning the key first. A configured click field is looked for
        // before them (see field(named:)), so only without one.
        if clickField == nil, start + 16 <= bytes.count {
            for core in Self.coreFields where core.name.matches(bytes, at: start) {
                index = start + core.name.length
                return core.field
            }
        }
        let (end, escaped) = try scanString()
        if escaped {
            let name = Array(try unescape(start, end).utf8)
            return name.withUnsafeBytes { field(named: $0, clickField: clickField) }
        }
        return field(named: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), clickField: clickField)
    }

    private func field(named name: UnsafeRawBufferPointer, clickField: [UInt8]?) -> Field {
        if let clickField, Self.equals(name, clickField) { return .clickFlag }
        if Self.equals(name, "product_id") { return .productID }
        if Self.equals(name, "timestamp") { return .timestamp }
        if Self.equals(name, "event_type") { return .eventType }
        if Self.equals(name, "revenue") { return .revenue }
        for position in names.dimensions.indices where Self.equals(name, names.dimensions[position]) { return .dimension(position) }
        if let deduplication = names.deduplication, Self.equals(name, deduplication) { return .eventID }
        if Self.equals(name, Self.userFieldBytes) { return .user }
        return .other
    }

    private func fieldName(_ bytes: [UInt8]?) -> String { String(decoding: bytes ?? [], as: UTF8.self) }

    private static let userFieldBytes = Array(EventDecoder.userField.utf8)

    /// A dimension value: a string (at most ``EventDecoder/maximumDimensionBytes``) or an
    /// integer, as text.
    /// `name` is the field's name as bytes: its text is built only for an error.
    private mutating func dimensionValue(named name: [UInt8]) throws(Rejection) -> String {
        let text: String
        switch try scalar() {
        case .string(let start, let end, escaped: true): text = try unescape(start, end)
        case .string(let start, let end, escaped: false), .integer(let start, let end):
            text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        case nil:
            throw Rejection(.invalidDimension, "dimension \(fieldName(name)) must be a string or an integer, found \(describeValueStart())")
        }
        guard text.utf8.count <= EventDecoder.maximumDimensionBytes else {
            throw Rejection(
                .invalidDimension, "dimension \(fieldName(name)) is \(text.utf8.count) bytes, the limit is \(EventDecoder.maximumDimensionBytes)"
            )
        }
        return text
    }

    /// An identity (`user_id`, the deduplication field): a string or an integer, hashed with
    /// ``StableHash`` (a string's unescaped bytes, an integer's text); `null` is no identity.
    private mutating func identityValue(named name: [UInt8]) throws(Rejection) -> UInt64? {
        if peek() == UInt8(ascii: "n") {
            try literal("null")
            return nil
        }
        switch try scalar() {
        case .string(let start, let end, escaped: true):
            var text = try unescape(start, end)
            return text.withUTF8 { StableHash.hash(UnsafeRawBufferPointer($0)) }
        case .string(let start, let end, escaped: false), .integer(let start, let end):
            return StableHash.hash(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
        case nil:
            throw Rejection(.wrongType, "\(fieldName(name)) must be a string, an integer or null, found \(describeValueStart())")
        }
    }

    /// Where a string or integer value lies in the bytes.
    private enum Scalar {
        /// Between the quotes.
        case string(start: Int, end: Int, escaped: Bool)
        case integer(start: Int, end: Int)
    }

    /// Scans a string or an integer value; `nil`, with nothing consumed, for anything else
    /// (a number with a fraction or an exponent included).
    private mutating func scalar() throws(Rejection) -> Scalar? {
        guard let first = peek() else { return nil }
        if first == quote {
            let start = index + 1
            let (end, escaped) = try scanString()
            return .string(start: start, end: end, escaped: escaped)
        }
        guard first == UInt8(ascii: "-") || (first >= 0x30 && first <= 0x39) else { return nil }
        let start = index
        try skipNumber()
        let text = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
        guard !text.contains(UInt8(ascii: ".")) && !text.contains(UInt8(ascii: "e")) && !text.contains(UInt8(ascii: "E")) else {
            index = start
            return nil
        }
        return .integer(start: start, end: index)
    }

    /// `revenue`: a non-negative decimal JSON number with at most 6 decimals and no exponent,
    /// at most ``EventDecoder/maximumRevenueMicros``, as exact micro-units.
    private mutating func revenueValue() throws(Rejection) -> UInt64 {
        guard let first = peek(), first == UInt8(ascii: "-") || (first >= 0x30 && first <= 0x39) else {
            throw Rejection(.invalidRevenue, "revenue must be a number, found \(describeValueStart())")
        }
        let start = index
        try skipNumber()
        let text = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        let shown = String(decoding: text.prefix(32), as: UTF8.self)
        guard text.first != UInt8(ascii: "-") else { throw Rejection(.invalidRevenue, "revenue must not be negative, found \(shown)") }
        guard !text.contains(UInt8(ascii: "e")) && !text.contains(UInt8(ascii: "E")) else {
            throw Rejection(.invalidRevenue, "revenue must be written without exponent, found \(shown)")
        }
        let parts = text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let whole = parts[0]
        let fraction = parts.count > 1 ? parts[1] : []
        guard fraction.count <= 6 else { throw Rejection(.invalidRevenue, "revenue has more than 6 decimals: \(shown)") }
        let limit = EventDecoder.maximumRevenueMicros
        let tooLarge = Rejection(.invalidRevenue, "revenue is larger than \(limit / 1_000_000) (the per-event limit): \(shown)")
        // Whole units beyond 7 digits exceed the limit; fewer cannot overflow the arithmetic below.
        guard whole.count <= 7 else { throw tooLarge }
        var units: UInt64 = 0
        for digit in whole { units = units * 10 + UInt64(digit - 0x30) }
        var fractionMicros: UInt64 = 0
        for position in 0..<6 { fractionMicros = fractionMicros * 10 + (position < fraction.count ? UInt64(fraction[fraction.startIndex + position] - 0x30) : 0) }
        let micros = units * 1_000_000 + fractionMicros
        guard micros <= limit else { throw tooLarge }
        return micros
    }

    /// The single-topic click flag: 0, 1, false or true.
    private mutating func clickFlagValue() throws(Rejection) -> Bool {
        switch peek() {
        case UInt8(ascii: "0"), UInt8(ascii: "1"):
            let start = index
            try skipNumber()
            guard index == start + 1 else { throw Rejection(.invalidClickFlag, "the click flag must be 0 or 1") }
            return bytes[start] == UInt8(ascii: "1")
        case UInt8(ascii: "t"):
            try literal("true")
            return true
        case UInt8(ascii: "f"):
            try literal("false")
            return false
        default:
            throw Rejection(.invalidClickFlag, "the click flag must be 0, 1, true or false, found \(describeValueStart())")
        }
    }

    private mutating func productIDValue() throws(Rejection) -> ProductKey {
        guard peek() == quote else {
            throw Rejection(.wrongType, "product_id must be a string, found \(describeValueStart())")
        }
        let start = index + 1
        let (end, escaped) = try scanString()
        let value = escaped ? try unescape(start, end) : String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        let length = value.utf8.count
        guard length > 0 else { throw Rejection(.invalidProductID, "product_id is empty") }
        guard length <= EventDecoder.maximumProductIDBytes else {
            throw Rejection(.invalidProductID, "product_id is \(length) bytes, the limit is \(EventDecoder.maximumProductIDBytes)")
        }
        return ProductKey(value)
    }

    private mutating func timestampValue() throws(Rejection) -> Int64 {
        guard let first = peek() else { throw Rejection(.notJSON, "value missing at byte \(index)") }
        if first == quote {
            let start = index + 1
            let (end, escaped) = try scanString()
            let text = escaped ? Array(try unescape(start, end).utf8) : Array(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
            guard let milliseconds = ISO8601Timestamp.parse(text) else {
                throw Rejection(
                    .invalidTimestamp,
                    "timestamp \(Self.quoted(String(decoding: text.prefix(64), as: UTF8.self))) is not ISO-8601 with a zone (e.g. 2024-05-01T12:00:00.250Z)"
                )
            }
            return milliseconds
        }
        if first >= 0x31 && first <= 0x39, let milliseconds = plainInteger() { return milliseconds }
        if first == UInt8(ascii: "-") || (first >= 0x30 && first <= 0x39) {
            let start = index
            try skipNumber()
            let text = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
            if let milliseconds = Self.shortInteger(text) { return milliseconds }
            var value: Int64 = 0
            var negative = false
            for (position, byte) in text.enumerated() {
                if position == 0 && byte == UInt8(ascii: "-") { negative = true; continue }
                guard byte >= 0x30 && byte <= 0x39 else {
                    throw Rejection(.invalidTimestamp, "timestamp must be an integer number of epoch milliseconds, found \(String(decoding: text.prefix(32), as: UTF8.self))")
                }
                let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - 0x30))
                guard !overflow1 && !overflow2 else {
                    throw Rejection(.timestampOutOfRange, "timestamp \(String(decoding: text.prefix(32), as: UTF8.self)) does not fit in 64 bits")
                }
                value = sum
            }
            return negative ? -value : value
        }
        throw Rejection(.wrongType, "timestamp must be a number or a string, found \(describeValueStart())")
    }

    private mutating func eventTypeValue(_ expected: EventKind) throws(Rejection) {
        guard peek() == quote else {
            throw Rejection(.wrongType, "event_type must be a string, found \(describeValueStart())")
        }
        let start = index + 1
        let (end, escaped) = try scanString()
        var name = expected.eventTypeName
        if !escaped, name.withUTF8({ Self.equals(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), UnsafeRawBufferPointer($0)) }) { return }
        let value = escaped ? try unescape(start, end) : String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        guard value == name else {
            throw Rejection(.wrongEventType, "event_type \(Self.quoted(value)) on the \(name)s topic must be \"\(name)\"")
        }
    }

    // MARK: Generic JSON

    private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    @inline(__always)
    private mutating func expect(_ byte: UInt8) throws(Rejection) {
        guard peek() == byte else {
            throw Rejection(.notJSON, "expected '\(Character(Unicode.Scalar(byte)))' at byte \(index)")
        }
        index += 1
    }

    private func describeValueStart() -> String {
        switch peek() {
        case quote: "a string"
        case UInt8(ascii: "{"): "an object"
        case UInt8(ascii: "["): "an array"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): "a boolean"
        case UInt8(ascii: "n"): "null"
        case nil: "nothing"
        default: "a number"
        }
    }

    /// Skips any JSON value; `depth` is the nesting of the value's container.
    private mutating func skipValue(depth: Int) throws(Rejection) {
        guard let first = peek() else { throw Rejection(.notJSON, "value missing at byte \(index)") }
        switch first {
        case quote:
            _ = try scanString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth + 1 <= maximumDepth else {
                throw Rejection(.tooDeep, "nesting deeper than \(maximumDepth) levels at byte \(index)")
            }
            let isObject = first == UInt8(ascii: "{")
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            index += 1
            skipWhitespace()
            if peek() == close { index += 1; return }
            while true {
                skipWhitespace()
                if isObject {
                    guard peek() == quote else { throw Rejection(.notJSON, "expected a field name at byte \(index)") }
                    _ = try scanString()
                    skipWhitespace()
                    try expect(UInt8(ascii: ":"))
                    skipWhitespace()
                }
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let next = peek() else { throw Rejection(.notJSON, "unterminated \(isObject ? "object" : "array")") }
                index += 1
                if next == UInt8(ascii: ",") { continue }
                if next == close { return }
                throw Rejection(.notJSON, "expected ',' or '\(Character(Unicode.Scalar(close)))' at byte \(index - 1)")
            }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try skipNumber()
        }
    }

    private mutating func literal(_ word: StaticString) throws(Rejection) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count,
            Self.equals(UnsafeRawBufferPointer(rebasing: bytes[index..<index + count]), word)
        else { throw Rejection(.notJSON, "invalid literal at byte \(index)") }
        index += count
    }

    private mutating func skipNumber() throws(Rejection) {
        let start = index
        if peek() == UInt8(ascii: "-") { index += 1 }
        guard let first = peek(), first >= 0x30 && first <= 0x39 else { throw Rejection(.notJSON, "invalid number at byte \(start)") }
        if first == 0x30 {
            index += 1
        } else {
            while let byte = peek(), byte >= 0x30 && byte <= 0x39 { index += 1 }
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard let byte = peek(), byte >= 0x30 && byte <= 0x39 else { throw Rejection(.notJSON, "invalid number at byte \(start)") }
            while let byte = peek(), byte >= 0x30 && byte <= 0x39 { index += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard let byte = peek(), byte >= 0x30 && byte <= 0x39 else { throw Rejection(.notJSON, "invalid number at byte \(start)") }
            while let byte = peek(), byte >= 0x30 && byte <= 0x39 { index += 1 }
        }
    }

    /// Scans a string starting at the opening quote; returns the index of the closing quote
    /// and whether it contains escapes. Validates UTF-8 and control characters.
    private mutating func scanString() throws(Rejection) -> (end: Int, escaped: Bool) {
        index += 1
        var escaped = false
        while true {
            skipPlainASCII()
            guard index < bytes.count else { break }
            let byte = bytes[index]
            if byte == quote {
                let end = index
                index += 1
                return (end, escaped)
            }
            if byte == backslash {
                escaped = true
                index += 1
                guard let next = peek() else { break }
                switch next {
                case quote, backslash, UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"), UInt8(ascii: "n"),
                    UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    guard index + 4 < bytes.count, (1...4).allSatisfy({ Self.hexValue(bytes[index + $0]) != nil }) else {
                        throw Rejection(.notJSON, "invalid \\u escape at byte \(index - 1)")
                    }
                    index += 5
                default:
                    throw Rejection(.notJSON, "invalid escape at byte \(index - 1)")
                }
            } else if byte < 0x20 {
                throw Rejection(.notJSON, "unescaped control character in a string at byte \(index)")
            } else if byte < 0x80 {
                index += 1
            } else {
                try skipUTF8Sequence()
            }
        }
        throw Rejection(.notJSON, "unterminated string")
    }

    /// Moves `index` to the first byte, at or after it, that is a quote, a backslash, a control
    /// character or not ASCII, eight bytes at a time; stops short of the last seven bytes of
    /// the message, which the caller reads one by one.
    private mutating func skipPlainASCII() {
        while index + 8 <= bytes.count {
            let special = Self.specialBytes(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)))
            if special != 0 {
                index += special.trailingZeroBitCount / 8
                return
            }
            index += 8
        }
    }

    /// The high bit of each byte of `word` (little-endian) that is a quote, a backslash, below
    /// 0x20 or above 0x7F. Bits above the lowest may be spurious (a borrow carries upward), the
    /// lowest is exact, and the result is 0 exactly when no byte is special.
    @inline(__always)
    static func specialBytes(_ word: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highBits: UInt64 = 0x8080_8080_8080_8080
        let quotes = word ^ (ones &* UInt64(quote))
        let backslashes = word ^ (ones &* UInt64(backslash))
        let isQuote = (quotes &- ones) & ~quotes
        let isBackslash = (backslashes &- ones) & ~backslashes
        let isControl = (word &- ones &* 0x20) & ~word
        return (isQuote | isBackslash | isControl | word) & highBits
    }

    private mutating func skipUTF8Sequence() throws(Rejection) {
        let lead = bytes[index]
        let length: Int
        var minimum: UInt32
        var scalar: UInt32
        switch lead {
        case 0xC2...0xDF: length = 2; minimum = 0x80; scalar = UInt32(lead & 0x1F)
        case 0xE0...0xEF: length = 3; minimum = 0x800; scalar = UInt32(lead & 0x0F)
        case 0xF0...0xF4: length = 4; minimum = 0x10000; scalar = UInt32(lead & 0x07)
        default: throw Rejection(.invalidUTF8, "invalid UTF-8 byte 0x\(String(lead, radix: 16)) at byte \(index)")
        }
        guard index + length <= bytes.count else { throw Rejection(.invalidUTF8, "truncated UTF-8 sequence at byte \(index)") }
        for offset in 1..<length {
            let continuation = bytes[index + offset]
            guard continuation & 0xC0 == 0x80 else {
                throw Rejection(.invalidUTF8, "invalid UTF-8 continuation byte at byte \(index + offset)")
            }
            scalar = scalar << 6 | UInt32(continuation & 0x3F)
        }
        guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else {
            throw Rejection(.invalidUTF8, "overlong or invalid UTF-8 sequence at byte \(index)")
        }
        index += length
    }

    /// Decodes the (already validated) string contents between `start` and `end`.
    private func unescape(_ start: Int, _ end: Int) throws(Rejection) -> String {
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        var position = start
        func flush() {
            if !utf8.isEmpty {
                scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
                utf8.removeAll()
            }
        }
        while position < end {
            let byte = bytes[position]
            guard byte == backslash else {
                utf8.append(byte)
                position += 1
                continue
            }
            let next = bytes[position + 1]
            position += 2
            switch next {
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var code = hex4(at: position)
                position += 4
                if (0xD800...0xDBFF).contains(code) {
                    guard position + 6 <= end, bytes[position] == backslash, bytes[position + 1] == UInt8(ascii: "u") else {
                        throw Rejection(.invalidUTF8, "unpaired surrogate \\u\(String(code, radix: 16)) in a string")
                    }
                    let low = hex4(at: position + 2)
                    guard (0xDC00...0xDFFF).contains(low) else {
                        throw Rejection(.invalidUTF8, "unpaired surrogate \\u\(String(code, radix: 16)) in a string")
                    }
                    position += 6
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(code) {
                    throw Rejection(.invalidUTF8, "unpaired surrogate \\u\(String(code, radix: 16)) in a string")
                }
                flush()
                guard let scalar = Unicode.Scalar(code) else {
                    throw Rejection(.invalidUTF8, "invalid code point \\u\(String(code, radix: 16))")
                }
                scalars.append(scalar)
            default: utf8.append(next)
            }
        }
        flush()
        return String(scalars)
    }

    private func hex4(at position: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 4 | UInt32(Self.hexValue(bytes[position + $1]) ?? 0) }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    /// `text` for a detail message: at most 64 characters, in quotes, with control characters,
    /// quotes and backslashes escaped, so a detail is always one line of plain text.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars.prefix(64) {
            switch scalar {
            case "\"", "\\": result += "\\\(scalar)"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar == "\u{2028}" || scalar == "\u{2029}":
                result += "\\u{\(String(scalar.value, radix: 16))}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    private static func equals(_ raw: UnsafeRawBufferPointer, _ bytes: [UInt8]) -> Bool {
        guard raw.count == bytes.count else { return false }
        guard raw.count > 0 else { return true }
        return bytes.withUnsafeBytes { memcmp(raw.baseAddress!, $0.baseAddress!, raw.count) == 0 }
    }

    private static func equals(_ raw: UnsafeRawBufferPointer, _ other: UnsafeRawBufferPointer) -> Bool {
        raw.count == other.count && (raw.count == 0 || memcmp(raw.baseAddress!, other.baseAddress!, raw.count) == 0)
    }

    /// Fast path of `timestampValue`: a positive integer of at most 18 digits, not continued
    /// by a fraction or an exponent, read in one pass; `nil` (the index unchanged) otherwise.
    @inline(__always)
    private mutating func plainInteger() -> Int64? {
        var position = index
        var value: Int64 = 0
        while position < bytes.count {
            let digit = bytes[position] &- 0x30
            guard digit < 10 else { break }
            value = value &* 10 &+ Int64(digit)
            position += 1
        }
        guard position - index <= 18 else { return nil }
        if position < bytes.count {
            let next = bytes[position]
            guard next != UInt8(ascii: "."), next != UInt8(ascii: "e"), next != UInt8(ascii: "E") else { return nil }
        }
        index = position
        return value
    }

    /// An optional minus and 1 to 18 decimal digits (which cannot overflow `Int64`), else nil:
    /// the integers ``plainInteger()`` leaves to the number grammar (negative, a leading zero).
    private static func shortInteger(_ text: UnsafeRawBufferPointer) -> Int64? {
        let negative = text.first == UInt8(ascii: "-")
        let digits = negative ? UnsafeRawBufferPointer(rebasing: text.dropFirst()) : text
        guard (1...18).contains(digits.count) else { return nil }
        var value: Int64 = 0
        for byte in digits {
            let digit = byte &- 0x30
            guard digit < 10 else { return nil }
            value = value &* 10 &+ Int64(digit)
        }
        return negative ? -value : value
    }

    private static func equals(_ raw: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
        guard raw.count == text.utf8CodeUnitCount else { return false }
        guard raw.count > 0 else { return true }
        return memcmp(raw.baseAddress!, text.utf8Start, raw.count) == 0
    }
}
