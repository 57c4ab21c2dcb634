import CTRWindows
import Testing

/// Feeds random, disordered, batched streams to ``WindowAggregator`` and compares every emitted
/// row with a deliberately naive reference model that recomputes everything from the full
/// history at every batch boundary.
@Suite struct WindowAggregatorPropertyTests {
    struct Event {
        var kind: EventKind
        var product: ProductID
        var time: Int64
        var partition: Int
        var offset: Int64
    }

    struct Batch {
        var events: [Event]
        var now: Int64
    }

    struct Row: Hashable, CustomStringConvertible {
        var windowStart: Int64
        var product: ProductID
        var impressions: UInt64
        var clicks: UInt64
        var deltaImpressions: UInt64
        var deltaClicks: UInt64
        var revision: UInt32
        var description: String {
            "w\(windowStart) p\(product) \(impressions)/\(clicks) Δ\(deltaImpressions)/\(deltaClicks) r\(revision)"
        }
    }

    /// The reference: no incremental state but the emitted totals, everything else recomputed.
    struct ReferenceModel {
        let size: Int64, ooo: Int64, lateness: Int64, idle: Int64, partitions: Int
        var history: [(batch: Int, event: Event)] = []
        var counted: [Event] = []
        var emitted: [[Int64]: (impressions: UInt64, clicks: UInt64, revision: UInt32)] = [:]
        var watermark: Int64?
        var tooLate = 0

        func start(_ time: Int64) -> Int64 {
            var start = (time / size) * size
            if start > time { start -= size }
            return start
        }

        mutating func run(_ batches: [Batch]) -> [[Row]] {
            var output: [[Row]] = []
            for (number, batch) in batches.enumerated() {
                for event in batch.events {
                    history.append((number, event))
                    if let watermark, start(event.time) + size + lateness <= watermark {
                        tooLate += 1
                    } else {
                        counted.append(event)
                    }
                }
                advanceWatermark(batchNumber: number, batches: batches)
                output.append(emit())
            }
            return output
        }

        mutating func advanceWatermark(batchNumber: Int, batches: [Batch]) {
            let now = batches[batchNumber].now
            var holds = false
            var minimum: Int64?
            var maximum: Int64?
            var anyActive = false
            for partition in 0..<partitions {
                let seen = history.filter { $0.event.partition == partition }
                let maxTime = seen.map(\.event.time).max()
                if let maxTime { maximum = max(maximum ?? maxTime - ooo, maxTime - ooo) }
                let lastBatch = seen.map(\.batch).max()
                let lastActivity = lastBatch.map { batches[$0].now } ?? 0
                let activeThisBatch = lastBatch == batchNumber
                let idle = !activeThisBatch && now - lastActivity >= idle
                if idle { continue }
                anyActive = true
                if let maxTime {
                    minimum = min(minimum ?? maxTime - ooo, maxTime - ooo)
                } else {
                    holds = true
                }
            }
            let candidate: Int64? = holds ? nil : (anyActive ? minimum : maximum)
            if let candidate, candidate > (watermark ?? .min) { watermark = candidate }
        }

        mutating func emit() -> [Row] {
            guard let watermark else { return [] }
            var totals: [[Int64]: (UInt64, UInt64)] = [:]
            for event in counted where start(event.time) + size <= watermark {
                let key = [start(event.time), Int64(event.product)]
                var value = totals[key] ?? (0, 0)
                if event.kind == .impression { value.0 += 1 } else { value.1 += 1 }
                totals[key] = value
            }
            var rows: [Row] = []
            for (key, value) in totals {
                let previous = emitted[key]
                guard previous == nil || previous!.impressions != value.0 || previous!.clicks != value.1 else { continue }
                let revision = previous.map { $0.revision + 1 } ?? 0
                rows.append(Row(
                    windowStart: key[0], product: ProductID(key[1]), impressions: value.0, clicks: value.1,
                    deltaImpressions: value.0 - (previous?.impressions ?? 0), deltaClicks: value.1 - (previous?.clicks ?? 0),
                    revision: revision
                ))
                emitted[key] = (value.0, value.1, revision)
            }
            return rows.sorted { ($0.windowStart, $0.product) < ($1.windowStart, $1.product) }
        }
    }

    /// SplitMix64: deterministic, so that a failing seed can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func randomStream(seed: UInt64) -> (partitions: Int, batches: [Batch]) {
        var random = SplitMix(state: seed)
        let partitions = Int.random(in: 1...4, using: &random)
        var offsets = Array(repeating: Int64(0), count: partitions)
        var heads = Array(repeating: Int64.random(in: -30_000...30_000, using: &random), count: partitions)
        var now: Int64 = 0
        var batches: [Batch] = []
        for _ in 0..<Int.random(in: 1...40, using: &random) {
            var events: [Event] = []
            for _ in 0..<Int.random(in: 0...25, using: &random) {
                let partition = Int.random(in: 0..<partitions, using: &random)
                // Partitions progress at different speeds; some events jump far back.
                heads[partition] += Int64.random(in: 0...1_500, using: &random)
                let lag: Int64 = Int.random(in: 0..<10, using: &random) == 0
                    ? Int64.random(in: 0...25_000, using: &random) : Int64.random(in: 0...2_500, using: &random)
                let kind: EventKind = Bool.random(using: &random) ? .impression : .click
                let product = ProductID.random(in: 0...4, using: &random)
                events.append(Event(kind: kind, product: product, time: heads[partition] - lag, partition: partition, offset: offsets[partition]))
                offsets[partition] += 1
            }
            now += Int.random(in: 0..<8, using: &random) == 0 ? Int64.random(in: 20_000...40_000, using: &random) : Int64.random(in: 0...2_000, using: &random)
            batches.append(Batch(events: events, now: now))
        }
        return (partitions, batches)
    }

    @Test(arguments: 0..<400)
    func matchesTheReferenceModel(seed: Int) {
        let (partitions, batches) = Self.randomStream(seed: UInt64(seed))
        let configuration = WindowConfiguration()
        var aggregator = WindowAggregator(configuration: configuration, partitionCount: partitions, now: Timestamp(milliseconds: 0))
        var model = ReferenceModel(
            size: configuration.windowSize.value, ooo: configuration.outOfOrderness.value,
            lateness: configuration.allowedLateness.value, idle: configuration.idleTimeout.value, partitions: partitions
        )
        let expected = model.run(batches)
        var tooLate = 0
        for (number, batch) in batches.enumerated() {
            for event in batch.events {
                let result = aggregator.ingest(event.kind, event.product, at: Timestamp(milliseconds: event.time), from: event.partition, offset: event.offset)
                if case .tooLate = result { tooLate += 1 }
            }
            let actual = aggregator.advance(now: Timestamp(milliseconds: batch.now)).flatMap { emission in
                emission.rows.map {
                    Row(windowStart: emission.windowStart.milliseconds, product: $0.product, impressions: $0.totals.impressions,
                        clicks: $0.totals.clicks, deltaImpressions: $0.delta.impressions, deltaClicks: $0.delta.clicks, revision: $0.revision)
                }
            }
            #expect(actual == expected[number], "seed \(seed), batch \(number)")
        }
        #expect(tooLate == model.tooLate, "seed \(seed)")
    }

    @Test(arguments: 0..<200)
    func deltasSumToTheLastRevisionAndToTheCountedEvents(seed: Int) {
        let (partitions, batches) = Self.randomStream(seed: UInt64(10_000 + seed))
        var aggregator = WindowAggregator(configuration: WindowConfiguration(), partitionCount: partitions, now: Timestamp(milliseconds: 0))
        var countedPerKey: [[Int64]: UInt64] = [:]
        var deltaSums: [[Int64]: UInt64] = [:]
        var last: [[Int64]: (revision: UInt32, total: UInt64)] = [:]
        var rows = Set<[Int64]>()
        let assigner = WindowAssigner(size: .seconds(10))
        for batch in batches {
            for event in batch.events {
                let time = Timestamp(milliseconds: event.time)
                switch aggregator.ingest(event.kind, event.product, at: time, from: event.partition, offset: event.offset) {
                case .counted, .lateUpdate:
                    countedPerKey[[assigner.windowStart(for: time).milliseconds, Int64(event.product)], default: 0] += 1
                default:
                    break
                }
            }
            // A far-future "now" and watermark at the end flush everything.
            for emission in aggregator.advance(now: Timestamp(milliseconds: batch.now)) {
                for row in emission.rows {
                    let key = [emission.windowStart.milliseconds, Int64(row.product)]
                    #expect(rows.insert(key + [Int64(row.revision)]).inserted, "one row per (window, product, revision)")
                    deltaSums[key, default: 0] += row.delta.impressions + row.delta.clicks
                    #expect(row.revision == (last[key].map { $0.revision + 1 } ?? 0), "revisions are consecutive")
                    last[key] = (row.revision, row.totals.impressions + row.totals.clicks)
                }
            }
        }
        for (key, sum) in deltaSums {
            #expect(sum == last[key]?.total, "seed \(seed) \(key)")
            #expect(countedPerKey[key] ?? 0 >= sum)
        }
    }
}
