import ClickHouseHTTP
import Foundation
import TestSupport
import Testing

/// HTTPS to a real ClickHouse server whose certificate is signed by a private CA.
@Suite(.serialized) struct TLSIntegrationTests {
    @Test func httpsWorksWithTheCAFileAndFailsFatallyWithoutIt() throws {
        let directory = try PackagePaths.temporaryDirectory("ctr-tls")
        func openssl(_ arguments: [String]) throws {
            let result = try ChildProcess.run("/usr/bin/openssl", arguments)
            guard result.status == 0 else { throw TestSupportError("openssl \(arguments.first ?? ""): \(result.stderr)") }
        }
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ctr-test-ca", "-keyout", path("ca.key"), "-out", path("ca.crt")])
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", path("server.key"), "-out", path("server.csr")])
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: path("san.ext"), atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"), "-CAcreateserial",
                     "-days", "2", "-extfile", path("san.ext"), "-out", path("server.crt")])
        let https = PackagePaths.freePort()
        let script = PackagePaths.root.appendingPathComponent("scripts/clickhouse-local.sh").path
        let server = path("clickhouse")
        let started = try ChildProcess.run(
            script, ["start", server, "\(PackagePaths.freePort())", "\(PackagePaths.freePort())"],
            environment: ["CTR_CLICKHOUSE_HTTPS_PORT": "\(https)", "CTR_CLICKHOUSE_TLS_CERT": path("server.crt"), "CTR_CLICKHOUSE_TLS_KEY": path("server.key")]
        )
        #expect(started.status == 0, "\(started.stdout)\(started.stderr)")
        defer { _ = try? ChildProcess.run(script, ["stop", server]) }

        let trusted = try ClickHouseConnection(endpoint: ClickHouseEndpoint(url: "https://127.0.0.1:\(https)", database: "default", caFile: path("ca.crt")))
        var answer = ""
        _ = eventually(timeout: 10) {
            answer = (try? trusted.scalar("SELECT 1")) ?? ""
            return answer == "1"
        }
        #expect(answer == "1")

        let untrusted = try ClickHouseConnection(endpoint: ClickHouseEndpoint(url: "https://127.0.0.1:\(https)", database: "default"))
        do {
            _ = try untrusted.scalar("SELECT 1")
            Issue.record("a certificate from an unknown CA was accepted")
        } catch {
            if case .transport(.tls, _) = error {} else { Issue.record("expected a TLS failure, got \(error)") }
            #expect(!error.isRetryable, "a TLS failure is fatal, not retried forever")
        }
    }
}
