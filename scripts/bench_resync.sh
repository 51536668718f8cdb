#!/usr/bin/env bash
# Resync throughput for BENCHMARKS.md: two regions on loopback (one machine). The source
# bucket is filled with SMALL 4 KiB objects and LARGE 1 MiB ones; then, alternated ROUNDS
# times into fresh destination buckets:
#  - `feiyun replication resync src --to dr --wait` (a new rule per round, to a new bucket);
#  - `rclone sync` between the same two endpoints, at rclone's defaults (4 transfers) and at
#    32 transfers (the resync's own concurrency);
#  - a second resync into a bucket that already holds everything (the listings-only cost).
# Prints seconds, objects/s and MiB/s of each, and the medians.
# Usage: scripts/bench_resync.sh BIN [SMALL] [LARGE] [ROUNDS]
set -euo pipefail
bin=${1:?usage: bench_resync.sh BIN [SMALL] [LARGE] [ROUNDS]}
small=${2:-10000}
large=${3:-200}
rounds=${4:-3}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "logs in $work" || rm -rf "$work"' EXIT
export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
start() { # start NAME: sets endpoint
  FEIYUN_LOG=warn "$bin" server --data-dir "$work/$1" --listen 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.err" &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q '^S3 endpoint: ' "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
  endpoint=$(sed -n 's/^S3 endpoint: //p' "$work/$1.out" | head -n1)
}
command -v aws >/dev/null || { echo "the aws CLI is needed (PATH=\$FEIYUN_TEST_VENV/bin:\$PATH)" >&2; exit 1; }
command -v rclone >/dev/null || { echo "rclone is needed (apt-get install -y rclone)" >&2; exit 1; }
start src; src=$endpoint
start dst; dst=$endpoint
mkbucket() { # mkbucket ENDPOINT NAME [versioned]
  aws --endpoint-url "$1" s3api create-bucket --bucket "$2" >/dev/null
  [ -z "${3:-}" ] || aws --endpoint-url "$1" s3api put-bucket-versioning --bucket "$2" --versioning-configuration Status=Enabled
}
mkbucket "$src" src v
# Filled at a fixed rate: exactly rate × seconds objects.
"$bin" bench --endpoint "$src" --bucket src --rate $((small / 10)) --duration-secs 10 --skip-large >/dev/null
"$bin" bench --endpoint "$src" --bucket src --rate $((large / 4)) --duration-secs 4 --small-size 1048576 --skip-large >/dev/null
count=$(aws --endpoint-url "$src" s3 ls s3://src --recursive --summarize | sed -n 's/^ *Total Objects: //p')
bytes=$(aws --endpoint-url "$src" s3 ls s3://src --recursive --summarize | sed -n 's/^ *Total Size: //p')
echo "source: $count objects, $bytes bytes"
"$bin" region add dr --url "$dst" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" --endpoint "$src" >/dev/null
export RCLONE_CONFIG_A_TYPE=s3 RCLONE_CONFIG_A_PROVIDER=Other RCLONE_CONFIG_A_ENDPOINT=$src \
  RCLONE_CONFIG_A_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_A_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT=$dst \
  RCLONE_CONFIG_B_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_B_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
now() { date +%s.%N; }
report() { # report NAME SECONDS
  python3 -c "import sys; s=float(sys.argv[2]); print(f'{sys.argv[1]}: {s:.2f} s, {int(sys.argv[3])/s:.0f} objects/s, {int(sys.argv[4])/s/1048576:.1f} MiB/s')" "$1" "$2" "$count" "$bytes" | tee -a "$work/results"
}
for r in $(seq 1 "$rounds"); do
  mkbucket "$dst" "re$r" v
  cat >"$work/repl.json" <<JSON
{"Role": "arn:aws:iam::000000000000:role/r", "Rules": [{"ID": "all", "Priority": 1, "Status": "Enabled",
 "Filter": {"Prefix": ""}, "DeleteMarkerReplication": {"Status": "Disabled"},
 "Destination": {"Bucket": "arn:aws:s3:dr::re$r"}}]}
JSON
  aws --endpoint-url "$src" s3api put-bucket-replication --bucket src --replication-configuration "file://$work/repl.json"
  t0=$(now); "$bin" replication resync src --to dr --wait --endpoint "$src" >/dev/null; t1=$(now)
  report "resync" "$(echo "$t1 - $t0" | bc)"
  t0=$(now); "$bin" replication resync src --to dr --wait --endpoint "$src" >/dev/null; t1=$(now)
  report "resync-again" "$(echo "$t1 - $t0" | bc)"
  mkbucket "$dst" "rc$r"
  t0=$(now); env -u AWS_CA_BUNDLE rclone --config /dev/null sync A:src "B:rc$r"; t1=$(now)
  report "rclone-sync" "$(echo "$t1 - $t0" | bc)"
  mkbucket "$dst" "rt$r"
  t0=$(now); env -u AWS_CA_BUNDLE rclone --config /dev/null sync --transfers 32 --checkers 32 A:src "B:rt$r"; t1=$(now)
  report "rclone-sync-32" "$(echo "$t1 - $t0" | bc)"
  t0=$(now); env -u AWS_CA_BUNDLE rclone --config /dev/null sync --transfers 32 --checkers 32 A:src "B:rt$r"; t1=$(now)
  report "rclone-sync-32-again" "$(echo "$t1 - $t0" | bc)"
done
echo "== medians"
python3 - "$work/results" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\S+): ([\d.]+) s, (\d+) objects/s, ([\d.]+) MiB/s', line)
    runs.setdefault(m.group(1), []).append((float(m.group(2)), int(m.group(3)), float(m.group(4))))
for name, v in runs.items():
    print(f"{name}: {statistics.median(x[0] for x in v):.2f} s, {statistics.median(x[1] for x in v)} objects/s, "
          f"{statistics.median(x[2] for x in v):.1f} MiB/s over {len(v)} rounds")
PY
