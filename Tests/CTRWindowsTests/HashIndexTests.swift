@testable import CTRWindows
import Testing

@Suite struct HashIndexTests {
    /// Random inserts and removals, with hashes from a small range so that runs of equal and
    /// colliding hashes form, wrap around the table's end and are shifted back by removals,
    /// against a dictionary as the reference. After every step each value the reference holds
    /// is found, and a removed one is not.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func agreesWithADictionary(seed: UInt64) {
        var random = WindowAggregatorPropertyTests.SplitMix(state: seed)
        var index = HashIndex()
        var reference: [UInt32: Int] = [:]
        let hashRange = Int.random(in: 1...64, using: &random)
        for _ in 0..<4_000 {
            let value = UInt32.random(in: 0..<300, using: &random)
            if let hash = reference[value] {
                index.remove(value, hash: hash)
                reference[value] = nil
                #expect(index.find(hash) { $0 == value } == nil)
            } else {
                // Sometimes a hash far from the others, whose home slot is anywhere.
                let hash = Bool.random(using: &random) ? Int.random(in: 0..<hashRange, using: &random) : Int.random(in: .min ... .max, using: &random)
                index.insert(value, hash: hash)
                reference[value] = hash
            }
            #expect(index.count == reference.count)
            for (value, hash) in reference {
                #expect(index.find(hash) { $0 == value } == value, "seed \(seed): \(value) under hash \(hash) lost")
            }
        }
    }

    @Test func removingWhatIsNotIndexedChangesNothing() {
        var index = HashIndex()
        index.insert(1, hash: 7)
        index.remove(2, hash: 7)
        index.remove(1, hash: 8)
        #expect(index.count == 1)
        #expect(index.find(7) { $0 == 1 } == 1)
    }
}

@Suite struct ProductCatalogTests {
    @Test func aSeriesKeepsItsIdAndIdsAreDense() {
        var catalog = ProductCatalog()
        let ids = (0..<1_000).map { catalog.id(for: "p\($0)") }
        #expect(ids == (0..<1_000).map(ProductID.init))
        #expect((0..<1_000).map { catalog.id(for: "p\($0)") } == ids)
        #expect(catalog.count == 1_000)
        #expect(catalog.name(of: 17) == "p17")
    }

    @Test func productsAreComparedByteForByte() {
        var catalog = ProductCatalog()
        let composed = catalog.id(for: "caf\u{E9}")
        let decomposed = catalog.id(for: "cafe\u{301}")
        #expect(composed != decomposed)
        #expect(catalog.name(of: decomposed).utf8.count == 6)
    }

    @Test func dimensionsMakeSeparateSeries() {
        var catalog = ProductCatalog()
        let plain = catalog.id(for: SeriesKey(product: ProductKey("p")))
        let us = catalog.id(for: SeriesKey(product: ProductKey("p"), dimensions: ["US"]))
        let fr = catalog.id(for: SeriesKey(product: ProductKey("p"), dimensions: ["FR"]))
        let split = catalog.id(for: SeriesKey(product: ProductKey("p"), dimensions: ["a", "bc"]))
        let joined = catalog.id(for: SeriesKey(product: ProductKey("p"), dimensions: ["ab", "c"]))
        #expect(Set([plain, us, fr, split, joined]).count == 5)
        #expect(catalog.existingID(for: SeriesKey(product: ProductKey("p"), dimensions: ["US"])) == us)
        #expect(catalog.existingID(for: SeriesKey(product: ProductKey("p"), dimensions: ["DE"])) == nil)
    }

    @Test func releasedIdsAreForgottenAndReused() {
        var catalog = ProductCatalog()
        let a = catalog.id(for: "a")
        let b = catalog.id(for: "b")
        catalog.release(a)
        #expect(catalog.existingID(for: SeriesKey(product: ProductKey("a"))) == nil)
        #expect(catalog.count == 1)
        let c = catalog.id(for: "c")
        #expect(c == a)
        #expect(catalog.name(of: c) == "c")
        #expect(catalog.id(for: "b") == b)
        #expect(catalog.id(for: "a") == 2)
    }
}
