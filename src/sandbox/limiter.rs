//! The memory and table budget of one store.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::{Limits, Meter};

/// Largest number of table elements a guest may have.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Instances, memories and tables per store.
const MAX_INSTANCES: usize = 64;

/// Refuses growth past the task's memory budget (ending the task), records the peak in the
/// task's [`Meter`], and remembers whether anything was refused so the failure can be
/// reported as `memory`.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: usize,
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
            peak: 0,
            refused: false,
            meter,
        }
    }

    /// Whether a growth was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Largest linear memory seen, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        if desired > self.limit {
            self.refused = true;
            wasmtime::bail!(
                "memory limit exceeded: growing to {desired} bytes, the limit is {} bytes",
                self.limit
            );
        }
        self.peak = self.peak.max(desired);
        self.meter
            .memory(u64::try_from(desired).unwrap_or(u64::MAX));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
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
        Ok(true)
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
