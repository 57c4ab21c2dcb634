#if canImport(Glibc)
import Glibc
#endif

/// The standard `process_*` metrics of the Prometheus client libraries, read from the kernel at
/// scrape time (Linux: `/proc/self`, `getrusage`, `getrlimit`).
public struct ProcessMetrics: Equatable, Sendable {
    /// User plus system CPU time of every thread, in seconds.
    public var cpuSeconds: Double
    public var residentMemoryBytes: Int
    public var virtualMemoryBytes: Int
    public var openFileDescriptors: Int
    /// The soft limit on open file descriptors.
    public var maximumFileDescriptors: Int
    /// When the process started, in seconds since the Unix epoch.
    public var startTimeSeconds: Double

    public init(
        cpuSeconds: Double, residentMemoryBytes: Int, virtualMemoryBytes: Int, openFileDescriptors: Int, maximumFileDescriptors: Int,
        startTimeSeconds: Double
    ) {
        self.cpuSeconds = cpuSeconds
        self.residentMemoryBytes = residentMemoryBytes
        self.virtualMemoryBytes = virtualMemoryBytes
        self.openFileDescriptors = openFileDescriptors
        self.maximumFileDescriptors = maximumFileDescriptors
        self.startTimeSeconds = startTimeSeconds
    }

    /// The current figures of this process; a figure the kernel does not give is 0.
    public static func current() -> ProcessMetrics {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let statm = (readFile("/proc/self/statm") ?? "").split(separator: " ")
        let virtualPages = statm.count > 1 ? Int(statm[0]) ?? 0 : 0
        let residentPages = statm.count > 1 ? Int(statm[1]) ?? 0 : 0
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let startTicks = readFile("/proc/self/stat").flatMap(Self.startTicks(stat:))
        let bootTime = readFile("/proc/stat").flatMap(Self.bootTime(stat:))
        let start = if let startTicks, let bootTime, ticksPerSecond > 0 { Double(bootTime) + Double(startTicks) / ticksPerSecond } else { 0.0 }
        return ProcessMetrics(
            cpuSeconds: cpu, residentMemoryBytes: residentPages * pageSize, virtualMemoryBytes: virtualPages * pageSize,
            openFileDescriptors: openDescriptorCount(), maximumFileDescriptors: Int(clamping: limit.rlim_cur), startTimeSeconds: start
        )
    }

    /// The Prometheus text exposition of these figures, with `# HELP` and `# TYPE` lines.
    public var prometheusText: String {
        """
        # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
        # TYPE process_cpu_seconds_total counter
        process_cpu_seconds_total \(cpuSeconds)
        # HELP process_resident_memory_bytes Resident memory size in bytes.
        # TYPE process_resident_memory_bytes gauge
        process_resident_memory_bytes \(residentMemoryBytes)
        # HELP process_virtual_memory_bytes Virtual memory size in bytes.
        # TYPE process_virtual_memory_bytes gauge
        process_virtual_memory_bytes \(virtualMemoryBytes)
        # HELP process_open_fds Number of open file descriptors.
        # TYPE process_open_fds gauge
        process_open_fds \(openFileDescriptors)
        # HELP process_max_fds Maximum number of open file descriptors.
        # TYPE process_max_fds gauge
        process_max_fds \(maximumFileDescriptors)
        # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
        # TYPE process_start_time_seconds gauge
        process_start_time_seconds \(startTimeSeconds)

        """
    }

    /// Field 22 (`starttime`, clock ticks after boot) of a `/proc/<pid>/stat` line. The command
    /// name (field 2) is in parentheses and may hold spaces and parentheses, so fields are
    /// counted after the last `)`.
    static func startTicks(stat: String) -> Int? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // fields[0] is field 3 (state), so field 22 is fields[19].
        return fields.count > 19 ? Int(fields[19]) : nil
    }

    /// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
    static func bootTime(stat: String) -> Int? {
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Int(line.dropFirst(6).trimmingPrefix(" "))
        }
        return nil
    }

    private static func openDescriptorCount() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { $0.first == UInt8(ascii: ".") }
            if !isDot { count += 1 }
        }
        return count - 1  // the descriptor of the directory being read
    }

    private static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
