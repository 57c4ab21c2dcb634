import CRdKafka
import DevBroker
import EventDecoding
import Foundation
import Ingest
import Testing

@testable import CTRPipeline

func letter(_ offset: Int64, partition: Int32 = 0, value: [UInt8] = Array("{}".utf8), key: [UInt8] = Array("p".utf8)) -> DeadLetter {
    DeadLetter(
        value: value, key: key, reason: .notJSON, detail: "expected '{'", source: TopicPartition(topic: "impressions", partition: partition),
        offset: offset
    )
}

extension [(String, [UInt8])] {
    subscript(header name: String) -> String? {
        last { $0.0 == name }.map { String(decoding: $0.1, as: UTF8.self) }
    }
}

// MARK: Pure parts

@Suite struct DeadLetterEncodingTests {
    @Test func lettersThatFitAreWrittenUnchanged() {
        let encoded = letter(7, value: Array(repeating: 0x41, count: 1000)).encoded(maximumBytes: 1_000_000)
        #expect(!encoded.isTruncated)
        #expect(encoded.value.count == 1000 && encoded.key == Array("p".utf8))
        #expect(encoded.headers[header: "ctr-truncated"] == nil)
        #expect(encoded.headers[header: "ctr-source-offset"] == "7")
    }

    @Test func lettersThatDoNotFitAreTruncatedWithHeadersSayingSo() {
        let original = letter(9, value: Array(repeating: 0x41, count: 999_950), key: Array(repeating: 0x4B, count: 100))
        let encoded = original.encoded(maximumBytes: 1_000_000)
        #expect(encoded.isTruncated)
        #expect(encoded.headers[header: "ctr-truncated"] == "true")
        #expect(encoded.headers[header: "ctr-original-size"] == "999950")
        #expect(encoded.headers[header: "ctr-original-key-size"] == "100")
        #expect(encoded.headers[header: "ctr-source-topic"] == "impressions")
        #expect(encoded.headers[header: "ctr-source-partition"] == "0")
        #expect(encoded.headers[header: "ctr-source-offset"] == "9")
        #expect(encoded.key?.count == 100)
        let size = (encoded.key?.count ?? 0) + encoded.value.count + DeadLetter.size(of: encoded.headers)
        #expect(size <= 1_000_000)
        #expect(encoded.value == Array(original.value.prefix(encoded.value.count)))
        #expect(encoded.value.count > 990_000)
    }

    @Test func hugeKeysAndTinyLimitsStillFit() {
        let original = letter(1, value: Array(repeating: 1, count: 5000), key: Array(repeating: 2, count: 5000))
        for limit in [4096, 1024, 300, 0] {
            let encoded = original.encoded(maximumBytes: limit)
            #expect(encoded.isTruncated)
            let size = (encoded.key?.count ?? 0) + encoded.value.count + DeadLetter.size(of: encoded.headers) + DeadLetter.encodingSlack
            #expect(size <= max(limit, DeadLetter.size(of: encoded.headers) + DeadLetter.encodingSlack))
        }
    }

    @Test func longDetailsAreCutAtACharacterBoundary() {
        var long = letter(1)
        long.detail = String(repeating: "é", count: 600)
        let detail = long.headers[header: "ctr-detail"]!
        #expect(detail.utf8.count == DeadLetter.maximumDetailBytes)
        #expect(detail == String(repeating: "é", count: 512))
    }
}

@Suite struct DeadLetterLedgerTests {
    let start = ContinuousClock.now
    let impressions0 = TopicPartition(topic: "impressions", partition: 0)
    let impressions1 = TopicPartition(topic: "impressions", partition: 1)

    @Test func theLowestUnacknowledgedOffsetHoldsUntilTheBrokerAcknowledges() {
        var ledger = DeadLetterLedger()
        let a = ledger.accept(letter(10), maximumBytes: 1000, now: start)
        let b = ledger.accept(letter(12), maximumBytes: 1000, now: start)
        let c = ledger.accept(letter(3, partition: 1), maximumBytes: 1000, now: start)
        #expect(ledger.due(now: start) == [a, b, c])
        for id in [a, b, c] { ledger.sent(id) }
        #expect(ledger.due(now: start + .seconds(60)).isEmpty)
        #expect(ledger.lowestUnacknowledged(of: impressions0) == 10)
        ledger.delivered(b)
        #expect(ledger.lowestUnacknowledged(of: impressions0) == 10)
        ledger.delivered(a)
        #expect(ledger.lowestUnacknowledged(of: impressions0) == nil)
        #expect(ledger.lowestUnacknowledged(of: impressions1) == 3)
        ledger.delivered(a)
        #expect(ledger.count == 1)
    }

    @Test func failedDeliveriesAreRetriedWithBackoffAndNeverDropped() {
        var ledger = DeadLetterLedger(retryBackoff: .milliseconds(100), maximumRetryBackoff: .milliseconds(350))
        let id = ledger.accept(letter(5), maximumBytes: 1000, now: start)
        var now = start
        var delays: [Duration] = []
        for _ in 0..<4 {
            ledger.sent(id)
            ledger.failed(id, tooLarge: false, now: now)
            #expect(ledger.lowestUnacknowledged(of: impressions0) == 5)
            guard case .waiting(let notBefore) = ledger.entries[id]?.state else {
                Issue.record("not waiting")
                return
            }
            delays.append(notBefore - now)
            #expect(ledger.due(now: notBefore - .milliseconds(1)).isEmpty)
            #expect(ledger.due(now: notBefore) == [id])
            now = notBefore
        }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(350), .milliseconds(350)])
        // A stale report for a letter already waiting changes nothing.
        ledger.failed(id, tooLarge: true, now: now)
        #expect(ledger.entries[id]?.maximumBytes == 1000)
    }

    @Test func lettersRefusedAsTooLargeShrink() {
        var ledger = DeadLetterLedger()
        let id = ledger.accept(letter(5), maximumBytes: 5000, now: start)
        var sizes: [Int] = []
        for _ in 0..<4 {
            ledger.sent(id)
            ledger.failed(id, tooLarge: true, now: start)
            sizes.append(ledger.entries[id]!.maximumBytes)
        }
        #expect(sizes == [2500, 1250, 1024, 1024])
    }

    @Test func forgottenPartitionsReleaseTheirLetters() {
        var ledger = DeadLetterLedger()
        let a = ledger.accept(letter(1, value: [1, 2, 3]), maximumBytes: 1000, now: start)
        _ = ledger.accept(letter(2, partition: 1, value: [1]), maximumBytes: 1000, now: start)
        ledger.sent(a)
        ledger.forget([impressions0])
        #expect(ledger.count == 1 && ledger.bytes == 2)
        #expect(ledger.lowestUnacknowledged(of: impressions0) == nil)
        ledger.delivered(a)
        ledger.failed(a, tooLarge: false, now: start)
        #expect(ledger.count == 1)
    }
}

// MARK: Against the dev broker

/// Reads every message of a topic from the beginning (librdkafka's simple consumer), with headers.
final class TopicReader {
    struct Message {
        var partition: Int32
        var offset: Int64
        var key: [UInt8]
        var value: [UInt8]
        var headers: [(String, [UInt8])]
    }

    private let handle: OpaquePointer
    private let topic: OpaquePointer
    private let partitions: Int32

    init(bootstrap: String, topic name: String, partitions: Int32) throws {
        let conf = try KafkaConfiguration(["bootstrap.servers": bootstrap]).makeNativeConfiguration()
        var errorBuffer = [CChar](repeating: 0, count: 512)
        handle = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errorBuffer, errorBuffer.count)!
        topic = rd_kafka_topic_new(handle, name, nil)!
        self.partitions = partitions
        for partition in 0..<partitions { rd_kafka_consume_start(topic, partition, Int64(RD_KAFKA_OFFSET_BEGINNING)) }
    }

    deinit {
        for partition in 0..<partitions { rd_kafka_consume_stop(topic, partition) }
        rd_kafka_topic_destroy(topic)
        rd_kafka_destroy(handle)
    }

    /// Reads until `count` messages arrived in total or 60 s passed; returns all read so far.
    func read(atLeast count: Int, into messages: inout [Message]) {
        let deadline = ContinuousClock.now + .seconds(60)
        while messages.count < count && ContinuousClock.now < deadline {
            for partition in 0..<partitions {
                guard let message = rd_kafka_consume(topic, partition, 20) else { continue }
                defer { rd_kafka_message_destroy(message) }
                guard message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
                var headers: [(String, [UInt8])] = []
                var native: OpaquePointer?
                if rd_kafka_message_headers(message, &native) == RD_KAFKA_RESP_ERR_NO_ERROR, let native {
                    var index = 0
                    var name: UnsafePointer<CChar>?
                    var value: UnsafeRawPointer?
                    var size = 0
                    while rd_kafka_header_get_all(native, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                        headers.append((String(cString: name!), value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []))
                        index += 1
                    }
                }
                func bytes(_ pointer: UnsafeMutableRawPointer?, _ count: Int) -> [UInt8] {
                    pointer.map { Array(UnsafeRawBufferPointer(start: $0, count: count)) } ?? []
                }
                messages.append(
                    Message(
                        partition: partition, offset: message.pointee.offset, key: bytes(message.pointee.key, message.pointee.key_len),
                        value: bytes(message.pointee.payload, message.pointee.len), headers: headers
                    )
                )
            }
        }
    }
}

/// Polls `condition` (driving `publisher`) until it holds or 60 s pass.
func waitUntil(_ publisher: KafkaDeadLetterPublisher, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
        publisher.poll()
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.02)
    }
    return condition()
}

@Suite(.serialized) struct DeadLetterPublisherIntegrationTests {
    static let produceAPIKey = 0

    func broker() throws -> DevBroker {
        let broker = try DevBroker(brokers: 3)
        try broker.createTopic("ctr-dlq", partitions: 2, replicationFactor: 3)
        return broker
    }

    func publisher(_ broker: DevBroker, _ extra: [String: String] = [:], maximumUnacknowledged: Int = 10_000) throws -> KafkaDeadLetterPublisher {
        var properties = ["bootstrap.servers": broker.bootstrapServers, "group.id": "ignored-by-the-producer"]
        properties.merge(extra) { $1 }
        return try KafkaDeadLetterPublisher(
            configuration: KafkaConfiguration(properties), topic: "ctr-dlq", retryBackoff: .milliseconds(50),
            maximumRetryBackoff: .milliseconds(200), maximumUnacknowledged: maximumUnacknowledged
        )
    }

    @Test func aLetterLargerThanTheProducerAllowsIsTruncatedAndDelivered() throws {
        let broker = try broker()
        let publisher = try publisher(broker)
        let big = letter(41, value: Array(repeating: 0x7A, count: 999_950))
        publisher.publish(big)
        publisher.publish(letter(42))
        #expect(publisher.lowestUnacknowledged(of: big.source) == 41)
        try publisher.flush(timeout: .seconds(60))
        #expect(publisher.lowestUnacknowledged(of: big.source) == nil)
        #expect(publisher.truncatedCount == 1)
        var messages: [TopicReader.Message] = []
        try TopicReader(bootstrap: broker.bootstrapServers, topic: "ctr-dlq", partitions: 2).read(atLeast: 2, into: &messages)
        let truncated = try #require(messages.first { $0.headers[header: "ctr-source-offset"] == "41" })
        #expect(truncated.headers[header: "ctr-truncated"] == "true")
        #expect(truncated.headers[header: "ctr-original-size"] == "999950")
        #expect(truncated.headers[header: "ctr-reason"] == "not_json")
        #expect(truncated.value.count < 1_000_000 && truncated.value.allSatisfy { $0 == 0x7A })
        let small = try #require(messages.first { $0.headers[header: "ctr-source-offset"] == "42" })
        #expect(small.headers[header: "ctr-truncated"] == nil && small.value == Array("{}".utf8) && small.key == Array("p".utf8))
    }

    @Test func failedDeliveriesAreRepublishedUntilAcknowledged() throws {
        let broker = try broker()
        let publisher = try publisher(broker, ["retries": "0"])
        // TOPIC_AUTHORIZATION_FAILED (29) is permanent: librdkafka fails the messages at once.
        _ = try broker.apply(.requestErrors(apiKey: Self.produceAPIKey, count: 3, errorCode: 29))
        for offset in Int64(100)..<110 { publisher.publish(letter(offset)) }
        #expect(waitUntil(publisher) { publisher.failedDeliveryCount > 0 })
        try publisher.flush(timeout: .seconds(60))
        #expect(publisher.unacknowledgedCount == 0)
        var messages: [TopicReader.Message] = []
        try TopicReader(bootstrap: broker.bootstrapServers, topic: "ctr-dlq", partitions: 2).read(atLeast: 10, into: &messages)
        #expect(Set(messages.compactMap { $0.headers[header: "ctr-source-offset"] }) == Set((100..<110).map(String.init)))
    }

    @Test func aBrokerRefusingTheSizeMakesTheLetterShrink() throws {
        let broker = try broker()
        let publisher = try publisher(broker, ["retries": "0"])
        // MESSAGE_TOO_LARGE (10) from the broker, twice: the letter is cut to a half, then a quarter.
        _ = try broker.apply(.requestErrors(apiKey: Self.produceAPIKey, count: 2, errorCode: 10))
        publisher.publish(letter(7, value: Array(repeating: 0x41, count: 900_000)))
        try publisher.flush(timeout: .seconds(60))
        var messages: [TopicReader.Message] = []
        try TopicReader(bootstrap: broker.bootstrapServers, topic: "ctr-dlq", partitions: 2).read(atLeast: 1, into: &messages)
        let message = try #require(messages.first)
        #expect(message.headers[header: "ctr-truncated"] == "true")
        #expect(message.headers[header: "ctr-original-size"] == "900000")
        #expect(message.value.count > 200_000 && message.value.count <= 250_000)
    }

    @Test func anUnreachableTopicNeitherBlocksNorLosesLetters() throws {
        let broker = try broker()
        let publisher = try publisher(
            broker, ["message.timeout.ms": "1000", "queue.buffering.max.messages": "5"], maximumUnacknowledged: 20
        )
        for id in 1...3 { _ = try broker.apply(.brokerDown(id)) }
        // Publishing returns although librdkafka's queue holds only 5 messages.
        for offset in Int64(0)..<30 { publisher.publish(letter(offset, partition: Int32(offset % 2))) }
        #expect(publisher.unacknowledgedCount == 30)
        #expect(publisher.isFull)
        #expect(throws: DeadLetterError.self) { try publisher.flush(timeout: .milliseconds(100)) }
        // Deliveries time out after message.timeout.ms and are sent again; nothing is acknowledged meanwhile.
        #expect(waitUntil(publisher) { publisher.failedDeliveryCount >= 5 })
        #expect(publisher.lowestUnacknowledged(of: TopicPartition(topic: "impressions", partition: 0)) == 0)
        #expect(publisher.lowestUnacknowledged(of: TopicPartition(topic: "impressions", partition: 1)) == 1)
        for id in 1...3 { _ = try broker.apply(.brokerUp(id)) }
        try publisher.flush(timeout: .seconds(60))
        #expect(!publisher.isFull)
        #expect(publisher.lowestUnacknowledged(of: TopicPartition(topic: "impressions", partition: 0)) == nil)
        var messages: [TopicReader.Message] = []
        try TopicReader(bootstrap: broker.bootstrapServers, topic: "ctr-dlq", partitions: 2).read(atLeast: 30, into: &messages)
        #expect(Set(messages.compactMap { $0.headers[header: "ctr-source-offset"] }) == Set((0..<30).map(String.init)))
    }

    @Test func aFullProducerQueueThrowsInsteadOfWaitingForever() throws {
        let broker = try broker()
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(["bootstrap.servers": broker.bootstrapServers, "queue.buffering.max.messages": "3"])
        )
        for id in 1...3 { _ = try broker.apply(.brokerDown(id)) }
        for _ in 0..<3 { try producer.send(topic: "ctr-dlq", key: nil, value: [1]) }
        do {
            try producer.send(topic: "ctr-dlq", key: nil, value: [1], queueFullTimeout: .milliseconds(200))
            Issue.record("a full queue was accepted")
        } catch {
            #expect(error.isQueueFull)
        }
        for id in 1...3 { _ = try broker.apply(.brokerUp(id)) }
        try producer.flush(timeout: .seconds(60))
        #expect(producer.deliveredCount == 3 && producer.failedCount == 0)
    }

    @Test func forgottenPartitionsStopHoldingAnything() throws {
        let broker = try broker()
        let publisher = try publisher(broker)
        for id in 1...3 { _ = try broker.apply(.brokerDown(id)) }
        publisher.publish(letter(5, partition: 0))
        publisher.publish(letter(6, partition: 1))
        publisher.forget([TopicPartition(topic: "impressions", partition: 0)])
        #expect(publisher.lowestUnacknowledged(of: TopicPartition(topic: "impressions", partition: 0)) == nil)
        #expect(publisher.unacknowledgedCount == 1)
        for id in 1...3 { _ = try broker.apply(.brokerUp(id)) }
        try publisher.flush(timeout: .seconds(60))
    }
}
