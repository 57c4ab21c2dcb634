#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a private ClickHouse server and the
# dev Kafka broker, and end-to-end tests of the executables. Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
swift build
swift test "$@"
