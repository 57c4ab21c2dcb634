#!/usr/bin/env bash
# Runs a two-replica ClickHouse cluster on loopback: one ZooKeeper and two clickhouse-server
# processes (one shard, replicas r1 and r2) with their own ports and data directories, for
# `schema-tool --cluster` and its tests.
#
#   scripts/clickhouse-cluster.sh start DIR [BASE_PORT] [CLUSTER]   # idempotent
#   scripts/clickhouse-cluster.sh stop DIR
#
# Ports from BASE_PORT (default 19000): ZooKeeper BASE; replica r1 HTTP BASE+1, TCP BASE+2,
# interserver BASE+3; replica r2 HTTP BASE+4, TCP BASE+5, interserver BASE+6. The cluster is
# named CLUSTER (default ctr_cluster). Prints the replicas' HTTP URLs when ready.
set -euo pipefail

command="${1:-}"
dir="${2:-}"
if [[ -z "$command" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR [BASE_PORT] [CLUSTER]" >&2
    exit 2
fi
scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

case "$command" in
stop)
    "$scripts/clickhouse-local.sh" stop "$dir/r1" || true
    "$scripts/clickhouse-local.sh" stop "$dir/r2" || true
    "$scripts/zookeeper-local.sh" stop "$dir/zookeeper"
    ;;
start)
    base="${3:-19000}"
    export CTR_CLICKHOUSE_CLUSTER="${4:-ctr_cluster}"
    "$scripts/zookeeper-local.sh" start "$dir/zookeeper" "$base"
    export CTR_CLICKHOUSE_ZOOKEEPER="127.0.0.1:$base"
    export CTR_CLICKHOUSE_CLUSTER_REPLICAS="127.0.0.1:$((base + 2)),127.0.0.1:$((base + 5))"
    CTR_CLICKHOUSE_REPLICA=r1 CTR_CLICKHOUSE_INTERSERVER_PORT=$((base + 3)) \
        "$scripts/clickhouse-local.sh" start "$dir/r1" $((base + 1)) $((base + 2))
    CTR_CLICKHOUSE_REPLICA=r2 CTR_CLICKHOUSE_INTERSERVER_PORT=$((base + 6)) \
        "$scripts/clickhouse-local.sh" start "$dir/r2" $((base + 4)) $((base + 5))
    echo "cluster $CTR_CLICKHOUSE_CLUSTER: http://127.0.0.1:$((base + 1)) (r1), http://127.0.0.1:$((base + 4)) (r2)"
    ;;
*)
    echo "usage: $0 start|stop DIR [BASE_PORT] [CLUSTER]" >&2
    exit 2
    ;;
esac
