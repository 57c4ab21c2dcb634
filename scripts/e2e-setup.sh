#!/usr/bin/env bash
# End-to-end test of the native bring-up, as a new user runs it.
#
#   scripts/e2e-setup.sh             ./scripts/setup.sh -> rows in both views -> Superset REST (login, CSRF,
#                                    SQL Lab, dashboard and chart data, formats, time filter) -> headless
#                                    Chromium screenshot -> /metrics counters -> setup.sh again changes
#                                    nothing -> ./scripts/stop.sh leaves nothing running.
#   scripts/e2e-setup.sh --cluster   ./scripts/setup.sh --cluster --no-superset -> replicated tables on both
#                                    replicas, both aggregators write, the replicas converge -> idempotence
#                                    -> stop.sh leaves nothing running (ZooKeeper and both servers included).
#
# Uses its own run directory and ports (CTR_* variables override them) so it does not disturb a
# running pipeline. The screenshot is written to .test-artifacts/superset-dashboard.png.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

cluster=0
[[ "${1:-}" == "--cluster" ]] && cluster=1

if ((cluster)); then
    export CTR_RUN_DIR="${CTR_RUN_DIR:-$root/.test-artifacts/run-e2e-cluster}"
    export CTR_CLUSTER_BASE_PORT="${CTR_CLUSTER_BASE_PORT:-28300}"
    export CTR_METRICS_PORT="${CTR_METRICS_PORT:-29564}"
    setup_args=(--native --cluster --no-superset)
else
    export CTR_RUN_DIR="${CTR_RUN_DIR:-$root/.test-artifacts/run-e2e}"
    export CTR_CLICKHOUSE_HTTP_PORT="${CTR_CLICKHOUSE_HTTP_PORT:-28123}"
    export CTR_CLICKHOUSE_TCP_PORT="${CTR_CLICKHOUSE_TCP_PORT:-29000}"
    export CTR_METRICS_PORT="${CTR_METRICS_PORT:-29464}"
    export CTR_SUPERSET_PORT="${CTR_SUPERSET_PORT:-28088}"
    setup_args=(--native)
fi
export CTR_DATABASE=ctr
mkdir -p "$root/.test-artifacts"
started=$SECONDS

check() { printf 'check: %s\n' "$*"; }
failed() { echo "FAIL: $*"; exit 1; }
# On failure the logs are kept in .test-artifacts/<run directory>-logs before the run directory goes.
cleanup() {
    local status=$?
    if ((status != 0)) && [[ -d "$CTR_RUN_DIR/logs" ]]; then
        rm -rf "$CTR_RUN_DIR-logs"
        cp -r "$CTR_RUN_DIR/logs" "$CTR_RUN_DIR-logs"
        echo "logs kept in $CTR_RUN_DIR-logs"
    fi
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT

# until_true SECONDS COMMAND... : polls COMMAND once a second until it succeeds; fails after SECONDS.
until_true() {
    local seconds="$1"
    shift
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    "$@" >/dev/null 2>&1
}

./scripts/setup.sh "${setup_args[@]}"
ready=$SECONDS

if ((cluster)); then
    r1="http://127.0.0.1:$((CTR_CLUSTER_BASE_PORT + 1))/?database=$CTR_DATABASE"
    r2="http://127.0.0.1:$((CTR_CLUSTER_BASE_PORT + 4))/?database=$CTR_DATABASE"
    q1() { curl -fsS "$r1" --data-binary "$1"; }
    q2() { curl -fsS "$r2" --data-binary "$1"; }
    for replica in q1 q2; do
        engine="$($replica "SELECT engine FROM system.tables WHERE database = 'ctr' AND name = 'ctr_results_raw'")"
        [[ "$engine" == ReplicatedMergeTree ]] || failed "ctr_results_raw on $replica is $engine"
    done
    check "ctr_results_raw is a ReplicatedMergeTree on both replicas"
    # Both aggregators write (each to its own replica): their row counters move.
    for port in "$CTR_METRICS_PORT" "$((CTR_METRICS_PORT + 1))"; do
        has_rows() { [[ "$(curl -fsS "http://127.0.0.1:$1/metrics" | awk '$1 == "ctr_sink_rows_total" { print $2 }')" =~ ^[1-9] ]]; }
        until_true 120 has_rows "$port" || failed "the aggregator on :$port wrote no rows"
        check "aggregator :$port wrote rows ($(curl -fsS "http://127.0.0.1:$port/metrics" | awk '$1 == "ctr_sink_rows_total" { print $2 }'))"
    done
    # Rows written through one replica reach the other: the rows emitted more than 20 s ago are
    # the same on both.
    settled() { echo "SELECT count(), sum(impressions_delta) FROM ctr_results_raw WHERE emitted_at < toDateTime($1)"; }
    same() {
        local query
        query="$(settled $(($(date +%s) - 20)))"
        [[ "$(q1 "$query")" == "$(q2 "$query")" && "$(q1 "$query")" != 0* ]]
    }
    until_true 120 same || failed "the replicas differ: r1 $(q1 "$(settled $(($(date +%s) - 20)))"), r2 $(q2 "$(settled $(($(date +%s) - 20)))")"
    check "replicas agree on the rows emitted more than 20 s ago ($(q1 "$(settled $(($(date +%s) - 20)))" | tr '\t' ' '))"
    views() { [[ "$(q2 'SELECT count() FROM ctr_latest_view FINAL')" -gt 0 && "$(q2 'SELECT count() FROM ctr_ml_view')" -gt 0 ]]; }
    until_true 60 views || failed "the views on r2 are empty"
    check "views on r2: $(q2 'SELECT count() FROM ctr_latest_view FINAL') products, $(q2 'SELECT sum(conversions) FROM ctr_latest_view FINAL') conversions in the latest windows"
else
    url="http://127.0.0.1:$CTR_CLICKHOUSE_HTTP_PORT/?database=$CTR_DATABASE"
    q() { curl -fsS "$url" --data-binary "$1"; }
    views() { [[ "$(q 'SELECT count() FROM ctr_latest_view')" -gt 0 && "$(q 'SELECT count() FROM ctr_ml_view')" -gt 0 ]]; }
    until_true 60 views || failed "the views are empty"
    check "ctr_results_raw rows: $(q 'SELECT count() FROM ctr_results_raw')"
    check "ctr_latest_view products: $(q 'SELECT count() FROM ctr_latest_view FINAL')"
    check "ctr_ml_view product-minutes: $(q 'SELECT count() FROM (SELECT product_id, window_minute FROM ctr_ml_view GROUP BY product_id, window_minute)')"
    check "realistic traffic: $(q "SELECT concat('CTR ', toString(round(sum(clicks_delta) / sum(impressions_delta) * 100, 2)), ' %, CVR ', toString(round(sum(conversions_delta) / sum(clicks_delta) * 100, 2)), ' %, eCPM ', toString(round(toFloat64(sum(revenue_delta)) / sum(impressions_delta) * 1000, 2))) FROM ctr_results_raw")"

    "$CTR_RUN_DIR/superset-venv/bin/python" tests/deploy/superset_check.py "http://127.0.0.1:$CTR_SUPERSET_PORT" admin "${SUPERSET_ADMIN_PASSWORD:-admin}" \
        --screenshot "$root/.test-artifacts/superset-dashboard.png"
fi

metrics="$(curl -fsS "http://127.0.0.1:$CTR_METRICS_PORT/metrics")"
for counter in 'ctr_events_consumed_total{kind="impression"}' ctr_windows_emitted_total ctr_sink_rows_total; do
    value="$(awk -v name="$counter" '$1 == name { print $2 }' <<<"$metrics")"
    [[ -n "$value" && "$value" != "0" ]] || failed "$counter is $value"
    check "$counter = $value"
done
curl -fsS "http://127.0.0.1:$CTR_METRICS_PORT/ready" >/dev/null && check "/ready answers 200"

second="$(./scripts/setup.sh "${setup_args[@]}" 2>&1)"
grep -q "already running" <<<"$second" || failed "a second setup.sh did not find the pipeline running"
check "second setup.sh: nothing restarted"

pids="$(cat "$CTR_RUN_DIR"/*.pid "$CTR_RUN_DIR"/clickhouse/clickhouse.pid "$CTR_RUN_DIR"/cluster/*/clickhouse.pid \
    "$CTR_RUN_DIR"/cluster/zookeeper/zookeeper.pid 2>/dev/null || true)"
./scripts/stop.sh
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then failed "process $pid still running after stop.sh"; fi
done
check "stop.sh stopped every process it started ($(wc -w <<<"$pids") pids)"
echo "native setup end-to-end$( ((cluster)) && echo ' (cluster)'): ok (clone-to-first-data $((ready - started)) s, total $((SECONDS - started)) s)"
