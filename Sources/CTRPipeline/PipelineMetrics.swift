import ClickHouseSink
import CoreMetrics
import CTRWindows
import EventDecoding
import Synchronization

/// Counters kept by the pipeline thread without locking and published after every poll.
public struct PipelineCounters: Sendable {
    public var consumedImpressions = 0
    public var consumedClicks = 0
    public var consumedConversions = 0
    public var rejected: [RejectionReason: Int] = [:]
    public var lateUpdates = 0
    public var alreadyCounted = 0
    /// Events not counted because their window had counted their id (`--dedup-field`), by
    /// ``EventKind/rawValue``.
    public var duplicates = [Int](repeating: 0, count: EventKind.allCases.count)
    public var windowsRestored = 0
    public var emissions = 0
    public var rowsEmitted = 0
    public var revisionsEmitted = 0
    public var commits = 0
    public var openWindows = 0
    /// Open (product, window) pairs: the size of the window state.
    public var openProductWindows = 0
    public var watermarkMilliseconds: Int64?
    public var wallClockMilliseconds: Int64 = 0
    public var bufferedRows = 0
    public var paused = false

    mutating func recordConsumed(_ kind: EventKind) {
        switch kind {
        case .impression: consumedImpressions += 1
        case .click: consumedClicks += 1
        case .conversion: consumedConversions += 1
        }
    }

    mutating func recordEmission(rows: [WindowRow]) {
        emissions += 1
        rowsEmitted += rows.count
        revisionsEmitted += rows.reduce(0) { $0 + ($1.revision > 0 ? 1 : 0) }
    }
}

/// The aggregator's metrics, reported through swift-metrics (the executable bootstraps a
/// Prometheus backend and serves it on `/metrics`). Names are listed in README.md.
///
/// The pipeline thread publishes its ``PipelineCounters`` after every poll (as deltas, so the
/// hot loop never touches a metrics handler); the sink thread reports inserts directly.
public final class PipelineMetrics: Sendable {
    private struct Published: Sendable {
        var counters = PipelineCounters()
        var ready = false
        var rowsWritten = 0
    }

    private let state = Mutex(Published())
    private let consumed: [EventKind: Counter]
    private let invalid: [RejectionReason: Counter]
    private let tooLate: Counter
    private let lateUpdates: Counter
    private let replayed: Counter
    private let duplicates: [EventKind: Counter]
    private let windowsEmitted: Counter
    private let firstRows: Counter
    private let revisionRows: Counter
    private let windowsRestored: Counter
    private let commits: Counter
    private let openWindows: Gauge
    private let watermark: Gauge
    private let watermarkLag: Gauge
    private let bufferRows: Gauge
    private let paused: Gauge
    private let ready: Gauge
    private let sinkBatches: Counter
    private let sinkRows: Counter
    private let sinkRetries: Counter
    private let sinkFailures: Counter
    private let insertDuration: Timer
    private let resultLatency: Timer
    private let consumerLag = Mutex<[PartitionKey: Gauge]>([:])
    private let clockOrigin = ContinuousClock.now
    /// Nanoseconds after `clockOrigin` of the latest ``recordProgress()``.
    private let lastProgress = Atomic<Int64>(0)

    private struct PartitionKey: Hashable, Sendable {
        var topic: String
        var partition: Int32
    }

    /// Creates every metric, so that all of them are exported from the start. The progress clock
    /// of ``timeSinceProgress`` starts now.
    public init() {
        consumed = Dictionary(uniqueKeysWithValues: EventKind.allCases.map { kind in
            (kind, Counter(label: "ctr_events_consumed_total", dimensions: [("kind", Self.name(of: kind))]))
        })
        invalid = Dictionary(uniqueKeysWithValues: RejectionReason.allCases.filter { $0 != .tooLate }.map { reason in
            (reason, Counter(label: "ctr_events_invalid_total", dimensions: [("reason", reason.rawValue)]))
        })
        duplicates = Dictionary(uniqueKeysWithValues: EventKind.allCases.map { kind in
            (kind, Counter(label: "ctr_events_duplicate_total", dimensions: [("kind", Self.name(of: kind))]))
        })
        tooLate = Counter(label: "ctr_events_too_late_total")
        lateUpdates = Counter(label: "ctr_events_late_updates_total")
        replayed = Counter(label: "ctr_events_replayed_total")
        windowsEmitted = Counter(label: "ctr_windows_emitted_total")
        firstRows = Counter(label: "ctr_window_rows_emitted_total", dimensions: [("revision", "first")])
        revisionRows = Counter(label: "ctr_window_rows_emitted_total", dimensions: [("revision", "update")])
        windowsRestored = Counter(label: "ctr_windows_restored_total")
        commits = Counter(label: "ctr_offset_commits_total")
        openWindows = Gauge(label: "ctr_open_windows")
        watermark = Gauge(label: "ctr_watermark_timestamp_seconds")
        watermarkLag = Gauge(label: "ctr_watermark_lag_seconds")
        bufferRows = Gauge(label: "ctr_buffer_rows")
        paused = Gauge(label: "ctr_consuming_paused")
        ready = Gauge(label: "ctr_ready")
        sinkBatches = Counter(label: "ctr_sink_batches_total")
        sinkRows = Counter(label: "ctr_sink_rows_total")
        sinkRetries = Counter(label: "ctr_sink_retries_total")
        sinkFailures = Counter(label: "ctr_sink_failures_total")
        insertDuration = Timer(label: "ctr_sink_insert_seconds")
        resultLatency = Timer(label: "ctr_result_latency_seconds")
    }

    /// Histogram buckets of the two latency timers, for the metrics backend.
    public static let histogramBuckets: [String: [Duration]] = [
        "ctr_sink_insert_seconds": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) },
        "ctr_result_latency_seconds": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) },
    ]

    private static func name(of kind: EventKind) -> String {
        switch kind {
        case .impression: "impression"
        case .click: "click"
        case .conversion: "conversion"
        }
    }

    /// Whether the pipeline is consuming and able to write (for `/ready`).
    public var isReady: Bool { state.withLock { $0.ready } }

    /// Rows acknowledged by ClickHouse so far.
    public var rowsWritten: Int { state.withLock { $0.rowsWritten } }

    /// The counters as last published.
    public var counters: PipelineCounters { state.withLock { $0.counters } }

    /// Publishes the pipeline thread's counters: counters advance by the difference to the
    /// previous call, gauges take the new values.
    public func publish(_ counters: PipelineCounters) {
        let previous = state.withLock { published in
            defer { published.counters = counters }
            return published.counters
        }
        func add(_ counter: Counter, _ now: Int, _ before: Int) { if now > before { counter.increment(by: now - before) } }
        add(consumed[.impression]!, counters.consumedImpressions, previous.consumedImpressions)
        add(consumed[.click]!, counters.consumedClicks, previous.consumedClicks)
        add(consumed[.conversion]!, counters.consumedConversions, previous.consumedConversions)
        for (reason, count) in counters.rejected {
            let before = previous.rejected[reason] ?? 0
            if reason == .tooLate { add(tooLate, count, before) } else if let counter = invalid[reason] { add(counter, count, before) }
        }
        add(lateUpdates, counters.lateUpdates, previous.lateUpdates)
        add(replayed, counters.alreadyCounted, previous.alreadyCounted)
        for kind in EventKind.allCases {
            add(duplicates[kind]!, counters.duplicates[Int(kind.rawValue)], previous.duplicates[Int(kind.rawValue)])
        }
        add(windowsEmitted, counters.emissions, previous.emissions)
        add(firstRows, counters.rowsEmitted - counters.revisionsEmitted, previous.rowsEmitted - previous.revisionsEmitted)
        add(revisionRows, counters.revisionsEmitted, previous.revisionsEmitted)
        add(windowsRestored, counters.windowsRestored, previous.windowsRestored)
        add(commits, counters.commits, previous.commits)
        openWindows.record(counters.openWindows)
        if let watermarkMilliseconds = counters.watermarkMilliseconds {
            watermark.record(Double(watermarkMilliseconds) / 1000)
            watermarkLag.record(Double(counters.wallClockMilliseconds - watermarkMilliseconds) / 1000)
        }
        bufferRows.record(counters.bufferedRows)
        paused.record(counters.paused ? 1 : 0)
    }

    /// Sets the ready state `/ready` reports and `ctr_ready` exports.
    public func setReady(_ isReady: Bool) {
        state.withLock { $0.ready = isReady }
        ready.record(isReady ? 1 : 0)
    }

    /// Sets `ctr_consumer_lag_messages{topic,partition}` (high watermark minus position) for
    /// every partition this instance owns now. The list is complete: a partition that was in the
    /// previous call and is not in this one (revoked, lost) stops being exported, so summing the
    /// gauge over a consumer group's instances counts each partition once.
    public func setConsumerLag(_ lag: [(topic: String, partition: Int32, lag: Int64)]) {
        consumerLag.withLock { gauges in
            var current: [PartitionKey: Gauge] = [:]
            for entry in lag {
                let key = PartitionKey(topic: entry.topic, partition: entry.partition)
                let gauge = gauges.removeValue(forKey: key)
                    ?? Gauge(label: "ctr_consumer_lag_messages", dimensions: [("topic", entry.topic), ("partition", String(entry.partition))])
                gauge.record(entry.lag)
                current[key] = gauge
            }
            for gauge in gauges.values { gauge.destroy() }
            gauges = current
        }
    }

    /// The heartbeat of the pipeline loop: call it on every iteration of the loop (after each
    /// poll, whether or not messages came). Thread-safe and cheap (one atomic store), so it can
    /// be called from the hot loop. `/health` fails when it has not been called for the stall
    /// timeout (``timeSinceProgress``).
    public func recordProgress() {
        lastProgress.store(Self.nanoseconds(ContinuousClock.now - clockOrigin), ordering: .relaxed)
    }

    /// Time since the latest ``recordProgress()`` (or since this object was created, before the
    /// first one). Thread-safe.
    public var timeSinceProgress: Duration {
        let since = ContinuousClock.now - clockOrigin - .nanoseconds(lastProgress.load(ordering: .relaxed))
        return max(since, .zero)
    }

    /// Exports `ctr_build_info{version,revision} 1`, the build this process runs.
    public static func recordBuildInfo(version: String, revision: String) {
        Gauge(label: "ctr_build_info", dimensions: [("version", version), ("revision", revision)]).record(1)
    }

    func recordSinkRetry() { sinkRetries.increment() }
    func recordSinkFailure() { sinkFailures.increment() }

    func recordInsert(_ report: InsertReport) {
        state.withLock { $0.rowsWritten += report.rows }
        sinkBatches.increment()
        sinkRows.increment(by: report.rows)
        insertDuration.recordNanoseconds(Self.nanoseconds(report.duration))
        resultLatency.recordNanoseconds(Self.nanoseconds(report.resultLatency))
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
