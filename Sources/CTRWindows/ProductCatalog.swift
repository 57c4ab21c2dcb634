/// A product id string compared byte for byte: two spellings that Unicode calls canonically
/// equivalent (NFC `café` and NFD `café`) are two products, as they are in ClickHouse.
public struct ProductKey: Hashable, Sendable, CustomStringConvertible {
    /// The product id exactly as received.
    public let name: String
    /// `name`'s bytes hashed once, with this process's random seed (``Hasher``): the
    /// catalogue's index uses it as the hash (a dictionary hashes this one word), and keys that
    /// differ are almost always told apart by it without comparing their bytes.
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
        hasher.combine(digest)
    }

    /// The series' hash, with this process's random seed: the product's digest alone when there
    /// are no dimensions (computed once, when the event was decoded), else that digest and the
    /// dimension values' bytes, each with its length.
    @inlinable
    var digest: Int {
        if dimensions.isEmpty { return product.digest }
        var hasher = Hasher()
        hasher.combine(product.digest)
        for value in dimensions {
            var value = value
            value.withUTF8 { bytes in
                hasher.combine(bytes.count)
                hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
            }
        }
        return hasher.finalize()
    }
}

/// Hands out a dense ``ProductID`` for every distinct series (a product id with its dimension
/// values, compared byte for byte, see ``SeriesKey``), and back.
///
/// Memory is bounded by the series in use: ids given back with ``release(_:)`` (when no open
/// window holds the series any more, see ``WindowAggregator/takeReleasedProducts()``) are
/// forgotten and reused.
public struct ProductCatalog: Sendable {
    /// The series' ids by their hash (``SeriesKey/digest``): a series without dimensions is
    /// found by its product's digest alone, computed when the event was decoded.
    private var index = HashIndex()
    private var keys: [SeriesKey] = []
    private var free: [ProductID] = []

    public init() {}

    /// Number of series known.
    public var count: Int { index.count }

    /// The id of the series of `product` without dimensions, assigning one on first sight.
    public mutating func id(for product: String) -> ProductID {
        id(for: SeriesKey(product: ProductKey(product)))
    }

    /// The id of `series`, assigning one on first sight.
    public mutating func id(for series: SeriesKey) -> ProductID {
        let digest = series.digest
        if let id = find(series, digest: digest) { return id }
        let id: ProductID
        if let reused = free.popLast() {
            keys[Int(reused)] = series
            id = reused
        } else {
            keys.append(series)
            id = ProductID(keys.count - 1)
        }
        index.insert(id, hash: digest)
        return id
    }

    private func find(_ series: SeriesKey, digest: Int) -> ProductID? {
        keys.withUnsafeBufferPointer { keys in index.find(digest) { keys[Int($0)] == series } }
    }

    /// The id of `series` if it is known.
    public func existingID(for series: SeriesKey) -> ProductID? {
        find(series, digest: series.digest)
    }

    /// The product id string of `id`. `id` must come from this catalog and not be released.
    public func name(of id: ProductID) -> String { keys[Int(id)].product.name }

    /// The series of `id`. `id` must come from this catalog and not be released.
    public func series(of id: ProductID) -> SeriesKey { keys[Int(id)] }

    /// Forgets `id`; a later ``id(for:)`` may hand it out for another series.
    public mutating func release(_ id: ProductID) {
        guard Int(id) < keys.count else { return }
        let series = keys[Int(id)]
        let digest = series.digest
        guard find(series, digest: digest) == id else { return }
        index.remove(id, hash: digest)
        keys[Int(id)] = Self.releasedKey
        free.append(id)
    }

    /// What a released id's key is until the id is handed out again.
    private static let releasedKey = SeriesKey(product: ProductKey(""))
}
