import ClickHouseHTTP
import ClickHouseSink
import CTRWindows
import EventDecoding
import Ingest
import Testing

@testable import CTRPipeline

/// Drives ``PipelineStateMachine`` through random interleavings of consumed messages, polls,
/// sink completions, commits that fail, crashes (state lost, queued batches of the dead
/// instance written late as stragglers), clean rebalances and restarts, against the in-memory
/// results store; then checks the store against a reference that simply counts every event:
/// every (series, window) has one row per revision, its highest revision carries the true
/// counts and the exact number of distinct users, its deltas sum to the counts, the users its
/// revisions report as new are each user once, and a producer's retry (same event id) is never
/// counted.
@Suite struct PipelineStateMachinePropertyTests {
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

    struct Message {
        var product: String
        var country: String
        var time: Int64
        var user: UInt64?
        var id: UInt64
    }

    /// One aggregator process: its machine and its sink queue.
    struct Instance {
        var machine: PipelineStateMachine
        var fetch: [TopicPartition: Int64] = [:]
        var paused: Set<TopicPartition> = []
        var queue: [ResultBatch] = []
    }

    static let topics = ["impressions", "clicks"]
    static let partitionCount: Int32 = 3

    struct World {
        var random: SplitMix
        var log: [TopicPartition: [Message]] = [:]
        var committed: [TopicPartition: KafkaConsumer.CommittedOffset] = [:]
        var generation: Int32 = 0
        var now: Int64 = 1_700_000_000_000
        let store = InMemoryResultsStore(consumerGroup: "g")
        var instance: Instance?
        var stragglers: [ResultBatch] = []
        var writers = 0

        var partitions: [TopicPartition] {
            PipelineStateMachinePropertyTests.topics.flatMap { topic in
                (0..<PipelineStateMachinePropertyTests.partitionCount).map { TopicPartition(topic: topic, partition: $0) }
            }
        }

        mutating func makeMachine() -> PipelineStateMachine {
            writers += 1
            return PipelineStateMachine(
                configuration: .init(
                    windows: WindowConfiguration(), batchMaxRows: 7, batchMaxDelay: Milliseconds(40), bufferMaxRows: 60,
                    commitInterval: Milliseconds(30), writer: "w\(writers)",
                    topics: [("impressions", .kind(.impression)), ("clicks", .kind(.click))]
                )
            )
        }

        /// A new generation gives every partition to a fresh instance (after a crash) or to the
        /// same one (a clean rebalance).
        mutating func assign(fresh: Bool) {
            generation += 1
            if fresh || instance == nil {
                instance = Instance(machine: makeMachine())
            } else {
                perform(instance!.machine.revoked(lost: false))
            }
            instance!.paused = Set(partitions)
            perform(instance!.machine.assigned(partitions, generation: generation, now: Timestamp(milliseconds: now)))
        }

        mutating func perform(_ actions: [PipelineStateMachine.Action]) {
            for action in actions {
                switch action {
                case .recover(let generation, let partitions):
                    try! store.fence(group: "g", generation: generation) { false }
                    for partition in partitions { instance!.fetch[partition] = committed[partition]?.offset ?? 0 }
                    perform(instance!.machine.committedOffsetsRead(committed.filter { partitions.contains($0.key) }, now: Timestamp(milliseconds: now)))
                case .restore(let request):
                    perform(instance!.machine.restored(try! store.restore(request), now: Timestamp(milliseconds: now)))
                case .resume(let partitions):
                    instance!.paused.subtract(partitions)
                case .pause(let partitions):
                    instance!.paused.formUnion(partitions)
                case .submit(let batch):
                    instance!.queue.append(batch)
                case .cancelBatches(let generation):
                    instance!.queue.removeAll { $0.generation < generation }
                case .commit(let offsets):
                    if Int.random(in: 0..<10, using: &random) == 0 {
                        instance!.machine.commitFailed()
                    } else {
                        committed.merge(offsets) { _, new in new }
                        instance!.machine.commitSucceeded()
                    }
                case .fail(let error):
                    Issue.record("the machine failed: \(error)")
                case .seek, .notice:
                    Issue.record("no --start-from here: \(action)")
                }
            }
        }

        mutating func deliver() {
            guard var instance, let partition = partitions.filter({ !instance.paused.contains($0) }).randomElement(using: &random) else { return }
            let messages = log[partition] ?? []
            var position = instance.fetch[partition] ?? 0
            let count = Int.random(in: 1...20, using: &random)
            while position < Int64(messages.count) && position < (instance.fetch[partition] ?? 0) + Int64(count) {
                let message = messages[Int(position)]
                let verdict = instance.machine.consumed(
                    topicIndex: PipelineStateMachinePropertyTests.topics.firstIndex(of: partition.topic)!, partition: partition.partition,
                    offset: position,
                    .success(
                        DecodedEvent(
                            productID: message.product, timestamp: Timestamp(milliseconds: message.time), dimensions: [message.country],
                            user: message.user, eventID: message.id
                        )
                    )
                )
                #expect(verdict == .handled, "in-order partitions never produce too-late events")
                position += 1
            }
            instance.fetch[partition] = position
            self.instance = instance
        }

        mutating func poll(advancing milliseconds: Int64) {
            now += milliseconds
            guard instance != nil else { return }
            let buffered = instance!.queue.reduce(0) { $0 + $1.rowCount }
            // An empty poll with no backlog submits the open batch early: sometimes say so.
            let pollWasEmpty = Bool.random(using: &random)
            perform(instance!.machine.pollFinished(.init(now: Timestamp(milliseconds: now), sinkBufferedRows: buffered, pollWasEmpty: pollWasEmpty)))
        }

        mutating func writeOne() {
            guard instance != nil, !instance!.queue.isEmpty else { return }
            let batch = instance!.queue.removeFirst()
            let completion: SinkCompletion
            switch try! store.write(batch, onRetry: { _ in }) {
            case .written(let report): completion = .written(sequence: batch.sequence, report: report)
            case .fenced: completion = .fenced(sequence: batch.sequence)
            }
            perform(instance!.machine.batchCompleted(completion))
        }
    }

    @Test(arguments: 0..<150)
    func everyEventCountsOnceWhateverFails(seed: UInt64) {
        var world = World(random: SplitMix(state: seed))
        // The stream: per product, impressions and clicks on the product's partition of each
        // topic, in event-time order per partition, over about two minutes of event time.
        let products = (0..<12).map { "p\($0)" }
        var truth: [String: (impressions: UInt64, clicks: UInt64)] = [:]
        var users: [String: (impressions: Set<UInt64>, clicks: Set<UInt64>)] = [:]
        var time = world.now - 100_000
        var retries: [(TopicPartition, Message)] = []
        for index in 0..<600 {
            time += Int64.random(in: 0...400, using: &world.random)
            let product = products.randomElement(using: &world.random)!
            let isClick = Int.random(in: 0..<5, using: &world.random) == 0
            let partition = TopicPartition(topic: isClick ? "clicks" : "impressions", partition: Int32(Int(product.dropFirst())! % 3))
            let user = Int.random(in: 0..<4, using: &world.random) == 0 ? nil : UInt64.random(in: 1...30, using: &world.random)
            let message = Message(
                product: product, country: ["", "DE", "US"].randomElement(using: &world.random)!, time: time, user: user, id: UInt64(index)
            )
            // A producer's retry of an earlier message lands a little later in the same partition.
            if let retry = retries.first, retry.1.time / 10_000 == time / 10_000, Bool.random(using: &world.random) {
                world.log[retry.0, default: []].append(retry.1)
                retries.removeFirst()
            }
            world.log[partition, default: []].append(message)
            if Int.random(in: 0..<12, using: &world.random) == 0 { retries.append((partition, message)) }
            let key = "\(product)/\(message.country)/\(time / 10_000)"
            if isClick { truth[key, default: (0, 0)].clicks += 1 } else { truth[key, default: (0, 0)].impressions += 1 }
            if let user {
                if isClick { users[key, default: ([], [])].clicks.insert(user) } else { users[key, default: ([], [])].impressions.insert(user) }
            }
        }

        world.assign(fresh: true)
        for _ in 0..<400 {
            switch Int.random(in: 0..<100, using: &world.random) {
            case 0..<45: world.deliver()
            case 45..<70: world.poll(advancing: Int64.random(in: 1...60, using: &world.random))
            case 70..<92: world.writeOne()
            case 92..<95:
                // kill -9: state and queue lost; the queue's batches may still reach the server.
                world.stragglers += world.instance?.queue ?? []
                world.assign(fresh: true)
            case 95..<97: world.assign(fresh: false)
            default:
                if !world.stragglers.isEmpty {
                    let batch = world.stragglers.removeFirst()
                    #expect(try! world.store.write(batch, onRetry: { _ in }) == .fenced, "a deposed writer's batch never lands")
                }
            }
        }
        // Drain: read everything, let every partition go idle so every window fires, write all.
        for _ in 0..<200 { world.deliver() }
        for _ in 0..<6 {
            world.poll(advancing: 1)
            while !(world.instance?.queue.isEmpty ?? true) { world.writeOne() }
            for _ in 0..<50 { world.deliver() }
        }
        for _ in 0..<4 {
            world.poll(advancing: 31_000)
            while !(world.instance?.queue.isEmpty ?? true) { world.writeOne() }
        }
        for batch in world.stragglers { _ = try! world.store.write(batch, onRetry: { _ in }) }

        var latest: [String: (revision: UInt32, impressions: UInt64, clicks: UInt64, users: UniqueUsers)] = [:]
        var deltas: [String: (impressions: UInt64, clicks: UInt64)] = [:]
        var newUsers: [String: (impressions: [UInt64], clicks: [UInt64])] = [:]
        var seen: Set<String> = []
        for stored in world.store.rows {
            let row = stored.row
            let key = "\(row.productID)/\(row.dimensions.joined())/\(row.windowStart.milliseconds / 10_000)"
            #expect(seen.insert("\(key)/\(row.revision)").inserted, "one row per (series, window, revision): \(key) r\(row.revision)")
            if (latest[key]?.revision ?? 0) <= row.revision || latest[key] == nil {
                latest[key] = (row.revision, row.totals.impressions, row.totals.clicks, row.uniqueUsers)
            }
            deltas[key, default: (0, 0)].impressions += row.delta.impressions
            deltas[key, default: (0, 0)].clicks += row.delta.clicks
            newUsers[key, default: ([], [])].impressions += row.newUsers.impressions
            newUsers[key, default: ([], [])].clicks += row.newUsers.clicks
        }
        // With every partition idle the watermark is the newest event time minus the
        // out-of-orderness: windows ending after it stay open.
        let closedBefore = (time - 2_000) / 10_000
        truth = truth.filter { Int64($0.key.split(separator: "/").last!)! < closedBefore }
        latest = latest.filter { Int64($0.key.split(separator: "/").last!)! < closedBefore }
        #expect(Set(latest.keys) == Set(truth.keys), "every closed window with events has rows, and no other")

        for (key, expected) in truth {
            #expect(latest[key]?.impressions == expected.impressions && latest[key]?.clicks == expected.clicks, "latest revision of \(key)")
            #expect(deltas[key]?.impressions == expected.impressions && deltas[key]?.clicks == expected.clicks, "deltas of \(key)")
            let expectedUsers = users[key] ?? ([], [])
            #expect(
                latest[key]?.users == UniqueUsers(impressions: UInt64(expectedUsers.impressions.count), clicks: UInt64(expectedUsers.clicks.count)),
                "distinct users of \(key)"
            )
            #expect(newUsers[key]?.impressions.sorted() == expectedUsers.impressions.sorted(), "each user of \(key) reported new once")
            #expect(newUsers[key]?.clicks.sorted() == expectedUsers.clicks.sorted(), "each clicking user of \(key) reported new once")
        }
    }
}
