#!/usr/bin/env bash
# BENCHMARKS.md "policy evaluation on the request path": 4 KiB GET/PUT at 16 connections as
# root (no policy to evaluate) and as an IAM user whose own policy and a 20-statement bucket
# policy are both evaluated on every request. Runs alternate root/user to share the noise.
# Usage: scripts/bench_iam.sh RELEASE_BINARY [ROUNDS]
set -euo pipefail
bin=${1:?release feiyun binary}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export FEIYUN_ROOT_ACCESS_KEY=BENCHROOTKEY00000001 FEIYUN_ROOT_SECRET_KEY=bench-root-secret-0123456789abcdefghij
FEIYUN_LOG=warn "$bin" server --data-dir "$work/data" --listen 127.0.0.1:9300 >"$work/out" 2>"$work/err" &
pid=$!
sleep 1
ep=http://127.0.0.1:9300
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
aws() { command aws --endpoint-url "$ep" "$@"; }
acct=$(aws sts get-caller-identity --query Account --output text)
aws s3api create-bucket --bucket feiyun-bench >/dev/null
fill() { sed -e "s/ACCOUNT/$acct/g" -e "s/BUCKET/feiyun-bench/g" "$1"; }
fill "$here/crates/iam/benches/bucket-policy-20.json" > "$work/bucket.json"
fill "$here/crates/iam/benches/user-policy.json" > "$work/user.json"
aws s3api put-bucket-policy --bucket feiyun-bench --policy "file://$work/bucket.json"
aws iam create-user --user-name bench >/dev/null
aws iam put-user-policy --user-name bench --policy-name bench --policy-document "file://$work/user.json"
aws iam create-access-key --user-name bench > "$work/key.json"
uk=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["AccessKeyId"])' "$work/key.json")
us=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["AccessKey"]["SecretAccessKey"])' "$work/key.json")
run() { # run LABEL KEY SECRET
  AWS_ACCESS_KEY_ID=$2 AWS_SECRET_ACCESS_KEY=$3 "$bin" bench --endpoint "$ep" --bucket feiyun-bench \
    --skip-large --concurrency 16 --duration-secs 8 --server-pid "$pid" | sed "s/^/$1 /"
}
for i in $(seq 1 "$rounds"); do
  run "root#$i" "$FEIYUN_ROOT_ACCESS_KEY" "$FEIYUN_ROOT_SECRET_KEY"
  run "user#$i" "$uk" "$us"
done
