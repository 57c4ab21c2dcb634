import Foundation
@testable import Ingest
import TestSupport
import Testing

/// The librdkafka consumer wrapper against the dev broker (librdkafka's mock cluster in another
/// process, the real protocol): assignments arrive paused with their generation, revocations are
/// recorded, not acted on, a later member's join moves the generation on, and a partition
/// resumes at its committed offset.
@Suite(.serialized) struct KafkaConsumerIntegrationTests {
    func poll(_ consumer: KafkaConsumer, until condition: ([RebalanceEvent], Int) -> Bool) -> ([RebalanceEvent], Int) {
        var events: [RebalanceEvent] = []
        var messages = 0
        _ = eventually(timeout: 30, interval: 0) {
            messages += consumer.poll(maxMessages: 100, timeout: .milliseconds(100)) { _ in }
            events += consumer.takeRebalanceEvents()
            return condition(events, messages)
        }
        return (events, messages)
    }

    /// A dev broker whose topic `impressions` has `partitions` partitions and the messages
    /// `a`, `b`, `c` at offsets 0 to 2 of partition 0.
    func brokerWithThreeMessages(partitions: Int) throws -> DevBrokerProcess {
        let broker = try DevBrokerProcess(
            partitions: partitions, topics: "impressions", directory: try PackagePaths.temporaryDirectory("ctr-consumer")
        )
        let produced = try ChildProcess.run(
            "/usr/bin/kcat", ["-P", "-b", broker.bootstrapServers, "-t", "impressions", "-p", "0"], input: Data("a\nb\nc\n".utf8)
        )
        #expect(produced.status == 0, "\(produced.stderr)")
        return broker
    }

    @Test func assignmentsArrivePausedWithTheirGenerationAndRevocationsAreRecorded() throws {
        let broker = try brokerWithThreeMessages(partitions: 2)
        let configuration = KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers, "group.id": "wrapper"])
        let first = try KafkaConsumer(configuration: configuration, topics: ["impressions"], onError: { _ in })

        let (assigned, before) = poll(first) { events, _ in !events.isEmpty }
        guard case .assigned(let partitions, let generation) = assigned.first else {
            Issue.record("expected an assignment, got \(assigned)")
            return
        }
        #expect(partitions.map(\.description) == ["impressions:0", "impressions:1"])
        #expect(generation > 0)
        #expect(before == 0, "paused: nothing is fetched before the application resumes")
        // As the pipeline does: the committed offsets are read before the resume (see `resume`).
        _ = try first.committedOffsets(partitions, timeout: .seconds(10))
        try first.resume(partitions)
        let (_, fetched) = poll(first) { _, messages in messages >= 3 }
        #expect(fetched == 3)

        // A second member joins: the first one's partitions are revoked (recorded, not acted on)
        // and both get a new generation. The mock cluster may take a few rounds of joining to
        // settle; the wait is for both members to hold an assignment of the same generation.
        // Partition 0 has a committed offset by then, so whoever owns it next starts there.
        try first.commit([TopicPartition(topic: "impressions", partition: 0): KafkaConsumer.CommittedOffset(offset: 2)])
        let second = try KafkaConsumer(configuration: configuration, topics: ["impressions"], onError: { _ in })
        var secondEvents: [RebalanceEvent] = []
        var secondMessages = 0
        func assignedGeneration(_ event: RebalanceEvent?) -> Int32? {
            if case .assigned(_, let generation) = event { generation } else { nil }
        }
        let (events, firstMessages) = poll(first) { events, _ in
            secondMessages += second.poll(maxMessages: 100, timeout: .milliseconds(10)) { _ in }
            secondEvents += second.takeRebalanceEvents()
            return assignedGeneration(events.last).map { $0 == assignedGeneration(secondEvents.last) } ?? false
        }
        #expect(events.first == .revoked(partitions, lost: false))
        guard case .assigned(let firstPartitions, let next) = events.last,
            case .assigned(let secondPartitions, let secondGeneration) = secondEvents.last
        else {
            Issue.record("expected new assignments, got \(events) and \(secondEvents)")
            return
        }
        #expect(next > generation)
        #expect(next == secondGeneration, "members of one generation share its number")
        #expect(firstMessages + secondMessages == 0, "paused again: nothing is fetched before the application resumes")

        _ = try first.committedOffsets(firstPartitions, timeout: .seconds(10))
        _ = try second.committedOffsets(secondPartitions, timeout: .seconds(10))
        try first.resume(firstPartitions)
        try second.resume(secondPartitions)
        var payloads: [String] = []
        let collect = { (message: KafkaMessage) in payloads.append(String(decoding: message.payload, as: UTF8.self)) }
        _ = eventually(timeout: 30, interval: 0) {
            first.poll(maxMessages: 100, timeout: .milliseconds(100), collect)
            second.poll(maxMessages: 100, timeout: .milliseconds(100), collect)
            return !payloads.isEmpty
        }
        first.poll(maxMessages: 100, timeout: .milliseconds(200), collect)
        second.poll(maxMessages: 100, timeout: .milliseconds(200), collect)
        #expect(payloads == ["c"], "partition 0 resumes at its committed offset 2, partition 1 (nothing committed) at its empty start")
        second.close()
        first.close()
    }

    /// librdkafka can lose the pause of a new assignment (its fetcher start overtakes it): the
    /// messages it then fetches are held back, and the resume moves the partition back to its
    /// start (here: no committed offset, so the earliest).
    /// (librdkafka 2.0.2 also refetches from the start when a partition that is not paused is
    /// resumed, its bug #4636, so here the last check also holds without the seek back; from
    /// 2.4 on it does not, and the seek is what keeps the messages.)
    @Test func messagesFetchedDespiteThePauseAreHeldBackUntilTheResume() throws {
        let broker = try brokerWithThreeMessages(partitions: 1)
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers, "group.id": "held"]),
            topics: ["impressions"], onError: { _ in }
        )
        defer { consumer.close() }
        let (events, _) = poll(consumer) { events, _ in !events.isEmpty }
        guard case .assigned(let partitions, _) = events.first else {
            Issue.record("expected an assignment, got \(events)")
            return
        }

        consumer.liftPauseInsideLibrdkafka(partitions)
        let (_, early) = poll(consumer) { _, _ in !consumer.heldBack.isEmpty }
        #expect(consumer.heldBack == [partitions[0]], "librdkafka fetched despite the pause")
        #expect(early == 0, "held back: nothing is handed over before the resume")

        _ = try consumer.committedOffsets(partitions, timeout: .seconds(10))
        try consumer.resume(partitions)
        var payloads: [String] = []
        _ = eventually(timeout: 30, interval: 0) {
            consumer.poll(maxMessages: 100, timeout: .milliseconds(100)) { payloads.append(String(decoding: $0.payload, as: UTF8.self)) }
            return payloads.count >= 3
        }
        consumer.poll(maxMessages: 100, timeout: .milliseconds(200)) { payloads.append(String(decoding: $0.payload, as: UTF8.self)) }
        #expect(payloads == ["a", "b", "c"], "the resume moves the partition back to its start")
        #expect(consumer.heldBack.isEmpty)
    }
}
