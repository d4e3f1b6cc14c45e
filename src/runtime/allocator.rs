//! How Wasmtime allocates each task's instances, linear memories, tables and async stacks.
//!
//! The pooling allocator reserves address space for every slot once, when the engine is
//! made, and reuses slots (with copy-on-write memory images) from task to task: a task
//! costs no `mmap`/`munmap` of its memories and stacks. It needs a large address space
//! (about 4 GiB per linear memory slot, reserved and never touched), so `auto` picks it
//! only on 64-bit hosts whose address-space limit (`RLIMIT_AS`) leaves room for the pool,
//! and falls back to allocating on demand if Wasmtime still cannot reserve it.

use std::fmt;
use std::str::FromStr;

use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Memories and tables one task may have in the pool (the Python sample, made by
/// componentize-py, has a handful of each; on demand, the memory limiter allows 64).
const MEMORIES_PER_TASK: u32 = 8;
const TABLES_PER_TASK: u32 = 8;
/// Core instances one task's component may have (as the memory limiter allows).
const CORE_INSTANCES_PER_TASK: u32 = 64;
/// Elements of one table, as the memory limiter allows: 8 MB of reserved address space per
/// table slot.
const TABLE_ELEMENTS: usize = crate::sandbox::MAX_TABLE_ELEMENTS;
/// Slots beyond the concurrency limit, for stores still being dropped.
const SPARE_SLOTS: u32 = 2;
/// Bytes of each table slot reset by writing zeroes and kept resident rather than handed
/// back to the kernel between tasks.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Bytes of each linear memory slot that may stay resident between tasks. Where the kernel
/// has `PAGEMAP_SCAN` (Linux 6.7+), only the pages the last task wrote are put back (copied
/// from the module's image, or zeroed) and stay mapped: the next task takes no page fault
/// on them, and no `madvise` (nor the TLB shootdown it sends to the other cores) is needed.
/// Without the scan, memory is handed back to the kernel as before.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
/// Address space one linear memory slot takes: Wasmtime's 4 GiB reservation plus guards.
const MEMORY_SLOT_BYTES: u64 = (4 << 30) + (64 << 20);
/// Address space one async stack slot takes (Wasmtime's default 2 MiB stack plus a guard).
const STACK_SLOT_BYTES: u64 = 4 << 20;

/// `PROPLET_INSTANCE_ALLOCATOR`: which allocator to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AllocatorChoice {
    /// The pool where the address space allows it, else on demand.
    #[default]
    Auto,
    /// The pool, or no Wasmtime at all (tasks fail with `internal`).
    Pooling,
    /// Memories and stacks mapped for each task and unmapped after it.
    OnDemand,
}

impl FromStr for AllocatorChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AllocatorChoice::Auto),
            "pooling" => Ok(AllocatorChoice::Pooling),
            "on-demand" | "ondemand" => Ok(AllocatorChoice::OnDemand),
            other => Err(format!("{other:?} (use auto, pooling or on-demand)")),
        }
    }
}

/// The allocator in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved once and reused.
    Pooling,
    /// Mapped per task.
    OnDemand,
}

impl fmt::Display for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Allocator::Pooling => "pooling",
            Allocator::OnDemand => "on-demand",
        })
    }
}

/// The allocator choice and what the pool must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// What the operator asked for.
    pub choice: AllocatorChoice,
    /// Tasks that run at once (each needs one slot).
    pub tasks: u32,
    /// Largest linear memory a task may be granted, in bytes.
    pub max_memory: u64,
}

impl Default for Allocation {
    /// On demand: what one-off commands (`proplet run`, `precompile`) use.
    fn default() -> Self {
        Allocation {
            choice: AllocatorChoice::OnDemand,
            tasks: 1,
            max_memory: 4 << 30,
        }
    }
}

impl Allocation {
    fn slots(&self) -> u32 {
        self.tasks.saturating_add(SPARE_SLOTS)
    }

    /// Address space the pool reserves.
    pub fn pool_bytes(&self) -> u64 {
        let slots = u64::from(self.slots());
        let memories = slots * u64::from(MEMORIES_PER_TASK);
        memories
            .saturating_mul(MEMORY_SLOT_BYTES)
            .saturating_add(slots.saturating_mul(STACK_SLOT_BYTES))
    }

    /// The allocator to try first: for `auto`, the pool only on a 64-bit host whose
    /// address-space limit leaves room for it.
    pub fn preferred(&self) -> Allocator {
        match self.choice {
            AllocatorChoice::Pooling => Allocator::Pooling,
            AllocatorChoice::OnDemand => Allocator::OnDemand,
            AllocatorChoice::Auto if pool_fits(self.pool_bytes()) => Allocator::Pooling,
            AllocatorChoice::Auto => Allocator::OnDemand,
        }
    }

    /// Whether a pool that Wasmtime could not reserve may give way to on-demand.
    pub fn may_fall_back(&self) -> bool {
        self.choice == AllocatorChoice::Auto
    }

    /// The Wasmtime strategy for `allocator`.
    pub fn strategy(&self, allocator: Allocator) -> InstanceAllocationStrategy {
        match allocator {
            Allocator::OnDemand => InstanceAllocationStrategy::OnDemand,
            Allocator::Pooling => InstanceAllocationStrategy::Pooling(self.pool()),
        }
    }

    fn pool(&self) -> PoolingAllocationConfig {
        let slots = self.slots();
        let mut pool = PoolingAllocationConfig::new();
        // A memory slot never exceeds the 4 GiB reservation; the store's limiter holds
        // each task to its own budget below that.
        let max_memory = self.max_memory.clamp(64 << 10, 4 << 30);
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_TASK))
            .total_memories(slots.saturating_mul(MEMORIES_PER_TASK))
            .total_tables(slots.saturating_mul(TABLES_PER_TASK))
            .total_stacks(slots)
            .max_core_instances_per_component(CORE_INSTANCES_PER_TASK)
            .max_memories_per_component(MEMORIES_PER_TASK)
            .max_tables_per_component(TABLES_PER_TASK)
            .max_memories_per_module(MEMORIES_PER_TASK)
            .max_tables_per_module(TABLES_PER_TASK)
            .table_elements(TABLE_ELEMENTS)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(memory_keep_resident())
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
        pool
    }
}

/// What a linear memory keeps resident: without `PAGEMAP_SCAN`, Wasmtime would zero the
/// whole window after every task, touched or not, which costs more than the page faults
/// it saves (a cached component's run took 53 µs instead of 35 µs with 1 MiB).
fn memory_keep_resident() -> usize {
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        MEMORY_KEEP_RESIDENT
    } else {
        0
    }
}

/// Whether `bytes` of address space can be reserved: a 64-bit host and an `RLIMIT_AS`
/// (if any) with room for the pool and the daemon besides.
fn pool_fits(bytes: u64) -> bool {
    if cfg!(not(target_pointer_width = "64")) {
        return false;
    }
    match rlimit::getrlimit(rlimit::Resource::AS) {
        Ok((soft, _)) => soft == rlimit::INFINITY || soft / 2 >= bytes,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_name_what_is_allowed() {
        assert_eq!("auto".parse(), Ok(AllocatorChoice::Auto));
        assert_eq!("Pooling".parse(), Ok(AllocatorChoice::Pooling));
        assert_eq!("on-demand".parse(), Ok(AllocatorChoice::OnDemand));
        let err = "pool".parse::<AllocatorChoice>().unwrap_err();
        assert!(err.contains("auto, pooling or on-demand"), "{err}");
    }

    #[test]
    fn explicit_choices_are_kept_and_only_auto_falls_back() {
        let a = |choice| Allocation {
            choice,
            tasks: 4,
            max_memory: 1 << 30,
        };
        assert_eq!(a(AllocatorChoice::Pooling).preferred(), Allocator::Pooling);
        assert_eq!(
            a(AllocatorChoice::OnDemand).preferred(),
            Allocator::OnDemand
        );
        assert!(a(AllocatorChoice::Auto).may_fall_back());
        assert!(!a(AllocatorChoice::Pooling).may_fall_back());
        // Here (64-bit, no address-space limit in the test runner) auto pools.
        assert_eq!(a(AllocatorChoice::Auto).preferred(), Allocator::Pooling);
    }

    #[test]
    fn the_pool_grows_with_the_concurrency_limit() {
        let small = Allocation {
            choice: AllocatorChoice::Auto,
            tasks: 1,
            max_memory: 1 << 30,
        };
        let big = Allocation { tasks: 64, ..small };
        assert!(big.pool_bytes() > 20 * small.pool_bytes());
        // One memory slot per memory of every slot: 3 slots × 8 memories × ~4 GiB.
        assert!(small.pool_bytes() > 24 * (4 << 30));
    }
}
