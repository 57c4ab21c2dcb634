// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ctr-pipeline",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "ctr-aggregator", targets: ["ctr-aggregator"]),
        .executable(name: "schema-tool", targets: ["schema-tool"]),
        .executable(name: "ctr-producer", targets: ["ctr-producer"]),
        .executable(name: "ctr-dev-broker", targets: ["ctr-dev-broker"]),
        .executable(name: "ctr-bench", targets: ["ctr-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // MARK: System libraries
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),

        // MARK: Pure domain
        .target(name: "CTRWindows"),
        // The event contract: pure, no I/O, linked as is by scripts/fuzz.sh.
        .target(name: "EventDecoding", dependencies: ["CTRWindows"]),
        .target(name: "TrafficGenerator", dependencies: ["CTRWindows"]),

        // MARK: Edges
        // The librdkafka adapter: consumer, producer, configuration.
        .target(
            name: "Ingest",
            dependencies: [
                "CRdKafka",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ClickHouseHTTP",
            dependencies: ["CCurl", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "ClickHouseSink",
            dependencies: ["CTRWindows", "ClickHouseHTTP", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "SchemaTool",
            dependencies: ["ClickHouseHTTP", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "DevBroker", dependencies: ["CRdKafka"]),
        .target(name: "MetricsHTTP"),
        .plugin(name: "BuildRevisionPlugin", capability: .buildTool(), path: "Sources/BuildRevisionPlugin"),
        .target(
            name: "CTRPipeline",
            dependencies: [
                "CTRWindows", "EventDecoding", "Ingest", "ClickHouseSink", "ClickHouseHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),

        // MARK: Executables (argument parsing and wiring only)
        .executableTarget(
            name: "ctr-aggregator",
            dependencies: [
                "CTRPipeline", "CTRWindows", "EventDecoding", "Ingest", "ClickHouseSink", "ClickHouseHTTP", "MetricsHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
            ],
            plugins: ["BuildRevisionPlugin"]
        ),
        .executableTarget(
            name: "schema-tool",
            dependencies: [
                "SchemaTool",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "ctr-producer",
            dependencies: [
                "TrafficGenerator", "Ingest", "CTRWindows",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "ctr-dev-broker",
            dependencies: [
                "DevBroker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .executableTarget(
            name: "ctr-bench",
            dependencies: [
                "CTRWindows", "EventDecoding", "Ingest", "TrafficGenerator", "ClickHouseSink", "ClickHouseHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Tests
        .target(name: "TestSupport", dependencies: ["ClickHouseHTTP"], path: "Tests/TestSupport"),
        .testTarget(name: "CTRWindowsTests", dependencies: ["CTRWindows"]),
        .testTarget(name: "EventDecodingTests", dependencies: ["EventDecoding", "CTRWindows"]),
        .testTarget(name: "IngestTests", dependencies: ["Ingest", "DevBroker", "TrafficGenerator", "CTRWindows"]),
        .testTarget(name: "KafkaConsumerTests", dependencies: ["Ingest", "TestSupport"]),
        .testTarget(name: "ClickHouseHTTPTests", dependencies: ["ClickHouseHTTP", "TestSupport"]),
        .testTarget(name: "ClickHouseSinkTests", dependencies: ["ClickHouseSink", "ClickHouseHTTP", "TestSupport"]),
        .testTarget(name: "SchemaToolTests", dependencies: ["SchemaTool", "ClickHouseHTTP", "TestSupport"]),
        .testTarget(name: "TrafficGeneratorTests", dependencies: ["TrafficGenerator", "CTRWindows"]),
        .testTarget(
            name: "CTRPipelineTests",
            dependencies: ["CTRPipeline", "CTRWindows", "ClickHouseSink", "EventDecoding", "Ingest", "DevBroker", "CRdKafka"]
        ),
        .testTarget(name: "MetricsHTTPTests", dependencies: ["MetricsHTTP", "CTRPipeline", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["ClickHouseHTTP", "TestSupport"]),
    ]
)
