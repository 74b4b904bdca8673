#!/bin/bash
# mongo-source throughput vs batch.max_events (the measurement behind its
# default): Rust SecantusDB on 27200 (fresh, in /tmp/perf/batchwork) and the
# Kafka of `scripts/stack start kafka`, 100k seeded documents (sample-data),
# each batch size twice; rate = mongo_source_events_total, first to last.
# Needs `cargo build --release -p mongo-source` and the debug sample-data bin.
set -u
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-$HOME/.cache/search-pipeline/target}/release
RS=$HOME/.cache/search-pipeline/secantus-rs/bin/secantusd-rs
W=/tmp/perf/batchwork; rm -rf $W; mkdir -p $W/rs
: > $W/rs/empty.toml
$RS --config $W/rs/empty.toml --host 127.0.0.1 --port 27200 --storage-path $W/rs/data --sync-on-commit --cache-size 256M --log-file-max 10MB --oplog-max-entries 5000000 > $W/rs.log 2>&1 &
RSPID=$!
sleep 3
URI="mongodb://127.0.0.1:27200/?directConnection=true"
TS=$(( $(date +%s) - 1 ))
$HOME/.cache/search-pipeline/target/debug/sample-data --uri "$URI" --db exp --cards 75000 --replies 25000 > $W/seed.log 2>&1
echo "seeded: $(tail -1 $W/seed.log)"
n=0
for rep in 1 2; do
for B in 1000 5000 2000; do
  n=$((n+1)); P="bx$n$RANDOM"; PORT=$((29700+n))
  cat > $W/s$n.toml <<EOT
[mongodb]
uri = "$URI"
database = "exp"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
delivery = "exactly_once"
transactional_id_prefix = "$P"
compression = "zstd"
[topics]
prefix = "$P"
partitions = 3
[batch]
max_events = $B
[[collections]]
name = "card"
[[collections]]
name = "reply"
[start]
mode = "timestamp"
timestamp = $TS
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$PORT"
EOT
  t0=$(date +%s.%N)
  $T/mongo-source --config $W/s$n.toml > $W/s$n.log 2>&1 &
  PID=$!
  first=""
  while :; do
    v=$(curl -s 127.0.0.1:$PORT/metrics | awk '/^mongo_source_events_total/ {s+=$2} END {print s+0}')
    now=$(date +%s.%N)
    if [[ -z $first && ${v%.*} -gt 0 ]]; then first=$now; fv=$v; fi
    if [[ ${v%.*} -ge 100000 ]]; then break; fi
    sleep 0.1
  done
  rss=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
  kill $PID; wait $PID 2>/dev/null
  python3 -c "print('batch $B rep $rep: %.0f events/s (first->last), hwm %.1f MiB' % ((100000-$fv)/($now-$first), $rss/1024))"
done
done
kill $RSPID
