#!/bin/bash
# Superset start-up in docker-compose (image deploy/superset/Dockerfile, dependencies baked in):
# metadata database, admin user, then the same dashboards as native mode, provisioned from
# dashboard.json through the REST API.
set -euo pipefail
superset db upgrade
superset fab create-admin --username admin --firstname CTR --lastname Admin --email admin@example.com \
    --password "${SUPERSET_ADMIN_PASSWORD:-admin}" || true
superset init
gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()" &
server=$!
until curl -fsS http://127.0.0.1:8088/health >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "Superset exited during start" >&2; exit 1; }
    sleep 1
done
python /app/ctr-superset/provision.py http://127.0.0.1:8088 admin "${SUPERSET_ADMIN_PASSWORD:-admin}" "${CLICKHOUSE_URI}" \
    /app/ctr-superset/dashboard.json
wait "$server"
