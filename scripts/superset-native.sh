#!/usr/bin/env bash
# Apache Superset for native mode, in a virtual environment under RUN_DIR.
#
#   scripts/superset-native.sh install RUN_DIR
#   scripts/superset-native.sh start RUN_DIR CLICKHOUSE_HTTP_PORT DATABASE   # installs if needed, imports dashboards
#   scripts/superset-native.sh stop RUN_DIR
#
# Superset listens on 127.0.0.1:${CTR_SUPERSET_PORT:-8088}; login admin / ${SUPERSET_ADMIN_PASSWORD:-admin}.
# Versions known to work here: apache-superset 6.1.0 with flask-caching<2.5, rich, cachetools and
# clickhouse-sqlalchemy<0.3 (Superset needs SQLAlchemy < 2; clickhouse-connect cannot read
# ClickHouse 18.16's system.settings).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

command="${1:-}"
run_dir="${2:-}"
[[ -n "$command" && -n "$run_dir" ]] || { echo "usage: $0 install|start|stop RUN_DIR [CLICKHOUSE_HTTP_PORT DATABASE]" >&2; exit 2; }
mkdir -p "$run_dir/logs"
run_dir="$(cd "$run_dir" && pwd)"
venv="$run_dir/superset-venv"
home="$run_dir/superset-home"
port="${CTR_SUPERSET_PORT:-8088}"
pidfile="$run_dir/superset.pid"
password="${SUPERSET_ADMIN_PASSWORD:-admin}"

# shellcheck source=scripts/process-lib.sh
source "$root/scripts/process-lib.sh"

export SUPERSET_HOME="$home"
export SUPERSET_CONFIG_PATH="$home/superset_config.py"
export FLASK_APP=superset

install() {
    if [[ -x "$venv/bin/superset" ]]; then
        return 0
    fi
    echo "installing Apache Superset into $venv (several minutes) ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip wheel
    "$venv/bin/pip" install --quiet "apache-superset==6.1.0" "flask-caching<2.5" rich cachetools "clickhouse-sqlalchemy<0.3"
}

configure() {
    mkdir -p "$home"
    if [[ ! -f "$home/secret_key" ]]; then
        python3 -c 'import secrets; print(secrets.token_urlsafe(42))' >"$home/secret_key"
    fi
    cat >"$SUPERSET_CONFIG_PATH" <<PY
SECRET_KEY = open("$home/secret_key").read().strip()
SQLALCHEMY_DATABASE_URI = "sqlite:///$home/superset.db"
WTF_CSRF_ENABLED = True
FEATURE_FLAGS = {"DASHBOARD_RBAC": False}
PY
    "$venv/bin/superset" db upgrade >"$run_dir/logs/superset-db-upgrade.log" 2>&1
    "$venv/bin/superset" fab create-admin --username admin --firstname CTR --lastname Admin \
        --email admin@example.com --password "$password" >"$run_dir/logs/superset-admin.log" 2>&1 || true
    "$venv/bin/superset" init >"$run_dir/logs/superset-init.log" 2>&1
}

case "$command" in
install)
    install
    ;;
start)
    clickhouse_port="${3:?CLICKHOUSE_HTTP_PORT}"
    database="${4:?DATABASE}"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "Superset already running (pid $(cat "$pidfile")) on http://127.0.0.1:$port"
        exit 0
    fi
    install
    configure
    nohup "$venv/bin/superset" run -h 127.0.0.1 -p "$port" --with-threads >"$run_dir/logs/superset.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 120); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { echo "Superset did not start; see $run_dir/logs/superset.log" >&2; exit 1; }
    "$venv/bin/python" "$root/deploy/superset/provision.py" "http://127.0.0.1:$port" admin "$password" \
        "clickhouse+http://default:@127.0.0.1:$clickhouse_port/$database" "$root/deploy/superset/dashboard.json"
    echo "Superset ready on http://127.0.0.1:$port (admin / $password)"
    ;;
stop)
    if [[ -n "$(stop_pidfile "$pidfile" 30)" ]]; then
        # Worker processes of this run directory's Superset, if any outlived it.
        pkill -f "$venv/bin/superset" 2>/dev/null || true
    fi
    ;;
*)
    echo "usage: $0 install|start|stop RUN_DIR [CLICKHOUSE_HTTP_PORT DATABASE]" >&2
    exit 2
    ;;
esac
