/// A point in event time or processing time: milliseconds since the Unix epoch, UTC.
///
/// Event time comes from the event's `timestamp`; processing time is the wall clock, which
/// callers read and pass in (this module never reads a clock itself).
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var milliseconds: Int64

    @inlinable
    public init(milliseconds: Int64) {
        self.milliseconds = milliseconds
    }

    @inlinable
    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.milliseconds < rhs.milliseconds }

    @inlinable
    public static func + (lhs: Timestamp, rhs: Milliseconds) -> Timestamp {
        Timestamp(milliseconds: lhs.milliseconds &+ rhs.value)
    }

    @inlinable
    public static func - (lhs: Timestamp, rhs: Milliseconds) -> Timestamp {
        Timestamp(milliseconds: lhs.milliseconds &- rhs.value)
    }

    /// The UTC instant `year-month-day hour:00:00` (proleptic Gregorian calendar).
    public static func utc(year: Int64, month: Int64, day: Int64, hour: Int64 = 0) -> Timestamp {
        Timestamp(milliseconds: daysFromCivil(year: year, month: month, day: day) * 86_400_000 + hour * 3_600_000)
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    public static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// Whole seconds since the epoch, rounded down.
    public var epochSeconds: Int64 { milliseconds.floorDivided(by: 1000) }

    public var description: String { "\(milliseconds)ms" }
}

/// A length of time in milliseconds.
public struct Milliseconds: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: Int64

    @inlinable
    public init(_ value: Int64) { self.value = value }

    public static func seconds(_ seconds: Int64) -> Milliseconds { Milliseconds(seconds * 1000) }

    @inlinable
    public static func < (lhs: Milliseconds, rhs: Milliseconds) -> Bool { lhs.value < rhs.value }

    public var description: String { "\(value)ms" }
}

extension Int64 {
    /// Division rounding toward negative infinity (so windows before 1970 align too).
    @inlinable
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
