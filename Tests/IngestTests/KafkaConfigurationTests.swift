import Testing

@testable import Ingest

@Suite struct KafkaConfigurationTests {
    @Test func secretsAreRedactedAndBadPropertiesExplained() {
        let configuration = KafkaConfiguration([
            "bootstrap.servers": "kafka:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
            "sasl.username": "ctr", "sasl.password": "s3cret", "ssl.ca.location": "/etc/ssl/ca.pem",
        ])
        #expect(!configuration.description.contains("s3cret"))
        #expect(configuration.description.contains("sasl.password=<redacted>"))
        #expect(configuration.description.contains("security.protocol=SASL_SSL"))
        do {
            _ = try KafkaConfiguration(["no.such.property": "1"]).makeNativeConfiguration()
            Issue.record("an unknown librdkafka property was accepted")
        } catch {
            #expect(error.message.contains("no.such.property"))
        }
        #expect(throws: Never.self) { _ = try configuration.makeNativeConfiguration() }
    }
}
