/// Hands out a dense ``ProductID`` for every distinct product id string, and back.
///
/// Ids are assigned in order of first appearance, starting at 0, and never reused: the catalog
/// grows with the number of distinct products seen by the process (about 50 bytes plus the
/// id's length each).
public struct ProductCatalog: Sendable {
    private var ids: [String: ProductID] = [:]
    private var names: [String] = []

    public init() {}

    /// Number of distinct products.
    public var count: Int { names.count }

    /// The id of `name`, assigning the next one on first sight.
    public mutating func id(for name: String) -> ProductID {
        if let id = ids[name] { return id }
        let id = ProductID(names.count)
        ids[name] = id
        names.append(name)
        return id
    }

    /// The id of `name` if it was seen before.
    public func existingID(for name: String) -> ProductID? { ids[name] }

    /// The product id string of `id`. `id` must come from this catalog.
    public func name(of id: ProductID) -> String { names[Int(id)] }
}
