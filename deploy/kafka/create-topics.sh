#!/bin/bash
# One-off topic creation for the docker-compose deployment (service kafka-init,
# image apache/kafka). Idempotent: creates missing topics with explicit
# partitions, replication, retention and max.message.bytes, then re-applies the
# configs to topics that already exist (so a changed limit is enforced on
# every `docker compose up`). Partition counts are never changed here: more
# partitions would move keys to other partitions and break per-document order
# for the records already written (see docs/deployment.md, "Scaling").
#
# Size limits (docker-compose.yml explains the chain):
#   mongo-source kafka.message_max_bytes (4 MiB)
#     <= topic max.message.bytes (EVENT_MAX_MESSAGE_BYTES, 5 MiB)
#     <= broker message.max.bytes (KAFKA_MESSAGE_MAX_BYTES, 5 MiB + 64 KiB)
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
PREFIX=${TOPIC_PREFIX:-live}
DATABASE=${MONGO_DATABASE:-mountain}
# Single broker: 1. Production: 3 brokers, replication 3, min.insync.replicas 2.
RF=${REPLICATION_FACTOR:-1}
MIN_ISR=${MIN_INSYNC_REPLICAS:-1}
EVENT_PARTITIONS=${EVENT_PARTITIONS:-6}
EVENT_RETENTION_MS=${EVENT_RETENTION_MS:-604800000}         # 7 days: the replay window of es-sync
EVENT_MAX_MESSAGE_BYTES=${EVENT_MAX_MESSAGE_BYTES:-5242880}  # 5 MiB
DLQ_RETENTION_MS=${DLQ_RETENTION_MS:-2592000000}             # 30 days: time to look at dead letters
DLQ_MAX_MESSAGE_BYTES=${DLQ_MAX_MESSAGE_BYTES:-5242880}
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
WAIT_SECONDS=${WAIT_SECONDS:-120}

log() { printf 'kafka-init: %s\n' "$*"; }

deadline=$((SECONDS + WAIT_SECONDS))
until "$KAFKA_BIN/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        log "broker $BOOTSTRAP not reachable after ${WAIT_SECONDS}s"
        exit 1
    fi
    sleep 2
done
log "broker $BOOTSTRAP is up"

# topic NAME PARTITIONS KEY=VALUE...
topic() {
    local name=$1 partitions=$2
    shift 2
    local create_args=() joined
    for kv in "$@"; do create_args+=(--config "$kv"); done
    joined=$(IFS=,; echo "$*")
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$RF" "${create_args[@]}" >/dev/null
    "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter \
        --entity-type topics --entity-name "$name" --add-config "$joined" >/dev/null
    local have
    have=$("$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic "$name" \
        | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
    if [[ $have != "$partitions" ]]; then
        log "WARNING: $name has $have partitions, this script asks for $partitions (left unchanged)"
    fi
    log "$name: partitions=$have $joined"
}

for coll in card reply; do
    topic "$PREFIX.$DATABASE.$coll" "$EVENT_PARTITIONS" \
        cleanup.policy=delete \
        "retention.ms=$EVENT_RETENTION_MS" \
        "max.message.bytes=$EVENT_MAX_MESSAGE_BYTES" \
        "min.insync.replicas=$MIN_ISR" \
        compression.type=producer
done

# Dead letters of mongo-source (oversized records: small pointer records).
topic "$PREFIX.dlq" 1 \
    cleanup.policy=delete "retention.ms=$DLQ_RETENTION_MS" \
    "max.message.bytes=$DLQ_MAX_MESSAGE_BYTES" "min.insync.replicas=$MIN_ISR"

# Dead letters of es-sync (records Elasticsearch rejected, with the record).
topic "$PREFIX.dlq.sync" 1 \
    cleanup.policy=delete "retention.ms=$DLQ_RETENTION_MS" \
    "max.message.bytes=$DLQ_MAX_MESSAGE_BYTES" "min.insync.replicas=$MIN_ISR"

# Resume positions of mongo-source (key = stream): compacted, never deleted by
# time; same settings as mongo-source itself uses when it creates the topic.
topic "$PREFIX.mongo-source.offsets" 1 \
    cleanup.policy=compact segment.ms=3600000 min.cleanable.dirty.ratio=0.1 \
    "min.insync.replicas=$MIN_ISR"

log "done"
