import DevBroker
import Foundation
import Ingest
import Testing

/// What the dev broker keeps of an idempotent producer's messages when Produce requests fail,
/// as the fault campaign's `dlq_unavailable` kind makes them fail (`request-errors 0 … 19`).
///
/// librdkafka 2.0.2's mock cluster checks the sequence numbers of an idempotent producer only
/// when it is transactional. With several requests of a partition in flight, a later batch is
/// appended although an earlier one was refused; librdkafka then takes the earlier batch as
/// acknowledged ("implicitly acked by subsequent batch success") and never sends it again. Its
/// messages are reported delivered and are not in the topic: the campaign's truth file counted
/// them, and the aggregator, which never saw them, looked one click short. Real Kafka refuses
/// the later batch (`OUT_OF_ORDER_SEQUENCE_NUMBER`). With one request in flight, as the
/// campaign's producer runs, nothing can overtake the refused batch.
@Suite struct DevBrokerProduceErrorTests {
    static let messages = ["first", "second", "third"]

    /// Produces ``messages`` one per request to a single partition whose broker answers after
    /// `roundTrip`, the first Produce request refused with NOT_ENOUGH_REPLICAS (retriable);
    /// returns what the topic holds afterwards.
    func produceThroughOneRefusal(maxInFlight: Int) throws -> (topic: [String], delivered: Int, failed: Int) {
        let broker = try DevBroker(brokers: 1)
        try broker.createTopic("t", partitions: 1, replicationFactor: 1)
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration([
                "bootstrap.servers": broker.bootstrapServers,
                "max.in.flight.requests.per.connection": "\(maxInFlight)",
                "batch.num.messages": "1",
                "linger.ms": "0",
            ])
        )
        #expect(try producer.partitionCount(topic: "t", timeout: .seconds(10)) == 1)
        // Answers take long enough that the later requests are sent before the refusal arrives.
        _ = try broker.apply(.setRoundTripTime(broker: 1, milliseconds: 300))
        _ = try broker.apply(.requestErrors(apiKey: 0, count: 1, errorCode: 19))
        for message in Self.messages {
            try producer.send(topic: "t", partition: 0, key: nil, value: Array(message.utf8))
        }
        try producer.flush(timeout: .seconds(30))
        _ = try broker.apply(.setRoundTripTime(broker: 1, milliseconds: 0))
        return (try readAll(broker), producer.deliveredCount, producer.failedCount)
    }

    /// Every message of topic `t` (one partition), in offset order.
    func readAll(_ broker: DevBroker) throws -> [String] {
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers, "group.id": "reader"]),
            topics: ["t"], onError: { _ in }
        )
        defer { consumer.close() }
        let partition = TopicPartition(topic: "t", partition: 0)
        var values: [String] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            consumer.poll(maxMessages: 100, timeout: .milliseconds(100)) { message in
                values.append(String(decoding: message.payload, as: UTF8.self))
            }
            for event in consumer.takeRebalanceEvents() {
                if case .assigned(let partitions, _) = event {
                    _ = try consumer.committedOffsets(partitions, timeout: .seconds(10))
                    try consumer.resume(partitions)
                }
            }
            if let high = consumer.highWatermark(partition), high > 0, values.count == Int(high) { return values }
        }
        Issue.record("did not read topic t to its end: read \(values)")
        return values
    }

    @Test func oneRequestInFlightKeepsEveryMessageThroughAProduceRefusal() throws {
        let result = try produceThroughOneRefusal(maxInFlight: 1)
        #expect(result.delivered == Self.messages.count && result.failed == 0)
        #expect(result.topic == Self.messages)
    }

    /// The flaw itself: if this starts failing, the dev broker checks sequence numbers and
    /// the campaign's one-request-in-flight setting is no longer needed.
    @Test func severalRequestsInFlightLoseTheRefusedBatchYetReportItDelivered() throws {
        let result = try produceThroughOneRefusal(maxInFlight: 5)
        #expect(result.delivered == Self.messages.count && result.failed == 0)
        #expect(result.topic == Array(Self.messages.dropFirst()))
    }
}
