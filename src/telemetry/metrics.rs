//! Prometheus metrics and the health state behind `/readyz`.
//!
//! One [`Metrics`] handle is shared by the task manager, the MQTT session, the heartbeat and
//! the compile cache; counting is lock-free and costs the same whether or not the HTTP
//! endpoint is on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    outcome: &'static str,
    error_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JournalLabels {
    table: &'static str,
}

struct Inner {
    registry: Registry,
    tasks: Family<TaskLabels, Counter>,
    duration: Histogram,
    cache: Family<CacheLabels, Counter>,
    queued: Gauge,
    running: Gauge,
    reconnects: Counter,
    heartbeats: Counter,
    fetched: Family<SourceLabels, Counter>,
    journal: Family<JournalLabels, Gauge>,
    outbox: OutboxMetrics,
    connected: AtomicBool,
    ever_connected: AtomicBool,
    draining: AtomicBool,
}

/// The durable outbox's depth and replays.
struct OutboxMetrics {
    messages: Gauge,
    bytes: Gauge,
    replayed: Counter,
}

impl OutboxMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = OutboxMetrics {
            messages: Gauge::default(),
            bytes: Gauge::default(),
            replayed: Counter::default(),
        };
        registry.register(
            "outbox_messages",
            "Results stored in the durable outbox, not yet acknowledged by the broker",
            m.messages.clone(),
        );
        registry.register(
            "outbox_bytes",
            "Payload bytes of the results in the durable outbox",
            m.bytes.clone(),
        );
        registry.register(
            "outbox_replayed",
            "Results a previous process left in the outbox, published by this one",
            m.replayed.clone(),
        );
        m
    }
}

/// The proplet's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Every metric registered, all at zero, not connected.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("proplet");
        let tasks = Family::<TaskLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        let cache = Family::<CacheLabels, Counter>::default();
        let fetched = Family::<SourceLabels, Counter>::default();
        let journal = Family::<JournalLabels, Gauge>::default();
        let (queued, running) = (Gauge::default(), Gauge::default());
        let (reconnects, heartbeats) = (Counter::default(), Counter::default());
        registry.register(
            "tasks",
            "Tasks finished, by outcome and error_kind",
            tasks.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Arrival to result of each task",
            duration.clone(),
        );
        registry.register(
            "compile_cache",
            "Compile cache lookups: hit or miss in memory; after a miss, disk_hit or compiled",
            cache.clone(),
        );
        registry.register(
            "tasks_queued",
            "Admitted tasks waiting for a slot",
            queued.clone(),
        );
        registry.register(
            "tasks_running",
            "Tasks holding an execution slot",
            running.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "MQTT connections after the first",
            reconnects.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats queued for publishing",
            heartbeats.clone(),
        );
        registry.register(
            "fetched_bytes",
            "Binary bytes obtained, by source",
            fetched.clone(),
        );
        registry.register(
            "journal_entries",
            "Entries on disk in the task journal: jobs not yet answered, latent tasks deployed",
            journal.clone(),
        );
        let outbox = OutboxMetrics::register(&mut registry);
        let inner = Inner {
            registry,
            tasks,
            duration,
            cache,
            queued,
            running,
            reconnects,
            heartbeats,
            fetched,
            journal,
            outbox,
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// A task (or invocation) ended: `error_kind` is `None` on success.
    pub fn task_finished(&self, error_kind: Option<&'static str>, took: Duration) {
        let labels = TaskLabels {
            outcome: if error_kind.is_some() { "error" } else { "ok" },
            error_kind: error_kind.unwrap_or(""),
        };
        self.inner.tasks.get_or_create(&labels).inc();
        self.inner.duration.observe(took.as_secs_f64());
    }

    /// What the task journal holds on disk after its last commit.
    pub fn journal(&self, jobs: u64, latent: u64) {
        for (table, n) in [("jobs", jobs), ("latent", latent)] {
            let gauge = i64::try_from(n).unwrap_or(i64::MAX);
            self.inner
                .journal
                .get_or_create(&JournalLabels { table })
                .set(gauge);
        }
    }

    /// What the durable outbox holds after its last commit: results stored and not yet
    /// acknowledged by the broker, and their bytes.
    pub fn outbox(&self, messages: u64, bytes: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.outbox.messages.set(gauge(messages));
        self.inner.outbox.bytes.set(gauge(bytes));
    }

    /// Results a previous process left in the outbox, handed to the session again.
    pub fn replayed(&self, results: u64) {
        self.inner.outbox.replayed.inc_by(results);
    }

    /// A compile cache lookup in memory.
    pub fn cache(&self, hit: bool) {
        self.cache_result(if hit { "hit" } else { "miss" });
    }

    /// What became of a compile cache lookup: `hit` or `miss` in memory; after a miss,
    /// `disk_hit` (loaded from the disk cache) or `compiled`.
    pub fn cache_result(&self, result: &'static str) {
        self.inner
            .cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// The admission counts now: `admitted` tasks of which `running` hold a slot.
    pub fn occupancy(&self, admitted: usize, running: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.running.set(gauge(running));
        self.inner
            .queued
            .set(gauge(admitted.saturating_sub(running)));
    }

    /// The MQTT session is up (`true`) or down.
    pub fn connected(&self, up: bool) {
        let was = self.inner.connected.swap(up, Ordering::Relaxed);
        if up && !was && self.inner.ever_connected.swap(true, Ordering::Relaxed) {
            self.inner.reconnects.inc();
        }
    }

    /// A heartbeat was queued.
    pub fn heartbeat(&self) {
        self.inner.heartbeats.inc();
    }

    /// `bytes` of binary were obtained from `source` (`inline`, `registry`, `http`).
    pub fn fetched(&self, source: &'static str, bytes: usize) {
        let labels = SourceLabels { source };
        let n = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.inner.fetched.get_or_create(&labels).inc_by(n);
    }

    /// The proplet stopped taking work.
    pub fn draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// `Ok` when connected to the broker and not draining; otherwise why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.inner.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if !self.inner.connected.load(Ordering::Relaxed) {
            return Err("not connected to the MQTT broker");
        }
        Ok(())
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.inner.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::new();
        assert_eq!(m.ready(), Err("not connected to the MQTT broker"));
        m.connected(true);
        assert_eq!(m.ready(), Ok(()));
        m.heartbeat();
        m.connected(true);
        m.connected(false);
        m.connected(true);
        m.task_finished(None, Duration::from_millis(3));
        m.task_finished(Some("timeout"), Duration::from_secs(1));
        m.cache(false);
        m.cache(true);
        m.occupancy(5, 2);
        m.fetched("inline", 100);
        let text = m.encode();
        for line in [
            r#"proplet_tasks_total{outcome="ok",error_kind=""} 1"#,
            r#"proplet_tasks_total{outcome="error",error_kind="timeout"} 1"#,
            r#"proplet_compile_cache_total{result="hit"} 1"#,
            "proplet_tasks_queued 3",
            "proplet_tasks_running 2",
            "proplet_mqtt_reconnects_total 1",
            r#"proplet_fetched_bytes_total{source="inline"} 100"#,
            "proplet_task_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.draining();
        assert_eq!(m.ready(), Err("draining"));
    }
}
