//! Sandbox policy: the limits every guest runs under, and the capped output pipes that
//! enforce the output budget.
//!
//! Deny by default: a guest gets no host environment, no preopened directories, no network
//! and bounded memory, time and output unless the operator says otherwise.

pub mod admission;
mod budget;
pub mod capabilities;
pub mod config;
pub mod descriptors;
pub mod http;
pub mod kv;
mod limiter;
mod meter;
pub mod network;
mod output;
pub mod quota;
mod scratch;

use std::time::Duration;

pub use admission::{Policy, Source};
pub use budget::{Budgets, LimitRequest};
pub use capabilities::{CapabilityError, Mount, MountRequest, SCRATCH_PATH, Volume};
pub use config::{ConfigGrant, ConfigPolicy, ConfigRequest};
pub use http::{HttpBudget, HttpGrant, HttpLimits, HttpPolicy};
pub use limiter::{MAX_TABLE_ELEMENTS, MemoryLimiter};
pub use meter::{Meter, Reading};
pub use network::NetRule;
pub use output::{CappedOutput, Echo};
pub use quota::ScratchQuota;
pub(crate) use scratch::remove_path;
pub use scratch::{Scratch, ScratchRoot};

/// Node-wide limits of every in-process task's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Most WASI handles (files, directories, streams, sockets) one task may hold.
    pub handles: usize,
    /// What a task's scratch `/tmp` may hold.
    pub scratch: ScratchQuota,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            handles: descriptors::MAX_TASK_HANDLES,
            scratch: ScratchQuota::default(),
        }
    }
}

/// Budgets for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline; `None` runs until done or stopped.
    pub timeout: Option<Duration>,
    /// Linear memory a guest may allocate, in bytes.
    pub memory_bytes: u64,
    /// Bytes of stdout (and separately of stderr, and of log lines plus the reported
    /// result) kept; more is an `output_limit` error.
    pub output_bytes: usize,
    /// Fuel (Wasmtime's instruction budget); `None` runs unmetered.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Some(Duration::from_secs(600)),
            memory_bytes: 256 << 20,
            output_bytes: 1 << 20,
            fuel: None,
        }
    }
}

/// Whether `name` is a plain name, safe as a file name or a table key: 1 to `max` bytes
/// of ASCII letters, digits, `_`, `-` and `.`.
pub(crate) fn plain_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
