//! A guest that allocates: for memory limit tests.

/// Allocates and touches `mib` MiB, returning how many MiB it holds.
#[unsafe(no_mangle)]
pub extern "C" fn alloc(mib: i32) -> i32 {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib.max(0) {
        blocks.push(vec![1u8; 1 << 20]);
    }
    std::hint::black_box(&blocks);
    blocks.len() as i32
}
