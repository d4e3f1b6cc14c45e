//! Paths of the sample guests built by `just guests`; a missing one fails loudly.

use std::path::PathBuf;

/// The smallest core module of the harness, `add(a, b)`, as base64 (41 bytes).
pub const ADD_WASM: &str = "AGFzbQEAAAABBwFgAn9/AX8DAgEABwcBA2FkZAAACgkBBwAgACABags=";

/// The bytes of core-module guest `name` (a crate under `guest-examples/`).
pub fn bytes(name: &str) -> Vec<u8> {
    read(path(name))
}

/// The bytes of component guest `name` (built for `wasm32-wasip2`).
pub fn component_bytes(name: &str) -> Vec<u8> {
    read(component_path(name))
}

/// `guest-examples/target/wasm32-wasip2/release/<name>.wasm`.
pub fn component_path(name: &str) -> PathBuf {
    target_dir("wasm32-wasip2").join(format!("{name}.wasm"))
}

/// A component guest as base64, for a start's `file`.
pub fn component_base64(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(component_bytes(name))
}

/// The Python workload built with componentize-py, as base64.
pub fn python_workload_base64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(read(python_workload_path()))
}

/// Path of the Python workload built with componentize-py.
pub fn python_workload_path() -> PathBuf {
    target_dir("python").join("workload-py.wasm")
}

fn target_dir(target: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guest-examples/target")
        .join(target);
    if target == "python" {
        base
    } else {
        base.join("release")
    }
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "guest artifact {} is missing ({e}): build it with `just guests`",
            path.display()
        )
    })
}

/// `guest-examples/target/wasm32-wasip1/release/<name>.wasm`.
pub fn path(name: &str) -> PathBuf {
    target_dir("wasm32-wasip1").join(format!("{name}.wasm"))
}

/// The guest as base64, for a start's `file`.
pub fn base64(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes(name))
}
