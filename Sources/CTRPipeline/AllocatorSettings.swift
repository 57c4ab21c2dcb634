#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// glibc `malloc` settings that keep the aggregator's resident memory close to what it uses.
///
/// With glibc's defaults, memory the process freed stays resident in two ways, measured with a
/// stream of millions of distinct product ids (`scripts/bench.py --contenders distinct`):
/// - **Per-thread arenas**: every thread that allocates gets an arena of its own (up to 8 per
///   core). librdkafka's broker threads allocate the fetched messages, the pipeline thread frees
///   them, and each broker arena keeps its own high-water mark (about 50 MiB each at three
///   brokers) that no other thread can reuse. ``arenaMax`` 1: one arena, whose free memory every
///   thread reuses (small blocks still go through each thread's lock-free cache).
/// - **The dynamic mmap threshold**: a freed block above the threshold (128 KiB) raises it to
///   that block's size, up to 32 MiB, so later window dictionaries, row arrays and insert
///   bodies of megabytes come from the heap, where freeing them leaves holes instead of giving
///   the pages back. A fixed ``mmapThreshold`` keeps every block of 128 KiB or more in its own
///   mapping, returned to the system when freed.
///
/// An operator's own choice wins: a setting given by `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`
/// or `GLIBC_TUNABLES` (`glibc.malloc.arena_max`, `glibc.malloc.mmap_threshold`) is left alone.
public enum AllocatorSettings {
    /// One `mallopt` parameter and its value.
    public enum Setting: Hashable, Sendable {
        case arenaMax(Int32)
        case mmapThreshold(Int32)
    }

    /// Number of malloc arenas.
    public static let arenaMax: Int32 = 1
    /// Blocks of at least this many bytes get their own mapping.
    public static let mmapThreshold: Int32 = 128 * 1024

    /// The settings to apply, given the process environment.
    public static func settings(environment: [String: String]) -> [Setting] {
        let tunables = environment["GLIBC_TUNABLES"] ?? ""
        var result: [Setting] = []
        if environment["MALLOC_ARENA_MAX"] == nil && !tunables.contains("glibc.malloc.arena_max") {
            result.append(.arenaMax(arenaMax))
        }
        if environment["MALLOC_MMAP_THRESHOLD_"] == nil && !tunables.contains("glibc.malloc.mmap_threshold") {
            result.append(.mmapThreshold(mmapThreshold))
        }
        return result
    }

    /// Applies ``settings(environment:)``. Call first thing in `main`, before any thread starts:
    /// a thread that already has an arena keeps it. Returns the settings applied (none where the
    /// C library has no `mallopt`, i.e. is not glibc).
    @discardableResult
    public static func apply(environment: [String: String]) -> [Setting] {
        // `mallopt` is declared in <malloc.h>, which the Glibc module does not import.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return [] }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        let chosen = settings(environment: environment)
        for setting in chosen {
            switch setting {
            case .arenaMax(let value): _ = mallopt(Self.optionArenaMax, value)
            case .mmapThreshold(let value): _ = mallopt(Self.optionMmapThreshold, value)
            }
        }
        return chosen
    }

    /// `M_ARENA_MAX` and `M_MMAP_THRESHOLD` of glibc's <malloc.h>.
    static let optionArenaMax: Int32 = -8
    static let optionMmapThreshold: Int32 = -3
}
