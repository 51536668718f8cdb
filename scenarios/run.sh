#!/usr/bin/env bash
# Scenario suite: one real feiyun server, driven by the aws CLI, boto3, rclone, s3cmd and a
# headless browser, and fed by `feiyun migrate` from moto (a foreign S3 server).
# Every step checks the data it gets back; any failure stops the suite with a non-zero exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${FEIYUN_BIN:?set FEIYUN_BIN to the feiyun binary}
python=${PYTHON:-python3}
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export FEIYUN_ROOT_ACCESS_KEY=FYSCENARIOKEY0000001
export FEIYUN_ROOT_SECRET_KEY=scenario-secret-0123456789abcdefghijklmn
FEIYUN_LIVE_ALLOWED_NETWORKS=127.0.0.0/8 FEIYUN_STS_MIN_SESSION_SECS=1 FEIYUN_LOG="warn,s3s=off" "$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^S3 endpoint: ' "$work/stdout" 2>/dev/null && break
  sleep 0.1
done
endpoint=$(sed -n 's/^S3 endpoint: //p' "$work/stdout" | head -n1)
[ -n "$endpoint" ] || { echo "server did not start:"; cat "$work/stderr"; exit 1; }
echo "server at $endpoint"

export ENDPOINT=$endpoint WORK=$work FEIYUN_BIN=$bin
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

passed=0
failed=0
run() {
  local name=$1; shift
  echo "-- $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
run "aws cli" bash "$here/aws_cli.sh"
run "aws cli versioning" bash "$here/aws_cli_versioning.sh"
run "aws iam/sts" bash "$here/aws_cli_iam.sh"
run "aws cli over TLS" bash "$here/aws_cli_tls.sh"
run "aws kms" bash "$here/aws_cli_kms.sh"
run "aws cli SSE" bash "$here/aws_cli_sse.sh"
run "boto3" "$python" "$here/boto3_scenario.py"
run "rclone" bash "$here/rclone.sh"
run "s3cmd" bash "$here/s3cmd.sh"
run "browser CORS" "$python" "$here/browser_cors.py"
run "fc components" bash "$here/fc_components.sh"
run "replication" bash "$here/replication.sh"
run "migrate from moto" "$python" "$here/migrate_moto.py"
run "live migration from moto" "$python" "$here/migrate_live_moto.py"
run "SQL over pyarrow's files" "$python" "$here/sql_pyarrow.py"
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "server died during the scenarios:"; cat "$work/stderr"; failed=$((failed + 1))
fi
echo "scenarios: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
