import Foundation

import CTRWindows

/// A problem with one line of an Avazu CSV file.
public struct AvazuRowError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// Turns rows of the Kaggle Avazu CTR training file (`id,click,hour,C1,banner_pos,site_id,...`)
/// into impression and click events.
///
/// - One impression per row, and a click for every row with `click` = 1.
/// - `product_id` is the value of the chosen column (default `site_id`: the publisher site is
///   the unit an ad-tech user tunes CTR for, and it has a few thousand distinct values, like a
///   catalogue of products).
/// - Event time: `hour` is `YYMMDDHH` in UTC; each row is placed deterministically within its
///   hour by a hash of its `id`; its click follows 1 s later (still inside the hour).
public struct AvazuReplay: Sendable {
    public let productColumn: Int
    public let header: [String]
    private let idColumn: Int
    private let clickColumn: Int
    private let hourColumn: Int

    /// - Parameters:
    ///   - headerLine: the CSV header.
    ///   - productColumn: name of the column that becomes `product_id`.
    public init(headerLine: String, productColumn: String) throws(AvazuRowError) {
        let header = headerLine.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func column(_ name: String) throws(AvazuRowError) -> Int {
            guard let index = header.firstIndex(of: name) else {
                throw AvazuRowError(line: 1, message: "the header has no column \(name) (columns: \(header.joined(separator: ",")))")
            }
            return index
        }
        self.idColumn = try column("id")
        self.clickColumn = try column("click")
        self.hourColumn = try column("hour")
        self.productColumn = try column(productColumn)
        self.header = header
    }

    /// One row's events: its impression and, if clicked, its click.
    public struct Row: Sendable, Hashable {
        public var product: String
        public var impressionTime: Timestamp
        public var clicked: Bool
        /// 1 s after the impression, inside the same hour.
        public var clickTime: Timestamp { impressionTime + Milliseconds(min(1_000, 3_599_999 - impressionTime.milliseconds % 3_600_000)) }
    }

    /// Parses line number `line` (1-based, the header is line 1).
    public func row(_ text: Substring, line: Int) throws(AvazuRowError) -> Row {
        let fields = text.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count == header.count else {
            throw AvazuRowError(line: line, message: "expected \(header.count) fields, found \(fields.count)")
        }
        let id = fields[idColumn]
        guard !id.isEmpty else { throw AvazuRowError(line: line, message: "empty id") }
        let clicked: Bool
        switch fields[clickColumn] {
        case "0": clicked = false
        case "1": clicked = true
        default: throw AvazuRowError(line: line, message: "click must be 0 or 1, found '\(fields[clickColumn])'")
        }
        let hourText = fields[hourColumn]
        guard hourText.count == 8, hourText.allSatisfy(\.isASCII), let hour = Int(hourText) else {
            throw AvazuRowError(line: line, message: "hour must be YYMMDDHH, found '\(hourText)'")
        }
        let (year, month, day, hourOfDay) = (2000 + hour / 1_000_000, hour / 10_000 % 100, hour / 100 % 100, hour % 100)
        guard (1...12).contains(month), (1...31).contains(day), hourOfDay < 24 else {
            throw AvazuRowError(line: line, message: "hour '\(hourText)' is not a valid YYMMDDHH")
        }
        let product = String(fields[productColumn])
        guard !product.isEmpty, product.utf8.count <= 256 else {
            throw AvazuRowError(line: line, message: "\(header[productColumn]) must be 1 to 256 bytes, found '\(product.prefix(40))'")
        }
        let hourStart = Timestamp.utc(year: Int64(year), month: Int64(month), day: Int64(day), hour: Int64(hourOfDay)).milliseconds
        let within = Int64(Self.fnv1a(id) % 3_600_000)
        return Row(product: product, impressionTime: Timestamp(milliseconds: hourStart + within), clicked: clicked)
    }

    /// FNV-1a: a stable hash (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ text: Substring) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}
