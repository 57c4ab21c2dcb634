/// A product, as a dense number handed out by a ``ProductCatalog``.
public typealias ProductID = UInt32

/// What an input event records.
public enum EventKind: UInt8, Sendable, Hashable, CaseIterable {
    case impression
    case click
    /// A purchase following a click.
    case conversion
}

/// Event counts of one product in one window, and the revenue of its events.
public struct WindowCounts: Hashable, Sendable, CustomStringConvertible {
    public var impressions: UInt64
    public var clicks: UInt64
    public var conversions: UInt64
    /// Revenue in micro-units of the currency (1 unit = 1,000,000), summed exactly.
    public var revenueMicros: UInt64

    public init(impressions: UInt64 = 0, clicks: UInt64 = 0, conversions: UInt64 = 0, revenueMicros: UInt64 = 0) {
        self.impressions = impressions
        self.clicks = clicks
        self.conversions = conversions
        self.revenueMicros = revenueMicros
    }

    /// Clicks divided by impressions; 0 when there are no impressions. It may exceed 1, since a
    /// click can fall into a later window than its impression.
    public var clickThroughRate: Double {
        impressions == 0 ? 0 : Double(clicks) / Double(impressions)
    }

    @inlinable
    mutating func add(_ kind: EventKind, revenueMicros: UInt64) {
        switch kind {
        case .impression: impressions &+= 1
        case .click: clicks &+= 1
        case .conversion: conversions &+= 1
        }
        self.revenueMicros &+= revenueMicros
    }

    static func - (lhs: WindowCounts, rhs: WindowCounts) -> WindowCounts {
        WindowCounts(
            impressions: lhs.impressions - rhs.impressions, clicks: lhs.clicks - rhs.clicks,
            conversions: lhs.conversions - rhs.conversions, revenueMicros: lhs.revenueMicros - rhs.revenueMicros
        )
    }

    public var description: String {
        "\(impressions) impressions, \(clicks) clicks, \(conversions) conversions, \(revenueMicros) revenue micros"
    }
}

/// One output row: a product's counts in a window as of one emission.
public struct WindowRow: Hashable, Sendable {
    public var product: ProductID
    /// Cumulative counts of the window as of this emission.
    public var totals: WindowCounts
    /// Change since the previous emission of the same (product, window); equal to `totals` on
    /// revision 0. Summing the deltas of all revisions gives the final totals.
    public var delta: WindowCounts
    /// 0 for the first emission of a (product, window), then +1 for every late update.
    public var revision: UInt32

    public init(product: ProductID, totals: WindowCounts, delta: WindowCounts, revision: UInt32) {
        self.product = product
        self.totals = totals
        self.delta = delta
        self.revision = revision
    }
}

/// An offset of a source partition.
public struct SourceOffset: Hashable, Sendable {
    public var partition: SourcePartition
    public var offset: Int64
    /// For a position to resume from: the highest event time of the partition's events before
    /// `offset`, so that a consumer resuming there restores the partition's watermark exactly.
    public var maxEventTimeBefore: Int64?

    public init(partition: SourcePartition, offset: Int64, maxEventTimeBefore: Int64? = nil) {
        self.partition = partition
        self.offset = offset
        self.maxEventTimeBefore = maxEventTimeBefore
    }
}

/// The rows of one window emitted together, with the offsets the caller needs for recovery and
/// offset commits.
public struct WindowEmission: Sendable, Hashable {
    public var windowStart: Timestamp
    public var windowEnd: Timestamp
    /// One row per product whose counts changed since the window's previous emission, ordered by
    /// product.
    public var rows: [WindowRow]
    /// For each partition that fed the window, the highest offset reflected in the window's
    /// counts as of this emission. Store it with the rows: after a restart, events at or below
    /// these offsets are already counted (see ``WindowAggregator/restore(windowStart:rows:includedThrough:)``).
    public var includedThrough: [SourceOffset]
    /// For each partition, the lowest offset first reflected by this emission. Until the rows
    /// are durable, the consumer must not commit that offset or any later one.
    public var firstNewOffsets: [SourceOffset]
}

/// What happened to an ingested event.
public enum IngestResult: Sendable, Hashable {
    /// Counted in a window that has not fired yet.
    case counted
    /// Counted in a window that already fired: it will be emitted again with a higher revision.
    case lateUpdate
    /// Later than the allowed lateness: not counted. The caller reports it (dead-letter topic).
    case tooLate(windowStart: Timestamp)
    /// A previous run already counted this event and wrote it out (see `restore`): skipped.
    case alreadyCounted
    /// The window's state may exist in the durable output and must be restored with
    /// ``WindowAggregator/restore(windowStart:rows:includedThrough:)`` before this event is
    /// ingested again. Nothing was recorded.
    case needsRestore(windowStart: Timestamp)
}

/// A durable row as read back on recovery: the highest revision of a (product, window).
public struct RestoredRow: Hashable, Sendable {
    public var product: ProductID
    public var totals: WindowCounts
    public var revision: UInt32

    public init(product: ProductID, totals: WindowCounts, revision: UInt32) {
        self.product = product
        self.totals = totals
        self.revision = revision
    }
}

/// Event-time tumbling windows of impressions and clicks per product: the pure core of the
/// pipeline.
///
/// It is a state machine: the caller feeds events (``ingest(_:_:at:from:offset:)``) and the
/// passage of processing time (``advance(now:)``), and performs what comes back (write rows,
/// report too-late events, restore state). It does no I/O and reads no clock.
///
/// Rules, with the defaults of ``WindowConfiguration``:
/// - Windows are `[start, start + size)`, aligned to the Unix epoch in UTC.
/// - The watermark (see ``Watermarks``) only moves in ``advance(now:)``; the caller calls it
///   after each batch of input.
/// - ``advance(now:)`` emits every window whose end is at or below the watermark and that has
///   changes not yet emitted: first emission revision 0, each later one (late updates) +1.
/// - An event for a window whose end plus the allowed lateness is at or below the watermark is
///   too late and is not counted.
/// - A window's state is dropped once the watermark reaches its end plus the allowed lateness.
public struct WindowAggregator: Sendable {
    struct ProductState: Sendable {
        var counts: WindowCounts
        var emitted: WindowCounts
        var nextRevision: UInt32
        var isDirty: Bool
    }

    struct OpenWindow: Sendable {
        var products: [ProductID: ProductState] = [:]
        var dirtyProducts: [ProductID] = []
        /// Per partition, the lowest offset not yet emitted; `Int64.max` when none.
        var pendingFrom: [Int64]
        /// Per partition, the partition's highest event time before `pendingFrom`.
        var pendingMaxBefore: [Int64?]
        /// Per partition, the highest offset counted; -1 when none.
        var includedThrough: [Int64]
        /// Per partition, offsets at or below which a previous run already counted the events.
        var restoredThrough: [Int64]?

        init(partitionCount: Int) {
            pendingFrom = Array(repeating: .max, count: partitionCount)
            pendingMaxBefore = Array(repeating: nil, count: partitionCount)
            includedThrough = Array(repeating: -1, count: partitionCount)
        }
    }

    public let configuration: WindowConfiguration
    public let assigner: WindowAssigner
    public private(set) var watermarks: Watermarks
    var windows: [Int64: OpenWindow] = [:]
    let restoreHorizon: Int64?

    /// - Parameters:
    ///   - partitionCount: number of source partitions, numbered `0..<partitionCount`.
    ///   - now: processing time of the assignment.
    ///   - restoreThrough: windows starting at or before this time may already have durable rows
    ///     (written before a restart or rebalance); ingesting into them first asks for
    ///     ``IngestResult/needsRestore(windowStart:)``. `nil` when nothing was written before.
    public init(
        configuration: WindowConfiguration,
        partitionCount: Int,
        now: Timestamp,
        restoreThrough: Timestamp? = nil
    ) {
        self.configuration = configuration
        self.assigner = WindowAssigner(size: configuration.windowSize)
        self.watermarks = Watermarks(
            partitionCount: partitionCount,
            outOfOrderness: configuration.outOfOrderness,
            idleTimeout: configuration.idleTimeout,
            now: now
        )
        self.restoreHorizon = restoreThrough?.milliseconds
    }

    /// The pipeline watermark, `nil` until defined.
    public var watermark: Timestamp? { watermarks.current }

    /// Number of windows with state.
    public var openWindowCount: Int { windows.count }

    /// Number of (product, window) pairs with state.
    public var openProductWindowCount: Int { windows.values.reduce(0) { $0 + $1.products.count } }

    /// Counts one event of `product` with event time `time`, read from `partition` at `offset`.
    /// Offsets of one partition must be ingested in increasing order.
    public mutating func ingest(
        _ kind: EventKind,
        _ product: ProductID,
        at time: Timestamp,
        from partition: SourcePartition,
        offset: Int64,
        revenueMicros: UInt64 = 0
    ) -> IngestResult {
        let start = assigner.windowStart(for: time).milliseconds
        let end = start &+ configuration.windowSize.value
        let watermark = watermarks.current?.milliseconds
        if let watermark, end &+ configuration.allowedLateness.value <= watermark {
            watermarks.observe(time, on: partition)
            return .tooLate(windowStart: Timestamp(milliseconds: start))
        }
        guard let index = windows.index(forKey: start) else {
            if let restoreHorizon, start <= restoreHorizon {
                return .needsRestore(windowStart: Timestamp(milliseconds: start))
            }
            windows[start] = OpenWindow(partitionCount: watermarks.partitionCount)
            return ingest(kind, product, at: time, from: partition, offset: offset, revenueMicros: revenueMicros)
        }
        let maxBefore = watermarks.partitions[partition].maxEventTime
        watermarks.observe(time, on: partition)
        let counted = windows.values[index].count(kind, product, revenueMicros, from: partition, offset: offset, maxBefore: maxBefore)
        guard counted else { return .alreadyCounted }
        if let watermark, end <= watermark { return .lateUpdate }
        return .counted
    }

    /// Installs the durable state of a window read back after a restart or rebalance: for each
    /// product its highest revision, and per partition the highest offset those rows reflect.
    /// Later events at or below those offsets are reported as ``IngestResult/alreadyCounted``.
    public mutating func restore(windowStart: Timestamp, rows: [RestoredRow], includedThrough: [SourceOffset]) {
        var window = OpenWindow(partitionCount: watermarks.partitionCount)
        var restored = Array(repeating: Int64(-1), count: watermarks.partitionCount)
        for source in includedThrough where source.partition < restored.count {
            restored[source.partition] = max(restored[source.partition], source.offset)
            window.includedThrough[source.partition] = restored[source.partition]
        }
        window.restoredThrough = restored
        for row in rows {
            window.products[row.product] = ProductState(
                counts: row.totals, emitted: row.totals, nextRevision: row.revision &+ 1, isDirty: false
            )
        }
        windows[windowStart.milliseconds] = window
    }

    /// Lowest offset of `partition` whose event is counted but not yet emitted, if any, with
    /// the partition's highest event time before it.
    public func lowestPendingOffset(of partition: SourcePartition) -> SourceOffset? {
        var lowest: SourceOffset?
        for window in windows.values where window.pendingFrom[partition] < (lowest?.offset ?? .max) {
            lowest = SourceOffset(partition: partition, offset: window.pendingFrom[partition], maxEventTimeBefore: window.pendingMaxBefore[partition])
        }
        return lowest
    }

    /// Resumes the watermark of `partition` at a committed position: `maxEventTime` is the
    /// highest event time of the partition's events before that position (from the commit's
    /// metadata), so replayed events are judged against the same watermark as the first time.
    public mutating func restoreWatermark(of partition: SourcePartition, maxEventTime: Timestamp) {
        watermarks.observeEvent(maxEventTime.milliseconds, on: partition)
    }

    /// Moves processing time to `now`: updates partition idleness and the watermark, emits
    /// every window that is due (ordered by window start), and drops windows past their
    /// allowed lateness.
    public mutating func advance(now: Timestamp) -> [WindowEmission] {
        guard let watermark = watermarks.advance(now: now)?.milliseconds else { return [] }
        let size = configuration.windowSize.value
        let lateness = configuration.allowedLateness.value
        var emissions: [WindowEmission] = []
        var expired: [Int64] = []
        for index in windows.indices {
            let start = windows.keys[index]
            let end = start &+ size
            guard end <= watermark else { continue }
            if let emission = windows.values[index].emit(start: start, end: end) {
                emissions.append(emission)
            }
            if end &+ lateness <= watermark { expired.append(start) }
        }
        for start in expired { windows.removeValue(forKey: start) }
        emissions.sort { $0.windowStart < $1.windowStart }
        return emissions
    }
}

extension WindowAggregator.OpenWindow {
    /// Returns false when a previous run already counted this offset.
    mutating func count(
        _ kind: EventKind, _ product: ProductID, _ revenueMicros: UInt64, from partition: SourcePartition, offset: Int64, maxBefore: Int64?
    ) -> Bool {
        if let restoredThrough, offset <= restoredThrough[partition] { return false }
        if let index = products.index(forKey: product) {
            products.values[index].counts.add(kind, revenueMicros: revenueMicros)
            if !products.values[index].isDirty {
                products.values[index].isDirty = true
                dirtyProducts.append(product)
            }
        } else {
            var counts = WindowCounts()
            counts.add(kind, revenueMicros: revenueMicros)
            products[product] = .init(counts: counts, emitted: WindowCounts(), nextRevision: 0, isDirty: true)
            dirtyProducts.append(product)
        }
        if pendingFrom[partition] == .max {
            pendingFrom[partition] = offset
            pendingMaxBefore[partition] = maxBefore
        }
        if offset > includedThrough[partition] { includedThrough[partition] = offset }
        return true
    }

    mutating func emit(start: Int64, end: Int64) -> WindowEmission? {
        guard !dirtyProducts.isEmpty else { return nil }
        dirtyProducts.sort()
        var rows: [WindowRow] = []
        rows.reserveCapacity(dirtyProducts.count)
        for product in dirtyProducts {
            guard let index = products.index(forKey: product) else { continue }
            let state = products.values[index]
            rows.append(WindowRow(product: product, totals: state.counts, delta: state.counts - state.emitted, revision: state.nextRevision))
            products.values[index].emitted = state.counts
            products.values[index].nextRevision = state.nextRevision &+ 1
            products.values[index].isDirty = false
        }
        dirtyProducts.removeAll(keepingCapacity: false)
        var firstNew: [SourceOffset] = []
        var included: [SourceOffset] = []
        for partition in pendingFrom.indices {
            if pendingFrom[partition] != .max {
                firstNew.append(SourceOffset(partition: partition, offset: pendingFrom[partition], maxEventTimeBefore: pendingMaxBefore[partition]))
                pendingFrom[partition] = .max
                pendingMaxBefore[partition] = nil
            }
            if includedThrough[partition] >= 0 {
                included.append(SourceOffset(partition: partition, offset: includedThrough[partition]))
            }
        }
        return WindowEmission(
            windowStart: Timestamp(milliseconds: start),
            windowEnd: Timestamp(milliseconds: end),
            rows: rows,
            includedThrough: included,
            firstNewOffsets: firstNew
        )
    }
}
