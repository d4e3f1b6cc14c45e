//! Paths of the sample guests built by `just guests`; a missing one fails loudly.

use std::path::PathBuf;

/// The bytes of guest `name` (a crate under `guest-examples/`).
pub fn bytes(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "guest artifact {} is missing ({e}): build it with `just guests`",
            path.display()
        )
    })
}

/// `guest-examples/target/wasm32-wasip1/release/<name>.wasm`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guest-examples/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"))
}

/// The guest as base64, for a start's `file`.
pub fn base64(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes(name))
}
