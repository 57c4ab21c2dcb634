#!/usr/bin/env bash
# Stops everything ./scripts/setup.sh started in native mode, by PID; --purge also deletes ./run.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh

purge=0
[[ "${1:-}" == "--purge" ]] && purge=1

stop_pid() {
    local name="$1" pidfile="$run_dir/$1.pid"
    if pid_running "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

# Producer first, then the aggregator (it commits what it wrote), then the services.
stop_pid producer
stop_pid aggregator
[[ -x scripts/superset-native.sh ]] && scripts/superset-native.sh stop "$run_dir" >/dev/null 2>&1 || true
stop_pid superset
stop_pid dev-broker
if [[ -d "$run_dir/clickhouse" ]]; then
    scripts/clickhouse-local.sh stop "$run_dir/clickhouse" && say "stopped ClickHouse"
fi
if ((purge)); then
    rm -rf "$run_dir"
    say "removed $run_dir"
fi
