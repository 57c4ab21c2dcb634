#!/usr/bin/env bash
# Runs the tests.
#
#   ./scripts/test.sh --unit     # the fast loop: unit and property tests, no servers (under a minute warm)
#   ./scripts/test.sh [ARGS]     # everything, as CI runs it; ARGS go to the integration `swift test`
#
# The full run installs what the tests need (scripts/install-deps.sh --test), checks that
# nothing reads outside the clone, builds, runs the unit tier first, then the static Docker and
# Prometheus checks, a bounded fuzz run, the reduced fault campaign, the native bring-up end to
# end (Superset screenshot included, single server and two-replica cluster), and the
# integration tests: a private ClickHouse 18.16, the dev Kafka broker, a two-replica cluster,
# current ClickHouse through chdb, and the executables end to end.
#
# Integration suites are the ones named *IntegrationTests, ClusterMigrationTests and everything
# in EndToEndTests (Tests/TestSupport/TestTier.swift); the unit tier skips them by name and sets
# CTR_TEST_TIER=unit, so an integration test that escapes the naming fails at once saying which
# server it needs instead of starting it.
set -euo pipefail
cd "$(dirname "$0")/.."

integration='IntegrationTests|ClusterMigrationTests|EndToEndTests'

unit_tier() {
    CTR_TEST_TIER=unit swift test --skip-build --skip "$integration"
}

if [[ "${1:-}" == "--unit" ]]; then
    shift
    scripts/install-deps.sh
    swift build --build-tests
    started=$SECONDS
    unit_tier "$@"
    echo "unit tier: $((SECONDS - started)) s"
    exit 0
fi

scripts/install-deps.sh --test

# Nothing under Tests/, tests/, scripts/ or .ci/ reads outside the clone.
python3 scripts/check-self-contained.py

swift build --build-tests

# The fast tier first: a broken unit test fails the run in a minute, not after the slow parts.
unit_tier

# Static checks of docker-compose.yml, the Dockerfile, the Grafana dashboard and the Prometheus
# rules (promtool), and of the self-containment check itself (no Docker engine here); check-truth's
# SQL and comparisons on current ClickHouse (chdb).
python3 -m pytest -q tests/deploy tests/scripts

# libFuzzer on the event decoder, bounded.
./scripts/fuzz.sh 30

# Exactly-once under faults, reduced size (the full size: see README): every fault kind at least once.
python3 scripts/fault-campaign.py --faults 12 --duration 60 --rate 400 \
    --dimensions campaign_id,country,device_type --duplicate-fraction 0.02 --dedup --check-uniques --check-rollups

# The native bring-up end to end: setup.sh, Superset (REST and a headless Chromium screenshot in
# .test-artifacts/), metrics, stop.sh; then the two-replica cluster bring-up (setup.sh --cluster).
./scripts/e2e-setup.sh
./scripts/e2e-setup.sh --cluster

# The integration tier.
swift test --skip-build --filter "$integration" "$@"
