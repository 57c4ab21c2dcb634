#!/usr/bin/env bash
# Stops an aggregator instance (SIGTERM: it writes what is complete and commits): scripts/stop-aggregator.sh [NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh
stop_pid "${1:-aggregator}"
