import Testing

@testable import SchemaTool

@Suite struct ClusterRewriterTests {
    let cluster = ClusterTarget(name: "ctr_cluster")

    func rewrite(_ statement: String) -> String {
        ClusterRewriter.rewrite(statement, for: cluster, database: "ctr")
    }

    @Test func createTableGetsOnClusterAndReplicatedEngineWithItsOwnPath() {
        #expect(
            rewrite("CREATE TABLE IF NOT EXISTS ctr.raw (x UInt8) ENGINE = MergeTree ORDER BY x")
                == "CREATE TABLE IF NOT EXISTS ctr.raw ON CLUSTER ctr_cluster (x UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/ctr/raw', '{replica}') ORDER BY x"
        )
    }

    @Test func engineArgumentsFollowThePathAndReplica() {
        #expect(
            rewrite("create table `t` (v UInt64) engine=ReplacingMergeTree(v) order by v")
                == "create table `t` ON CLUSTER ctr_cluster (v UInt64) engine=ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/ctr/t', '{replica}', v) order by v"
        )
        #expect(
            rewrite("CREATE TABLE a.b (x UInt8) ENGINE = SummingMergeTree() ORDER BY x")
                == "CREATE TABLE a.b ON CLUSTER ctr_cluster (x UInt8) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/a/b', '{replica}') ORDER BY x"
        )
    }

    @Test func materializedViewInnerTableIsReplicatedUnderItsInnerName() {
        #expect(
            rewrite("CREATE MATERIALIZED VIEW ctr.v ENGINE = AggregatingMergeTree ORDER BY p AS SELECT p, sumState(x) AS s FROM ctr.raw GROUP BY p")
                == "CREATE MATERIALIZED VIEW ctr.v ON CLUSTER ctr_cluster ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/ctr/.inner.v', '{replica}') ORDER BY p AS SELECT p, sumState(x) AS s FROM ctr.raw GROUP BY p"
        )
        #expect(
            rewrite("CREATE MATERIALIZED VIEW ctr.v TO ctr.target AS SELECT engine = 1 AS x FROM ctr.raw")
                == "CREATE MATERIALIZED VIEW ctr.v ON CLUSTER ctr_cluster TO ctr.target AS SELECT engine = 1 AS x FROM ctr.raw"
        )
    }

    @Test func logEnginesBecomeReplicatedSoEveryHostSeesTheSameRows() {
        #expect(
            rewrite("CREATE TABLE ctr.cut ENGINE = TinyLog AS SELECT now() AS start")
                == "CREATE TABLE ctr.cut ON CLUSTER ctr_cluster ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/ctr/cut', '{replica}') ORDER BY tuple() AS SELECT now() AS start"
        )
    }

    @Test func otherDDLGetsOnClusterAfterTheName() {
        #expect(rewrite("DROP TABLE IF EXISTS ctr.v") == "DROP TABLE IF EXISTS ctr.v ON CLUSTER ctr_cluster")
        #expect(rewrite("ALTER TABLE ctr.raw ADD COLUMN y UInt8") == "ALTER TABLE ctr.raw ON CLUSTER ctr_cluster ADD COLUMN y UInt8")
        #expect(rewrite("CREATE VIEW IF NOT EXISTS ctr.s AS SELECT 1") == "CREATE VIEW IF NOT EXISTS ctr.s ON CLUSTER ctr_cluster AS SELECT 1")
        #expect(rewrite("RENAME TABLE ctr.a TO ctr.b") == "RENAME TABLE ctr.a TO ctr.b ON CLUSTER ctr_cluster")
        #expect(rewrite("CREATE DATABASE IF NOT EXISTS ctr") == "CREATE DATABASE IF NOT EXISTS ctr ON CLUSTER ctr_cluster")
    }

    @Test func dataStatementsAndExistingClausesAreLeftAlone() {
        for statement in [
            "INSERT INTO ctr.raw SELECT * FROM ctr.old", "SELECT 1", "WAIT UNTIL now()",
            "ALTER TABLE ctr.raw ON CLUSTER other ADD COLUMN y UInt8", "SYSTEM FLUSH LOGS",
        ] {
            #expect(rewrite(statement) == statement)
        }
        #expect(
            rewrite("CREATE TABLE ctr.d (x UInt8) ENGINE = Distributed(ctr_cluster, ctr, raw)")
                == "CREATE TABLE ctr.d ON CLUSTER ctr_cluster (x UInt8) ENGINE = Distributed(ctr_cluster, ctr, raw)"
        )
    }

    @Test func commentsAndStringsAreNotMistakenForSQL() {
        #expect(
            rewrite("-- ENGINE = MergeTree\nCREATE TABLE ctr.t (s String DEFAULT 'ENGINE = MergeTree') ENGINE = Memory")
                == "-- ENGINE = MergeTree\nCREATE TABLE ctr.t ON CLUSTER ctr_cluster (s String DEFAULT 'ENGINE = MergeTree') ENGINE = Memory"
        )
    }

    @Test func unusualClusterNamesAreQuotedAndPathsAreConfigurable() {
        let custom = ClusterTarget(name: "prod-eu", replicationPath: "/ch/{cluster}/{database}.{table}", replicaName: "{host}")
        #expect(
            ClusterRewriter.rewrite("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x", for: custom, database: "db")
                == "CREATE TABLE t ON CLUSTER `prod-eu` (x UInt8) ENGINE = ReplicatedMergeTree('/ch/{cluster}/db.t', '{host}') ORDER BY x"
        )
    }

    @Test func coordinationTablesAreTheLogTablesAMigrationCreatesAndInsertsInto() {
        #expect(ClusterRewriter.logTableCreated(by: "CREATE TABLE IF NOT EXISTS ctr.cut ENGINE = TinyLog AS SELECT 1 AS x", database: "d") == "ctr.cut")
        #expect(ClusterRewriter.logTableCreated(by: "CREATE TABLE cut (x UInt8) ENGINE = StripeLog", database: "d") == "d.cut")
        #expect(ClusterRewriter.logTableCreated(by: "CREATE TABLE ctr.t (x UInt8) ENGINE = MergeTree ORDER BY x", database: "d") == nil)
        #expect(ClusterRewriter.tableInserted(by: "-- backfill\nINSERT INTO ctr.cut SELECT 1", database: "d") == "ctr.cut")
        #expect(ClusterRewriter.tableInserted(by: "INSERT INTO TABLE `cut` VALUES (1)", database: "d") == "d.cut")
        #expect(ClusterRewriter.tableInserted(by: "SELECT 1", database: "d") == nil)
    }

    @Test func verifyReplaysSchemaStatementsOnly() {
        #expect(ScratchDatabase.definesSchema("-- c\nCREATE TABLE x (a UInt8) ENGINE = Memory"))
        #expect(ScratchDatabase.definesSchema("alter table x add column b UInt8"))
        #expect(!ScratchDatabase.definesSchema("INSERT INTO x SELECT 1"))
        #expect(!ScratchDatabase.definesSchema("WAIT UNTIL now() + 1"))
        let definition = SchemaVerifier.viewDefinition("CREATE MATERIALIZED VIEW db.v TO db.t (`x` UInt8) AS SELECT 1 AS x")
        #expect(definition.target == "db.t")
        #expect(definition.select == " AS SELECT 1 AS x")
    }
}
