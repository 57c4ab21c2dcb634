import Testing

#if canImport(Glibc)
import Glibc
#endif

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

    @Test func propertiesFilesKeepCommasEqualsAndBlanksInValues() throws {
        let text = """
            # SASL over TLS
            security.protocol = SASL_SSL
            sasl.mechanism=PLAIN
              sasl.username=ctr
            sasl.password=p,a=ss#word with trailing blank\u{20}
            ! another comment style
            ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384\r

            sasl.jaas.config=
            """
        let properties = try KafkaConfiguration.parsePropertiesFile(text)
        #expect(
            properties == [
                "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "ctr",
                "sasl.password": "p,a=ss#word with trailing blank ",
                "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384", "sasl.jaas.config": "",
            ]
        )
        #expect(throws: KafkaConfiguration.SourceError.self) { try KafkaConfiguration.parsePropertiesFile("ok=1\nno equals sign") }
        do {
            _ = try KafkaConfiguration.parsePropertiesFile("a=1\n=value", name: "secrets.properties")
            Issue.record("an empty key was accepted")
        } catch {
            #expect(error.description == "secrets.properties, line 2: empty key")
        }
    }

    @Test func propertiesFilesAreReadFromDisk() throws {
        let path = "/tmp/ctr-kafka-properties-\(UInt32.random(in: 0...UInt32.max))"
        let file = fopen(path, "w")!
        fputs("sasl.password=a,b\n", file)
        fclose(file)
        defer { unlink(path) }
        #expect(try KafkaConfiguration.readPropertiesFile(atPath: path) == ["sasl.password": "a,b"])
        #expect(throws: KafkaConfiguration.SourceError.self) { try KafkaConfiguration.readPropertiesFile(atPath: path + "-missing") }
    }

    @Test func environmentVariablesNameOnePropertyEach() {
        let environment = [
            "CTR_KAFKA_PROPERTY_SASL_PASSWORD": "p,a=ss",
            "CTR_KAFKA_PROPERTY_SSL_CIPHER_SUITES": "A,B",
            "CTR_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_ID": "id",
            "CTR_KAFKA_PROPERTY_SOME__UNDERSCORE___DASH": "x",
            "CTR_KAFKA_PROPERTIES": "not=one-of-these",
            "CTR_KAFKA_PROPERTY_": "ignored",
            "PATH": "/usr/bin",
        ]
        #expect(
            KafkaConfiguration.properties(fromEnvironment: environment) == [
                "sasl.password": "p,a=ss", "ssl.cipher.suites": "A,B", "sasl.oauthbearer.client.id": "id",
                "some_underscore-dash": "x",
            ]
        )
    }

    @Test func environmentNamesRoundTrip() {
        for key in ["sasl.password", "ssl.key.password", "some_odd-name.x"] {
            let name = KafkaConfiguration.environmentName(of: key)
            #expect(KafkaConfiguration.properties(fromEnvironment: [name: "v"]) == [key: "v"], "\(name)")
        }
        #expect(KafkaConfiguration.environmentName(of: "sasl.password") == "CTR_KAFKA_PROPERTY_SASL_PASSWORD")
    }

    @Test func singleItemsSplitAtTheFirstEqualsSign() throws {
        let (key, value) = try KafkaConfiguration.parseProperty("sasl.password=a,b=c")
        #expect(key == "sasl.password" && value == "a,b=c")
        #expect(throws: KafkaConfiguration.SourceError.self) { try KafkaConfiguration.parseProperty("no-equals") }
    }

    @Test func theLegacyListSplitsOnlyBeforeTheNextKey() {
        #expect(
            KafkaConfiguration.splitPropertyList("security.protocol=SASL_SSL,ssl.cipher.suites=A-B,C-D, sasl.mechanism=PLAIN")
                == ["security.protocol=SASL_SSL", "ssl.cipher.suites=A-B,C-D", "sasl.mechanism=PLAIN"]
        )
        #expect(KafkaConfiguration.splitPropertyList("a.b=1\nsasl.password=x,y.z=2\n") == ["a.b=1", "sasl.password=x,y.z=2"])
        #expect(KafkaConfiguration.splitPropertyList("") == [])
    }

    @Test func cooperativeAssignorsAreRefusedForConsumers() {
        for strategy in ["cooperative-sticky", "range,cooperative-sticky", " COOPERATIVE-STICKY "] {
            let consumer = KafkaConfiguration(["group.id": "g", "partition.assignment.strategy": strategy])
            do {
                try consumer.validateForConsumer()
                Issue.record("\(strategy) was accepted")
            } catch {
                #expect(error.message.contains("cooperative") && error.message.contains("range"))
            }
            #expect(throws: KafkaError.self) { _ = try consumer.makeNativeConfiguration() }
        }
        #expect(throws: Never.self) { try KafkaConfiguration(["partition.assignment.strategy": "range,roundrobin"]).validateForConsumer() }
    }
}
