#!/usr/bin/env bash
# BENCHMARKS.md "feiyun migrate against rclone" (issue 22), in one run on one machine:
#  1. 10,000 x 4 KiB files from a directory into the region: feiyun migrate, then rclone copy,
#     each into its own bucket, at the same concurrency (16 transfers, 16 checkers); then
#     feiyun migrate again with its default journal, kept in the region;
#  2. the same 10,000 objects from an S3 source (a second region on loopback), both tools;
#  3. 2 x 1 GiB files from a directory, both tools (MiB/s);
#  4. a 1 GiB copy killed half-way and resumed: the bytes the resumed run sent.
# Each copy is timed from start to exit, as the user waits for it. Both tools verify what
# they send (feiyun: Content-MD5 and CRC64NVME on every PUT and part; rclone: MD5).
# Usage: scripts/bench_migrate.sh BINARY
set -euo pipefail
bin=$(readlink -f "${1:?usage: bench_migrate.sh BINARY}")
command -v rclone >/dev/null || { echo "bench_migrate.sh needs rclone (apt-get install rclone)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench_migrate.sh needs python3" >&2; exit 1; }
work=$(mktemp -d /var/tmp/bench-migrate.XXXXXX)
pids=()
cleanup() {
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "logs in $work" || rm -rf "$work"
}
trap cleanup EXIT
export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export FEIYUN_MASTER_KEY=ZmVpeXVuLWJlbmNoLW1hc3Rlci1rZXktMzItYnl0ZXM=
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY
export FEIYUN_SOURCE_ACCESS_KEY=$FEIYUN_ROOT_ACCESS_KEY FEIYUN_SOURCE_SECRET_KEY=$FEIYUN_ROOT_SECRET_KEY

start() {
  local name=$1
  mkdir -p "$work/$name"
  FEIYUN_LOG=warn "$bin" server --data-dir "$work/$name/data" --listen 127.0.0.1:0 \
    >"$work/$name/out" 2>"$work/$name/err" &
  pids+=("$!")
  for _ in $(seq 1 200); do grep -q '^S3 endpoint: ' "$work/$name/out" 2>/dev/null && break; sleep 0.1; done
  local ep; ep=$(sed -n 's/^S3 endpoint: //p' "$work/$name/out" | head -n1)
  [ -n "$ep" ] || { echo "$name did not start:" >&2; cat "$work/$name/err" >&2; exit 1; }
  echo "$ep"
}
region=$(start region)
legacy=$(start legacy)
# rclone reaches both through environment-defined remotes (no config file).
for r in dst:"$region" src:"$legacy"; do
  n=${r%%:*}; ep=${r#*:}; N=$(echo "$n" | tr a-z A-Z)
  export RCLONE_CONFIG_${N}_TYPE=s3 RCLONE_CONFIG_${N}_PROVIDER=Other
  export RCLONE_CONFIG_${N}_ENDPOINT="$ep" RCLONE_CONFIG_${N}_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
  export RCLONE_CONFIG_${N}_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_${N}_FORCE_PATH_STYLE=true
done
# rclone 1.60 refuses to start with a custom CA bundle in the environment; both ends are
# plain HTTP on loopback.
unset AWS_CA_BUNDLE
conc=(--transfers 16 --checkers 16)

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "== $("$bin" --version 2>/dev/null || echo feiyun), $(rclone version | head -n1)"

# timed LABEL COUNT BYTES command...: wall time of one command, as objects/s and MiB/s.
timed() {
  local label=$1 count=$2 bytes=$3; shift 3
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/last.out" 2>"$work/last.err" || { echo "$label failed:" >&2; cat "$work/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "
import sys
s = $t1 - $t0
print(f'{sys.argv[1]:<44} {s:7.2f} s  {$count / s:8.0f} objects/s  {$bytes / s / 2**20:8.1f} MiB/s')
" "$label"
}

echo "== 1. 10,000 x 4 KiB from a directory"
mkdir -p "$work/small"
python3 - "$work/small" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:02d}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:02d}/f{f:03d}", "wb") as fh:
            fh.write(os.urandom(4096))
PY
sync
timed "feiyun migrate dir -> region" 10000 $((10000 * 4096)) \
  "$bin" migrate "$work/small" s3://fy-small --endpoint "$region" "${conc[@]}" --state "$work/j1"
timed "rclone copy dir -> region" 10000 $((10000 * 4096)) \
  rclone copy "$work/small" dst:rc-small "${conc[@]}"
# The default: no --state, the journal kept in the region (its local cache under HOME).
HOME="$work/home" timed "feiyun migrate dir -> region, region journal" 10000 $((10000 * 4096)) \
  "$bin" migrate "$work/small" s3://fy-small-rj --endpoint "$region" "${conc[@]}"

echo "== 2. the same 10,000 objects from an S3 source (a second region)"
rclone copy "$work/small" src:legacy "${conc[@]}"
timed "feiyun migrate s3 -> region" 10000 $((10000 * 4096)) \
  "$bin" migrate s3://legacy s3://fy-s3 --endpoint "$region" --source-endpoint "$legacy" "${conc[@]}" --state "$work/j2"
timed "rclone copy s3 -> region" 10000 $((10000 * 4096)) \
  rclone copy src:legacy dst:rc-s3 "${conc[@]}"

echo "== 3. 2 x 1 GiB from a directory"
mkdir -p "$work/large"
head -c $((1 << 30)) /dev/urandom >"$work/large/a"
head -c $((1 << 30)) /dev/urandom >"$work/large/b"
sync
timed "feiyun migrate 2 x 1 GiB" 2 $((2 << 30)) \
  "$bin" migrate "$work/large" s3://fy-large --endpoint "$region" "${conc[@]}" --state "$work/j3"
timed "rclone copy 2 x 1 GiB" 2 $((2 << 30)) \
  rclone copy "$work/large" dst:rc-large "${conc[@]}"

echo "== 4. a 1 GiB copy killed half-way, then resumed"
mkdir -p "$work/one"; mv "$work/large/a" "$work/one/a"
"$bin" migrate "$work/one" s3://fy-resume --endpoint "$region" --state "$work/j4" --bandwidth 200M \
  >/dev/null 2>&1 &
victim=$!
sleep 2.7
kill -9 "$victim" 2>/dev/null || true
wait "$victim" 2>/dev/null || true
"$bin" migrate "$work/one" s3://fy-resume --endpoint "$region" --state "$work/j4" --json >"$work/resume.json"
python3 - "$work/resume.json" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"resumed run sent {s['bytes'] / 2**20:.0f} MiB of the 1,024 MiB object in {s['seconds']:.1f} s")
PY
"$bin" migrate verify "$work/one" s3://fy-resume --endpoint "$region" | tail -n1
