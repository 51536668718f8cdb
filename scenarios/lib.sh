# Shared by the aws CLI scenarios: the CLI aimed at the region, and checks that fail loudly.
aws() { command aws --endpoint-url "$ENDPOINT" "$@"; }
fail() { echo "$*"; exit 1; }
expect_error() { # expect_error CODE command...
  local code=$1; shift
  local out
  if out=$("$@" 2>&1); then fail "expected $code from: $* (got success: $out)"; fi
  [[ $out == *"$code"* ]] || fail "expected $code from: $*; got: $out"
}
