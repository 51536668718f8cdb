#!/usr/bin/env bash
# The aws CLI over HTTPS: a second region started with --tls-self-signed, trusted through
# --ca-bundle with the CA it generated; refused without it; feiyun iam over the same CA; the
# same objects after a restart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bin=${FEIYUN_BIN:?}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
start() { start_tls_region "$dir"; }
start
s3() { command aws --endpoint-url "$endpoint" --ca-bundle "$ca" "$@"; }
s3 s3 mb s3://tls-bucket >/dev/null
head -c 2000000 /dev/urandom >"$dir/blob"
s3 s3 cp "$dir/blob" s3://tls-bucket/blob >/dev/null
s3 s3 cp s3://tls-bucket/blob "$dir/back" >/dev/null
cmp "$dir/blob" "$dir/back"
s3 sts get-caller-identity --query Arn --output text | grep -q ':root$'
if command aws --endpoint-url "$endpoint" s3 ls s3://tls-bucket >"$dir/untrusted" 2>&1; then
  echo "the CLI accepted an untrusted certificate"; exit 1
fi
grep -qi "ssl\|certificate" "$dir/untrusted" || { cat "$dir/untrusted"; exit 1; }
# feiyun's own admin verbs take the same bundle (--ca-bundle or AWS_CA_BUNDLE).
"$bin" iam whoami --endpoint "$endpoint" --ca-bundle "$ca" | grep -q ':root'
AWS_CA_BUNDLE=$ca "$bin" iam whoami --endpoint "$endpoint" | grep -q ':root'
if env -u AWS_CA_BUNDLE "$bin" iam whoami --endpoint "$endpoint" 2>"$dir/err"; then
  echo "feiyun iam accepted an untrusted certificate"; exit 1
fi
[ "$(wc -l <"$dir/err")" -eq 1 ] && grep -qi "certificate" "$dir/err" \
  || { echo "expected one line naming the certificate:"; cat "$dir/err"; exit 1; }
kill "$pid"; wait "$pid" || true
before=$(sha256sum "$ca")
start
[ "$(sha256sum "$ca")" = "$before" ] || { echo "the CA changed across a restart"; exit 1; }
s3 s3 cp s3://tls-bucket/blob "$dir/again" >/dev/null
cmp "$dir/blob" "$dir/again"
echo "aws CLI over HTTPS: ok"
