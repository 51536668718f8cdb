#!/usr/bin/env bash
# BENCHMARKS.md "read-through latency" (issue 22): what a live migration adds to a GET.
# Two regions on loopback, one the legacy store of the other's live bucket; `feiyun bench
# --first-reads` writes N small objects to the legacy store, then reads each through the
# live bucket twice (the read-through, then an ordinary GET of the same bytes) and once from
# the legacy store directly, one request at a time. The copier is held off (interval 1 h)
# so every first read is a read-through.
# Usage: scripts/bench_live.sh BINARY [N] [SIZE]
set -euo pipefail
bin=$(readlink -f "${1:?usage: bench_live.sh BINARY [N] [SIZE]}")
n=${2:-2000}
size=${3:-4096}
work=$(mktemp -d /var/tmp/bench-live.XXXXXX)
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
  FEIYUN_LIVE_ALLOWED_NETWORKS=127.0.0.0/8 FEIYUN_LIVE_COPY_INTERVAL_SECS=3600 FEIYUN_LOG=warn "$bin" server --data-dir "$work/$name/data" \
    --listen 127.0.0.1:0 >"$work/$name/out" 2>"$work/$name/err" &
  pids+=("$!")
  for _ in $(seq 1 200); do grep -q '^S3 endpoint: ' "$work/$name/out" 2>/dev/null && break; sleep 0.1; done
  local ep; ep=$(sed -n 's/^S3 endpoint: //p' "$work/$name/out" | head -n1)
  [ -n "$ep" ] || { echo "$name did not start:" >&2; cat "$work/$name/err" >&2; exit 1; }
  echo "$ep"
}
region=$(start region)
legacy=$(start legacy)
mkbucket() {
  curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -X PUT "$1/live" >/dev/null
}
mkbucket "$region"
mkbucket "$legacy"
"$bin" migrate live start live --from s3://live --source-endpoint "$legacy" --endpoint "$region"

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "== $n objects of $size bytes, one request at a time"
"$bin" bench --endpoint "$region" --compare "$legacy" --bucket live --small-size "$size" \
  --first-reads "$n"
