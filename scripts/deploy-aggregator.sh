#!/usr/bin/env bash
# Starts one more aggregator instance in the running native pipeline's consumer group; the
# instances split the partitions.
#   scripts/deploy-aggregator.sh NAME METRICS_PORT [ctr-aggregator flags...]
# Stop it with scripts/stop-aggregator.sh NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh
name="${1:?usage: deploy-aggregator.sh NAME METRICS_PORT [flags...]}"
port="${2:?usage: deploy-aggregator.sh NAME METRICS_PORT [flags...]}"
shift 2
[[ -s "$run_dir/bootstrap.txt" ]] || fail "the pipeline is not running" "start it with ./scripts/setup.sh"
bin="$(swift build -c release --show-bin-path)"
mkdir -p "$run_dir/logs"
start_process "$name" "curl -fsS http://127.0.0.1:$port/health" "$bin/ctr-aggregator" --brokers "$(cat "$run_dir/bootstrap.txt")" --clickhouse-url "$(cat "$run_dir/clickhouse_url")" \
    --database "$DATABASE" --conversions-topic conversions --dimensions "$DIMENSIONS" --metrics-port "$port" --log-format json "$@"
