/// A 64-bit hash of bytes that is the same in every process and on every run (unlike Swift's
/// `Hasher`, which is seeded per process): unique users and event ids are kept as these hashes,
/// compared across restarts and merged by ClickHouse's `uniqCombined` sketches.
///
/// FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer so that every input bit reaches
/// every output bit. Two distinct ids collide with probability about 2⁻⁶⁴ per pair: among a
/// million ids in one window the chance of any collision is below 3 × 10⁻⁸.
public enum StableHash {
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var state: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            state ^= UInt64(byte)
            state &*= 0x0000_0100_0000_01B3
        }
        state ^= state >> 33
        state &*= 0xFF51_AFD7_ED55_8CCD
        state ^= state >> 33
        state &*= 0xC4CE_B9FE_1A85_EC53
        state ^= state >> 33
        return state
    }

    /// The hash of `text`'s UTF-8 bytes.
    public static func hash(_ text: String) -> UInt64 {
        var text = text
        return text.withUTF8 { hash(UnsafeRawBufferPointer($0)) }
    }
}
