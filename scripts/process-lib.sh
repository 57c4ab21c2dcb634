# Process helpers shared by the scripts (sourced, not run).

# pid_running PIDFILE : whether the process named in PIDFILE runs.
pid_running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile PIDFILE [SECONDS] : SIGTERM to the process of PIDFILE, SIGKILL if it still runs
# after SECONDS (default 10); removes PIDFILE. Prints the pid it stopped, if any.
stop_pidfile() {
    local pidfile="$1" seconds="${2:-10}"
    if pid_running "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid"
        for _ in $(seq 1 $((seconds * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        echo "$pid"
    fi
    rm -f "$pidfile"
}
