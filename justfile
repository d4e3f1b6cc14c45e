# proplet tasks. `just --list` shows them all.

# Run the demo: embedded broker, two proplets, sample tasks.
demo:
    cargo run -- demo

# The whole test suite, exactly as CI runs it (installs what it needs).
test:
    bash scripts/test.sh

# Unit tests only (no broker, no guests needed).
test-unit:
    cargo test --lib

# Integration tests against a real mosquitto (needs `just guests`).
test-e2e: guests
    cargo test --tests

# A longer soak (default 300 s): mixed traffic, broker and worker restarts, then a summary
# line (sent, answered, duplicated, lost) and checks that nothing was lost or grew.
soak seconds="300": guests
    PROPLET_SOAK_SECONDS={{seconds}} cargo test --locked --test soak -- --nocapture

# Format and lint checks, with and without the demo (the device build).
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --all-targets --no-default-features -- -D warnings

# The daemon for a device: no demo, stripped, thin LTO (target/device/proplet).
build-device:
    cargo build --profile device --locked --no-default-features
    @ls -l target/device/proplet

# Dependency policy from deny.toml: duplicate versions, licenses, sources (as CI runs it).
deny:
    cargo deny --locked check bans licenses sources

# Security advisories (RustSec): fetches the advisory database, so it needs the network.
audit:
    cargo deny --locked check advisories

# Check the systemd unit and the IP allow-list drop-in with systemd-analyze.
unit-check:
    #!/usr/bin/env bash
    set -euo pipefail
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
    # verify wants an existing ExecStart binary; the unit names the installed path.
    sed 's|/usr/local/bin/proplet|/bin/true|' deploy/systemd/proplet.service > "$dir/proplet.service"
    mkdir "$dir/proplet.service.d"
    cp deploy/systemd/ip-allowlist.conf "$dir/proplet.service.d/"
    out="$(SYSTEMD_UNIT_PATH="$dir:" systemd-analyze verify "$dir/proplet.service" 2>&1)"
    if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
    echo "proplet.service and ip-allowlist.conf: no findings"

# Build the sample guests: core modules, Rust components, the Python workload.
guests:
    bash scripts/setup.sh
    cargo build --manifest-path guest-examples/Cargo.toml --release --locked --target wasm32-wasip1 -p add -p hello -p spin -p alloc
    cargo build --manifest-path guest-examples/Cargo.toml --release --locked --target wasm32-wasip2 -p hello -p greet -p workload -p fs -p http
    bash scripts/python-guest.sh

# End-to-end benchmark: one table (round trips, bursts, CPU per task, memory, start-up,
# restart) next to the broker's own figures, written to BENCHMARKS.md.
bench: guests
    RUST_LOG=error cargo bench --bench e2e

# Regenerate link/startup.ld (the daemon's start-up code laid out together; see build.rs)
# from a callgrind run of its start. Needs valgrind (installed from apt if missing).
startup-layout:
    bash scripts/startup-layout.sh

# Criterion micro-benchmarks: decoding a start, running a cached module and component.
bench-micro: guests
    env -u RUST_BACKTRACE cargo bench --bench micro

# Jaeger all-in-one (docker or podman): OTLP on 4317/4318, UI on http://localhost:16686.
jaeger image="docker.io/jaegertracing/jaeger:latest":
    #!/usr/bin/env bash
    set -euo pipefail
    engine="$(command -v docker || command -v podman || true)"
    if [ -z "$engine" ]; then
        echo "just jaeger needs docker or podman" >&2
        exit 1
    fi
    echo "Jaeger UI: http://localhost:16686  (then: OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run -- demo)"
    exec "$engine" run --rm --name proplet-jaeger -p 16686:16686 -p 4317:4317 -p 4318:4318 "{{image}}"

# A local mosquitto on port 1883 for manual runs (Ctrl-C to stop).
broker:
    mosquitto -p 1883 -v

# Everything CI does.
ci:
    bash .ci/run

# A long property-based fuzzing run of message decoding and chunk assembly.
fuzz cases="200000":
    PROPTEST_CASES={{cases}} cargo test --release --test fuzz
