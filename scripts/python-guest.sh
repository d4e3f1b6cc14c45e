#!/usr/bin/env bash
# Builds the Python sample workload (guest-examples/python-workload) with componentize-py.
#
# Its world (python-workload/wit/world.wit) is the proplet's `workload` world plus outbound
# HTTP. The WIT directory componentize-py reads is put together under
# guest-examples/target/python/wit/ at each build: that world, the proplet's wit/ (with its
# own dependencies, flattened: componentize-py reads one level of deps/), and the WASI 0.2
# packages shipped in the wasmtime-wasi-http crate this project is locked to, so that the
# guest imports exactly the versions the host serves. Nothing of them is kept in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

out=guest-examples/target/python
wit="$out/wit"
rm -rf "$wit"
mkdir -p "$wit/deps/proplet"
cp guest-examples/python-workload/wit/world.wit "$wit/"
cp wit/*.wit "$wit/deps/proplet/"
cp -r wit/deps/. "$wit/deps/"

# Where cargo keeps the locked wasmtime-wasi-http sources (fetched if need be).
wasi_http="$(cargo metadata --locked --format-version 1 | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
paths = [p["manifest_path"] for p in meta["packages"] if p["name"] == "wasmtime-wasi-http"]
if len(paths) != 1:
    sys.exit("expected exactly one wasmtime-wasi-http in Cargo.lock, found %d" % len(paths))
print(os.path.dirname(paths[0]))
')"
cp "$wasi_http"/wit/deps/*.wit "$wit/deps/"

python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
    -d "$wit" -w workload-http componentize -p guest-examples/python-workload app \
    -o "$out/workload-py.wasm"
