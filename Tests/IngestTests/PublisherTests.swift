import CTRWindows
import DevBroker
import Foundation
import Ingest
import Testing
import TrafficGenerator

/// The producer's publishing logic (moved out of `ctr-producer`'s main), through a real
/// `KafkaProducer` against the dev broker.
final class ProducerSink: MessageSink {
    let producer: KafkaProducer
    init(bootstrap: String) throws { producer = try KafkaProducer(configuration: KafkaConfiguration(["bootstrap.servers": bootstrap])) }
    func publish(topic: String, partition: Int32?, key: [UInt8], value: [UInt8]) throws {
        try producer.send(topic: topic, partition: partition, key: key, value: value)
    }
    func partitionCount(of topic: String) throws -> Int { try producer.partitionCount(topic: topic, timeout: .seconds(10)) }
    func serveDeliveries() { producer.poll() }
    func finishDeliveries() throws {
        try producer.flush(timeout: .seconds(60))
        if producer.failedCount > 0 { throw KafkaError(message: producer.firstFailure ?? "failed") }
    }
}

@Suite struct PublisherTests {
    func temporaryFile(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))").path
    }

    @Test func publishesRecordsTheTruthAndClosesEveryPartitionsWindows() throws {
        let broker = try DevBroker(brokers: 1)
        for topic in ["impressions", "clicks"] { try broker.createTopic(topic, partitions: 3, replicationFactor: 1) }
        let sink = try ProducerSink(bootstrap: broker.bootstrapServers)
        var lines: [String] = []
        var publisher = Publisher(sink: sink, topics: TopicNames(), rules: WindowRules()) { lines.append($0) }
        var generator = TrafficGenerator(
            configuration: TrafficConfiguration(products: 5, startTime: Timestamp(milliseconds: 1_700_000_000_000), eventRate: 1_000)
        )
        for _ in 0..<500 { try publisher.send(generator.next()!) }
        let newest = publisher.truth.maxEventTime
        let watermark = try publisher.sendFinalWatermark { TrafficGenerator.productName($0) }
        // One event per partition of both topics, past every window and its lateness.
        #expect(publisher.sent == 506)
        let finalTime = newest + 10_000 + 2_000 + 5_000 + 1_000
        #expect(watermark == Timestamp(milliseconds: finalTime - 2_000))
        let truthFile = temporaryFile("truth")
        defer { try? FileManager.default.removeItem(atPath: truthFile) }
        let summary = try publisher.finish(finalWatermark: watermark, truthFile: truthFile)
        #expect(sink.producer.deliveredCount == 506)
        #expect(summary.hasPrefix("sent impressions="))
        #expect(lines.last?.hasPrefix("done: sent 506 messages") == true)
        let truth = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: truthFile))) as! [String: Any]
        #expect((truth["final_watermark_ms"] as? NSNumber)?.int64Value == finalTime - 2_000)
        let windows = truth["windows"] as! [[String: Any]]
        let counted = windows.reduce(0) { $0 + ($1["impressions"] as! NSNumber).intValue + ($1["clicks"] as! NSNumber).intValue }
        #expect(counted == 506)
        // The final events' windows stay open: the watermark does not pass them.
        #expect(windows.filter { ($0["open"] as! NSNumber).boolValue }.count == 3)
    }

    @Test func noFinalWatermarkWhenTurnedOffOrNothingCounted() throws {
        let broker = try DevBroker(brokers: 1)
        try broker.createTopic("impressions", partitions: 1, replicationFactor: 1)
        let sink = try ProducerSink(bootstrap: broker.bootstrapServers)
        var empty = Publisher(sink: sink, topics: TopicNames(), rules: WindowRules())
        #expect(try empty.sendFinalWatermark { _ in "p" } == nil)
        var off = Publisher(sink: sink, topics: TopicNames(), rules: WindowRules(sendsFinalWatermark: false))
        try off.send(TrafficGenerator.event(product: "p", timestamp: Timestamp(milliseconds: 1_700_000_000_000), topic: .impressions, eventID: "e"))
        #expect(try off.sendFinalWatermark { _ in "p" } == nil)
        _ = try off.finish(finalWatermark: nil, truthFile: nil)
    }

    @Test func truthKeepsCanonicallyEquivalentProductsApart() {
        var truth = Truth(windowSize: Milliseconds(10_000))
        let time = Timestamp(milliseconds: 1_700_000_000_000)
        for product in ["caf\u{E9}", "cafe\u{301}", "caf\u{E9}"] {
            truth.record(TrafficGenerator.event(product: product, timestamp: time, topic: .impressions, eventID: "e"))
        }
        #expect(truth.counts.count == 2)
        #expect(truth.counts[Truth.Key(product: "caf\u{E9}", windowStart: 1_700_000_000_000)]?.impressions == 2)
        #expect(truth.counts[Truth.Key(product: "cafe\u{301}", windowStart: 1_700_000_000_000)]?.impressions == 1)
    }

    @Test func topicNamesFollowTheMode() {
        let split = TopicNames(impressions: "i", clicks: "c", conversions: "v")
        #expect(split.topics(conversions: true) == [.impressions, .clicks, .conversions])
        #expect(split.name(of: .events) == "i")
        let single = TopicNames(events: "ad_events_raw")
        #expect(single.topics(conversions: false) == [.events])
        #expect(single.name(of: .events) == "ad_events_raw")
    }
}

@Suite struct PacingTests {
    @Test func ratePacingWaitsOnlyWhenAhead() {
        let pacer = RatePacer(rate: 1_000)
        #expect(pacer.delay(afterSent: 500, elapsed: .milliseconds(200)) == .milliseconds(300))
        #expect(pacer.delay(afterSent: 500, elapsed: .milliseconds(600)) == nil)
        #expect(RatePacer(rate: 0).delay(afterSent: 1_000_000, elapsed: .zero) == nil)
    }

    @Test func replayPacingFollowsEventTimeFromTheFirstEvent() {
        var pacer = ReplayPacer(speedup: 10)
        #expect(pacer.delay(beforeEventAt: 1_000_000, elapsed: .zero) == nil)
        // 10 s of event time at 10x: 1 s after the start.
        #expect(pacer.delay(beforeEventAt: 1_010_000, elapsed: .milliseconds(250)) == .milliseconds(750))
        #expect(pacer.delay(beforeEventAt: 1_010_000, elapsed: .seconds(2)) == nil)
        var unpaced = ReplayPacer(speedup: 0)
        #expect(unpaced.delay(beforeEventAt: 5_000_000, elapsed: .zero) == nil)
    }

    @Test func hoursAreReleasedInEventTimeOrder() {
        func message(_ time: Int64) -> GeneratedMessage {
            TrafficGenerator.event(product: "p", timestamp: Timestamp(milliseconds: time), topic: .impressions, eventID: "\(time)")
        }
        let hour: Int64 = 3_600_000
        var order = HourlyEventTimeOrder()
        #expect(order.add([message(5 * hour + 900)], at: Timestamp(milliseconds: 5 * hour + 900)).isEmpty)
        #expect(order.add([message(5 * hour + 100), message(5 * hour + 101)], at: Timestamp(milliseconds: 5 * hour + 100)).isEmpty)
        let released = order.add([message(6 * hour + 1)], at: Timestamp(milliseconds: 6 * hour + 1))
        #expect(released.map { $0.expectation.time! } == [5 * hour + 100, 5 * hour + 101, 5 * hour + 900])
        #expect(order.finish().map { $0.expectation.time! } == [6 * hour + 1])
        #expect(order.finish().isEmpty)
    }

    @Test func avazuRowsBecomeImpressionsAndClicks() throws {
        let replay = try AvazuReplay(headerLine: "id,click,hour,site_id", productColumn: "site_id")
        let row = try replay.row("1000009418151094273,1,14102100,1fbe01fe", line: 2)
        let split = AvazuReplay.messages(of: row, id: "1000009418151094273", singleTopic: false)
        #expect(split.map(\.topic) == [.impressions, .clicks])
        let single = AvazuReplay.messages(of: row, id: "1000009418151094273", singleTopic: true)
        #expect(single.map(\.topic) == [.events])
    }
}

@Suite struct LineReaderTests {
    @Test func readsPlainAndGzippedFilesLineByLine() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lines-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let plain = directory.appendingPathComponent("rows.csv")
        let text = "id,click\r\n1,0\n\n2,1" + String(repeating: "\n3,0", count: 300_000)
        try Data(text.utf8).write(to: plain)
        func lines(_ path: String) throws -> [Substring] {
            let reader = try LineReader(path: path)
            var lines: [Substring] = []
            while let line = reader.next() { lines.append(line) }
            return lines
        }
        let expected = ["id,click", "1,0", "", "2,1"] + Array(repeating: "3,0", count: 300_000)
        #expect(try lines(plain.path).map(String.init) == expected)
        let gzip = try ChildProcessResult.run("/usr/bin/env", ["gzip", "-k", plain.path])
        #expect(gzip == 0)
        #expect(try lines(plain.path + ".gz").map(String.init) == expected)
        #expect(throws: LineReaderError.self) { try LineReader(path: directory.appendingPathComponent("missing.csv").path) }
    }
}

enum ChildProcessResult {
    static func run(_ executable: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
