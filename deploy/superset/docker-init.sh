#!/bin/bash
# Superset start-up in docker-compose: ClickHouse driver, metadata database, admin user, and the
# ClickHouse connection. (Dashboards are not yet shipped as an import bundle; see README.)
set -euo pipefail
pip install --quiet "clickhouse-connect>=0.7"
superset db upgrade
superset fab create-admin --username admin --firstname CTR --lastname Admin --email admin@example.com \
    --password "${SUPERSET_ADMIN_PASSWORD:-admin}" || true
superset init
superset set_database_uri --database_name ClickHouse --uri "${CLICKHOUSE_URI}"
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
