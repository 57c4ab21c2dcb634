/// Why a message was refused. The raw value is the reason code written to the dead-letter
/// topic's `ctr-reason` header.
public enum RejectionReason: String, Sendable, Hashable, CaseIterable {
    /// The value is larger than the configured maximum.
    case tooLarge = "too_large"
    /// The value is not valid UTF-8.
    case invalidUTF8 = "invalid_utf8"
    /// The value is not a JSON document.
    case notJSON = "not_json"
    /// The value is JSON but not an object.
    case notObject = "not_object"
    /// Nested deeper than the decoder allows.
    case tooDeep = "too_deep"
    /// `product_id` or `timestamp` is missing.
    case missingField = "missing_field"
    /// A required field appears twice, so its value is ambiguous.
    case duplicateField = "duplicate_field"
    /// A field has the wrong JSON type.
    case wrongType = "wrong_type"
    /// `product_id` is empty or longer than 256 bytes.
    case invalidProductID = "invalid_product_id"
    /// `timestamp` is neither integer epoch milliseconds nor an ISO-8601 date-time with zone.
    case invalidTimestamp = "invalid_timestamp"
    /// `timestamp` is outside the accepted range.
    case timestampOutOfRange = "timestamp_out_of_range"
    /// `timestamp` is further ahead of processing time than ``EventDecoder/maximumFuture``
    /// allows: counted, it would move the watermark past every real event.
    case timestampInFuture = "timestamp_in_future"
    /// `event_type` does not match the topic.
    case wrongEventType = "wrong_event_type"
    /// `revenue` is not a non-negative decimal number with at most 6 decimals, or is larger
    /// than ``EventDecoder/maximumRevenueMicros``.
    case invalidRevenue = "invalid_revenue"
    /// The click flag of a single-topic event is not 0, 1, true or false.
    case invalidClickFlag = "invalid_click_flag"
    /// A dimension field (`--dimensions`) is neither a string nor an integer, or is longer than
    /// ``EventDecoder/maximumDimensionBytes``.
    case invalidDimension = "invalid_dimension"
    /// The event's window had closed (watermark past window end + allowed lateness).
    case tooLate = "too_late"
}

/// A refused message: the reason code and a human-readable detail.
public struct Rejection: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: RejectionReason
    public var detail: String

    public init(_ reason: RejectionReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}
