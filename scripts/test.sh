#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a private ClickHouse server and the
# dev Kafka broker, end-to-end tests of the executables, a reduced fault campaign, and the
# native bring-up with Superset end to end.
# Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

# Nothing under Tests/, tests/, scripts/ or .ci/ reads outside the clone.
python3 scripts/check-self-contained.py

swift build

# Static checks of docker-compose.yml, the Dockerfile and the Grafana dashboard (no Docker engine here).
python3 -m pytest -q tests/deploy

# libFuzzer on the event decoder, bounded.
./scripts/fuzz.sh 30

# Exactly-once under faults, reduced size (the full size: see README).
python3 scripts/fault-campaign.py --faults 12 --duration 60 --rate 400

# The native bring-up end to end: setup.sh, Superset (REST and a headless Chromium screenshot in
# .test-artifacts/), metrics, stop.sh.
./scripts/e2e-setup.sh

swift test "$@"
