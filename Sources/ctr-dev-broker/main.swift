import ArgumentParser
import DevBroker
import Foundation

struct DevBrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctr-dev-broker",
        abstract: "Serve an in-memory Kafka cluster (librdkafka's mock cluster) on loopback for tests and local runs.",
        discussion: """
            Prints the bootstrap list on stdout and writes it to --bootstrap-file once the topics exist. \
            Runs until SIGTERM or SIGINT. Data is kept in memory only, at most 5 MiB per partition \
            (librdkafka 2.0.2): spread large pre-loads over more partitions.
            Fault injection: each line written to --control-file (a FIFO is created if the path does not exist) \
            is one command: broker-down ID | broker-up ID | request-errors APIKEY COUNT ERRCODE | clear-errors APIKEY | rtt ID MS. \
            Broker ids start at 1. Results are printed on stdout.
            """
    )

    @Option(help: "Number of brokers.") var brokers = 3
    @Option(help: "Partitions per topic.") var partitions = 3
    @Option(help: "Comma-separated topics to create.") var topics = "impressions,clicks,ctr-dlq"
    @Option(help: "File to write the bootstrap list to.") var bootstrapFile: String?
    @Option(help: "FIFO (or file) to read fault-injection commands from.") var controlFile: String?

    func run() throws {
        let broker = try DevBroker(brokers: brokers)
        for topic in topics.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !topic.isEmpty {
            try broker.createTopic(topic, partitions: partitions, replicationFactor: min(3, brokers))
        }
        let bootstrap = broker.bootstrapServers
        if let bootstrapFile {
            let temporary = bootstrapFile + ".tmp"
            try Data((bootstrap + "\n").utf8).write(to: URL(fileURLWithPath: temporary))
            _ = rename(temporary, bootstrapFile)
        }
        emit(bootstrap)

        if let controlFile {
            if !FileManager.default.fileExists(atPath: controlFile) { mkfifo(controlFile, 0o600) }
            let thread = Thread {
                while true {
                    guard let handle = fopen(controlFile, "r") else { return }
                    var line: UnsafeMutablePointer<CChar>?
                    var capacity = 0
                    while getline(&line, &capacity, handle) > 0 {
                        let text = String(cString: line!).trimmingCharacters(in: .whitespacesAndNewlines)
                        guard !text.isEmpty else { continue }
                        do {
                            emit(try broker.apply(FaultCommand(line: text)))
                        } catch {
                            emit("error \(error)")
                        }
                    }
                    free(line)
                    fclose(handle)
                }
            }
            thread.start()
        }

        let semaphore = DispatchSemaphore(value: 0)
        let sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { semaphore.signal() }
            source.resume()
            return source
        }
        semaphore.wait()
        sources.forEach { $0.cancel() }
        withExtendedLifetime(broker) {}
    }
}

/// Writes a line to stdout unbuffered, so that a parent process sees it at once.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

DevBrokerCommand.main()
