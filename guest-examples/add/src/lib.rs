//! A reactor module with numeric exports: the shape of a "named export" task.
//!
//! Start it with `"name":"add","inputs":["10","20"]` and the result is `"30"`.

/// `a + b` (wrapping).
#[unsafe(no_mangle)]
pub extern "C" fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

/// `a + b` on 64-bit integers (wrapping).
#[unsafe(no_mangle)]
pub extern "C" fn add64(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// `a * b` on single-precision floats.
#[unsafe(no_mangle)]
pub extern "C" fn mul_f32(a: f32, b: f32) -> f32 {
    a * b
}

/// `a / b` on double-precision floats.
#[unsafe(no_mangle)]
pub extern "C" fn div_f64(a: f64, b: f64) -> f64 {
    a / b
}

/// Integer division; traps (divide by zero) when `b` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn div(a: i32, b: i32) -> i32 {
    // Wasm's i32.div_s traps on zero; so does Rust's `/` (with a panic → abort).
    a / b
}
