import ClickHouseSink
import CTRWindows
import Ingest
import Synchronization

/// Counters kept by the pipeline thread without locking and published after every poll.
public struct PipelineCounters: Sendable {
    public var consumedImpressions = 0
    public var consumedClicks = 0
    public var consumedConversions = 0
    public var rejected: [RejectionReason: Int] = [:]
    public var lateUpdates = 0
    public var alreadyCounted = 0
    public var windowsRestored = 0
    public var emissions = 0
    public var rowsEmitted = 0
    public var revisionsEmitted = 0
    public var commits = 0
    public var openWindows = 0
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

/// Counters of the sink thread.
public struct SinkCounters: Sendable {
    public var batchesWritten = 0
    public var rowsWritten = 0
    public var retries = 0
    public var failures = 0
    /// Cumulative counts of insert durations at or below each bound of ``PipelineMetrics/insertBuckets``.
    public var insertDurationBuckets = Array(repeating: 0, count: PipelineMetrics.insertBuckets.count)
    public var insertDurationSum = 0.0
    /// Cumulative counts of result latencies at or below each bound of ``PipelineMetrics/latencyBuckets``.
    public var latencyBuckets = Array(repeating: 0, count: PipelineMetrics.latencyBuckets.count)
    public var latencySum = 0.0
}

/// The aggregator's metrics, shared between the pipeline thread, the sink thread and the
/// metrics endpoint; rendered in the Prometheus text format.
public final class PipelineMetrics: Sendable {
    /// Upper bounds (seconds) of the insert latency histogram.
    public static let insertBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    /// Upper bounds (seconds) of the result latency histogram.
    public static let latencyBuckets: [Double] = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30]

    public struct Snapshot: Sendable {
        public var pipeline = PipelineCounters()
        public var sink = SinkCounters()
        public var ready = false
        public var consumerLag: [String: Int64] = [:]

        public var rowsWritten: Int { sink.rowsWritten }
        public var consumedImpressions: Int { pipeline.consumedImpressions }
        public var consumedClicks: Int { pipeline.consumedClicks }
        public var rejected: [RejectionReason: Int] { pipeline.rejected }
        public var openWindows: Int { pipeline.openWindows }
        public var watermarkMilliseconds: Int64? { pipeline.watermarkMilliseconds }
        public var bufferedRows: Int { pipeline.bufferedRows }
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public func snapshot() -> Snapshot { state.withLock { $0 } }

    func publish(_ counters: PipelineCounters) { state.withLock { $0.pipeline = counters } }
    func setReady(_ ready: Bool) { state.withLock { $0.ready = ready } }
    func setConsumerLag(_ lag: [String: Int64]) { state.withLock { $0.consumerLag = lag } }
    func recordSinkRetry() { state.withLock { $0.sink.retries += 1 } }
    func recordSinkFailure() { state.withLock { $0.sink.failures += 1 } }

    func recordInsert(_ report: InsertReport) {
        let seconds = Double(report.duration.components.seconds) + Double(report.duration.components.attoseconds) / 1e18
        state.withLock { snapshot in
            snapshot.sink.batchesWritten += 1
            snapshot.sink.rowsWritten += report.rows
            snapshot.sink.insertDurationSum += seconds
            for (index, bound) in Self.insertBuckets.enumerated() where seconds <= bound {
                snapshot.sink.insertDurationBuckets[index] += 1
            }
            let latency = Double(report.resultLatency.components.seconds) + Double(report.resultLatency.components.attoseconds) / 1e18
            snapshot.sink.latencySum += latency
            for (index, bound) in Self.latencyBuckets.enumerated() where latency <= bound {
                snapshot.sink.latencyBuckets[index] += 1
            }
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    public func prometheusText() -> String {
        let snapshot = self.snapshot()
        let pipeline = snapshot.pipeline
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for (labels, value) in samples { lines.append("\(name)\(labels) \(value)") }
        }
        metric("ctr_events_consumed_total", "counter", "Events consumed, by topic kind.", [
            ("{kind=\"impression\"}", "\(pipeline.consumedImpressions)"), ("{kind=\"click\"}", "\(pipeline.consumedClicks)"),
            ("{kind=\"conversion\"}", "\(pipeline.consumedConversions)"),
        ])
        metric("ctr_events_invalid_total", "counter", "Messages refused and sent to the dead-letter topic, by reason.",
            RejectionReason.allCases.filter { $0 != .tooLate }.map { ("{reason=\"\($0.rawValue)\"}", "\(pipeline.rejected[$0] ?? 0)") })
        metric("ctr_events_too_late_total", "counter", "Events later than the allowed lateness (not counted, sent to the dead-letter topic).",
            [("", "\(pipeline.rejected[.tooLate] ?? 0)")])
        metric("ctr_events_late_updates_total", "counter", "Late events that updated an already emitted window.", [("", "\(pipeline.lateUpdates)")])
        metric("ctr_events_replayed_total", "counter", "Events skipped after recovery because ClickHouse already had them.", [("", "\(pipeline.alreadyCounted)")])
        metric("ctr_windows_emitted_total", "counter", "Window emissions.", [("", "\(pipeline.emissions)")])
        metric("ctr_window_rows_emitted_total", "counter", "Rows emitted, by first emission or revision.", [
            ("{revision=\"first\"}", "\(pipeline.rowsEmitted - pipeline.revisionsEmitted)"),
            ("{revision=\"update\"}", "\(pipeline.revisionsEmitted)"),
        ])
        metric("ctr_windows_restored_total", "counter", "Windows restored from ClickHouse after a restart or rebalance.", [("", "\(pipeline.windowsRestored)")])
        metric("ctr_open_windows", "gauge", "Windows with state.", [("", "\(pipeline.openWindows)")])
        if let watermark = pipeline.watermarkMilliseconds {
            metric("ctr_watermark_seconds", "gauge", "Pipeline watermark, seconds since the epoch.", [("", "\(Double(watermark) / 1000)")])
            metric("ctr_watermark_lag_seconds", "gauge", "Wall clock minus watermark.", [("", "\(Double(pipeline.wallClockMilliseconds - watermark) / 1000)")])
        }
        metric("ctr_consumer_lag", "gauge", "Messages behind the partition's high watermark.",
            snapshot.consumerLag.sorted(by: { $0.key < $1.key }).map { ("{partition=\"\($0.key)\"}", "\($0.value)") })
        metric("ctr_offset_commits_total", "counter", "Offset commits.", [("", "\(pipeline.commits)")])
        metric("ctr_sink_batches_total", "counter", "Insert batches acknowledged by ClickHouse.", [("", "\(snapshot.sink.batchesWritten)")])
        metric("ctr_sink_rows_total", "counter", "Rows acknowledged by ClickHouse.", [("", "\(snapshot.sink.rowsWritten)")])
        metric("ctr_sink_retries_total", "counter", "Failed insert attempts that were retried.", [("", "\(snapshot.sink.retries)")])
        metric("ctr_sink_failures_total", "counter", "Inserts given up (fatal).", [("", "\(snapshot.sink.failures)")])
        var histogram: [(String, String)] = []
        for (index, bound) in Self.insertBuckets.enumerated() {
            histogram.append(("_bucket{le=\"\(bound)\"}", "\(snapshot.sink.insertDurationBuckets[index])"))
        }
        histogram.append(("_bucket{le=\"+Inf\"}", "\(snapshot.sink.batchesWritten)"))
        histogram.append(("_sum", "\(snapshot.sink.insertDurationSum)"))
        histogram.append(("_count", "\(snapshot.sink.batchesWritten)"))
        lines.append("# HELP ctr_sink_insert_seconds Insert latency including retries.")
        lines.append("# TYPE ctr_sink_insert_seconds histogram")
        for (suffix, value) in histogram { lines.append("ctr_sink_insert_seconds\(suffix) \(value)") }
        lines.append("# HELP ctr_result_latency_seconds From a window's emission (watermark past its end) to its rows acknowledged by ClickHouse, per batch.")
        lines.append("# TYPE ctr_result_latency_seconds histogram")
        for (index, bound) in Self.latencyBuckets.enumerated() {
            lines.append("ctr_result_latency_seconds_bucket{le=\"\(bound)\"} \(snapshot.sink.latencyBuckets[index])")
        }
        lines.append("ctr_result_latency_seconds_bucket{le=\"+Inf\"} \(snapshot.sink.batchesWritten)")
        lines.append("ctr_result_latency_seconds_sum \(snapshot.sink.latencySum)")
        lines.append("ctr_result_latency_seconds_count \(snapshot.sink.batchesWritten)")
        metric("ctr_buffer_rows", "gauge", "Rows waiting for ClickHouse.", [("", "\(pipeline.bufferedRows)")])
        metric("ctr_consuming_paused", "gauge", "1 while consuming is paused by backpressure.", [("", pipeline.paused ? "1" : "0")])
        metric("ctr_ready", "gauge", "1 while consuming and able to write.", [("", snapshot.ready ? "1" : "0")])
        return lines.joined(separator: "\n") + "\n"
    }
}
