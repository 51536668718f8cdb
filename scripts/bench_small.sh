#!/usr/bin/env bash
# BENCHMARKS.md "small objects under a neutral load" (issue 20): every row of the issue's
# table, in one run, with neutral clients — wrk on presigned URLs (16 connections, 10 s, a
# 4 KiB object) and rclone at its defaults — against Feiyun, beside nginx serving the same
# 4 KiB file from the same disk and, when PEER_ENDPOINT names one, another S3 server. Then the
# same phases through `feiyun bench` (header-signed and presigned, one key and many).
#  1. the disk's own limit: 1 GiB written with dd and fsynced, and read back cold;
#  2. 4 KiB GET: wrk on a presigned URL, Feiyun and nginx alternated ROUNDS times;
#  3. 4 KiB PUT overwriting one key: wrk on a presigned PUT URL (non-2xx counted);
#  4. rclone copy of 2,000 × 4 KiB files into a fresh prefix, objects/s;
#  5. rclone copyto of a 1 GiB file up and down, MiB/s;
#  6. feiyun bench: the same shapes with its own client, and --compare-url nginx.
# Rounds alternate the order of the targets. Each figure printed is the median of ROUNDS.
# Usage: scripts/bench_small.sh RELEASE_BINARY [ROUNDS] [SECONDS]
#   PEER_ENDPOINT=http://… PEER_ACCESS_KEY=… PEER_SECRET_KEY=…  another S3 server, also loaded
#   GARAGE=/path/to/garage  start Garage (`cargo install garage`) here as that peer, one node,
#     LMDB metadata, metadata_fsync and data_fsync on (durable like Feiyun), on the same disk
#   PERF=1  record a perf profile of the server during each wrk phase (perf-*.data in $KEEP)
set -euo pipefail
# presign ENDPOINT: SigV4 URLs (boto3; the aws CLI's `s3 presign` signs with SigV2) for GET
# of small/obj4k and PUT of small/hot, one per line.
presign() {
  python3 - "$1" <<'PY'
import sys, boto3
from botocore.config import Config
c = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
print(c.generate_presigned_url("get_object", Params={"Bucket": "small", "Key": "obj4k"}, ExpiresIn=3600))
print(c.generate_presigned_url("put_object", Params={"Bucket": "small", "Key": "hot"}, ExpiresIn=3600))
PY
}
bin=${1:?usage: bench_small.sh RELEASE_BINARY [ROUNDS] [SECONDS]}
rounds=${2:-3}
secs=${3:-10}
for tool in wrk nginx rclone aws python3; do
  command -v "$tool" >/dev/null || { echo "bench_small.sh needs $tool (apt-get install wrk nginx-light rclone; aws from the test venv)" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/bench-small.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "logs in $work" || rm -rf "$work"' EXIT
export FEIYUN_ROOT_ACCESS_KEY=FYBENCHKEY0000000001 FEIYUN_ROOT_SECRET_KEY=bench-secret-0123456789abcdefghijklmnop
export AWS_ACCESS_KEY_ID=$FEIYUN_ROOT_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$FEIYUN_ROOT_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.1f}")' "$@"; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
head -c 1073741824 /dev/urandom >"$work/big.bin"
echo "== 1. disk limit (1 GiB of random bytes into a new file, fsynced; read back after dropping the page cache)"
disk_w=(); disk_r=()
for _ in $(seq 1 "$rounds"); do
  rm -f "$work/disk"; sync
  w=$(dd if="$work/big.bin" of="$work/disk" bs=4M conv=fsync 2>&1 | sed -n 's/.*, \([0-9.]*\) \([MG]\)B\/s.*/\1 \2/p' | awk '{print ($2=="G") ? $1*1000 : $1}')
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  r=$(dd if="$work/disk" of=/dev/null bs=4M 2>&1 | sed -n 's/.*, \([0-9.]*\) \([MG]\)B\/s.*/\1 \2/p' | awk '{print ($2=="G") ? $1*1000 : $1}')
  disk_w+=("$w"); disk_r+=("$r")
done
rm -f "$work/disk"
echo "disk write MB/s: ${disk_w[*]} (median $(median "${disk_w[@]}")); read MB/s: ${disk_r[*]} (median $(median "${disk_r[@]}"))"

FEIYUN_LOG=warn "$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/feiyun.out" 2>"$work/feiyun.err" &
fpid=$!; pids+=("$fpid")
for _ in $(seq 1 100); do grep -q '^S3 endpoint: ' "$work/feiyun.out" 2>/dev/null && break; sleep 0.1; done
ep=$(sed -n 's/^S3 endpoint: //p' "$work/feiyun.out" | head -n1)
[ -n "$ep" ] || { echo "feiyun did not start" >&2; cat "$work/feiyun.err" >&2; exit 1; }

mkdir -p "$work/www" "$work/nginx"
head -c 4096 /dev/urandom >"$work/www/obj4k"
# nginx's workers run as www-data: mktemp's directory is root's alone, and a 403 is fast.
chmod 755 "$work" "$work/www"; chmod 644 "$work/www/obj4k"
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$nport; root $work/www; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=("$!")
nurl=http://127.0.0.1:$nport/obj4k
for _ in $(seq 1 50); do curl -sf -o /dev/null "$nurl" && break; sleep 0.1; done

aws --endpoint-url "$ep" s3api create-bucket --bucket small >/dev/null
aws --endpoint-url "$ep" s3api put-object --bucket small --key obj4k --body "$work/www/obj4k" >/dev/null
{ read -r get_url; read -r put_url; } < <(presign "$ep")
if [ -n "${GARAGE:-}" ]; then
  g=$work/garage; mkdir -p "$g"
  cat >"$g/garage.toml" <<TOML
metadata_dir = "$g/meta"
data_dir = "$g/data"
db_engine = "lmdb"
metadata_fsync = true
data_fsync = true
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3911"
rpc_public_addr = "127.0.0.1:3911"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:3910"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:3913"
TOML
  gar() { "$GARAGE" -c "$g/garage.toml" "$@"; }
  gar server >"$g/out" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do gar status >/dev/null 2>&1 && break; sleep 0.2; done
  node=$(gar node id -q 2>/dev/null | cut -d@ -f1)
  gar layout assign -z dc1 -c 10G "$node" >/dev/null
  gar layout apply --version 1 >/dev/null
  gar key create bench >"$g/key"
  gar key allow --create-bucket bench >/dev/null
  PEER_ENDPOINT=http://127.0.0.1:3910
  PEER_ACCESS_KEY=$(sed -n 's/^Key ID: *//p' "$g/key")
  PEER_SECRET_KEY=$(sed -n 's/^Secret key: *//p' "$g/key")
  echo "== Garage $("$GARAGE" --version 2>/dev/null | head -n1) at $PEER_ENDPOINT, key $PEER_ACCESS_KEY"
fi
peer_get=; peer_put=
if [ -n "${PEER_ENDPOINT:-}" ]; then
  pa=(env AWS_ACCESS_KEY_ID="${PEER_ACCESS_KEY:?}" AWS_SECRET_ACCESS_KEY="${PEER_SECRET_KEY:?}")
  "${pa[@]}" aws --endpoint-url "$PEER_ENDPOINT" s3api create-bucket --bucket small >/dev/null 2>&1 || true
  "${pa[@]}" aws --endpoint-url "$PEER_ENDPOINT" s3api put-object --bucket small --key obj4k --body "$work/www/obj4k" >/dev/null
  { read -r peer_get; read -r peer_put; } < <("${pa[@]}" bash -c "$(declare -f presign); presign $PEER_ENDPOINT")
fi
cat >"$work/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = string.rep("p", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
# wrk_run NAME URL [LUA]: prints "req/s non2xx"
wrk_run() {
  local prof=()
  if [ "${PERF:-0}" = 1 ] && [ "$1" = feiyun ]; then
    perf record -F 499 -g -p "$fpid" -o "$work/perf-$2-$RANDOM.data" -- sleep "$secs" >/dev/null 2>&1 &
    prof=($!)
  fi
  local out
  out=$(wrk -t2 -c16 -d"${secs}s" --latency ${4:+-s "$4"} "$3")
  [ ${#prof[@]} = 0 ] || wait "${prof[0]}" || true
  echo "$out" >>"$work/wrk.log"
  local rps non
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  non=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  echo "$rps ${non:-0}"
}
declare -A res
add() { res[$1]="${res[$1]:-} $2"; }
echo "== 2, 3. wrk, 16 connections, ${secs} s, 4 KiB"
for i in $(seq 1 "$rounds"); do
  order="feiyun nginx peer"; [ $((i % 2)) = 0 ] && order="peer nginx feiyun"
  for t in $order; do
    case $t in
      feiyun) read -r g gn <<<"$(wrk_run feiyun get "$get_url")"; add fget "$g"; add fgetn "$gn"
              read -r p pn <<<"$(wrk_run feiyun put "$put_url" "$work/put.lua")"; add fput "$p"; add fputn "$pn"
              echo "round $i feiyun: GET $g/s ($gn non-2xx), PUT one key $p/s ($pn non-2xx)";;
      nginx)  read -r g gn <<<"$(wrk_run nginx get "$nurl")"; add nget "$g"
              [ "$gn" = 0 ] || { echo "nginx answered $gn non-2xx: the comparison is void" >&2; exit 1; }
              echo "round $i nginx: GET $g/s ($gn non-2xx)";;
      peer)   [ -n "$peer_get" ] || continue
              read -r g gn <<<"$(wrk_run peer get "$peer_get")"; add pget "$g"
              read -r p pn <<<"$(wrk_run peer put "$peer_put" "$work/put.lua")"; add pput "$p"; add pputn "$pn"
              echo "round $i peer: GET $g/s ($gn non-2xx), PUT one key $p/s ($pn non-2xx)";;
    esac
  done
done

echo "== 4, 5. rclone (defaults: 4 transfers, 8 checkers)"
mkdir -p "$work/many"
python3 - "$work/many" <<'PY'
import os, sys
for i in range(2000):
    with open(os.path.join(sys.argv[1], f"f{i:04}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
rc_env() { # rc_env ENDPOINT AK SK
  echo RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT="$1" \
    RCLONE_CONFIG_B_ACCESS_KEY_ID="$2" RCLONE_CONFIG_B_SECRET_ACCESS_KEY="$3" RCLONE_CONFIG_B_REGION=us-east-1
}
secs_of() { python3 -c 'import sys,time,subprocess; t=time.monotonic(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(f"{time.monotonic()-t:.3f}")' "$@"; }
rclone_round() { # rclone_round PREFIX-KEY ENDPOINT AK SK (rclone 1.60 refuses AWS_CA_BUNDLE over plain http)
  local e; read -ra e <<<"$(rc_env "$2" "$3" "$4")"
  local s
  s=$(secs_of env -u AWS_CA_BUNDLE "${e[@]}" rclone copy "$work/many" "B:small/many-$1")
  echo "$(python3 -c "print(f'{2000/$s:.1f}')")"
  s=$(secs_of env -u AWS_CA_BUNDLE "${e[@]}" rclone copyto "$work/big.bin" "B:small/big-$1.bin")
  echo "$(python3 -c "print(f'{1024/$s:.1f}')")"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  s=$(secs_of env -u AWS_CA_BUNDLE "${e[@]}" rclone copyto "B:small/big-$1.bin" "$work/down.bin")
  rm -f "$work/down.bin"
  echo "$(python3 -c "print(f'{1024/$s:.1f}')")"
}
for i in $(seq 1 "$rounds"); do
  order="feiyun peer"; [ $((i % 2)) = 0 ] && order="peer feiyun"
  for t in $order; do
    case $t in
      feiyun) mapfile -t r < <(rclone_round "$i" "$ep" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY")
              add frc "${r[0]}"; add fbigp "${r[1]}"; add fbigg "${r[2]}";;
      peer)   [ -n "$peer_get" ] || continue
              mapfile -t r < <(rclone_round "$i" "$PEER_ENDPOINT" "$PEER_ACCESS_KEY" "$PEER_SECRET_KEY")
              add prc "${r[0]}"; add pbigp "${r[1]}"; add pbigg "${r[2]}";;
    esac
    echo "round $i $t: 2,000 × 4 KiB ${r[0]} obj/s, 1 GiB PUT ${r[1]} MiB/s, GET ${r[2]} MiB/s"
  done
done

m() { local v=${res[$1]:-}; [ -n "$v" ] && median $v || echo "-"; }
echo
echo "== the issue's table (medians of $rounds; disk write $(median "${disk_w[@]}") MB/s, read $(median "${disk_r[@]}") MB/s)"
echo "| | nginx, same 4 KiB file | peer ${PEER_ENDPOINT:+($PEER_ENDPOINT)} | Feiyun | Feiyun ÷ nginx |"
echo "|---|---|---|---|---|"
fg=$(m fget); ng=$(m nget)
echo "| 4 KiB GET, req/s (wrk, presigned) | $ng | $(m pget) | $fg | $(python3 -c "print(f'{$fg/$ng:.2f}')") |"
echo "| 4 KiB PUT one key, req/s (non-2xx) | — | $(m pput) ($(m pputn)) | $(m fput) ($(m fputn)) | |"
echo "| rclone copy 2,000 × 4 KiB, obj/s | — | $(m prc) | $(m frc) | |"
echo "| rclone 1 GiB PUT / GET, MiB/s | — | $(m pbigp) / $(m pbigg) | $(m fbigp) / $(m fbigg) | |"

echo
echo "== 6. feiyun bench, 16 connections, ${secs} s (its own client; the ratios are against nginx)"
"$bin" bench --endpoint "$ep" --bucket fbench --auth presigned --keys 1 --ops get --concurrency 16 --duration-secs "$secs" --skip-large --compare-url "$nurl"
"$bin" bench --endpoint "$ep" --bucket fbench --auth header --keys 1 --ops get --concurrency 16 --duration-secs "$secs" --skip-large --compare-url "$nurl"
peer_args=()
[ -z "${PEER_ENDPOINT:-}" ] || peer_args=(--compare "$PEER_ENDPOINT" --compare-access-key "$PEER_ACCESS_KEY" --compare-secret-key "$PEER_SECRET_KEY")
"$bin" bench --endpoint "$ep" --bucket fbench --auth presigned --keys 1 --ops put --concurrency 16 --duration-secs "$secs" --skip-large "${peer_args[@]}"
"$bin" bench --endpoint "$ep" --bucket fbench --auth header --concurrency 16 --duration-secs "$secs" --skip-large "${peer_args[@]}"
