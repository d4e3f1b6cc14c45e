//! Live resource accounting for one task.
//!
//! The runtime writes to a [`Meter`] while the guest runs (memory growth, output, fuel at
//! every epoch tick); the task layer reads it when the result goes out. Because it is shared
//! and updated as the guest goes, the reading is right even when the run was cut short by a
//! deadline, a stop or a shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one task. All methods are lock-free.
#[derive(Debug, Default)]
pub struct Meter {
    memory_peak: AtomicU64,
    memory_tracked: AtomicBool,
    output: AtomicU64,
    fuel_used: AtomicU64,
    fuel_metered: AtomicBool,
    http_requests: AtomicU64,
    http_bytes: AtomicU64,
    http_granted: AtomicBool,
    config_reads: AtomicU64,
    config_granted: AtomicBool,
    cpu_nanos: AtomicU64,
    cpu_timed: AtomicBool,
    kv_reads: AtomicU64,
    kv_writes: AtomicU64,
    kv_granted: AtomicBool,
}

/// A snapshot of a [`Meter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Largest linear memory the guest reached; `None` when the runtime cannot tell
    /// (external runtime) or nothing ran.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes of stdout, stderr, log lines and reported result the guest produced.
    pub output_bytes: u64,
    /// Fuel consumed; `None` unless the task ran with fuel metering.
    pub fuel: Option<u64>,
    /// HTTP requests sent; `None` unless the task was granted HTTP.
    pub http_requests: Option<u64>,
    /// Bytes of HTTP request and response bodies; `None` unless the task was granted HTTP.
    pub http_bytes: Option<u64>,
    /// Reads of configuration values; `None` unless the task was given any.
    pub config_reads: Option<u64>,
    /// CPU time the guest ran for since [`Meter::time_cpu`] (in-process runtime only).
    pub cpu: std::time::Duration,
    /// Key-value reads; `None` unless the task was granted a bucket.
    pub kv_reads: Option<u64>,
    /// Key-value writes; `None` unless the task was granted a bucket.
    pub kv_writes: Option<u64>,
}

impl Meter {
    /// Records a linear memory size the guest grew to.
    pub fn memory(&self, bytes: u64) {
        self.memory_tracked.store(true, Ordering::Relaxed);
        self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
    }

    /// Adds `bytes` of guest output.
    pub fn output(&self, bytes: usize) {
        self.output
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records the fuel consumed so far by a metered guest.
    pub fn fuel(&self, used: u64) {
        self.fuel_metered.store(true, Ordering::Relaxed);
        self.fuel_used.store(used, Ordering::Relaxed);
    }

    /// Adds `requests` HTTP requests and `bytes` bytes of HTTP bodies (and marks the task
    /// as granted HTTP).
    pub fn http(&self, requests: u64, bytes: u64) {
        self.http_granted.store(true, Ordering::Relaxed);
        self.http_requests.fetch_add(requests, Ordering::Relaxed);
        self.http_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Marks the task as given configuration values (its reads are then reported).
    pub fn config_granted(&self) {
        self.config_granted.store(true, Ordering::Relaxed);
    }

    /// Counts one read of configuration values.
    pub fn config_read(&self) {
        self.config_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the task as granted key-value buckets (its operations are then reported).
    pub fn kv_granted(&self) {
        self.kv_granted.store(true, Ordering::Relaxed);
    }

    /// Counts one key-value operation.
    pub fn kv(&self, write: bool) {
        let counter = if write {
            &self.kv_writes
        } else {
            &self.kv_reads
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts timing the guest's CPU (someone samples it from now on).
    pub fn time_cpu(&self) {
        self.cpu_timed.store(true, Ordering::Relaxed);
    }

    /// Whether the guest's CPU is timed.
    pub fn cpu_timed(&self) -> bool {
        self.cpu_timed.load(Ordering::Relaxed)
    }

    /// Adds CPU time the guest ran for.
    pub fn cpu(&self, spent: std::time::Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn read(&self) -> Reading {
        let tracked = self.memory_tracked.load(Ordering::Relaxed);
        let metered = self.fuel_metered.load(Ordering::Relaxed);
        let http = self.http_granted.load(Ordering::Relaxed);
        let config = self.config_granted.load(Ordering::Relaxed);
        let kv = self.kv_granted.load(Ordering::Relaxed);
        Reading {
            memory_peak_bytes: tracked.then(|| self.memory_peak.load(Ordering::Relaxed)),
            output_bytes: self.output.load(Ordering::Relaxed),
            fuel: metered.then(|| self.fuel_used.load(Ordering::Relaxed)),
            http_requests: http.then(|| self.http_requests.load(Ordering::Relaxed)),
            http_bytes: http.then(|| self.http_bytes.load(Ordering::Relaxed)),
            config_reads: config.then(|| self.config_reads.load(Ordering::Relaxed)),
            cpu: std::time::Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed)),
            kv_reads: kv.then(|| self.kv_reads.load(Ordering::Relaxed)),
            kv_writes: kv.then(|| self.kv_writes.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_counters_read_as_unknown() {
        let meter = Meter::default();
        assert_eq!(meter.read(), Reading::default());
        meter.memory(65_536);
        meter.memory(1024);
        meter.output(3);
        meter.output(4);
        meter.fuel(10);
        meter.fuel(25);
        let r = meter.read();
        assert_eq!(r.memory_peak_bytes, Some(65_536));
        assert_eq!(r.output_bytes, 7);
        assert_eq!(r.fuel, Some(25));
    }
}
