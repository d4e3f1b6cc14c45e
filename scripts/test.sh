#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, format and lint checks (both feature sets),
# the dependency policy, guest builds, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The device build: the daemon without the demo and its embedded broker (feature `demo`).
cargo clippy --all-targets --locked --no-default-features -- -D warnings
# Dependency policy (deny.toml): duplicate versions, licenses, crates.io only. Advisories
# need the RustSec database from the network: `just audit`.
cargo deny --locked check bans licenses sources
just guests
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
