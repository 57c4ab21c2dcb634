/// The names of the results table, its bookkeeping tables and the columns this version writes:
/// the one place that knows them (the migrations create them).
public enum ResultsTable {
    /// One row per window emission of a product.
    public static let results = "ctr_results_raw"
    /// One row per insert batch: what the batch reflects (consumer positions), written before
    /// the batch's rows.
    public static let batches = "ctr_batches"
    /// Fencing tokens: consumer-group generations and per-writer retry epochs.
    public static let fences = "ctr_fences"
    /// A session-scoped temporary table that holds a batch's rows until one `INSERT ... SELECT`
    /// moves them, fence checked, into ``results``.
    static let staging = "ctr_staging"

    /// The dimension columns migration 0010 creates (`String DEFAULT ''`). `--dimensions` may
    /// name any `String` column of ``results``; others are added with `ALTER TABLE`.
    public static let standardDimensions = ["campaign_id", "country", "device_type"]

    /// The columns of ``results`` written for every row, with their types, in the order of
    /// ``ResultRowEncoder``: the fixed columns, then the dimension columns in `dimensions`' order.
    public static func rowColumns(dimensions: [String] = []) -> [(name: String, type: String)] {
        fixedRowColumns + dimensions.map { ($0, "String") }
    }

    static let fixedRowColumns: [(name: String, type: String)] = [
        ("product_id", "String"),
        ("window_start", "DateTime('UTC')"),
        ("window_end", "DateTime('UTC')"),
        ("impressions", "UInt64"),
        ("clicks", "UInt64"),
        ("ctr", "Float64"),
        ("impressions_delta", "UInt64"),
        ("clicks_delta", "UInt64"),
        ("conversions", "UInt64"),
        ("conversions_delta", "UInt64"),
        ("revenue", "Decimal(18, 6)"),
        ("revenue_delta", "Decimal(18, 6)"),
        ("revision", "UInt32"),
        ("emitted_at", "DateTime('UTC')"),
        ("batch_id", "String"),
        ("unique_impression_users", "UInt64"),
        ("unique_click_users", "UInt64"),
        ("impression_user_hashes", "Array(UInt64)"),
        ("click_user_hashes", "Array(UInt64)"),
    ]

    /// Columns of ``batches``.
    static let batchColumns = [
        "batch_id", "writer", "consumer_group", "generation", "created_at", "window_end_min", "window_end_max", "rows", "partitions",
        "next_offsets",
    ]
}
