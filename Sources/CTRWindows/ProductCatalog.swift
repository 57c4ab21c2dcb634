/// A product id string compared byte for byte: two spellings that Unicode calls canonically
/// equivalent (NFC `café` and NFD `café`) are two products, as they are in ClickHouse.
public struct ProductKey: Hashable, Sendable, CustomStringConvertible {
    /// The product id exactly as received.
    public let name: String

    @inlinable
    public init(_ name: String) { self.name = name }

    @inlinable
    public static func == (lhs: ProductKey, rhs: ProductKey) -> Bool {
        var left = lhs.name
        var right = rhs.name
        return left.withUTF8 { a in right.withUTF8 { b in bytesEqual(a, b) } }
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
        var name = self.name
        name.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    public var description: String { name }
}

/// Hands out a dense ``ProductID`` for every distinct product id (compared byte for byte, see
/// ``ProductKey``), and back.
///
/// Memory is bounded by the products in use: ids given back with ``release(_:)`` (when no open
/// window holds the product any more, see ``WindowAggregator/takeReleasedProducts()``) are
/// forgotten and reused.
public struct ProductCatalog: Sendable {
    private var ids: [ProductKey: ProductID] = [:]
    private var names: [String] = []
    private var free: [ProductID] = []

    public init() {}

    /// Number of products known.
    public var count: Int { ids.count }

    /// The id of `name`, assigning one on first sight.
    public mutating func id(for name: String) -> ProductID {
        let key = ProductKey(name)
        if let id = ids[key] { return id }
        let id: ProductID
        if let reused = free.popLast() {
            id = reused
            names[Int(id)] = name
        } else {
            id = ProductID(names.count)
            names.append(name)
        }
        ids[key] = id
        return id
    }

    /// The id of `name` if it is known.
    public func existingID(for name: String) -> ProductID? { ids[ProductKey(name)] }

    /// The product id string of `id`. `id` must come from this catalog and not be released.
    public func name(of id: ProductID) -> String { names[Int(id)] }

    /// Forgets `id`; a later ``id(for:)`` may hand it out for another product.
    public mutating func release(_ id: ProductID) {
        guard Int(id) < names.count, let removed = ids.removeValue(forKey: ProductKey(names[Int(id)])), removed == id else { return }
        names[Int(id)] = ""
        free.append(id)
    }
}
