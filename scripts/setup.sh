#!/usr/bin/env bash
# Installs what the tests and guest builds need, idempotently: mosquitto (Debian package),
# the wasm32-wasip1/wasm32-wasip2 Rust targets, componentize-py (PyPI), `just` and
# `cargo-deny`. Safe to run again and again.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if ! have_mosquitto; then
    echo "setup: installing mosquitto"
    apt_install mosquitto
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
