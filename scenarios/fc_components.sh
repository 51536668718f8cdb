#!/usr/bin/env bash
# Function Compute with WASI 0.2 wasi:http components, as developers build them: the C
# example (committed, built by examples/functions/build.sh), the Python one built here with
# componentize-py and the JavaScript one with componentize-js. Deploy with `feiyun fc`, invoke through the CLI and the function URL,
# JSON echo, outbound HTTP denied by default and allowed per host, versions and logs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
d=$WORK/fc-components; mkdir -p "$d"
fc() { "$FEIYUN_BIN" fc --endpoint "$ENDPOINT" "$@"; }
hostport=${ENDPOINT#http://}

# The Python example, built from source against the WIT of the runtime's wasi:http.
"$root/examples/functions/build.sh" py "$d" >/dev/null 2>"$d/build.err" || { cat "$d/build.err"; fail "building the Python component failed"; }
[ -s "$d/hello.wasm" ] || fail "no Python component built"
mkdir -p "$d/js"
"$root/examples/functions/build.sh" js "$d/js" >/dev/null 2>"$d/build-js.err" || { cat "$d/build-js.err"; fail "building the JavaScript component failed"; }
[ -s "$d/js/hello.wasm" ] || fail "no JavaScript component built"

fc deploy hello-c --wasm "$root/examples/functions/hello-c/hello.wasm" --public true >/dev/null
[ "$(fc invoke hello-c)" = "hello from c" ] || fail "C component: wrong answer"
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-c/any/path?x=1")" = "hello from c" ] || fail "C component over its URL"
[ "$(curl -s -o /dev/null -w '%{content_type}' "$ENDPOINT/fc/invoke/hello-c")" = "text/plain" ] || fail "C component: content type lost"

fc deploy hello-py --wasm "$d/hello.wasm" --public true --memory 256M >/dev/null
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-py")" = "hello from python" ] || fail "Python component: wrong greeting"
out=$(curl -sf -X POST -H 'content-type: application/json' -d '{"n":[1,2,3],"s":"ü"}' "$ENDPOINT/fc/invoke/hello-py")
[ "$out" = '{"echo": {"n": [1, 2, 3], "s": "\u00fc"}}' ] || fail "JSON echo: $out"
code=$(curl -s -o "$d/bad.json" -w '%{http_code}' -X POST -d 'not json' "$ENDPOINT/fc/invoke/hello-py")
[ "$code" = 400 ] || fail "invalid JSON: status $code"
grep -q '"error"' "$d/bad.json" || fail "invalid JSON: no error body"
# The CLI invokes with POST: an empty body echoes null.
[ "$(fc invoke hello-py --data '{"a":1}')" = '{"echo": {"a": 1}}' ] || fail "fc invoke --data"

fc deploy hello-js --wasm "$d/js/hello.wasm" --public true >/dev/null
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-js")" = "hello from javascript" ] || fail "JavaScript component: wrong greeting"
out=$(curl -sf -X POST -d '{"k":[true,null,"é"]}' "$ENDPOINT/fc/invoke/hello-js")
[ "$out" = '{"echo":{"k":[true,null,"é"]}}' ] || fail "JavaScript JSON echo: $out"
code=$(curl -s -o "$d/bad-js.json" -w '%{http_code}' -X POST -d '{oops' "$ENDPOINT/fc/invoke/hello-js")
[ "$code" = 400 ] && grep -q SyntaxError "$d/bad-js.json" || fail "JavaScript invalid JSON: $code $(cat "$d/bad-js.json")"
fc delete hello-js >/dev/null

# Outbound HTTP: denied unless the host is allowed.
out=$(curl -sf "$ENDPOINT/fc/invoke/hello-py/fetch?host=$hostport")
[[ $out == *HttpRequestDenied* ]] || fail "outbound was not denied by default: $out"
fc deploy hello-py --wasm "$d/hello.wasm" --allow-host "$hostport" >/dev/null
out=$(curl -sf "$ENDPOINT/fc/invoke/hello-py/fetch?host=$hostport")
[ "$out" = "status 403" ] || fail "allowed outbound request: $out"
out=$(curl -sf "$ENDPOINT/fc/invoke/hello-py/fetch?host=localhost:${hostport##*:}")
[[ $out == *HttpRequestDenied* ]] || fail "another host was reached: $out"
# An allowed name that resolves to loopback (or any private address) is refused after
# resolution: only the region's own endpoint is reachable there.
fc deploy hello-py --wasm "$d/hello.wasm" --allow-host "localhost:${hostport##*:}" >/dev/null
out=$(curl -sf "$ENDPOINT/fc/invoke/hello-py/fetch?host=localhost:${hostport##*:}")
[[ $out == *IpProhibited* || $out == *ip-prohibited* ]] || fail "a loopback address was reached by name: $out"

# A function identity: a role trusting fc.amazonaws.com. The Python component signs S3
# requests with the role's temporary credentials from inside the sandbox and reads what
# the role's policy allows, nothing more.
aws s3 mb s3://fc-identity >/dev/null
echo "read by a function" | aws s3 cp - s3://fc-identity/in/note.txt >/dev/null
echo "not for functions" | aws s3 cp - s3://fc-identity/private.txt >/dev/null
aws iam create-role --role-name fc-py-reader --assume-role-policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"fc.amazonaws.com"},"Action":"sts:AssumeRole"}]}' >/dev/null
aws iam put-role-policy --role-name fc-py-reader --policy-name read-in --policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::fc-identity/in/*"}]}'
out=$(curl -s "$ENDPOINT/fc/invoke/hello-py/s3/fc-identity/in/note.txt")
[ "$out" = "the function has no role" ] || fail "a function without a role had credentials: $out"
fc deploy hello-py --wasm "$d/hello.wasm" --role fc-py-reader --public true >/dev/null
[[ $(fc describe hello-py) == *role/fc-py-reader* ]] || fail "describe does not show the role"
out=$(curl -sf "$ENDPOINT/fc/invoke/hello-py/s3/fc-identity/in/note.txt")
[ "$out" = "read by a function" ] || fail "the role could not read its object: $out"
code=$(curl -s -o "$d/denied.xml" -w '%{http_code}' "$ENDPOINT/fc/invoke/hello-py/s3/fc-identity/private.txt")
[ "$code" = 403 ] && grep -q 'assumed-role/fc-py-reader/hello-py' "$d/denied.xml" || fail "the role read beyond its policy: $code $(cat "$d/denied.xml")"
aws iam create-role --role-name not-for-functions --assume-role-policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}' >/dev/null
expect_error InvalidParameterValueException fc deploy hello-py --wasm "$d/hello.wasm" --role not-for-functions
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-py/s3/fc-identity/in/note.txt")" = "read by a function" ] || fail "a refused role changed the function"

# Versions of a component, an alias, roll-back.
fc publish hello-c >/dev/null
fc deploy hello-c --wasm "$d/hello.wasm" >/dev/null
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-c")" = "hello from python" ] || fail "redeploy did not replace \$LATEST"
fc alias hello-c live 1 >/dev/null
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-c:live")" = "hello from c" ] || fail "alias live does not serve version 1"

# Logs: every invocation recorded, with the function's version.
fc logs hello-py --json >"$d/logs"
[ "$(wc -l <"$d/logs")" -ge 6 ] || fail "missing invocation records: $(cat "$d/logs")"
grep -q '"status":400' "$d/logs" || fail "the 400 was not recorded"
fc logs hello-c --json | grep '"qualifier":"live"' | grep -q '"version":"1"' || fail "alias invocation not recorded"

# A module that is neither a command nor a handler changes nothing.
printf '\0asm\r\0\1\0' >"$d/empty.wasm"
expect_error InvalidCodeException fc deploy hello-c --wasm "$d/empty.wasm"
[ "$(curl -sf "$ENDPOINT/fc/invoke/hello-c:live")" = "hello from c" ] || fail "a refused deploy changed the function"
fc delete hello-py >/dev/null
fc delete hello-c >/dev/null
echo "fc components ok"
