# Shared by the aws CLI scenarios: the CLI aimed at the region, and checks that fail loudly.
aws() { command aws --endpoint-url "$ENDPOINT" "$@"; }
fail() { echo "$*"; exit 1; }
expect_error() { # expect_error CODE command...
  local code=$1; shift
  local out
  if out=$("$@" 2>&1); then fail "expected $code from: $* (got success: $out)"; fi
  [[ $out == *"$code"* ]] || fail "expected $code from: $*; got: $out"
}

# start_tls_region DIR: a second region on a self-signed certificate under DIR; sets pid,
# endpoint (https://localhost:PORT, a name the certificate holds) and ca. Extra environment
# for the server goes in TLS_REGION_ENV ("NAME=value ...").
start_tls_region() {
  local dir=$1
  : >"$dir/stdout"
  env ${TLS_REGION_ENV:-} FEIYUN_LOG="warn,s3s=off" "$FEIYUN_BIN" server --data-dir "$dir/data" \
    --listen 127.0.0.1:0 --tls-self-signed >"$dir/stdout" 2>"$dir/stderr" &
  pid=$!
  for _ in $(seq 1 100); do
    grep -q '^TLS certificate' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
  done
  endpoint=$(sed -n 's/^S3 endpoint: //p' "$dir/stdout" | head -n1)
  case "$endpoint" in https://127.0.0.1:*) ;; *) echo "not an HTTPS endpoint: $endpoint"; cat "$dir/stderr"; exit 1;; esac
  endpoint=https://localhost:${endpoint##*:}
  ca=$(sed -n 's/^TLS certificate.*: //p' "$dir/stdout")
  [ "$ca" = "$dir/data/tls/ca.pem" ] || { echo "unexpected CA path $ca"; exit 1; }
}
