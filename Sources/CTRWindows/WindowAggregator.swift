/// A series (a product with its dimension values, see ``SeriesKey``), as a dense number handed
/// out by a ``ProductCatalog``.
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

    /// The largest revenue a window can hold: `Decimal(18, 6)`'s maximum,
    /// 999,999,999,999.999999 currency units, in micro-units.
    public static let maximumRevenueMicros: UInt64 = 999_999_999_999_999_999

    /// Whether adding `revenueMicros` keeps the revenue within ``maximumRevenueMicros``.
    @inlinable
    func canAdd(revenueMicros: UInt64) -> Bool {
        revenueMicros <= Self.maximumRevenueMicros - self.revenueMicros
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

/// Distinct users of a (series, window): the number of distinct user hashes among its counted
/// impressions and among its counted clicks.
public struct UniqueUsers: Hashable, Sendable {
    public var impressions: UInt64
    public var clicks: UInt64

    public init(impressions: UInt64 = 0, clicks: UInt64 = 0) {
        self.impressions = impressions
        self.clicks = clicks
    }
}

/// User hashes (see `StableHash`) of a (series, window), by the kind of event they were seen on.
public struct UserHashes: Hashable, Sendable {
    public var impressions: [UInt64]
    public var clicks: [UInt64]

    public init(impressions: [UInt64] = [], clicks: [UInt64] = []) {
        self.impressions = impressions
        self.clicks = clicks
    }
}

/// One output row: a series' counts in a window as of one emission.
public struct WindowRow: Hashable, Sendable {
    public var product: ProductID
    /// Cumulative counts of the window as of this emission.
    public var totals: WindowCounts
    /// Change since the previous emission of the same (series, window); equal to `totals` on
    /// revision 0. Summing the deltas of all revisions gives the final totals.
    public var delta: WindowCounts
    /// 0 for the first emission of a (series, window), then +1 for every late update.
    public var revision: UInt32
    /// Distinct users of the window as of this emission (cumulative, like ``totals``).
    public var uniqueUsers: UniqueUsers
    /// The users first seen in the window since its previous emission, in the order seen: the
    /// union over all revisions is the window's users, each once.
    public var newUsers: UserHashes

    public init(
        product: ProductID, totals: WindowCounts, delta: WindowCounts, revision: UInt32, uniqueUsers: UniqueUsers = UniqueUsers(),
        newUsers: UserHashes = UserHashes()
    ) {
        self.product = product
        self.totals = totals
        self.delta = delta
        self.revision = revision
        self.uniqueUsers = uniqueUsers
        self.newUsers = newUsers
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
    /// A previous run already counted this event and wrote it out (see
    /// ``WindowAggregator/restore(windowStart:rows:)``): skipped.
    case alreadyCounted
    /// An event with the same id and kind was already counted in the window: not counted again.
    case duplicate
    /// Counting the event's revenue would take the window's revenue beyond
    /// ``WindowCounts/maximumRevenueMicros``: not counted. The caller reports it.
    case revenueOverflow(windowStart: Timestamp)
}

/// A durable row as read back on recovery: the highest revision of a (product, window), and
/// which events of each partition that row reflects.
public struct RestoredRow: Hashable, Sendable {
    public var product: ProductID
    public var totals: WindowCounts
    public var revision: UInt32
    /// Per source partition, the first offset *not* reflected by ``totals``: every event of the
    /// (product, window) at a lower offset is already counted. `0` when nothing of the partition
    /// is reflected.
    public var reflectedBefore: [Int64]
    /// Distinct users as of that row.
    public var uniqueUsers: UniqueUsers

    public init(product: ProductID, totals: WindowCounts, revision: UInt32, reflectedBefore: [Int64], uniqueUsers: UniqueUsers = UniqueUsers()) {
        self.product = product
        self.totals = totals
        self.revision = revision
        self.reflectedBefore = reflectedBefore
        self.uniqueUsers = uniqueUsers
    }
}

/// Event-time tumbling windows of impressions and clicks per product: the pure core of the
/// pipeline.
///
/// It is a state machine: the caller feeds events (``ingest(_:_:at:from:offset:revenueMicros:)``)
/// and the passage of processing time (``advance(now:)``), and performs what comes back (write
/// rows, report too-late events). It does no I/O and reads no clock.
///
/// Rules, with the defaults of ``WindowConfiguration``:
/// - Windows are `[start, start + size)`, aligned to the Unix epoch in UTC.
/// - The watermark (see ``Watermarks``) only moves in ``advance(now:)``; the caller calls it
///   after each batch of input.
/// - ``advance(now:)`` emits every window whose end is at or below the watermark and that has
///   changes not yet emitted: first emission revision 0, each later one (late updates) +1.
/// - An event for a window whose end plus the allowed lateness is at or below the watermark is
///   too late and is not counted.
/// - A window's state is dropped once the watermark reaches its end plus the allowed lateness;
///   the products it was the last open window of are reported by ``takeReleasedProducts()``.
public struct WindowAggregator: Sendable {
    struct ProductState: Sendable {
        var counts: WindowCounts
        var emitted: WindowCounts
        var nextRevision: UInt32
        var isDirty: Bool
        /// Index into ``WindowAggregator/restoredPositions`` when the state was restored from
        /// durable rows; `.max` otherwise.
        var restoredPositions: UInt32
    }

    /// The users of one (series, window); kept only for series whose events carry a user.
    struct WindowUsers: Sendable {
        var impressions: Set<UInt64> = []
        var clicks: Set<UInt64> = []
        /// Users first seen since the last emission.
        var new = UserHashes()
        /// Distinct users of the restored row, if any: the replay below its position rebuilds
        /// the sets up to these.
        var restored = UniqueUsers()

        mutating func record(_ user: UInt64, _ kind: EventKind, isNew: Bool) {
            switch kind {
            case .impression:
                if impressions.insert(user).inserted, isNew { new.impressions.append(user) }
            case .click:
                if clicks.insert(user).inserted, isNew { new.clicks.append(user) }
            case .conversion:
                break
            }
        }

        var unique: UniqueUsers {
            UniqueUsers(
                impressions: max(restored.impressions, UInt64(impressions.count)), clicks: max(restored.clicks, UInt64(clicks.count))
            )
        }
    }

    /// The product states of one window: appended as products first appear, dropped only with
    /// the window; found through a ``HashIndex`` under the product id itself.
    struct ProductStates: Sendable {
        private var index = HashIndex()
        /// The products, in the order their states were appended.
        private(set) var ids: [ProductID] = []
        /// `states[position]` is the state of `ids[position]`; changed in place, never appended
        /// to or removed from but by ``append(_:_:)``.
        var states: [ProductState] = []

        var count: Int { ids.count }

        /// Where `product`'s state is, if the window has one.
        @inline(__always)
        func position(of product: ProductID) -> Int? {
            // The hash is the product id itself, so an equal hash is the same product.
            index.find(Int(product)) { _ in true }.map(Int.init)
        }

        /// Appends `product`'s state; the window must have none yet.
        mutating func append(_ product: ProductID, _ state: ProductState) {
            assert(position(of: product) == nil, "product \(product) already has a state in the window")
            index.insert(UInt32(ids.count), hash: Int(product))
            ids.append(product)
            states.append(state)
        }

        /// Sets `product`'s state, appending it when the window has none yet.
        mutating func set(_ product: ProductID, _ state: ProductState) {
            if let position = position(of: product) {
                states[position] = state
            } else {
                append(product, state)
            }
        }
    }

    struct OpenWindow: Sendable {
        var products = ProductStates()
        var dirtyProducts: [ProductID] = []
        /// Per partition, the lowest offset not yet emitted; `Int64.max` when none.
        var pendingFrom: [Int64]
        /// Per partition, the partition's highest event time before `pendingFrom`.
        var pendingMaxBefore: [Int64?]
        /// Users per series, for the series whose events carry one.
        var users: [ProductID: WindowUsers] = [:]
        /// Event ids (mixed with the event kind) counted in the window, when events carry one.
        var seenEvents: Set<UInt64> = []
        /// Per partition, the lowest offset of an event whose user or id the window remembers:
        /// only a replay from there rebuilds ``users`` and ``seenEvents``. `Int64.max` when none.
        var identityFrom: [Int64]
        /// Per partition, the partition's highest event time before `identityFrom`.
        var identityMaxBefore: [Int64?]

        init(partitionCount: Int) {
            pendingFrom = Array(repeating: .max, count: partitionCount)
            pendingMaxBefore = Array(repeating: nil, count: partitionCount)
            identityFrom = pendingFrom
            identityMaxBefore = pendingMaxBefore
        }
    }

    public let configuration: WindowConfiguration
    public let assigner: WindowAssigner
    public private(set) var watermarks: Watermarks
    /// The open windows by start. Adding or removing one invalidates its indices: every place
    /// that does resets ``lastWindow``.
    private(set) var windows: [Int64: OpenWindow] = [:]
    /// The window the last event was counted in, and where it is in ``windows``: consecutive
    /// events mostly fall in the same window, which is then found without hashing its start.
    private var lastWindow: (start: Int64, index: [Int64: OpenWindow].Index)?
    /// Distinct `reflectedBefore` vectors of restored rows (one per durable batch, typically).
    var restoredPositions: [[Int64]] = []
    var restoredPositionIndex: [[Int64]: UInt32] = [:]
    /// Per product, the number of open windows holding it.
    var openWindowsOfProduct: [ProductID: UInt32] = [:]
    var releasedProducts: [ProductID] = []

    /// - Parameters:
    ///   - partitionCount: number of source partitions, numbered `0..<partitionCount`.
    ///   - now: processing time of the assignment.
    public init(configuration: WindowConfiguration, partitionCount: Int, now: Timestamp) {
        self.configuration = configuration
        self.assigner = WindowAssigner(size: configuration.windowSize)
        self.watermarks = Watermarks(
            partitionCount: partitionCount,
            outOfOrderness: configuration.outOfOrderness,
            idleTimeout: configuration.idleTimeout,
            now: now
        )
    }

    /// The pipeline watermark, `nil` until defined.
    public var watermark: Timestamp? { watermarks.current }

    /// Number of windows with state.
    public var openWindowCount: Int { windows.count }

    /// Number of (product, window) pairs with state.
    public private(set) var openProductWindowCount = 0

    /// Number of distinct products held by open windows.
    public var openProductCount: Int { openWindowsOfProduct.count }

    /// Counts one event of `product` with event time `time`, read from `partition` at `offset`.
    /// Offsets of one partition must be ingested in increasing order.
    ///
    /// - Parameters:
    ///   - user: the event's user (a stable hash), counted once per (series, window) among
    ///     impressions and among clicks.
    ///   - eventID: the event's id (a stable hash): an event whose id and kind the window
    ///     already counted is a ``IngestResult/duplicate`` and is not counted.
    public mutating func ingest(
        _ kind: EventKind,
        _ product: ProductID,
        at time: Timestamp,
        from partition: SourcePartition,
        offset: Int64,
        revenueMicros: UInt64 = 0,
        user: UInt64? = nil,
        eventID: UInt64? = nil
    ) -> IngestResult {
        let start = assigner.windowStart(for: time).milliseconds
        let end = start &+ configuration.windowSize.value
        let watermark = watermarks.current?.milliseconds
        if let watermark, end &+ configuration.allowedLateness.value <= watermark {
            watermarks.observe(time, on: partition)
            return .tooLate(windowStart: Timestamp(milliseconds: start))
        }
        let maxBefore = watermarks.partitions[partition].maxEventTime
        let outcome: OpenWindow.CountOutcome
        let index: [Int64: OpenWindow].Index?
        if let lastWindow, lastWindow.start == start {
            index = lastWindow.index
        } else {
            index = windows.index(forKey: start)
            lastWindow = index.map { (start, $0) }
        }
        if let index {
            outcome = windows.values[index].count(
                kind, product, revenueMicros, user: user, eventID: eventID, from: partition, offset: offset, maxBefore: maxBefore,
                restoredPositions: restoredPositions
            )
        } else {
            var window = OpenWindow(partitionCount: watermarks.partitionCount)
            outcome = window.count(
                kind, product, revenueMicros, user: user, eventID: eventID, from: partition, offset: offset, maxBefore: maxBefore,
                restoredPositions: restoredPositions
            )
            windows[start] = window
            lastWindow = nil
        }
        switch outcome {
        case .alreadyCounted:
            watermarks.observe(time, on: partition)
            return .alreadyCounted
        case .duplicate:
            watermarks.observe(time, on: partition)
            return .duplicate
        case .revenueOverflow:
            return .revenueOverflow(windowStart: Timestamp(milliseconds: start))
        case .countedNewProduct:
            openWindowsOfProduct[product, default: 0] += 1
            openProductWindowCount += 1
        case .counted:
            break
        }
        watermarks.observe(time, on: partition)
        if let watermark, end <= watermark { return .lateUpdate }
        return .counted
    }

    /// Installs the durable state of a window read back after a restart or rebalance: for each
    /// product its highest revision and which events it reflects. A later event of the product
    /// at an offset below its row's ``RestoredRow/reflectedBefore`` is reported as
    /// ``IngestResult/alreadyCounted``; the next emission continues at revision + 1 with deltas
    /// relative to the restored totals. Call before ingesting anything into the window.
    public mutating func restore(windowStart: Timestamp, rows: [RestoredRow]) {
        var window = windows[windowStart.milliseconds] ?? OpenWindow(partitionCount: watermarks.partitionCount)
        for row in rows {
            let index: UInt32
            if let known = restoredPositionIndex[row.reflectedBefore] {
                index = known
            } else {
                index = UInt32(restoredPositions.count)
                restoredPositions.append(row.reflectedBefore)
                restoredPositionIndex[row.reflectedBefore] = index
            }
            if window.products.position(of: row.product) == nil {
                openWindowsOfProduct[row.product, default: 0] += 1
                openProductWindowCount += 1
            }
            window.products.set(
                row.product,
                ProductState(counts: row.totals, emitted: row.totals, nextRevision: row.revision &+ 1, isDirty: false, restoredPositions: index)
            )
            if row.uniqueUsers != UniqueUsers() { window.users[row.product] = WindowUsers(restored: row.uniqueUsers) }
        }
        windows[windowStart.milliseconds] = window
        lastWindow = nil
    }

    /// Lowest offset of `partition` a restart must replay from, if any, with the partition's
    /// highest event time before it: the lowest offset whose event is counted but not yet
    /// emitted, or, for windows that remember users or event ids, the lowest offset of such an
    /// event in a window still open (the replay rebuilds those sets; the counts below a
    /// restored row's position are skipped as already counted).
    public func lowestPendingOffset(of partition: SourcePartition) -> SourceOffset? {
        var lowest: SourceOffset?
        for window in windows.values {
            if window.pendingFrom[partition] < (lowest?.offset ?? .max) {
                lowest = SourceOffset(partition: partition, offset: window.pendingFrom[partition], maxEventTimeBefore: window.pendingMaxBefore[partition])
            }
            if window.identityFrom[partition] < (lowest?.offset ?? .max) {
                lowest = SourceOffset(partition: partition, offset: window.identityFrom[partition], maxEventTimeBefore: window.identityMaxBefore[partition])
            }
        }
        return lowest
    }

    /// Keeps `partition` from becoming idle until the next ``advance(now:holdEmissions:)`` (see
    /// ``Watermarks/keepActive(_:)``).
    public mutating func keepActive(_ partition: SourcePartition) {
        watermarks.keepActive(partition)
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
    ///
    /// - Parameter holdEmissions: when true, the watermark and idleness move but nothing is
    ///   emitted or dropped (recovery: the replay has not yet reached what durable rows reflect).
    public mutating func advance(now: Timestamp, holdEmissions: Bool = false) -> [WindowEmission] {
        let size = configuration.windowSize.value
        watermarks.advance(now: now)
        if let closeIdleAfter = configuration.closeIdleAfter, !holdEmissions, watermarks.partitionCount > 0,
            watermarks.quietTime(now: now) >= closeIdleAfter.value, let latest = windows.keys.max()
        {
            watermarks.raise(to: Timestamp(milliseconds: latest &+ size))
        }
        guard let watermark = watermarks.current?.milliseconds, !holdEmissions else { return [] }
        let lateness = configuration.allowedLateness.value
        var emissions: [WindowEmission] = []
        var expired: [Int64] = []
        // The due windows' starts first: iterating `windows.indices` while mutating would keep a
        // second reference to the storage, and every emitting window would copy its state.
        let due = windows.keys.filter { $0 &+ size <= watermark }
        for start in due {
            let end = start &+ size
            guard let index = windows.index(forKey: start) else { continue }
            if let emission = windows.values[index].emit(start: start, end: end) {
                emissions.append(emission)
            }
            if end &+ lateness <= watermark { expired.append(start) }
        }
        for start in expired {
            guard let window = windows.removeValue(forKey: start) else { continue }
            lastWindow = nil
            openProductWindowCount -= window.products.count
            for product in window.products.ids {
                guard let index = openWindowsOfProduct.index(forKey: product) else { continue }
                if openWindowsOfProduct.values[index] <= 1 {
                    openWindowsOfProduct.remove(at: index)
                    releasedProducts.append(product)
                } else {
                    openWindowsOfProduct.values[index] -= 1
                }
            }
        }
        if windows.isEmpty {
            restoredPositions.removeAll()
            restoredPositionIndex.removeAll()
        }
        emissions.sort { $0.windowStart < $1.windowStart }
        return emissions
    }

    /// Products that no open window holds any more since the last call: the caller may forget
    /// them (see ``ProductCatalog/release(_:)``). Emissions already returned keep their ids.
    public mutating func takeReleasedProducts() -> [ProductID] {
        defer { releasedProducts.removeAll(keepingCapacity: true) }
        return releasedProducts
    }
}

extension WindowAggregator.OpenWindow {
    enum CountOutcome { case counted, countedNewProduct, alreadyCounted, duplicate, revenueOverflow }

    mutating func count(
        _ kind: EventKind, _ product: ProductID, _ revenueMicros: UInt64, user: UInt64?, eventID: UInt64?, from partition: SourcePartition,
        offset: Int64, maxBefore: Int64?, restoredPositions: [[Int64]]
    ) -> CountOutcome {
        // The kind is part of an event's identity: a single-topic click shares its impression's id.
        let seenKey = eventID.map { $0 ^ (UInt64(kind.rawValue) &* 0x9E37_79B9_7F4A_7C15) }
        let outcome: CountOutcome
        if let position = products.position(of: product) {
            let restored = products.states[position].restoredPositions
            if restored != .max, offset < restoredPositions[Int(restored)][partition] {
                if user != nil || seenKey != nil {
                    remember(user: user, seenKey: seenKey, kind, product, isNew: false, partition: partition, offset: offset, maxBefore: maxBefore)
                }
                return .alreadyCounted
            }
            if let seenKey, seenEvents.contains(seenKey) { return .duplicate }
            guard products.states[position].counts.canAdd(revenueMicros: revenueMicros) else { return .revenueOverflow }
            products.states[position].counts.add(kind, revenueMicros: revenueMicros)
            if !products.states[position].isDirty {
                products.states[position].isDirty = true
                dirtyProducts.append(product)
            }
            outcome = .counted
        } else {
            if let seenKey, seenEvents.contains(seenKey) { return .duplicate }
            var counts = WindowCounts()
            guard counts.canAdd(revenueMicros: revenueMicros) else { return .revenueOverflow }
            counts.add(kind, revenueMicros: revenueMicros)
            products.append(
                product, WindowAggregator.ProductState(counts: counts, emitted: WindowCounts(), nextRevision: 0, isDirty: true, restoredPositions: .max)
            )
            dirtyProducts.append(product)
            outcome = .countedNewProduct
        }
        if pendingFrom[partition] == .max {
            pendingFrom[partition] = offset
            pendingMaxBefore[partition] = maxBefore
        }
        if user != nil || seenKey != nil {
            remember(user: user, seenKey: seenKey, kind, product, isNew: true, partition: partition, offset: offset, maxBefore: maxBefore)
        }
        return outcome
    }

    /// Records an event's user and id; `isNew` is false for an event a restored row already
    /// reflects (its user was written out with an earlier revision).
    mutating func remember(
        user: UInt64?, seenKey: UInt64?, _ kind: EventKind, _ product: ProductID, isNew: Bool, partition: SourcePartition, offset: Int64,
        maxBefore: Int64?
    ) {
        if let seenKey { seenEvents.insert(seenKey) }
        if let user { users[product, default: WindowAggregator.WindowUsers()].record(user, kind, isNew: isNew) }
        if identityFrom[partition] == .max {
            identityFrom[partition] = offset
            identityMaxBefore[partition] = maxBefore
        }
    }

    mutating func emit(start: Int64, end: Int64) -> WindowEmission? {
        guard !dirtyProducts.isEmpty else { return nil }
        dirtyProducts.sort()
        var rows: [WindowRow] = []
        rows.reserveCapacity(dirtyProducts.count)
        for product in dirtyProducts {
            guard let position = products.position(of: product) else { continue }
            let state = products.states[position]
            var uniqueUsers = UniqueUsers()
            var newUsers = UserHashes()
            if let usersIndex = users.index(forKey: product) {
                uniqueUsers = users.values[usersIndex].unique
                swap(&newUsers, &users.values[usersIndex].new)
            }
            rows.append(
                WindowRow(
                    product: product, totals: state.counts, delta: state.counts - state.emitted, revision: state.nextRevision,
                    uniqueUsers: uniqueUsers, newUsers: newUsers
                )
            )
            products.states[position].emitted = state.counts
            products.states[position].nextRevision = state.nextRevision &+ 1
            products.states[position].isDirty = false
        }
        dirtyProducts.removeAll(keepingCapacity: false)
        var firstNew: [SourceOffset] = []
        for partition in pendingFrom.indices where pendingFrom[partition] != .max {
            firstNew.append(SourceOffset(partition: partition, offset: pendingFrom[partition], maxEventTimeBefore: pendingMaxBefore[partition]))
            pendingFrom[partition] = .max
            pendingMaxBefore[partition] = nil
        }
        return WindowEmission(
            windowStart: Timestamp(milliseconds: start),
            windowEnd: Timestamp(milliseconds: end),
            rows: rows,
            firstNewOffsets: firstNew
        )
    }
}
