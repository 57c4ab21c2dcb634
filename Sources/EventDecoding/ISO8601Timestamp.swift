import CTRWindows

/// Parses ISO-8601 / RFC 3339 date-times with an explicit zone into epoch milliseconds.
///
/// Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM|+HHMM|-HHMM)`, with `T`, `t` or a
/// space between date and time. Fractions beyond milliseconds are truncated. A date-time
/// without zone is refused: its instant would depend on the reader's time zone.
enum ISO8601Timestamp {
    static func parse(_ text: [UInt8]) -> Int64? {
        var position = 0
        func digits(_ count: Int) -> Int64? {
            guard position + count <= text.count else { return nil }
            var value: Int64 = 0
            for offset in 0..<count {
                let byte = text[position + offset]
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int64(byte - 0x30)
            }
            position += count
            return value
        }
        func skip(_ byte: UInt8) -> Bool {
            guard position < text.count, text[position] == byte else { return false }
            position += 1
            return true
        }
        guard let year = digits(4), skip(UInt8(ascii: "-")), let month = digits(2), skip(UInt8(ascii: "-")),
            let day = digits(2)
        else { return nil }
        guard position < text.count, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(text[position]) else {
            return nil
        }
        position += 1
        guard let hour = digits(2), skip(UInt8(ascii: ":")), let minute = digits(2), skip(UInt8(ascii: ":")),
            let second = digits(2)
        else { return nil }
        var milliseconds: Int64 = 0
        if skip(UInt8(ascii: ".")) || skip(UInt8(ascii: ",")) {
            var count = 0
            while position < text.count, text[position] >= 0x30 && text[position] <= 0x39 {
                if count < 3 { milliseconds = milliseconds * 10 + Int64(text[position] - 0x30) }
                count += 1
                position += 1
            }
            guard count > 0 else { return nil }
            if count < 3 { for _ in count..<3 { milliseconds *= 10 } }
        }
        guard position < text.count else { return nil }
        var offsetMinutes: Int64 = 0
        switch text[position] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            position += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign: Int64 = text[position] == UInt8(ascii: "-") ? -1 : 1
            position += 1
            guard let offsetHours = digits(2) else { return nil }
            _ = skip(UInt8(ascii: ":"))
            guard let offsetMinutesPart = digits(2), offsetHours <= 23, offsetMinutesPart <= 59 else { return nil }
            offsetMinutes = sign * (offsetHours * 60 + offsetMinutesPart)
        default:
            return nil
        }
        guard position == text.count else { return nil }
        guard (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day), hour <= 23, minute <= 59,
            second <= 60
        else { return nil }
        let days = Timestamp.daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + min(second, 59) - offsetMinutes * 60
        return seconds * 1_000 + milliseconds
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}
