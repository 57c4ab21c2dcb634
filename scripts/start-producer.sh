#!/usr/bin/env bash
# Starts one more synthetic producer against the running native pipeline (./scripts/setup.sh).
#   scripts/start-producer.sh [NAME] [ctr-producer flags...]     e.g. start-producer.sh burst --rate 20000
# Stop it with scripts/stop-producer.sh NAME (default name: producer).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib.sh
name="${1:-producer}"
shift || true
[[ -s "$run_dir/bootstrap.txt" ]] || fail "the pipeline is not running" "start it with ./scripts/setup.sh"
bin="$(swift build -c release --show-bin-path)"
mkdir -p "$run_dir/logs"
args=("$@")
((${#args[@]})) || args=(--products 500 --rate 2000 --duration 86400)
start_process "$name" "grep -q 'sent ' '$run_dir/logs/$name.log'" "$bin/ctr-producer" --bootstrap-file "$run_dir/bootstrap.txt" "${args[@]}"
