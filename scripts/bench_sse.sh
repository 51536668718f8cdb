#!/usr/bin/env bash
# BENCHMARKS.md "encryption at rest": 4 KiB PUT/GET at 16 connections and 1 GiB PUT/GET on one
# stream, with encryption off (FEIYUN_ENCRYPT_AT_REST=false), SSE-S3 (the default) and
# SSE-KMS (a bucket default under a customer key). Each phase family runs on a fresh region
# (the large objects never follow 50k small ones in the page cache); runs alternate between
# the modes so they share the machine's noise. Each line ends with the server's CPU seconds
# (user+system) for that run.
# Usage: scripts/bench_sse.sh RELEASE_BINARY [ROUNDS]
set -euo pipefail
bin=${1:?release feiyun binary}
rounds=${2:-3}
work=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export FEIYUN_ROOT_ACCESS_KEY=BENCHROOTKEY00000001 FEIYUN_ROOT_SECRET_KEY=bench-root-secret-0123456789abcdefghij
export FEIYUN_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
ep=http://127.0.0.1:9301
start() { # start ENCRYPT_AT_REST
  rm -rf "$work/data"
  FEIYUN_ENCRYPT_AT_REST=$1 FEIYUN_LOG=warn "$bin" server --data-dir "$work/data" --listen 127.0.0.1:9301 >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 50); do grep -q "S3 endpoint" "$work/out" 2>/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$work/err" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat"; }
run() { # run LABEL ENCRYPT_AT_REST KMS? (--skip-large | --skip-small)
  start "$2"
  aws --endpoint-url "$ep" s3api create-bucket --bucket feiyun-bench >/dev/null
  if [ "$3" = kms ]; then
    key=$(aws --endpoint-url "$ep" kms create-key --query KeyMetadata.Arn --output text)
    aws --endpoint-url "$ep" s3api put-bucket-encryption --bucket feiyun-bench \
      --server-side-encryption-configuration "{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\",\"KMSMasterKeyID\":\"$key\"}}]}"
  fi
  c0=$(cpu)
  "$bin" bench --endpoint "$ep" --bucket feiyun-bench --concurrency 16 --duration-secs 8 \
    --large-streams 1 --server-pid "$pid" "$4" | sed "s/^/$1 /"
  echo "$1 server-cpu-secs $(cpu) (from $c0)"
  stop
}
for i in $(seq 1 "$rounds"); do
  for phase in --skip-large --skip-small; do
    run "off#$i" false none "$phase"
    run "sse-s3#$i" true none "$phase"
    run "sse-kms#$i" true kms "$phase"
  done
done
