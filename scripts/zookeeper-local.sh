#!/usr/bin/env bash
# Runs a private single-node ZooKeeper (Debian's `zookeeper` package) bound to 127.0.0.1, for
# the replicated ClickHouse cluster of scripts/clickhouse-cluster.sh.
#
#   scripts/zookeeper-local.sh start DIR [CLIENT_PORT]   # idempotent; waits until it serves
#   scripts/zookeeper-local.sh stop DIR
#
# DIR holds zoo.cfg, data/, zookeeper.log and zookeeper.pid. The port defaults to 2181.
set -euo pipefail

command="${1:-}"
dir="${2:-}"
if [[ -z "$command" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR [CLIENT_PORT]" >&2
    exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/zookeeper.pid"
# shellcheck source=scripts/process-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/process-lib.sh"
running() { pid_running "$pidfile"; }

# `ruok` answers as soon as the port is open; `srvr` reports a mode only once the server serves.
serving() {
    local answer
    answer="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf srvr >&3; cat <&3" 2>/dev/null || true)"
    [[ "$answer" == *"Mode: "* ]]
}

case "$command" in
stop)
    stop_pidfile "$pidfile" >/dev/null
    ;;
start)
    port="${3:-2181}"
    if running; then
        echo "ZooKeeper already running (pid $(cat "$pidfile"), port $(cat "$dir/client_port"))"
        exit 0
    fi
    jar=/usr/share/java/zookeeper.jar
    java="$(command -v java || true)"
    if [[ ! -f "$jar" || -z "$java" ]]; then
        echo "error: ZooKeeper is not installed. Install it with: apt-get install -y zookeeper" >&2
        exit 1
    fi
    mkdir -p "$dir/data"
    cat >"$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
CFG
    echo "$port" >"$dir/client_port"
    # The JVM would keep every descriptor it inherits open for its lifetime (a caller waiting
    # for EOF on one of them would wait forever): close all but 0-2 before starting it.
    (
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec nohup "$java" -Xmx256m -cp "$jar:/etc/zookeeper/conf:/usr/share/java/slf4j-simple.jar" -Dzookeeper.log.dir="$dir" \
            org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" </dev/null >"$dir/zookeeper.log" 2>&1
    ) &
    echo $! >"$pidfile"
    for _ in $(seq 1 300); do
        if serving "$port"; then
            echo "ZooKeeper ready on 127.0.0.1:$port (data in $dir)"
            exit 0
        fi
        if ! running; then
            echo "error: ZooKeeper exited during start; see $dir/zookeeper.log" >&2
            tail -n 20 "$dir/zookeeper.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "error: ZooKeeper did not answer on port $port within 30 s; see $dir/zookeeper.log" >&2
    exit 1
    ;;
*)
    echo "usage: $0 start|stop DIR [CLIENT_PORT]" >&2
    exit 2
    ;;
esac
