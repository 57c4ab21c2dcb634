#!/usr/bin/env bash
# Stops a producer started by setup.sh or start-producer.sh: scripts/stop-producer.sh [NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh
stop_pid "${1:-producer}"
