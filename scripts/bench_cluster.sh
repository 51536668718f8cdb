#!/usr/bin/env bash
# BENCHMARKS.md "a region on many machines" (issue 21), in one run on one machine:
#  1. the disk's own limit: 1 GiB written with dd and fsynced, and read back cold;
#  2. feiyun bench against a 3-node region on loopback (one PostgreSQL, three processes,
#     3 copies of each blob on the one disk) with the embedded region (redb, one process) as
#     --compare, so both run every phase in the same run: 4 KiB PUT and GET at 16 and
#     64 connections, 1 GiB PUT and GET, one stream;
#  2b. the 1 GiB phases again on a 3-node region that codes every blob 2+1 (1.5x the bytes
#     on the disk instead of 3x);
#  3. the metadata engines on the object-commit shape: a 4 KiB PUT is one metadata commit
#     (objects under 64 KiB live in the metadata), so `feiyun bench` PUTs against one process
#     on PostgreSQL beside one on redb are the two engines' commit paths, p50 and p99 as the
#     client sees them;
#  4. repair after a node loss: a 4-node region holding 3 copies of 2 GiB (32 × 64 MiB), one
#     node killed, MiB/s of copies re-created from the first new byte to the last.
# Usage: [SMALL_ONLY=1] scripts/bench_cluster.sh BINARY [SECONDS]
set -euo pipefail
bin=$(readlink -f "${1:?usage: bench_cluster.sh BINARY [SECONDS]}")
secs=${2:-10}
for tool in python3 aws; do
  command -v "$tool" >/dev/null || { echo "bench_cluster.sh needs $tool" >&2; exit 1; }
done
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1)
[ -n "$initdb" ] || { echo "bench_cluster.sh needs PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
pgbin=$(dirname "$initdb")
work=$(mktemp -d /var/tmp/bench-cluster.XXXXXX)
chmod 755 "$work"
pids=()
as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
cleanup() {
  kill -9 "${pids[@]}" 2>/dev/null || true
  # Servers started inside $(...) are not in `pids` (a subshell's array): their pid files are.
  for p in "$work"/*/pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null; done || true
  wait 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -w -m immediate -D "$work/pg/data" stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] && echo "logs in $work" || rm -rf "$work"
}
trap cleanup EXIT
export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export FEIYUN_MASTER_KEY=ZmVpeXVuLWJlbmNoLW1hc3Rlci1rZXktMzItYnl0ZXM=
export FEIYUN_CLUSTER_SECRET=bench-cluster-secret-0123456789
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $("$bin" --version 2>/dev/null || true)"
echo "== 1. disk limit (1 GiB of random bytes into a new file, fsynced; read back after dropping the page cache)"
head -c 1073741824 /dev/urandom >"$work/big.bin"
dd if="$work/big.bin" of="$work/disk" bs=4M conv=fsync 2>&1 | tail -n1
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
dd if="$work/disk" of=/dev/null bs=4M 2>&1 | tail -n1
rm -f "$work/disk" "$work/big.bin"

# One PostgreSQL for every region here, durable (fsync and synchronous commit on).
mkdir -p "$work/pg"; [ ${#as_pg[@]} -gt 0 ] && chown postgres "$work/pg"
"${as_pg[@]}" "$initdb" -A trust -U feiyun -D "$work/pg/data" >/dev/null
pgport=$(free_port)
"${as_pg[@]}" "$pgbin/pg_ctl" -w -D "$work/pg/data" -l "$work/pg/log" \
  -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories='$work/pg' -c max_connections=300 -c fsync=on -c synchronous_commit=on" start >/dev/null
for db in cluster coded single repair; do
  "$pgbin/psql" -q -h 127.0.0.1 -p "$pgport" -U feiyun -d postgres -c "CREATE DATABASE $db"
done
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport"

# start NAME [ENV=VALUE...]: a server on a free port; prints its endpoint.
start() {
  local name=$1; shift
  mkdir -p "$work/$name"
  env "$@" FEIYUN_LOG=warn "$bin" server --data-dir "$work/$name/data" --listen 127.0.0.1:0 \
    >"$work/$name/out" 2>"$work/$name/err" &
  pids+=("$!"); echo "$!" >"$work/$name/pid"
  for _ in $(seq 1 200); do grep -q '^S3 endpoint: ' "$work/$name/out" 2>/dev/null && break; sleep 0.1; done
  local ep; ep=$(sed -n 's/^S3 endpoint: //p' "$work/$name/out" | head -n1)
  [ -n "$ep" ] || { echo "$name did not start:" >&2; cat "$work/$name/err" >&2; exit 1; }
  echo "$ep"
}
node() { # node NAME DB ID [more env]
  local name=$1 db=$2 id=$3; shift 3
  start "$name" FEIYUN_META_URL="postgres://feiyun@127.0.0.1:$pgport/$db" FEIYUN_NODE_ID="$id" \
    FEIYUN_ADVERTISE="127.0.0.1:$(free_port)" "$@"
}

embedded=$(start embedded)
c0=$(node c0 cluster n0); node c1 cluster n1 >/dev/null; node c2 cluster n2 >/dev/null
sleep 1.5
echo "== 2. feiyun bench: 3-node region ($c0, PostgreSQL metadata) then the embedded region ($embedded), ${secs} s a phase"
"$bin" bench --endpoint "$c0" --compare "$embedded" --duration-secs "$secs" \
  --concurrency 16,64 --large-streams 1 ${SMALL_ONLY:+--skip-large}
# What the node the load went to answered from its row cache, how often it lapsed, and how
# many commit groups (and batches in them) it sent the database.
curl -s "$c0/metrics" | grep -E '^feiyun_(row_cache_[a-z_]+|meta_commit_[a-z]+)_total ' || true
# SMALL_ONLY=1: phase 2's small objects only, for a quick look while tuning.
[ -n "${SMALL_ONLY:-}" ] && exit 0

echo "== 2b. 1 GiB on a 3-node region coding every blob 2+1 (1.5x the bytes on disk, not 3x)"
e0=$(node e0 coded e0 FEIYUN_ERASURE=2+1 FEIYUN_ERASURE_ALL=1)
node e1 coded e1 FEIYUN_ERASURE=2+1 FEIYUN_ERASURE_ALL=1 >/dev/null
node e2 coded e2 FEIYUN_ERASURE=2+1 FEIYUN_ERASURE_ALL=1 >/dev/null
sleep 1.5
"$bin" bench --endpoint "$e0" --compare "$embedded" --skip-small --large-streams 1 --bucket coded
for n in e0 e1 e2; do kill -9 "$(cat "$work/$n/pid")"; done

single=$(start single FEIYUN_META_URL="postgres://feiyun@127.0.0.1:$pgport/single")
echo "== 3. metadata engines: 4 KiB PUT (one commit each) on PostgreSQL ($single) vs redb ($embedded)"
"$bin" bench --endpoint "$single" --compare "$embedded" --duration-secs "$secs" \
  --concurrency 16,64 --ops put --skip-large --bucket engines

echo "== 4. repair after a node loss (4 nodes, 3 copies of 32 x 64 MiB)"
r=()
for i in 0 1 2 3; do
  r+=("$(node "r$i" repair "r$i" FEIYUN_NODE_DOWN_SECS=3 FEIYUN_REPAIR_AFTER_SECS=2)")
done
sleep 1.5
aws --endpoint-url "${r[0]}" s3 mb s3://repair >/dev/null
head -c $((64 << 20)) /dev/urandom >"$work/obj"
for i in $(seq 1 32); do
  aws --endpoint-url "${r[$((i % 3))]}" s3 cp --quiet "$work/obj" "s3://repair/o$i"
done
# File bytes only: `du` counts directories too, and the nodes' directory trees differ.
blob_bytes() { find "$work/r$1/data/blobs" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}'; }
# Completion counts copies, not bytes: a node may also drop files meanwhile (an upload's
# leftovers collected), which a byte total would read as a copy still missing.
blob_count() { find "$work/r$1/data/blobs" -type f ! -name '*.*' | wc -l; }
before=$(( $(blob_count 0) + $(blob_count 1) + $(blob_count 2) ))
lost=$(blob_bytes 3)
lost_count=$(blob_count 3)
kill -9 "$(cat "$work/r3/pid")"
t_kill=$(date +%s.%N)
want=$((before + lost_count))
first=; last=
while :; do
  now=$(( $(blob_count 0) + $(blob_count 1) + $(blob_count 2) ))
  t=$(date +%s.%N)
  [ -z "$first" ] && [ "$now" -gt "$before" ] && first=$t
  if [ "$now" -ge "$want" ]; then last=$t; break; fi
  python3 -c "import sys; sys.exit(0 if $t - $t_kill < 600 else 1)" || { echo "repair did not finish in 600 s ($now of $want copies)" >&2; exit 1; }
  sleep 0.2
done
python3 - "$lost" "$first" "$last" "$t_kill" <<'PY'
import sys
lost, first, last, kill = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"re-created {lost / 2**20:.0f} MiB of copies in {last - first:.1f} s from the first new byte "
      f"({lost / 2**20 / (last - first):.1f} MiB/s); {first - kill:.1f} s from the kill to the first byte "
      f"(node_down_secs 3, repair_after_secs 2)")
PY
