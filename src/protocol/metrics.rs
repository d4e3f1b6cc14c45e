//! The manager's metrics topics (docs/protocol.md §4.10–4.11) and the start's
//! `monitoring_profile` (§4.3.3): pure wire types.
//!
//! Timestamps are RFC 3339 text, which the manager parses; the upstream proplet sends an
//! object the manager cannot read, so it falls back to the time it received the message.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `control/proplet/metrics`: the proplet process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PropletMetrics {
    /// Our id.
    pub proplet_id: String,
    /// Our namespace.
    pub namespace: String,
    /// When the sample was taken, RFC 3339.
    pub timestamp: String,
    /// CPU time of the process.
    pub cpu_metrics: CpuMetrics,
    /// Memory of the process.
    pub memory_metrics: MemoryMetrics,
}

/// CPU time of the process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuMetrics {
    /// User CPU time since the process started, in seconds.
    pub user_seconds: f64,
    /// System CPU time since the process started, in seconds.
    pub system_seconds: f64,
    /// CPU used since the previous sample, in percent of one core.
    pub percent: f64,
}

/// Memory of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryMetrics {
    /// Resident set size.
    pub rss_bytes: u64,
    /// Go's heap figures, which a Rust process does not have: always 0.
    pub heap_alloc_bytes: u64,
    /// Always 0 (see `heap_alloc_bytes`).
    pub heap_sys_bytes: u64,
    /// Always 0 (see `heap_alloc_bytes`).
    pub heap_inuse_bytes: u64,
    /// The cgroup's memory use; omitted when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_usage_bytes: Option<u64>,
    /// The cgroup's memory limit; omitted when unknown or unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_limit_bytes: Option<u64>,
}

/// `control/proplet/task_metrics`: one running task, from its own meters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskMetrics {
    /// The task.
    pub task_id: String,
    /// Our id.
    pub proplet_id: String,
    /// This sample.
    pub metrics: TaskSample,
    /// Every sample of the task so far, aggregated; `null` when the profile keeps no
    /// history.
    pub aggregated: Option<Aggregated>,
    /// When the sample was taken, RFC 3339.
    pub timestamp: String,
}

/// One sample of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TaskSample {
    /// The guest's CPU time since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// The largest linear memory the guest reached so far.
    pub memory_bytes: u64,
    /// `memory_bytes` in percent of the task's memory budget.
    pub memory_percent: f64,
    /// Always 0: guests read through WASI, which is not metered.
    pub disk_read_bytes: u64,
    /// Bytes of output the guest produced so far (stdout, stderr, logs, result).
    pub disk_write_bytes: u64,
    /// Seconds since the task arrived.
    pub uptime_seconds: u64,
    /// Threads the guest runs on: 1 (a guest runs on one thread at a time).
    pub thread_count: u64,
    /// Always 0: the proplet does not count a guest's WASI handles per sample.
    pub file_descriptor_count: u64,
}

/// A task's samples so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Aggregated {
    /// Mean `cpu_percent`.
    pub avg_cpu_usage: f64,
    /// Largest `cpu_percent`.
    pub max_cpu_usage: f64,
    /// Mean `memory_bytes`.
    pub avg_memory_usage: u64,
    /// Largest `memory_bytes`.
    pub max_memory_usage: u64,
    /// Always 0 (see [`TaskSample::disk_read_bytes`]).
    pub total_disk_read: u64,
    /// Output bytes so far.
    pub total_disk_write: u64,
    /// Samples taken.
    pub sample_count: u64,
}

impl Aggregated {
    /// Adds `sample`.
    pub fn add(&mut self, sample: &TaskSample) {
        let n = self.sample_count;
        let mean = |avg: f64, x: f64| (avg * n as f64 + x) / (n + 1) as f64;
        self.avg_cpu_usage = mean(self.avg_cpu_usage, sample.cpu_percent);
        self.max_cpu_usage = self.max_cpu_usage.max(sample.cpu_percent);
        self.avg_memory_usage =
            mean(self.avg_memory_usage as f64, sample.memory_bytes as f64).round() as u64;
        self.max_memory_usage = self.max_memory_usage.max(sample.memory_bytes);
        self.total_disk_write = sample.disk_write_bytes;
        self.sample_count = n + 1;
    }
}

/// `part` in percent of `whole`, to one decimal (0 when `whole` is not positive).
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// A time as RFC 3339 text, to the millisecond.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// What the manager asks to be sampled of a task (§4.3.3). Every member is optional here,
/// and a member of the wrong type is ignored, so no profile makes a start undecodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitoringProfile {
    /// Whether the task is sampled at all.
    pub enabled: bool,
    /// Time between samples.
    pub interval: Duration,
    /// Whether samples are published (`control/proplet/task_metrics`).
    pub export_to_mqtt: bool,
    /// Whether each message carries the aggregate of the samples so far.
    pub retain_history: bool,
}

impl MonitoringProfile {
    /// The profile of a task that sent none: upstream's defaults (every 10 s, or every
    /// 120 s for a daemon).
    pub fn default_for(daemon: bool) -> MonitoringProfile {
        MonitoringProfile {
            enabled: true,
            interval: Duration::from_secs(if daemon { 120 } else { 10 }),
            export_to_mqtt: true,
            retain_history: true,
        }
    }

    /// `value` read over the defaults of `daemon`. `interval` is whole seconds, as the
    /// proplets read it; a value of 10⁹ or more can only be a Go duration in nanoseconds
    /// (what the manager sends), and is read as such. An interval under one second is one
    /// second.
    pub fn read(value: &Value, daemon: bool) -> MonitoringProfile {
        let mut p = MonitoringProfile::default_for(daemon);
        let flag =
            |key: &str, default: bool| value.get(key).and_then(Value::as_bool).unwrap_or(default);
        p.enabled = flag("enabled", p.enabled);
        p.export_to_mqtt = flag("export_to_mqtt", p.export_to_mqtt);
        p.retain_history = flag("retain_history", p.retain_history);
        if let Some(n) = value.get("interval").and_then(Value::as_u64) {
            let secs = if n >= 1_000_000_000 {
                n / 1_000_000_000
            } else {
                n
            };
            p.interval = Duration::from_secs(secs.max(1));
        }
        p
    }
}

/// Reads `monitoring_profile` as raw JSON (checked later by [`MonitoringProfile::read`]).
pub fn raw_profile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(Value::is_object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profiles_read_seconds_or_go_nanoseconds_and_ignore_bad_members() {
        let p = MonitoringProfile::read(&json!({"enabled": true, "interval": 5}), false);
        assert_eq!(p.interval, Duration::from_secs(5));
        let go = json!({"enabled": true, "interval": 10_000_000_000u64, "export_to_mqtt": false});
        let p = MonitoringProfile::read(&go, true);
        assert_eq!(
            (p.interval, p.export_to_mqtt),
            (Duration::from_secs(10), false)
        );
        let bad = json!({"enabled": "yes", "interval": -3, "history_size": -1});
        assert_eq!(
            MonitoringProfile::read(&bad, true),
            MonitoringProfile::default_for(true)
        );
        let zero = MonitoringProfile::read(&json!({"interval": 0}), false);
        assert_eq!(zero.interval, Duration::from_secs(1));
    }

    #[test]
    fn aggregates_follow_the_samples() {
        let mut a = Aggregated::default();
        for (cpu, mem) in [(10.0, 100), (30.0, 300)] {
            a.add(&TaskSample {
                cpu_percent: cpu,
                memory_bytes: mem,
                disk_write_bytes: mem,
                ..TaskSample::default()
            });
        }
        assert_eq!(a.sample_count, 2);
        assert_eq!((a.avg_cpu_usage, a.max_cpu_usage), (20.0, 30.0));
        assert_eq!(
            (a.avg_memory_usage, a.max_memory_usage, a.total_disk_write),
            (200, 300, 300)
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_766_700_000_123);
        assert_eq!(rfc3339(at), "2025-12-25T22:00:00.123Z");
    }
}
