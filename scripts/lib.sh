# Shared helpers of the bring-up scripts (sourced, not run).

run_dir="${CTR_RUN_DIR:-$root/run}"
DATABASE="${CTR_DATABASE:-ctr}"
CLICKHOUSE_HTTP_PORT="${CTR_CLICKHOUSE_HTTP_PORT:-18123}"
CLICKHOUSE_TCP_PORT="${CTR_CLICKHOUSE_TCP_PORT:-19000}"
METRICS_PORT="${CTR_METRICS_PORT:-9464}"
# The window key's dimensions of every aggregator of the pipeline (one consumer group: all the
# same); empty: per product only.
DIMENSIONS="${CTR_DIMENSIONS-campaign_id,country,device_type}"
# --cluster: ZooKeeper on CLUSTER_BASE_PORT, replica r1 HTTP +1, replica r2 HTTP +4 (scripts/clickhouse-cluster.sh).
CLUSTER_BASE_PORT="${CTR_CLUSTER_BASE_PORT:-19100}"
CLUSTER_NAME=ctr_cluster

say() { printf '==> %s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
fail() {
    printf 'error: %s\n' "$1" >&2
    [[ -n "${2:-}" ]] && printf '       %s\n' "$2" >&2
    exit 1
}

# shellcheck source=scripts/process-lib.sh
source "$root/scripts/process-lib.sh"

# start_process NAME READY COMMAND... : starts COMMAND in the background with its log and pid
# file, unless it already runs, then waits until the shell condition READY holds (e.g. its
# health endpoint answers). Fails as soon as the process exits; if it still runs after
# ${CTR_START_TIMEOUT:-60} s without READY holding, warns and goes on.
start_process() {
    local name="$1" ready="$2"
    shift 2
    local pidfile="$run_dir/$name.pid" log="$run_dir/logs/$name.log"
    if pid_running "$pidfile"; then
        say "$name already running (pid $(cat "$pidfile")); leaving it"
        return 0
    fi
    nohup "$@" >"$log" 2>&1 &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + ${CTR_START_TIMEOUT:-60}))
    until bash -c "$ready" >/dev/null 2>&1; do
        pid_running "$pidfile" || fail "$name exited at start" "see $log: $(tail -n 3 "$log" | tr '\n' ' ')"
        if ((SECONDS >= deadline)); then
            warn "$name runs but is not ready after ${CTR_START_TIMEOUT:-60} s (waited for: $ready); see $log"
            break
        fi
        sleep 0.1
    done
    say "$name started (pid $(cat "$pidfile"), log $log)"
}

# stop_pid NAME : stops the process of $run_dir/NAME.pid (SIGTERM, then SIGKILL after 30 s).
stop_pid() {
    local pid
    pid="$(stop_pidfile "$run_dir/$1.pid" 30)"
    [[ -z "$pid" ]] || say "stopped $1 (pid $pid)"
}

# wait_for WHAT SECONDS COMMAND... : polls COMMAND every second, printing dots.
wait_for() {
    local what="$1" seconds="$2"
    shift 2
    for ((i = 0; i < seconds; i++)); do
        if "$@" >/dev/null 2>&1; then
            ((i > 0)) && echo
            return 0
        fi
        printf '.'
        sleep 1
    done
    echo
    warn "timed out after ${seconds}s waiting for $what"
    return 1
}

summary() {
    local clickhouse_url="$1" brokers="$2"
    printf '\nThe CTR pipeline is running (native mode).\n\n'
    if [[ -d "$run_dir/cluster" ]]; then
        cat <<EOF
  ClickHouse     cluster $CLUSTER_NAME: $clickhouse_url (r1), http://127.0.0.1:$((CLUSTER_BASE_PORT + 4)) (r2)   database $DATABASE
                 ZooKeeper 127.0.0.1:$CLUSTER_BASE_PORT   (state and logs under $run_dir/cluster/)
  aggregators    http://127.0.0.1:$METRICS_PORT/metrics writes to r1 (pid $(cat "$run_dir/aggregator.pid")),
                 http://127.0.0.1:$((METRICS_PORT + 1))/metrics writes to r2 (pid $(cat "$run_dir/aggregator-r2.pid")); logs in $run_dir/logs/
EOF
    else
        cat <<EOF
  ClickHouse     $clickhouse_url   database $DATABASE   (pid $(cat "$run_dir/clickhouse/clickhouse.pid" 2>/dev/null), logs $run_dir/clickhouse/log/)
  aggregator     metrics http://127.0.0.1:$METRICS_PORT/metrics   (pid $(cat "$run_dir/aggregator.pid"), log $run_dir/logs/aggregator.log)
EOF
    fi
    cat <<EOF
  Kafka broker   $brokers   (pid $(cat "$run_dir/dev-broker.pid"), log $run_dir/logs/dev-broker.log)
  producer       (pid $(cat "$run_dir/producer.pid"), log $run_dir/logs/producer.log)
EOF
    if [[ -f "$run_dir/superset.pid" ]] && pid_running "$run_dir/superset.pid"; then
        echo "  Superset       http://127.0.0.1:${CTR_SUPERSET_PORT:-8088}   login admin / ${SUPERSET_ADMIN_PASSWORD:-admin}"
    fi
    cat <<EOF

Try:
  curl -s '$clickhouse_url/?database=$DATABASE' --data-binary 'SELECT product_id, window_start, impressions, clicks, round(ctr, 4), conversions, revenue FROM ctr_latest_view FINAL ORDER BY impressions DESC LIMIT 10'
  curl -s '$clickhouse_url/?database=$DATABASE' --data-binary 'SELECT product_id, window_minute, sumMerge(clicks) / sumMerge(impressions) AS ctr FROM ctr_ml_view GROUP BY product_id, window_minute ORDER BY window_minute DESC LIMIT 10'

Stop everything with ./scripts/stop.sh (add --purge to delete $run_dir).
EOF
}
