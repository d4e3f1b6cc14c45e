//! A guest that never returns: for stop, timeout and starvation tests.

/// Loops forever without calling the host.
#[unsafe(no_mangle)]
pub extern "C" fn spin() -> i32 {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
        if n == u64::MAX {
            return 0;
        }
    }
}
