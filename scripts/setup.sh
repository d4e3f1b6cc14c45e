#!/usr/bin/env bash
# Installs what the tests and guest builds need, idempotently: mosquitto (Debian package),
# the wasm32-wasip1/wasm32-wasip2 Rust targets, componentize-py (PyPI), `just` and
# `cargo-deny`. Safe to run again and again.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! have mosquitto && [ ! -x /usr/sbin/mosquitto ]; then
    echo "setup: installing mosquitto"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        echo "setup: adding Rust target $target"
        rustup target add "$target"
    fi
done

if ! python3 -c "import componentize_py" >/dev/null 2>&1; then
    echo "setup: installing componentize-py (for the Python sample guest)"
    python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi

if ! have just; then
    echo "setup: installing just"
    cargo install just --locked --quiet
fi

if ! have cargo-deny; then
    echo "setup: installing cargo-deny (compiles for a few minutes, once)"
    cargo install cargo-deny --version 0.20.2 --locked --quiet
fi
