#!/usr/bin/env bash
# Replication benchmarks for BENCHMARKS.md, two regions on loopback (one machine):
#  1. lag at a steady RATE PUT/s of 4 KiB objects: p50/p99 from the source's
#     feiyun_replication_lag_seconds histogram (source commit → replica commit), interpolated
#     within its buckets, over the run;
#  2. the write-path cost: PUT ops/s at 16 connections into a bucket with a replication rule
#     and into one without, alternated ROUNDS times, ratio of the medians (both regions and the
#     load generator share the machine, so the replica writes compete with the PUTs);
#  3. the source region's CPU per PUT at a fixed 400 PUT/s with and without the rule (what the
#     rule costs the region that takes the writes, the destination's work excluded), ratio
#     of the medians of ROUNDS.
# Phases 2 and 3 alternate the buckets' order each round (norep, rep, rep, norep, …) so that
# the source's growing database weighs on both alike.
# With PIN=1 the source region runs on CPU 0 and the destination and the load generator on
# CPU 1, as if the destination were another machine: then phase 2 measures the source's own
# capacity, and phase 3 no longer counts the slowdown the destination's work inflicts on the
# source through the shared core and caches.
# Usage: [PIN=1] scripts/bench_replication.sh BIN [RATE] [SECONDS] [ROUNDS]
set -euo pipefail
bin=${1:?usage: bench_replication.sh BIN [RATE] [SECONDS] [ROUNDS]}
rate=${2:-500}
secs=${3:-30}
rounds=${4:-3}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "logs in $work" || rm -rf "$work"' EXIT
export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY
src_cpu=(); other_cpu=()
if [ "${PIN:-0}" = 1 ]; then
  src_cpu=(taskset -c 0); other_cpu=(taskset -c 1)
fi
start() { # start NAME CPU-PREFIX…: sets endpoint and pid
  FEIYUN_LOG=warn "${@:2}" "$bin" server --data-dir "$work/$1" --listen 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do grep -q '^S3 endpoint: ' "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
  endpoint=$(sed -n 's/^S3 endpoint: //p' "$work/$1.out" | head -n1)
}
start src "${src_cpu[@]}"; src=$endpoint; src_pid=$pid
start dst "${other_cpu[@]}"; dst=$endpoint
# Buckets and rules through the aws CLI (the scenario venv has it: FEIYUN_TEST_VENV/bin).
command -v aws >/dev/null || { echo "the aws CLI is needed (PATH=\$FEIYUN_TEST_VENV/bin:\$PATH)" >&2; exit 1; }
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for b in rep norep; do
  aws --endpoint-url "$src" s3api create-bucket --bucket $b >/dev/null
  aws --endpoint-url "$src" s3api put-bucket-versioning --bucket $b --versioning-configuration Status=Enabled
done
aws --endpoint-url "$dst" s3api create-bucket --bucket rep-dst >/dev/null
aws --endpoint-url "$dst" s3api put-bucket-versioning --bucket rep-dst --versioning-configuration Status=Enabled
"$bin" region add dst --url "$dst" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" --endpoint "$src" >/dev/null
cat >"$work/repl.json" <<'JSON'
{"Role": "arn:aws:iam::000000000000:role/r", "Rules": [{"ID": "all", "Priority": 1, "Status": "Enabled",
 "Filter": {"Prefix": ""}, "DeleteMarkerReplication": {"Status": "Disabled"},
 "Destination": {"Bucket": "arn:aws:s3:dst::rep-dst"}}]}
JSON
aws --endpoint-url "$src" s3api put-bucket-replication --bucket rep --replication-configuration "file://$work/repl.json"

lag_hist() { curl -s "$src/metrics" | grep '^feiyun_replication_lag_seconds_bucket' || true; }
echo "== lag at $rate PUT/s of 4 KiB for $secs s"
lag_hist >"$work/before"
"${other_cpu[@]}" "$bin" bench --endpoint "$src" --bucket rep --rate "$rate" --duration-secs "$secs" --skip-large
# Let the tail drain before reading the histogram.
for _ in $(seq 1 100); do
  p=$("$bin" replication status --endpoint "$src" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_events"])')
  [ "$p" = 0 ] && break
  sleep 0.2
done
lag_hist >"$work/after"
python3 - "$work/before" "$work/after" <<'PY'
import re, sys
def load(f):
    out = {}
    for line in open(f):
        m = re.search(r'le="([^"]+)"\} (\d+)', line)
        if m:
            out[float('inf') if m.group(1) == '+Inf' else float(m.group(1))] = int(m.group(2))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
les = sorted(b)
cum = [(le, b[le] - a.get(le, 0)) for le in les]
total = cum[-1][1]
def q(p):
    want = p * total
    prev_le, prev_c = 0.0, 0
    for le, c in cum:
        if c >= want:
            if le == float('inf'):
                return float('inf')
            return prev_le + (le - prev_le) * ((want - prev_c) / max(c - prev_c, 1))
            
        prev_le, prev_c = le, c
    return float('inf')
print(f"replicated {total} objects; lag p50 {q(0.5)*1000:.0f} ms, p99 {q(0.99)*1000:.0f} ms (max bucket below {next(le for le, c in cum if c == total)} s)")
PY

echo "== PUT ops/s with and without a replication rule (16 connections, ${secs}s phases, $rounds rounds)"
with=(); without=()
order() { if [ $(($1 % 2)) = 1 ]; then echo norep rep; else echo rep norep; fi; }
for i in $(seq 1 "$rounds"); do
  for b in $(order "$i"); do
    ops=$("${other_cpu[@]}" "$bin" bench --endpoint "$src" --bucket "$b" --concurrency 16 --duration-secs "$secs" --skip-large --json \
      | python3 -c 'import json,sys; print([r for r in json.load(sys.stdin) if r["phase"].startswith("PUT")][0]["ops_per_sec"])')
    echo "$b: $ops PUT/s"
    if [ "$b" = rep ]; then with+=("$ops"); else without+=("$ops"); fi
  done
done
python3 - "${with[*]}" "${without[*]}" <<'PY'
import statistics, sys
w = [float(x) for x in sys.argv[1].split()]; n = [float(x) for x in sys.argv[2].split()]
print(f"median with rule {statistics.median(w):.0f}, without {statistics.median(n):.0f}: ratio {statistics.median(w)/statistics.median(n):.3f}")
PY

echo "== source CPU per PUT at 400 PUT/s, with and without the rule ($rounds rounds of ${secs}s)"
cpu() { awk '{print $14 + $15}' "/proc/$src_pid/stat"; }
tick=$(getconf CLK_TCK)
per_with=(); per_without=()
for i in $(seq 1 "$rounds"); do
  for b in $(order "$i"); do
    c0=$(cpu)
    "${other_cpu[@]}" "$bin" bench --endpoint "$src" --bucket "$b" --rate 400 --duration-secs "$secs" --skip-large >/dev/null
    sleep 3 # the worker finishes the tail
    c1=$(cpu)
    ms=$(python3 -c "print(round(($c1 - $c0) * 1000 / $tick / (400 * $secs), 3))")
    echo "$b: $ms ms CPU per PUT"
    if [ "$b" = rep ]; then per_with+=("$ms"); else per_without+=("$ms"); fi
  done
done
python3 - "${per_with[*]}" "${per_without[*]}" <<'PY'
import statistics, sys
w = [float(x) for x in sys.argv[1].split()]; n = [float(x) for x in sys.argv[2].split()]
print(f"median CPU per PUT with rule {statistics.median(w):.3f} ms, without {statistics.median(n):.3f} ms: "
      f"capacity ratio {statistics.median(n)/statistics.median(w):.3f}")
PY
