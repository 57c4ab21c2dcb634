#!/usr/bin/env bash
# Runs a private ClickHouse server (Debian's clickhouse-server, 18.16, or any newer one) from a
# generated configuration, bound to 127.0.0.1 only.
#
#   scripts/clickhouse-local.sh start DIR [HTTP_PORT] [TCP_PORT]   # idempotent; waits for /ping
#   scripts/clickhouse-local.sh stop DIR
#   scripts/clickhouse-local.sh status DIR
#
# DIR holds config.xml, users.xml, data/, tmp/, log/ and clickhouse.pid. Ports default to 8123
# and 9000. User `default` has no password; if CTR_CLICKHOUSE_PASSWORD is set, user `ctr` is
# created with it. With CTR_CLICKHOUSE_HTTPS_PORT, CTR_CLICKHOUSE_TLS_CERT and
# CTR_CLICKHOUSE_TLS_KEY set, it also serves HTTPS on that port.
# As a replica of a cluster (see scripts/clickhouse-cluster.sh): CTR_CLICKHOUSE_ZOOKEEPER
# (host:port), CTR_CLICKHOUSE_CLUSTER (cluster name), CTR_CLICKHOUSE_CLUSTER_REPLICAS (the
# replicas' host:tcp_port, comma-separated, one shard), CTR_CLICKHOUSE_REPLICA (this replica's
# {replica} macro; {shard} is 01) and CTR_CLICKHOUSE_INTERSERVER_PORT (replication fetches).
set -euo pipefail

command="${1:-}"
dir="${2:-}"
if [[ -z "$command" || -z "$dir" ]]; then
    echo "usage: $0 start|stop|status DIR [HTTP_PORT] [TCP_PORT]" >&2
    exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pidfile="$dir/clickhouse.pid"
# shellcheck source=scripts/process-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/process-lib.sh"
running() { pid_running "$pidfile"; }

case "$command" in
status)
    if running; then
        echo "running (pid $(cat "$pidfile"), http port $(cat "$dir/http_port"))"
    else
        echo "stopped"
        exit 1
    fi
    ;;
stop)
    stop_pidfile "$pidfile" >/dev/null
    ;;
start)
    http_port="${3:-8123}"
    tcp_port="${4:-9000}"
    if running; then
        echo "ClickHouse already running (pid $(cat "$pidfile"), http port $(cat "$dir/http_port"))"
        exit 0
    fi
    binary="$(command -v clickhouse-server || command -v clickhouse || true)"
    if [[ -z "$binary" ]]; then
        echo "error: ClickHouse is not installed. Install it with: apt-get install -y clickhouse-server" >&2
        exit 1
    fi
    mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
    password_user=""
    if [[ -n "${CTR_CLICKHOUSE_PASSWORD:-}" ]]; then
        password_user="<ctr><password>${CTR_CLICKHOUSE_PASSWORD}</password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></ctr>"
    fi
    cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></default>
        ${password_user}
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
    cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <max_connections>512</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>200</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
XML
    if [[ -n "${CTR_CLICKHOUSE_HTTPS_PORT:-}" ]]; then
        tls="<https_port>${CTR_CLICKHOUSE_HTTPS_PORT}</https_port>
    <openSSL><server><certificateFile>${CTR_CLICKHOUSE_TLS_CERT}</certificateFile><privateKeyFile>${CTR_CLICKHOUSE_TLS_KEY}</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions>
    <disableProtocols>sslv2,sslv3</disableProtocols><preferServerCiphers>true</preferServerCiphers></server></openSSL>"
        sed -i "s#</yandex>#${tls//$'\n'/ }</yandex>#" "$dir/config.xml"
    fi
    if [[ -n "${CTR_CLICKHOUSE_ZOOKEEPER:-}" ]]; then
        replicas=""
        IFS=',' read -ra addresses <<<"${CTR_CLICKHOUSE_CLUSTER_REPLICAS:?set CTR_CLICKHOUSE_CLUSTER_REPLICAS=host:port,...}"
        for address in "${addresses[@]}"; do
            replicas+="<replica><host>${address%:*}</host><port>${address##*:}</port></replica>"
        done
        cluster="<zookeeper><node><host>${CTR_CLICKHOUSE_ZOOKEEPER%:*}</host><port>${CTR_CLICKHOUSE_ZOOKEEPER##*:}</port></node><session_timeout_ms>15000</session_timeout_ms></zookeeper>
    <remote_servers><${CTR_CLICKHOUSE_CLUSTER:?}><shard><internal_replication>true</internal_replication>${replicas}</shard></${CTR_CLICKHOUSE_CLUSTER}></remote_servers>
    <macros><shard>01</shard><replica>${CTR_CLICKHOUSE_REPLICA:?}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>${CTR_CLICKHOUSE_INTERSERVER_PORT:?}</interserver_http_port>"
        sed -i "s#</yandex>#${cluster//$'\n'/ }</yandex>#" "$dir/config.xml"
    fi
    echo "$http_port" >"$dir/http_port"
    # The server refuses to run as root only when its data directory belongs to another user;
    # everything here belongs to the caller.
    nohup "$binary" server --config-file="$dir/config.xml" --pid-file="$pidfile" \
        >"$dir/log/stdout.log" 2>&1 &
    echo $! >"$pidfile.launcher"
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$http_port/ping" >/dev/null 2>&1; then
            [[ -f "$pidfile" ]] || cat "$pidfile.launcher" >"$pidfile"
            echo "ClickHouse ready on http://127.0.0.1:$http_port (data in $dir)"
            exit 0
        fi
        if ! kill -0 "$(cat "$pidfile.launcher")" 2>/dev/null; then
            echo "error: ClickHouse exited during start; see $dir/log/stdout.log and $dir/log/clickhouse-server.err.log" >&2
            tail -n 20 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
    echo "error: ClickHouse did not answer on port $http_port within 30 s; see $dir/log/" >&2
    exit 1
    ;;
*)
    echo "usage: $0 start|stop|status DIR [HTTP_PORT] [TCP_PORT]" >&2
    exit 2
    ;;
esac
