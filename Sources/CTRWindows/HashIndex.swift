/// An open-addressing index from a key's hash, computed once by the caller, to a dense `UInt32`
/// (a position in the caller's own storage of the keys).
///
/// The index keeps only hashes and positions: a lookup finds the slots whose stored hash equals
/// the one asked for and lets the caller confirm the key at that position (`matches`), so a key
/// is never hashed twice and no `Hasher` runs on the hot path. Slots are chosen by Fibonacci
/// hashing (multiply, keep the top bits), which spreads well-mixed hashes
/// (``ProductKey``'s digest) and sequential ones (``ProductID``s) alike; linear probing, at most
/// 70 % full; removal shifts the following slots back, so no tombstones accumulate.
struct HashIndex: Sendable {
    private struct Slot: Sendable {
        var hash: Int
        /// `HashIndex.empty` when the slot is free.
        var value: UInt32
    }

    private static let empty = UInt32.max
    private var slots: [Slot]
    /// 64 minus log2 of the slot count: a hash's home slot is the top bits of its product with
    /// the golden-ratio constant.
    private var shift: Int
    /// Number of values indexed.
    private(set) var count = 0

    init() {
        slots = Array(repeating: Slot(hash: 0, value: Self.empty), count: 8)
        shift = 64 - 3
    }

    private var mask: Int { slots.count - 1 }

    @inline(__always)
    private func home(_ hash: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(bitPattern: Int64(hash)) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(shift))
    }

    /// The value indexed under `hash` for which `matches` holds, if any. `matches` is asked only
    /// about values whose stored hash is `hash`.
    @inline(__always)
    func find(_ hash: Int, where matches: (UInt32) -> Bool) -> UInt32? {
        slots.withUnsafeBufferPointer { slots in
            var position = home(hash)
            while true {
                let slot = slots[position]
                if slot.value == Self.empty { return nil }
                if slot.hash == hash, matches(slot.value) { return slot.value }
                position = (position + 1) & mask
            }
        }
    }

    /// Indexes `value` under `hash`. The caller makes sure no equal key is indexed already.
    mutating func insert(_ value: UInt32, hash: Int) {
        precondition(value != Self.empty, "HashIndex holds values below UInt32.max")
        if (count + 1) * 10 > slots.count * 7 { grow() }
        place(Slot(hash: hash, value: value))
        count += 1
    }

    /// Removes `value`, indexed under `hash`; nothing happens when it is not indexed.
    mutating func remove(_ value: UInt32, hash: Int) {
        var position = home(hash)
        while slots[position].value != value || slots[position].hash != hash {
            if slots[position].value == Self.empty { return }
            position = (position + 1) & mask
        }
        // Backward shift: move each following slot of the run into the gap when the gap lies
        // between its home and where it sits.
        var gap = position
        var next = (gap + 1) & mask
        while slots[next].value != Self.empty {
            let distanceFromHome = (next - home(slots[next].hash)) & mask
            if distanceFromHome >= (next - gap) & mask {
                slots[gap] = slots[next]
                gap = next
            }
            next = (next + 1) & mask
        }
        slots[gap].value = Self.empty
        count -= 1
    }

    private mutating func place(_ slot: Slot) {
        var position = home(slot.hash)
        while slots[position].value != Self.empty { position = (position + 1) & mask }
        slots[position] = slot
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: Slot(hash: 0, value: Self.empty), count: old.count * 2)
        shift -= 1
        for slot in old where slot.value != Self.empty { place(slot) }
    }
}
