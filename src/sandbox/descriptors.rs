//! File descriptors: one task must never exhaust the process's descriptor limit, or a
//! concurrent task could not get its scratch directory and preopens, and the daemon could
//! not accept a connection or open its state.
//!
//! At start-up the soft `RLIMIT_NOFILE` is raised to the hard limit; then each task's WASI
//! resource table (every open file, directory, stream and socket of the guest) is capped so
//! that all concurrent tasks together stay well inside the limit, with a reserve kept for
//! the daemon itself.

use tracing::warn;

/// Most WASI handles one task may hold, whatever the process limit allows.
pub const MAX_TASK_HANDLES: usize = 1024;

/// Handles always allowed to a task (its stdio, scratch, mounts and a few files), even on
/// a host whose descriptor limit is too small for the configured concurrency.
const MIN_TASK_HANDLES: usize = 32;

/// Descriptors kept for the daemon itself (MQTT, HTTP, logs, compile cache, metrics).
const DAEMON_RESERVE: u64 = 256;

/// Raises the soft descriptor limit to the hard one and returns the per-task handle cap
/// for `concurrent` tasks.
pub fn handles_per_task(concurrent: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|e| {
        warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
        1024
    });
    let per_task = share(limit, concurrent);
    if per_task == MIN_TASK_HANDLES {
        warn!(
            limit,
            concurrent,
            "the open-file limit is low for this many concurrent tasks; raise LimitNOFILE"
        );
    }
    per_task
}

/// Each of `concurrent` tasks' share of `limit` descriptors, within the bounds.
fn share(limit: u64, concurrent: usize) -> usize {
    let spare = limit.saturating_sub(DAEMON_RESERVE);
    let each = spare / u64::try_from(concurrent.max(1)).unwrap_or(u64::MAX);
    usize::try_from(each)
        .unwrap_or(usize::MAX)
        .clamp(MIN_TASK_HANDLES, MAX_TASK_HANDLES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_tasks_share_the_limit_and_keep_a_reserve() {
        assert_eq!(share(1 << 20, 4), MAX_TASK_HANDLES);
        assert_eq!(share(1024, 4), 192);
        assert_eq!(share(1024, 1000), MIN_TASK_HANDLES);
        assert_eq!(share(100, 1), MIN_TASK_HANDLES);
        assert!(share(4096, 8) * 8 + DAEMON_RESERVE as usize <= 4096);
    }
}
