//! Readings of this process from the kernel, for `control/proplet/metrics`: CPU time
//! (`/proc/self/stat`), resident memory (`/proc/self/statm`) and the cgroup's memory use and
//! limit (cgroup v2 `memory.current` / `memory.max`, v1 `memory.usage_in_bytes` /
//! `memory.limit_in_bytes`).

use std::time::{Duration, Instant};

use crate::protocol::metrics::percent;
use crate::protocol::{CpuMetrics, MemoryMetrics};

/// A cgroup v1 limit at or above this is "unlimited" (the kernel reports a page-rounded
/// `i64::MAX`).
const UNLIMITED_V1: u64 = 1 << 62;

/// Samples the process, remembering the previous CPU reading for the percentage.
#[derive(Debug)]
pub struct ProcessSampler {
    last: Option<(Instant, Duration)>,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSampler {
    /// A sampler whose first percentage covers the process's whole life so far.
    pub fn new() -> Self {
        ProcessSampler { last: None }
    }

    /// CPU time so far, and the share of one core used since the previous sample.
    pub fn cpu(&mut self) -> CpuMetrics {
        let (user, system) = cpu_seconds().unwrap_or((0.0, 0.0));
        let used = Duration::from_secs_f64(user + system);
        let now = Instant::now();
        let percent = match self.last.replace((now, used)) {
            Some((then, before)) => percent(
                used.saturating_sub(before).as_secs_f64(),
                now.duration_since(then).as_secs_f64(),
            ),
            None => 0.0,
        };
        CpuMetrics {
            user_seconds: user,
            system_seconds: system,
            percent,
        }
    }
}

/// User and system CPU seconds of the process, from `/proc/self/stat` (in clock ticks).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    Some((utime as f64 / hz, stime as f64 / hz))
}

/// Resident memory of the process and its cgroup's, as far as they can be read.
pub fn memory() -> MemoryMetrics {
    let (usage, limit) = cgroup_memory();
    MemoryMetrics {
        rss_bytes: rss().unwrap_or(0),
        heap_alloc_bytes: 0,
        heap_sys_bytes: 0,
        heap_inuse_bytes: 0,
        container_usage_bytes: usage,
        container_limit_bytes: limit,
    }
}

/// Resident set size, from `/proc/self/statm` (in pages).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The cgroup's memory use and limit (`None` when unknown or unlimited).
fn cgroup_memory() -> (Option<u64>, Option<u64>) {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let v2 = read("/sys/fs/cgroup/memory.current");
    if v2.is_some() {
        return (v2, read("/sys/fs/cgroup/memory.max"));
    }
    let usage = read("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    let limit = read("/sys/fs/cgroup/memory/memory.limit_in_bytes").filter(|l| *l < UNLIMITED_V1);
    (usage, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let mut sampler = ProcessSampler::new();
        let first = sampler.cpu();
        assert_eq!(first.percent, 0.0);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let second = sampler.cpu();
        assert!(second.user_seconds + second.system_seconds > 0.0);
        assert!(second.percent > 0.0, "{second:?}");
        assert!(memory().rss_bytes > 1 << 20);
    }
}
