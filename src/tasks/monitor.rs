//! The manager's metrics topics (docs/protocol.md §4.10–4.11): the proplet's process every
//! `PROPLET_METRICS_INTERVAL` while `PROPLET_ENABLE_MONITORING` is on, and each running
//! task's own meters (guest CPU time, memory, output) every interval of its
//! `monitoring_profile`. Samples are best effort: one that finds no room in the outbox is
//! dropped (and counted), never waited for.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::protocol::Outbound;
use crate::protocol::metrics::{
    Aggregated, MonitoringProfile, PropletMetrics, TaskMetrics, TaskSample, percent, rfc3339,
};
use crate::sandbox::Meter;
use crate::telemetry::process::{self, ProcessSampler};
use crate::transport::Publisher;

/// When a running task's CPU starts being timed, and how long after that its first sample
/// is taken.
const FIRST_SAMPLE: Duration = Duration::from_millis(100);

/// Publishes samples for one proplet.
#[derive(Clone)]
pub struct Monitor {
    publisher: Publisher,
    proplet_id: String,
    enabled: bool,
}

/// One task to sample.
pub struct Sampled<'a> {
    /// Its id.
    pub id: &'a str,
    /// What the manager asked for.
    pub profile: MonitoringProfile,
    /// Its meters.
    pub meter: Arc<Meter>,
    /// Its memory budget, for `memory_percent`.
    pub memory_budget: u64,
    /// When it arrived.
    pub arrived: Instant,
}

impl Monitor {
    /// A monitor publishing through `publisher`; `enabled` is `PROPLET_ENABLE_MONITORING`.
    pub fn new(publisher: Publisher, proplet_id: String, enabled: bool) -> Self {
        Monitor {
            publisher,
            proplet_id,
            enabled,
        }
    }

    /// Samples `task` every interval of its profile until dropped (never ends). Nothing is
    /// sampled when monitoring is off, or the profile is disabled or not exported.
    pub async fn sample(&self, task: Sampled<'_>) -> Infallible {
        let p = task.profile;
        if !(self.enabled && p.enabled && p.export_to_mqtt) {
            return std::future::pending().await;
        }
        // A task that ends before this costs no CPU timing at all.
        tokio::time::sleep(FIRST_SAMPLE).await;
        task.meter.time_cpu();
        let mut last = (Instant::now(), task.meter.read().cpu);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + FIRST_SAMPLE, p.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut history = Aggregated::default();
        loop {
            ticker.tick().await;
            let sample = task_sample(&task, &mut last);
            history.add(&sample);
            let msg = TaskMetrics {
                task_id: task.id.to_owned(),
                proplet_id: self.proplet_id.clone(),
                metrics: sample,
                aggregated: p.retain_history.then_some(history),
                timestamp: rfc3339(SystemTime::now()),
            };
            if let Err(e) = self.publisher.try_send(Outbound::TaskMetrics(msg)) {
                debug!(task_id = task.id, error = %e, "task metrics dropped");
            }
        }
    }
}

/// One sample of `task`; `last` is the previous sample's time and guest CPU time.
fn task_sample(task: &Sampled<'_>, last: &mut (Instant, Duration)) -> TaskSample {
    let reading = task.meter.read();
    let now = Instant::now();
    let wall = now.duration_since(last.0).as_secs_f64();
    let cpu = reading.cpu.saturating_sub(last.1).as_secs_f64();
    *last = (now, reading.cpu);
    let memory = reading.memory_peak_bytes.unwrap_or(0);
    TaskSample {
        cpu_percent: percent(cpu, wall),
        memory_bytes: memory,
        memory_percent: percent(memory as f64, task.memory_budget as f64),
        disk_read_bytes: 0,
        disk_write_bytes: reading.output_bytes,
        uptime_seconds: task.arrived.elapsed().as_secs(),
        thread_count: 1,
        file_descriptor_count: 0,
    }
}

/// Publishes the proplet's process metrics every `every` once the session is ready (the
/// first at once), until `cancel` fires or the session goes away.
pub async fn proplet_metrics(
    publisher: Publisher,
    proplet_id: String,
    namespace: String,
    every: Duration,
    mut ready: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        r = ready.wait_for(|generation| *generation > 0) => if r.is_err() { return },
    }
    let mut sampler = ProcessSampler::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            // The session is gone (as the heartbeat, this loop ends with it).
            changed = ready.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {
                let msg = PropletMetrics {
                    proplet_id: proplet_id.clone(),
                    namespace: namespace.clone(),
                    timestamp: rfc3339(SystemTime::now()),
                    cpu_metrics: sampler.cpu(),
                    memory_metrics: process::memory(),
                };
                if let Err(e) = publisher.try_send(Outbound::PropletMetrics(msg)) {
                    debug!(error = %e, "proplet metrics dropped");
                }
            }
        }
    }
}
