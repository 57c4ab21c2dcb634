#!/usr/bin/env bash
# End-to-end test of the native bring-up, as a new user runs it:
#   ./scripts/setup.sh  ->  rows in both views  ->  Superset REST (login, CSRF, SQL Lab, dashboard
#   and chart data)  ->  headless Chromium screenshot of the dashboard  ->  /metrics counters  ->
#   setup.sh again changes nothing  ->  ./scripts/stop.sh leaves nothing running.
# Uses its own run directory and ports so it does not disturb a running pipeline.
# The screenshot is written to .test-artifacts/superset-dashboard.png.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

export CTR_RUN_DIR="$root/.test-artifacts/run-e2e"
export CTR_CLICKHOUSE_HTTP_PORT="${CTR_CLICKHOUSE_HTTP_PORT:-28123}"
export CTR_CLICKHOUSE_TCP_PORT="${CTR_CLICKHOUSE_TCP_PORT:-29000}"
export CTR_METRICS_PORT="${CTR_METRICS_PORT:-29464}"
export CTR_SUPERSET_PORT="${CTR_SUPERSET_PORT:-28088}"
export CTR_DATABASE=ctr
mkdir -p "$root/.test-artifacts"
started=$(date +%s)

check() { printf 'check: %s\n' "$*"; }
cleanup() { ./scripts/stop.sh --purge >/dev/null 2>&1 || true; }
trap cleanup EXIT

./scripts/setup.sh --native
ready=$(date +%s)
url="http://127.0.0.1:$CTR_CLICKHOUSE_HTTP_PORT/?database=$CTR_DATABASE"
q() { curl -fsS "$url" --data-binary "$1"; }

for _ in $(seq 1 60); do
    [[ "$(q 'SELECT count() FROM ctr_latest_view')" -gt 0 && "$(q 'SELECT count() FROM ctr_ml_view')" -gt 0 ]] && break
    sleep 1
done
check "ctr_results_raw rows: $(q 'SELECT count() FROM ctr_results_raw')"
check "ctr_latest_view products: $(q 'SELECT count() FROM ctr_latest_view FINAL')"
check "ctr_ml_view product-minutes: $(q 'SELECT count() FROM (SELECT product_id, window_minute FROM ctr_ml_view GROUP BY product_id, window_minute)')"
[[ "$(q 'SELECT count() FROM ctr_latest_view')" -gt 0 ]] || { echo "FAIL: ctr_latest_view is empty"; exit 1; }

"$CTR_RUN_DIR/superset-venv/bin/python" tests/deploy/superset_check.py "http://127.0.0.1:$CTR_SUPERSET_PORT" admin "${SUPERSET_ADMIN_PASSWORD:-admin}" \
    --screenshot "$root/.test-artifacts/superset-dashboard.png"

metrics="$(curl -fsS "http://127.0.0.1:$CTR_METRICS_PORT/metrics")"
for counter in 'ctr_events_consumed_total{kind="impression"}' ctr_windows_emitted_total ctr_sink_rows_total; do
    value="$(awk -v name="$counter" '$1 == name { print $2 }' <<<"$metrics")"
    [[ -n "$value" && "$value" != "0" ]] || { echo "FAIL: $counter is $value"; exit 1; }
    check "$counter = $value"
done
curl -fsS "http://127.0.0.1:$CTR_METRICS_PORT/ready" >/dev/null && check "/ready answers 200"

second="$(./scripts/setup.sh --native 2>&1)"
grep -q "already running" <<<"$second" || { echo "FAIL: a second setup.sh did not find the pipeline running"; exit 1; }
check "second setup.sh: nothing restarted"

pids="$(cat "$CTR_RUN_DIR"/*.pid "$CTR_RUN_DIR"/clickhouse/clickhouse.pid 2>/dev/null || true)"
./scripts/stop.sh
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then echo "FAIL: process $pid still running after stop.sh"; exit 1; fi
done
check "stop.sh stopped every process it started ($(wc -w <<<"$pids") pids)"
echo "native setup end-to-end: ok (clone-to-first-data $((ready - started)) s, total $(($(date +%s) - started)) s)"
