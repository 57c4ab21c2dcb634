import ClickHouseHTTP
import CTRWindows

/// The latest durable row of a (series, window), as read back when partitions are assigned,
/// with which events it reflects.
public struct StoredWindowRow: Sendable, Hashable {
    public var productID: String
    /// Values of the store's dimension columns, in their order.
    public var dimensions: [String]
    public var windowStart: Timestamp
    public var totals: WindowCounts
    public var revision: UInt32
    /// Per `topic:partition`, the first offset the row does not reflect: every event of the
    /// (product, window) from that partition at a lower offset is counted in ``totals``.
    public var reflectedBefore: [String: Int64]
    /// Distinct users as of that row.
    public var uniqueUsers: UniqueUsers

    public init(
        productID: String, dimensions: [String] = [], windowStart: Timestamp, totals: WindowCounts, revision: UInt32,
        reflectedBefore: [String: Int64], uniqueUsers: UniqueUsers = UniqueUsers()
    ) {
        self.productID = productID
        self.dimensions = dimensions
        self.uniqueUsers = uniqueUsers
        self.windowStart = windowStart
        self.totals = totals
        self.revision = revision
        self.reflectedBefore = reflectedBefore
    }
}

/// Which durable windows a new owner of `partitions` reads back before it consumes.
public struct RestoreRequest: Sendable, Hashable {
    /// `topic:partition` of every assigned partition: rows that reflect none of them belong to
    /// other instances' products and are not returned.
    public var partitions: [String]
    /// Windows ending after this time may still receive events (derived from the committed
    /// positions' event times); `nil` when no partition has a committed position with an event
    /// time.
    public var windowEndAfter: Timestamp?
    /// Partitions without a committed event time: windows written from any batch that reflects
    /// them are read back too, however old.
    public var partitionsWithoutHistory: [String]

    public init(partitions: [String], windowEndAfter: Timestamp?, partitionsWithoutHistory: [String]) {
        self.partitions = partitions
        self.windowEndAfter = windowEndAfter
        self.partitionsWithoutHistory = partitionsWithoutHistory
    }
}

/// What became of a batch handed to ``ResultsStore/write(_:onRetry:)``.
public enum WriteOutcome: Sendable, Equatable {
    /// The rows are durable.
    case written(InsertReport)
    /// A later consumer-group generation fenced the batch's writer: nothing was written, and
    /// the batch's events belong to the partitions' new owner.
    case fenced
}

/// A failure of the results store that the pipeline cannot work around.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public var underlying: ClickHouseError?

    public init(_ description: String, underlying: ClickHouseError? = nil) {
        self.description = description
        self.underlying = underlying
    }
}

/// The one owner of the results table `ctr_results_raw` and its bookkeeping tables
/// (`ctr_batches`: provenance once per batch; `ctr_fences`: writer fencing): writes batches so
/// that each lands exactly once, fences deposed writers, and reads windows back on recovery.
///
/// Calls block; an instance is used by one thread at a time.
public protocol ResultsStore: AnyObject {
    /// Checks that the tables exist with the columns this version writes.
    func checkSchema() throws(StoreError)

    /// Fences every writer of consumer group `group` whose generation is below `generation`:
    /// from now on their inserts write nothing. Then waits until no insert of another writer
    /// that could have passed its fence check is still running, so that what is read back
    /// afterwards cannot change. `shouldStop` ends the wait early.
    func fence(group: String, generation: Int32, shouldStop: () -> Bool) throws(StoreError)

    /// The latest row of every (product, window) the request covers.
    func restore(_ request: RestoreRequest) throws(StoreError) -> [StoredWindowRow]

    /// Writes `batch` exactly once, retrying as the store's policy says.
    func write(_ batch: ResultBatch, onRetry: (ClickHouseError) -> Void) throws(SinkError) -> WriteOutcome
}
