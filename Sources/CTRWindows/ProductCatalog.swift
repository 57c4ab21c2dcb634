/// A product id string compared byte for byte: two spellings that Unicode calls canonically
/// equivalent (NFC `café` and NFD `café`) are two products, as they are in ClickHouse.
public struct ProductKey: Hashable, Sendable, CustomStringConvertible {
    /// The product id exactly as received.
    public let name: String
    /// `name`'s bytes hashed once, with this process's random seed (``Hasher``): a dictionary
    /// lookup hashes this one word, and keys that differ are almost always told apart by it
    /// without comparing their bytes.
    @usableFromInline let digest: Int

    @inlinable
    public init(_ name: String) {
        self.name = name
        self.digest = Self.digest(of: name)
    }

    @inlinable
    static func digest(of text: String) -> Int {
        var text = text
        var hasher = Hasher()
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        return hasher.finalize()
    }

    @inlinable
    public static func == (lhs: ProductKey, rhs: ProductKey) -> Bool {
        lhs.digest == rhs.digest && sameBytes(lhs.name, rhs.name)
    }

    /// Whether `a` and `b` are the same bytes (not merely canonically equivalent text).
    @inlinable
    static func sameBytes(_ a: String, _ b: String) -> Bool {
        var a = a
        var b = b
        return a.withUTF8 { a in b.withUTF8 { b in bytesEqual(a, b) } }
    }

    /// Byte equality, eight bytes at a time.
    @inlinable
    static func bytesEqual(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        let left = UnsafeRawBufferPointer(a)
        let right = UnsafeRawBufferPointer(b)
        var index = 0
        while index + 8 <= left.count {
            if left.loadUnaligned(fromByteOffset: index, as: UInt64.self) != right.loadUnaligned(fromByteOffset: index, as: UInt64.self) {
                return false
            }
            index += 8
        }
        while index < left.count {
            if left[index] != right[index] { return false }
            index += 1
        }
        return true
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(digest)
    }

    public var description: String { name }
}

/// What a window row counts: a product and the values of the configured dimensions (in the
/// order of `--dimensions`; empty without them). Compared byte for byte, like ``ProductKey``.
public struct SeriesKey: Hashable, Sendable {
    public var product: ProductKey
    public var dimensions: [String]

    @inlinable
    public init(product: ProductKey, dimensions: [String] = []) {
        self.product = product
        self.dimensions = dimensions
    }

    @inlinable
    public static func == (lhs: SeriesKey, rhs: SeriesKey) -> Bool {
        guard lhs.product == rhs.product, lhs.dimensions.count == rhs.dimensions.count else { return false }
        for index in lhs.dimensions.indices where !ProductKey.sameBytes(lhs.dimensions[index], rhs.dimensions[index]) {
            return false
        }
        return true
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(product.digest)
        for value in dimensions {
            var value = value
            value.withUTF8 { bytes in
                hasher.combine(bytes.count)
                hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
            }
        }
    }
}

/// Hands out a dense ``ProductID`` for every distinct series (a product id with its dimension
/// values, compared byte for byte, see ``SeriesKey``), and back.
///
/// Memory is bounded by the series in use: ids given back with ``release(_:)`` (when no open
/// window holds the series any more, see ``WindowAggregator/takeReleasedProducts()``) are
/// forgotten and reused.
public struct ProductCatalog: Sendable {
    /// Series without dimensions, by product alone: the common case keeps the cheaper key.
    private var productIDs: [ProductKey: ProductID] = [:]
    private var seriesIDs: [SeriesKey: ProductID] = [:]
    private var keys: [SeriesKey] = []
    private var free: [ProductID] = []

    public init() {}

    /// Number of series known.
    public var count: Int { productIDs.count + seriesIDs.count }

    /// The id of the series of `product` without dimensions, assigning one on first sight.
    public mutating func id(for product: String) -> ProductID {
        id(for: SeriesKey(product: ProductKey(product)))
    }

    /// The id of `series`, assigning one on first sight.
    public mutating func id(for series: SeriesKey) -> ProductID {
        if series.dimensions.isEmpty {
            if let id = productIDs[series.product] { return id }
            let id = assign(series)
            productIDs[series.product] = id
            return id
        }
        if let id = seriesIDs[series] { return id }
        let id = assign(series)
        seriesIDs[series] = id
        return id
    }

    private mutating func assign(_ series: SeriesKey) -> ProductID {
        if let reused = free.popLast() {
            keys[Int(reused)] = series
            return reused
        }
        keys.append(series)
        return ProductID(keys.count - 1)
    }

    /// The id of `series` if it is known.
    public func existingID(for series: SeriesKey) -> ProductID? {
        series.dimensions.isEmpty ? productIDs[series.product] : seriesIDs[series]
    }

    /// The product id string of `id`. `id` must come from this catalog and not be released.
    public func name(of id: ProductID) -> String { keys[Int(id)].product.name }

    /// The series of `id`. `id` must come from this catalog and not be released.
    public func series(of id: ProductID) -> SeriesKey { keys[Int(id)] }

    /// Forgets `id`; a later ``id(for:)`` may hand it out for another series.
    public mutating func release(_ id: ProductID) {
        guard Int(id) < keys.count else { return }
        let series = keys[Int(id)]
        guard existingID(for: series) == id else { return }
        if series.dimensions.isEmpty { productIDs[series.product] = nil } else { seriesIDs[series] = nil }
        keys[Int(id)] = SeriesKey(product: ProductKey(""))
        free.append(id)
    }

}
