//! The memory and table budget of one store.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::{Limits, Meter};

/// Largest number of table elements a guest may have.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Instances, memories and tables per store.
const MAX_INSTANCES: usize = 64;

/// Host bytes one table element is counted as (a pointer-sized reference).
const TABLE_ELEMENT_BYTES: usize = 8;

/// One memory budget per task: the sum of every linear memory and table of the store (a
/// guest with many memories, or many instances each with its own, shares one budget).
/// Growth past it is refused and ends the task; the peak of the sum is recorded in the
/// task's [`Meter`], and a refusal is remembered so the failure can be reported as
/// `memory`.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: usize,
    /// Bytes of memories and tables the store holds now (they never shrink).
    used: usize,
    peak: usize,
    refused: bool,
    meter: Arc<Meter>,
}

impl MemoryLimiter {
    /// A limiter for `limits.memory_bytes` that reports to `meter`.
    pub fn new(limits: &Limits, meter: Arc<Meter>) -> Self {
        let limit = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        meter.memory(0);
        MemoryLimiter {
            limit,
            used: 0,
            peak: 0,
            refused: false,
            meter,
        }
    }

    /// Whether a growth was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Largest sum of memories and tables seen, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Accounts for `more` bytes, or refuses them (naming `what`) past the budget.
    fn grow(&mut self, more: usize, what: &str) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(more);
        if total > self.limit {
            self.refused = true;
            wasmtime::bail!(
                "memory limit exceeded: {what} would bring the task to {total} bytes, the limit is {} bytes",
                self.limit
            );
        }
        self.used = total;
        self.peak = self.peak.max(total);
        self.meter.memory(u64::try_from(total).unwrap_or(u64::MAX));
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.grow(desired.saturating_sub(current), "a linear memory growth")
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        if desired > MAX_TABLE_ELEMENTS {
            self.refused = true;
            wasmtime::bail!("table limit exceeded: growing to {desired} elements");
        }
        let more = desired.saturating_sub(current);
        self.grow(more.saturating_mul(TABLE_ELEMENT_BYTES), "a table growth")
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(bytes: u64) -> MemoryLimiter {
        let limits = Limits {
            memory_bytes: bytes,
            ..Limits::default()
        };
        MemoryLimiter::new(&limits, Arc::new(Meter::default()))
    }

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = limiter(1 << 20);
        assert!(l.memory_growing(0, 600 << 10, None).expect("fits"));
        assert!(
            l.memory_growing(0, 600 << 10, None).is_err(),
            "a second memory counts against the same budget"
        );
        assert!(l.refused());
        let mut l = limiter(1 << 20);
        assert!(l.memory_growing(0, 512 << 10, None).expect("fits"));
        assert!(
            l.memory_growing(512 << 10, 768 << 10, None)
                .expect("growth")
        );
        assert!(l.table_growing(0, 1000, None).expect("8 KB of table"));
        assert_eq!(l.peak(), (768 << 10) + 8000);
        assert!(l.table_growing(1000, 40_000, None).is_err(), "320 KB more");
    }

    #[test]
    fn growth_past_a_declared_maximum_fails_without_ending_the_task() {
        let mut l = limiter(1 << 20);
        assert!(
            !l.memory_growing(0, 2 << 20, Some(1 << 20))
                .expect("refused")
        );
        assert!(!l.refused());
    }
}
