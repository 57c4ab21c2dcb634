#!/usr/bin/env bash
# Brings up the whole CTR pipeline.
#
#   ./scripts/setup.sh [--docker | --native] [--no-superset] [--products N] [--rate R]
#   ./scripts/setup.sh down [--purge]        # same as ./scripts/stop.sh
#
# Docker mode (when `docker compose` reaches an engine, or --docker): docker-compose.yml with
# 3 Kafka brokers, ClickHouse, Superset, the aggregator and the producer.
# Native mode (otherwise, or --native): everything as local processes, state under ./run/:
# a private ClickHouse server, the embedded Kafka-protocol broker (ctr-dev-broker), schema-tool
# migrate, ctr-aggregator, ctr-producer, and Superset in a virtual environment.
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
products="${CTR_PRODUCTS:-500}"
rate="${CTR_RATE:-2000}"
while (($#)); do
    case "$1" in
    --docker) mode=docker ;;
    --native) mode=native ;;
    --no-superset) superset=0 ;;
    --products) products="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
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
    profile=()
    [[ "$superset" == 1 ]] || profile=(--scale superset=0)
    docker compose up -d --build "${profile[@]}"
    say "started; Superset at http://localhost:8088 (admin / ${SUPERSET_ADMIN_PASSWORD:-admin}), ClickHouse at http://localhost:8123"
    exit 0
fi

# ---------------------------------------------------------------- native mode
scripts/install-deps.sh
mkdir -p "$run_dir/logs"

step "building release binaries (first build takes a few minutes)"
swift build -c release >"$run_dir/logs/build.log" 2>&1 || fail "swift build failed" "see $run_dir/logs/build.log"
bin="$(swift build -c release --show-bin-path)"

step "ClickHouse"
if ! scripts/clickhouse-local.sh status "$run_dir/clickhouse" >/dev/null 2>&1; then
    scripts/clickhouse-local.sh start "$run_dir/clickhouse" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" >"$run_dir/logs/clickhouse-start.log" 2>&1 ||
        fail "ClickHouse did not start" "see $run_dir/logs/clickhouse-start.log and $run_dir/clickhouse/log/"
fi
clickhouse_url="http://127.0.0.1:$(cat "$run_dir/clickhouse/http_port")"
echo "$clickhouse_url" >"$run_dir/clickhouse_url"

step "Kafka-protocol broker (ctr-dev-broker)"
pid_running "$run_dir/dev-broker.pid" || rm -f "$run_dir/bootstrap.txt"
start_process dev-broker "test -s '$run_dir/bootstrap.txt'" "$bin/ctr-dev-broker" --brokers 3 --partitions 3 --topics "impressions,clicks,conversions,ctr-dlq" \
    --bootstrap-file "$run_dir/bootstrap.txt" --control-file "$run_dir/broker-control"
wait_for "broker bootstrap list" 30 test -s "$run_dir/bootstrap.txt"
brokers="$(cat "$run_dir/bootstrap.txt")"

step "schema-tool migrate"
"$bin/schema-tool" migrate --clickhouse-url "$clickhouse_url" --database "$DATABASE" --migrations-dir migrations \
    >"$run_dir/logs/migrate.log" 2>&1 || fail "migrations failed" "see $run_dir/logs/migrate.log"

step "ctr-aggregator"
start_process aggregator "curl -fsS http://127.0.0.1:$METRICS_PORT/health" "$bin/ctr-aggregator" --brokers "$brokers" --clickhouse-url "$clickhouse_url" --database "$DATABASE" \
    --conversions-topic conversions --metrics-port "$METRICS_PORT" --log-format json

step "ctr-producer ($products products, $rate events/s)"
start_process producer "grep -q 'sent ' '$run_dir/logs/producer.log'" "$bin/ctr-producer" --brokers "$brokers" --products "$products" --rate "$rate" --duration 86400 \
    --late-fraction 0.01 --invalid-fraction 0.001 --conversion-rate 0.08 --revenue-per-click 0.35 --revenue-per-conversion 42

step "waiting for the first windows in ctr_results_raw"
wait_for "rows in ctr_results_raw" 120 sh -c \
    "test \"\$(curl -fsS '$clickhouse_url/?database=$DATABASE' --data-binary 'SELECT count() FROM ctr_results_raw')\" -gt 0" ||
    fail "no rows arrived" "see $run_dir/logs/aggregator.log"

if [[ "$superset" == 1 ]]; then
    step "Superset (first install takes several minutes)"
    if [[ -x scripts/superset-native.sh ]]; then
        scripts/superset-native.sh start "$run_dir" "$(cat "$run_dir/clickhouse/http_port")" "$DATABASE" >"$run_dir/logs/superset-setup.log" 2>&1 ||
            warn "Superset did not start; see $run_dir/logs/superset-setup.log (the pipeline runs without it)"
    else
        warn "Superset support is not installed in this checkout; skipping"
    fi
fi

summary "$clickhouse_url" "$brokers"
