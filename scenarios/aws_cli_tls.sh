#!/usr/bin/env bash
# The aws CLI over HTTPS: a second region started with --tls-self-signed, trusted through
# --ca-bundle with the CA it generated; refused without it; feiyun iam over the same CA; the
# same objects after a restart.
set -euo pipefail
bin=${FEIYUN_BIN:?}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
start() {
  : >"$dir/stdout"
  FEIYUN_LOG="warn,s3s=off" "$bin" server --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --tls-self-signed >"$dir/stdout" 2>"$dir/stderr" &
  pid=$!
  for _ in $(seq 1 100); do
    grep -q '^TLS certificate' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
  done
  endpoint=$(sed -n 's/^S3 endpoint: //p' "$dir/stdout" | head -n1)
  case "$endpoint" in https://127.0.0.1:*) ;; *) echo "not an HTTPS endpoint: $endpoint"; cat "$dir/stderr"; exit 1;; esac
  # The certificate names localhost as well as the loopback address.
  endpoint=https://localhost:${endpoint##*:}
  ca=$(sed -n 's/^TLS certificate.*: //p' "$dir/stdout")
  [ "$ca" = "$dir/data/tls/ca.pem" ] || { echo "unexpected CA path $ca"; exit 1; }
}
start
s3() { aws --endpoint-url "$endpoint" --ca-bundle "$ca" "$@"; }
s3 s3 mb s3://tls-bucket >/dev/null
head -c 2000000 /dev/urandom >"$dir/blob"
s3 s3 cp "$dir/blob" s3://tls-bucket/blob >/dev/null
s3 s3 cp s3://tls-bucket/blob "$dir/back" >/dev/null
cmp "$dir/blob" "$dir/back"
s3 sts get-caller-identity --query Arn --output text | grep -q ':root$'
if aws --endpoint-url "$endpoint" s3 ls s3://tls-bucket >"$dir/untrusted" 2>&1; then
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
