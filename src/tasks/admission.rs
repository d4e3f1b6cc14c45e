//! Admission state, and nothing else: which jobs are admitted (queued, fetching or running)
//! with their stop switch, the execution slots, the room left to wait, the bytes waiting
//! jobs hold, and whether the proplet is draining.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TaskError;
use super::held::{ByteBudget, Held};
use crate::config::TaskSettings;
use crate::state::Journal;
use crate::telemetry::Metrics;

/// What an admitted job is keyed by: a task by its id, an invocation by its task and
/// invocation ids. Distinct kinds never collide, whatever the ids contain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum JobKey {
    /// A start (a task, a daemon or a latent deploy).
    Task(String),
    /// One invocation of a latent task.
    Invocation {
        /// The latent task's id.
        task: String,
        /// The invoke's `invocation_id`.
        invocation: String,
    },
}

/// Why a job was not admitted.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The same key is already admitted: the message is a duplicate, ignored.
    Duplicate,
    /// No room, or draining: answered `overloaded`.
    Full(TaskError),
}

/// The task table, the slots and the queue. Shared by the manager and every job.
pub(super) struct Admissions {
    /// Admitted jobs, with their stop switch.
    table: Mutex<HashMap<JobKey, CancellationToken>>,
    /// Execution slots: `PROPLET_MAX_CONCURRENT_TASKS`.
    slots: Semaphore,
    /// Running plus waiting jobs may not exceed this.
    capacity: usize,
    /// Bytes of binaries that waiting jobs hold (`PROPLET_TASK_QUEUE_BYTES`).
    queue_bytes: ByteBudget,
    admitted: AtomicUsize,
    /// Jobs holding an execution slot.
    running: AtomicUsize,
    draining: AtomicBool,
    /// Parent of every job's token; fired when the drain deadline passes.
    shutdown: CancellationToken,
    /// Every job and every reply, so that shutdown can wait for them.
    tracker: TaskTracker,
    metrics: Metrics,
    /// Whose durable outbox is checked before admitting.
    outbox: Journal,
    /// `PROPLET_OUTBOX_MAX_BYTES`.
    outbox_max_bytes: u64,
}

impl Admissions {
    /// Empty admission state sized by `settings`, counting occupancy in `metrics`, and
    /// refusing work while `outbox` holds too much.
    pub(super) fn new(settings: &TaskSettings, metrics: Metrics, outbox: Journal) -> Self {
        let slots = settings.max_concurrent.get();
        Admissions {
            outbox,
            outbox_max_bytes: settings.outbox_max_bytes,
            table: Mutex::new(HashMap::new()),
            slots: Semaphore::new(slots),
            capacity: slots + settings.queue_capacity,
            queue_bytes: ByteBudget::new(settings.queue_bytes),
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobKey, CancellationToken>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `key`, returning its stop switch (a child of the shutdown switch). Until
    /// [`Admissions::release`], the key takes a place and duplicates are refused.
    pub(super) fn admit(&self, key: JobKey) -> Result<CancellationToken, Refusal> {
        if self.draining.load(Ordering::Relaxed) {
            let why = "the proplet is shutting down".to_owned();
            return Err(Refusal::Full(TaskError::Overloaded(why)));
        }
        let mut table = self.lock();
        if table.contains_key(&key) {
            return Err(Refusal::Duplicate);
        }
        let stored = self.outbox.outbox_bytes();
        if stored >= self.outbox_max_bytes {
            let why = format!(
                "the durable outbox holds {stored} bytes of results the broker has not acknowledged (PROPLET_OUTBOX_MAX_BYTES is {})",
                self.outbox_max_bytes
            );
            return Err(Refusal::Full(TaskError::Overloaded(why)));
        }
        if self.admitted.load(Ordering::Relaxed) >= self.capacity {
            let why = format!("all {} running and queued places are taken", self.capacity);
            return Err(Refusal::Full(TaskError::Overloaded(why)));
        }
        let token = self.shutdown.child_token();
        table.insert(key, token.clone());
        self.admitted.fetch_add(1, Ordering::Relaxed);
        drop(table);
        self.occupancy();
        Ok(token)
    }

    /// Whether `key` is admitted and not yet released.
    pub(super) fn is_active(&self, key: &JobKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Gives `key`'s place back (its job ended, whichever way).
    pub(super) fn release(&self, key: &JobKey) {
        if self.lock().remove(key).is_some() {
            self.admitted.fetch_sub(1, Ordering::Relaxed);
            self.occupancy();
        }
    }

    /// The stop switch of an admitted job.
    pub(super) fn switch(&self, key: &JobKey) -> Option<CancellationToken> {
        self.lock().get(key).cloned()
    }

    /// The switch whose firing cancels every job (the drain deadline).
    pub(super) fn shutdown_switch(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Jobs admitted and not yet finished.
    pub(super) fn active(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Where jobs and replies are spawned, so that shutdown waits for them.
    pub(super) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Why a job's switch fired.
    pub(super) fn cancel_reason(&self) -> &'static str {
        if self.shutdown.is_cancelled() {
            "the proplet is shutting down"
        } else {
            "stopped by the manager"
        }
    }

    /// Counts `bytes` of a waiting job's binary, or answers `overloaded`.
    pub(super) fn hold(&self, bytes: usize) -> Result<Held<'_>, TaskError> {
        self.queue_bytes
            .hold(bytes as u64)
            .ok_or_else(|| self.queue_bytes_overloaded())
    }

    /// `held` now counting `bytes` instead (a binary replacing its base64), or `overloaded`.
    pub(super) fn resize<'a>(
        &'a self,
        held: Held<'a>,
        bytes: usize,
    ) -> Result<Held<'a>, TaskError> {
        held.resize(bytes as u64)
            .ok_or_else(|| self.queue_bytes_overloaded())
    }

    fn queue_bytes_overloaded(&self) -> TaskError {
        let (used, max) = (self.queue_bytes.used(), self.queue_bytes.max());
        TaskError::Overloaded(format!(
            "waiting tasks hold {used} of {max} bytes of binaries (PROPLET_TASK_QUEUE_BYTES)"
        ))
    }

    /// Waits for an execution slot; the job counts as running while it holds it.
    pub(super) async fn slot(&self) -> Result<Slot<'_>, TaskError> {
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| TaskError::Cancelled("the proplet is shutting down"))?;
        self.running.fetch_add(1, Ordering::Relaxed);
        self.occupancy();
        Ok(Slot {
            admissions: self,
            _permit: permit,
        })
    }

    /// Stops admitting: every later job is refused `overloaded`.
    pub(super) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining();
        self.tracker.close();
    }

    fn occupancy(&self) {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        self.metrics.occupancy(admitted, running);
    }
}

/// An execution slot, held while a job compiles or runs.
pub(super) struct Slot<'a> {
    admissions: &'a Admissions,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.admissions.running.fetch_sub(1, Ordering::Relaxed);
        self.admissions.occupancy();
    }
}
