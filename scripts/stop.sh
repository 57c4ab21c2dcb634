#!/usr/bin/env bash
# Stops everything ./scripts/setup.sh started in native mode, by PID; --purge also deletes ./run.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh

purge=0
[[ "${1:-}" == "--purge" ]] && purge=1

# Producers first, then the aggregators (they commit what they wrote), then the services.
for pidfile in "$run_dir"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    case "$name" in dev-broker | superset) ;; *) [[ "$name" == *aggregator* ]] || stop_pid "$name" ;; esac
done
for pidfile in "$run_dir"/*aggregator*.pid; do
    [[ -e "$pidfile" ]] && stop_pid "$(basename "$pidfile" .pid)"
done
[[ -x scripts/superset-native.sh ]] && scripts/superset-native.sh stop "$run_dir" >/dev/null 2>&1 || true
stop_pid superset
stop_pid dev-broker
if [[ -d "$run_dir/clickhouse" ]]; then
    scripts/clickhouse-local.sh stop "$run_dir/clickhouse" && say "stopped ClickHouse"
fi
if [[ -d "$run_dir/cluster" ]]; then
    scripts/clickhouse-cluster.sh stop "$run_dir/cluster" >/dev/null && say "stopped the ClickHouse cluster (two replicas and ZooKeeper)"
fi
if ((purge)); then
    rm -rf "$run_dir"
    say "removed $run_dir"
fi
