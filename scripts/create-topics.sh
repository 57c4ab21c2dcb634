#!/usr/bin/env bash
# Creates the pipeline's topics on a real Kafka cluster (native mode's dev broker creates them at
# start; Docker mode runs the same through the create-topics service).
#   scripts/create-topics.sh BOOTSTRAP [PARTITIONS] [REPLICATION]
# Needs Kafka's kafka-topics.sh on PATH (or KAFKA_HOME).
set -euo pipefail
bootstrap="${1:?usage: create-topics.sh BOOTSTRAP [PARTITIONS] [REPLICATION]}"
partitions="${2:-6}"
replication="${3:-3}"
tool="$(command -v kafka-topics.sh || echo "${KAFKA_HOME:-/opt/kafka}/bin/kafka-topics.sh")"
[[ -x "$tool" ]] || { echo "error: kafka-topics.sh not found; set KAFKA_HOME" >&2; exit 1; }
for topic in impressions clicks conversions ctr-dlq; do
    "$tool" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$topic" \
        --partitions "$partitions" --replication-factor "$replication"
done
