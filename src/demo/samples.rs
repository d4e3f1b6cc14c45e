//! The demo's sample workloads, as WebAssembly text so the demo needs no build step.

/// `add(i32, i32) -> i32`: a core-module export (the docs/protocol.md test module).
pub const ADD: &str = r#"(module
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))"#;

/// A component exporting `add: func(a: s32, b: s32) -> s32`, called with WAVE inputs.
pub const ADD_COMPONENT: &str = r#"(component
  (core module $m
    (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
  (core instance $i (instantiate $m))
  (func (export "add") (param "a" s32) (param "b" s32) (result s32)
    (canon lift (core func $i "add"))))"#;

/// A WASI command that prints a greeting.
pub const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from a WASI command running in proplet!\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 46))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// `spin()`: never returns, until stopped.
pub const SPIN: &str = r#"(module
  (func (export "spin") (loop $forever (br $forever))))"#;

/// The binary of a sample, base64-encoded for a start message.
pub fn base64(wat_text: &str) -> Result<String, wat::Error> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(wat::parse_str(wat_text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_assemble() {
        for sample in [ADD, ADD_COMPONENT, HELLO, SPIN] {
            base64(sample).expect("valid WAT");
        }
        assert_eq!(
            base64(ADD).unwrap(),
            "AGFzbQEAAAABBwFgAn9/AX8DAgEABwcBA2FkZAAACgkBBwAgACABags="
        );
    }
}
