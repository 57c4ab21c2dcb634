#!/usr/bin/env bash
# Brings up the whole CTR pipeline.
#
#   ./scripts/setup.sh [--docker | --native] [--cluster] [--no-superset] [--products N] [--rate R]
#   ./scripts/setup.sh down [--purge]        # same as ./scripts/stop.sh
#
# Docker mode (when `docker compose` reaches an engine, or --docker): docker-compose.yml with
# 3 Kafka brokers, ClickHouse, Superset, the aggregator and the producer.
# Native mode (otherwise, or --native): everything as local processes, state under ./run/:
# a private ClickHouse server, the embedded Kafka-protocol broker (ctr-dev-broker), schema-tool
# migrate, ctr-aggregator, ctr-producer, and Superset in a virtual environment.
# --cluster: a two-replica ClickHouse cluster instead of the single server (ZooKeeper and two
# clickhouse-server processes, scripts/clickhouse-cluster.sh), migrated with schema-tool
# --cluster, and two aggregators in one consumer group, each writing to one replica (Docker:
# the compose `cluster` profile).
# Running it again while everything runs changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh

if [[ "${1:-}" == "down" ]]; then
    shift
    exec scripts/stop.sh "$@"
fi

mode=""
superset=1
cluster=0
products="${CTR_PRODUCTS:-500}"
rate="${CTR_RATE:-2000}"
while (($#)); do
    case "$1" in
    --docker) mode=docker ;;
    --native) mode=native ;;
    --no-superset) superset=0 ;;
    --cluster) cluster=1 ;;
    --products) products="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) fail "unknown option $1" "see ./scripts/setup.sh --help" ;;
    esac
    shift
done

if [[ -z "$mode" ]]; then
    if docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        mode=docker
        say "Docker engine reachable: using Docker mode (docker-compose.yml)"
    else
        mode=native
        say "no reachable Docker engine: using native mode (local processes under ./run)"
    fi
else
    say "mode $mode (forced)"
fi

if [[ "$mode" == docker ]]; then
    profiles=()
    scale=()
    ((cluster)) && profiles=(--profile cluster)
    [[ "$superset" == 1 ]] || scale=(--scale superset=0)
    docker compose "${profiles[@]}" up -d --build "${scale[@]}"
    say "started; Superset at http://localhost:8088 (admin / ${SUPERSET_ADMIN_PASSWORD:-admin}), ClickHouse at http://localhost:8123"
    exit 0
fi

# ---------------------------------------------------------------- native mode
if ((cluster)); then scripts/install-deps.sh --cluster; else scripts/install-deps.sh; fi
mkdir -p "$run_dir/logs"
if ((cluster)) && [[ -d "$run_dir/clickhouse" ]] && scripts/clickhouse-local.sh status "$run_dir/clickhouse" >/dev/null 2>&1; then
    fail "a single-server pipeline runs in $run_dir" "stop it first (./scripts/stop.sh), or use another CTR_RUN_DIR"
fi
if ((!cluster)) && [[ -d "$run_dir/cluster" ]] && pid_running "$run_dir/aggregator-r2.pid"; then
    fail "a cluster pipeline runs in $run_dir" "stop it first (./scripts/stop.sh), or run ./scripts/setup.sh --cluster"
fi

step "building release binaries (first build takes a few minutes)"
swift build -c release >"$run_dir/logs/build.log" 2>&1 || fail "swift build failed" "see $run_dir/logs/build.log"
bin="$(swift build -c release --show-bin-path)"

cluster_args=()
if ((cluster)); then
    step "ClickHouse cluster $CLUSTER_NAME (ZooKeeper and two replicas)"
    scripts/clickhouse-cluster.sh start "$run_dir/cluster" "$CLUSTER_BASE_PORT" "$CLUSTER_NAME" >"$run_dir/logs/clickhouse-start.log" 2>&1 ||
        fail "the ClickHouse cluster did not start" "see $run_dir/logs/clickhouse-start.log and $run_dir/cluster/"
    clickhouse_port=$((CLUSTER_BASE_PORT + 1))
    replica2_url="http://127.0.0.1:$((CLUSTER_BASE_PORT + 4))"
    cluster_args=(--cluster "$CLUSTER_NAME")
    say "replicas http://127.0.0.1:$clickhouse_port (r1) and $replica2_url (r2)"
else
    step "ClickHouse"
    if ! scripts/clickhouse-local.sh status "$run_dir/clickhouse" >/dev/null 2>&1; then
        scripts/clickhouse-local.sh start "$run_dir/clickhouse" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" >"$run_dir/logs/clickhouse-start.log" 2>&1 ||
            fail "ClickHouse did not start" "see $run_dir/logs/clickhouse-start.log and $run_dir/clickhouse/log/"
    fi
    clickhouse_port="$(cat "$run_dir/clickhouse/http_port")"
fi
clickhouse_url="http://127.0.0.1:$clickhouse_port"
echo "$clickhouse_url" >"$run_dir/clickhouse_url"

step "Kafka-protocol broker (ctr-dev-broker)"
pid_running "$run_dir/dev-broker.pid" || rm -f "$run_dir/bootstrap.txt"
start_process dev-broker "test -s '$run_dir/bootstrap.txt'" "$bin/ctr-dev-broker" --brokers 3 --partitions 3 --topics "impressions,clicks,conversions,ctr-dlq" \
    --bootstrap-file "$run_dir/bootstrap.txt" --control-file "$run_dir/broker-control"
wait_for "broker bootstrap list" 30 test -s "$run_dir/bootstrap.txt"
brokers="$(cat "$run_dir/bootstrap.txt")"

step "schema-tool migrate"
"$bin/schema-tool" migrate --clickhouse-url "$clickhouse_url" --database "$DATABASE" --migrations-dir migrations "${cluster_args[@]}" \
    >"$run_dir/logs/migrate.log" 2>&1 || fail "migrations failed" "see $run_dir/logs/migrate.log"

step "ctr-aggregator"
start_process aggregator "curl -fsS http://127.0.0.1:$METRICS_PORT/health" "$bin/ctr-aggregator" --brokers "$brokers" --clickhouse-url "$clickhouse_url" --database "$DATABASE" \
    --conversions-topic conversions --dimensions "$DIMENSIONS" --metrics-port "$METRICS_PORT" --log-format json

if ((cluster)); then
    step "ctr-aggregator-r2 (same consumer group, writes to replica r2)"
    start_process aggregator-r2 "curl -fsS http://127.0.0.1:$((METRICS_PORT + 1))/health" "$bin/ctr-aggregator" --brokers "$brokers" \
        --clickhouse-url "$replica2_url" --database "$DATABASE" --conversions-topic conversions --dimensions "$DIMENSIONS" \
        --metrics-port "$((METRICS_PORT + 1))" --log-format json
fi

step "ctr-producer ($products products, $rate events/s)"
start_process producer "grep -q 'sent ' '$run_dir/logs/producer.log'" "$bin/ctr-producer" --brokers "$brokers" --products "$products" --rate "$rate" --duration 86400 \
    --late-fraction 0.01 --invalid-fraction 0.001 --mean-ctr 0.015 --conversion-rate 0.03 --revenue-per-click 0.30 --revenue-per-conversion 4.00

step "waiting for the first windows in ctr_results_raw"
wait_for "rows in ctr_results_raw" 120 sh -c \
    "test \"\$(curl -fsS '$clickhouse_url/?database=$DATABASE' --data-binary 'SELECT count() FROM ctr_results_raw')\" -gt 0" ||
    fail "no rows arrived" "see $run_dir/logs/aggregator.log"

if [[ "$superset" == 1 ]]; then
    step "Superset (first install takes several minutes)"
    if [[ -x scripts/superset-native.sh ]]; then
        scripts/superset-native.sh start "$run_dir" "$clickhouse_port" "$DATABASE" >"$run_dir/logs/superset-setup.log" 2>&1 ||
            warn "Superset did not start; see $run_dir/logs/superset-setup.log (the pipeline runs without it)"
    else
        warn "Superset support is not installed in this checkout; skipping"
    fi
fi

summary "$clickhouse_url" "$brokers"
