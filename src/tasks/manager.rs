//! The task manager: one entry point for every inbound message, one result per task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, Span, debug, info, warn};

use super::held::{ByteBudget, Held};
use super::latent::{self, Deploying, LatentTask};
use super::receipt::Receipt;
use super::{Fetcher, TaskError, spans};
use crate::config::TaskSettings;
use crate::protocol::{ErrorKind, Inbound, Outcome, Rejected, StartRequest, Topic};
use crate::runtime::{Runtime, TaskOutput};
use crate::sandbox::{Budgets, Policy};
use crate::telemetry::{Metrics, TraceHeaders, trace};
use crate::transport::Publisher;

/// What the manager is built from.
pub struct ManagerParts {
    /// Our id on the wire.
    pub proplet_id: String,
    /// Where results go.
    pub publisher: Publisher,
    /// Where tasks run.
    pub runtime: Runtime,
    /// Where binaries come from.
    pub fetcher: Fetcher,
    /// Node default and maximum budgets.
    pub budgets: Budgets,
    /// Which binaries are accepted.
    pub policy: Policy,
    /// Concurrency and queue sizes.
    pub settings: TaskSettings,
    /// Where task outcomes, occupancy and fetched bytes are counted.
    pub metrics: Metrics,
}

/// Owns every task from admission to its one result. Cheap to clone.
#[derive(Clone)]
pub struct TaskManager {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) proplet_id: String,
    pub(super) publisher: Publisher,
    pub(super) runtime: Runtime,
    pub(super) fetcher: Fetcher,
    pub(super) budgets: Budgets,
    pub(super) policy: Policy,
    /// Admitted tasks and invocations (queued, fetching or running), with their stop switch.
    pub(super) tasks: Mutex<HashMap<JobKey, CancellationToken>>,
    /// Execution slots: `PROPLET_MAX_CONCURRENT_TASKS`.
    pub(super) slots: Semaphore,
    /// Running plus waiting tasks may not exceed this.
    pub(super) capacity: usize,
    /// Bytes of binaries that waiting tasks hold.
    pub(super) queue_bytes: ByteBudget,
    pub(super) admitted: AtomicUsize,
    /// Tasks holding an execution slot.
    pub(super) running: AtomicUsize,
    pub(super) metrics: Metrics,
    /// Every task and every reply, so shutdown can wait for them.
    pub(super) tracker: TaskTracker,
    /// Parent of every task's token; fired when the drain deadline passes.
    pub(super) shutdown: CancellationToken,
    pub(super) draining: AtomicBool,
    /// Host directories tasks may mount.
    pub(super) volumes: Vec<crate::sandbox::Volume>,
    /// Where guests may connect.
    pub(super) network: Arc<[crate::sandbox::NetRule]>,
    /// Precompiled latent tasks, by task id (docs/protocol.md §5.7).
    pub(super) latent: Mutex<HashMap<String, LatentTask>>,
    /// Most latent tasks deployed at once, and bytes of their binaries.
    pub(super) latent_limits: (usize, u64),
    /// Latent tasks being fetched and compiled, by task id.
    pub(super) deploying: Mutex<std::collections::HashSet<String>>,
    /// Bumped whenever a deploy ends (ready or failed), for invokes waiting on one.
    pub(super) deployed: tokio::sync::watch::Sender<u64>,
}

/// What an admitted unit of work is keyed by: a task by its id, an invocation by its task
/// and invocation ids. Distinct kinds never collide, whatever the ids contain.
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

/// Removes a task from the table when its future ends, whichever way.
pub(super) struct Admission<'a> {
    pub(super) shared: &'a Shared,
    pub(super) key: JobKey,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.shared.lock_tasks().remove(&self.key);
        self.shared.admitted.fetch_sub(1, Ordering::Relaxed);
        self.shared.occupancy();
    }
}

impl TaskManager {
    /// A manager with nothing running.
    pub fn new(parts: ManagerParts) -> Self {
        let max = parts.settings.max_concurrent.get();
        let shared = Shared {
            proplet_id: parts.proplet_id,
            publisher: parts.publisher,
            runtime: parts.runtime,
            fetcher: parts.fetcher,
            budgets: parts.budgets,
            policy: parts.policy,
            tasks: Mutex::new(HashMap::new()),
            slots: Semaphore::new(max),
            capacity: max + parts.settings.queue_capacity,
            queue_bytes: ByteBudget::new(parts.settings.queue_bytes),
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            metrics: parts.metrics,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
            latent: Mutex::new(HashMap::new()),
            deploying: Mutex::new(std::collections::HashSet::new()),
            deployed: tokio::sync::watch::Sender::new(0),
            latent_limits: (
                parts.settings.module_cache_entries,
                parts.settings.latent_max_bytes,
            ),
            volumes: parts.settings.volumes.clone(),
            network: parts.settings.net_allow.clone().into(),
        };
        TaskManager {
            shared: Arc::new(shared),
        }
    }

    /// Tasks admitted and not yet finished.
    pub fn active(&self) -> usize {
        self.shared.admitted.load(Ordering::Relaxed)
    }

    /// Handles one inbound message without blocking: work is spawned.
    pub fn handle(&self, msg: Result<Inbound, Rejected>) {
        match msg {
            Ok(Inbound::Start(req)) => self.start(*req),
            Ok(Inbound::Stop(req)) => self.stop(&req.id),
            Ok(Inbound::Invoke(req)) => self.invoke(req),
            Ok(Inbound::Chunk(chunk)) => self.shared.fetcher.on_chunk(chunk),
            Err(rejected) => self.rejected(rejected),
        }
    }

    fn start(&self, req: StartRequest) {
        let s = &self.shared;
        if !req.target.includes(&s.proplet_id) {
            return debug!(task_id = %req.id, "start is for another proplet");
        }
        let span = spans::task(&req, &s.proplet_id);
        let receipt = Receipt::new(spans::headers(&req.trace));
        let valid = span.in_scope(|| {
            let decode = tracing::info_span!("decode").entered();
            let valid = req.validate();
            if let Err(e) = &valid {
                trace::fail(&decode, "invalid", e.log_text());
            }
            valid
        });
        if let Err(e) = valid {
            let outcome = Err(TaskError::Invalid(e.to_string()));
            return self.reply(&req.id, outcome, receipt, span);
        }
        let token = match s.admit(JobKey::Task(req.id.clone()), &s.shutdown) {
            Ok(token) => token,
            Err(None) => {
                return info!(task_id = %req.id, "duplicate start of an active task ignored");
            }
            Err(Some(e)) => return self.reply(&req.id, Err(e), receipt, span),
        };
        span.in_scope(
            || info!(task_id = %req.id, name = %req.name, daemon = req.daemon, "task admitted"),
        );
        if req.latent {
            s.deploying_from_now(&req.id);
        }
        let task = run_task(self.shared.clone(), req, token, receipt);
        s.tracker.spawn(task.instrument(span));
    }

    fn stop(&self, id: &str) {
        let running = self
            .shared
            .lock_tasks()
            .get(&JobKey::Task(id.to_owned()))
            .cloned();
        let latent = self.shared.lock_latent().remove(id);
        if running.is_none() && latent.is_none() {
            return debug!(task_id = %id, "Task {id} not found in running tasks");
        }
        info!(task_id = %id, "stopping task");
        for token in running.into_iter().chain(latent.map(|l| l.token)) {
            token.cancel();
        }
    }

    fn rejected(&self, r: Rejected) {
        warn!(
            topic = r.topic.suffix(),
            task_id = r.id.as_deref().unwrap_or(""),
            "rejected message: {}",
            r.error.log_text()
        );
        if !r.target.includes(&self.shared.proplet_id) {
            return;
        }
        match (r.topic, r.id, r.invocation_id) {
            (Topic::Start, Some(id), _) => {
                let span = spans::rejected(r.topic, &id, &self.shared.proplet_id);
                span.in_scope(|| {
                    let decode = tracing::info_span!("decode");
                    trace::fail(&decode, "invalid", r.error.log_text());
                });
                let outcome = Err(TaskError::Invalid(r.error.to_string()));
                self.reply(&id, outcome, Receipt::new(TraceHeaders::default()), span)
            }
            (Topic::Invoke, Some(id), Some(inv)) => {
                self.reply_invoke(id, inv, ErrorKind::Invalid, r.error.to_string())
            }
            _ => {}
        }
    }

    /// Publishes a result in the background (no task is running for it).
    fn reply(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: Receipt,
        span: Span,
    ) {
        if id.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let id = id.to_owned();
        let reply = async move { shared.publish_result(&id, outcome, &receipt).await };
        self.shared.tracker.spawn(reply.instrument(span));
    }

    pub(super) fn reply_invoke(
        &self,
        task_id: String,
        invocation_id: String,
        kind: ErrorKind,
        error: String,
    ) {
        let shared = self.shared.clone();
        let outcome = Receipt::new(TraceHeaders::default()).seal(Outcome::failed(kind, error));
        let reply = async move {
            let ids = (task_id, invocation_id);
            shared.publish_invoke(ids, outcome, Duration::ZERO).await
        };
        self.shared.tracker.spawn(reply);
    }

    /// Stops intake, lets admitted tasks finish for up to `drain`, then cancels the rest
    /// (each still publishes its `cancelled` result) and waits for every reply to go out.
    pub async fn shutdown(&self, drain: Duration) {
        let s = &self.shared;
        s.draining.store(true, Ordering::Relaxed);
        s.metrics.draining();
        s.tracker.close();
        if tokio::time::timeout(drain, s.tracker.wait()).await.is_err() {
            warn!(
                remaining = self.active(),
                "drain deadline passed; cancelling the remaining tasks"
            );
            s.shutdown.cancel();
            s.tracker.wait().await;
        }
    }
}

impl Shared {
    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<JobKey, CancellationToken>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_latent(&self) -> MutexGuard<'_, HashMap<String, LatentTask>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.latent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `key` under `parent`: `Err(None)` for a duplicate, `Err(Some(_))` when there
    /// is no room (or the proplet is draining).
    pub(super) fn admit(
        &self,
        key: JobKey,
        parent: &CancellationToken,
    ) -> Result<CancellationToken, Option<TaskError>> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Some(TaskError::Overloaded(
                "the proplet is shutting down".into(),
            )));
        }
        let mut tasks = self.lock_tasks();
        if tasks.contains_key(&key) {
            return Err(None);
        }
        if self.admitted.load(Ordering::Relaxed) >= self.capacity {
            let why = format!("all {} running and queued places are taken", self.capacity);
            return Err(Some(TaskError::Overloaded(why)));
        }
        let token = parent.child_token();
        tasks.insert(key, token.clone());
        self.admitted.fetch_add(1, Ordering::Relaxed);
        drop(tasks);
        self.occupancy();
        Ok(token)
    }

    /// Publishes the admitted and running counts to the metrics.
    pub(super) fn occupancy(&self) {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        self.metrics.occupancy(admitted, running);
    }

    /// Counts a start's inline binary against the waiting tasks' byte budget.
    pub(super) fn hold_inline(&self, req: &StartRequest) -> Result<Held<'_>, TaskError> {
        self.hold(req.file.len() as u64)
    }

    /// Counts `bytes` against the waiting tasks' byte budget, or answers `overloaded`.
    pub(super) fn hold(&self, bytes: u64) -> Result<Held<'_>, TaskError> {
        self.queue_bytes
            .hold(bytes)
            .ok_or_else(|| self.queue_bytes_overloaded())
    }

    /// The answer to a start whose binary does not fit the waiting tasks' byte budget.
    pub(super) fn queue_bytes_overloaded(&self) -> TaskError {
        let (used, max) = (self.queue_bytes.used(), self.queue_bytes.max());
        TaskError::Overloaded(format!(
            "waiting tasks hold {used} of {max} bytes of binaries (PROPLET_TASK_QUEUE_BYTES)"
        ))
    }

    pub(super) fn cancel_reason(&self) -> &'static str {
        if self.shutdown.is_cancelled() {
            "the proplet is shutting down"
        } else {
            "stopped by the manager"
        }
    }
}

/// One task from admission to its result.
async fn run_task(
    shared: Arc<Shared>,
    mut req: StartRequest,
    token: CancellationToken,
    receipt: Receipt,
) {
    let id = req.id.clone();
    let _admission = Admission {
        shared: &shared,
        key: JobKey::Task(id.clone()),
    };
    let _deploying = req.latent.then(|| Deploying::adopt(&shared, &id));
    let held = match shared.hold_inline(&req) {
        Ok(held) => held,
        Err(e) => return shared.publish_result(&id, Err(e), &receipt).await,
    };
    if req.latent {
        return latent::deploy(&shared, &req, &token, &receipt).await;
    }
    let acked = AtomicBool::new(false);
    let (started_tx, started_rx) = oneshot::channel();
    let daemon = req.daemon;
    let work = async {
        let started = daemon.then_some(started_tx);
        let ack = async {
            if daemon {
                shared
                    .ack_when_started(&id, started_rx, &acked, &receipt)
                    .await;
            }
        };
        tokio::join!(shared.execute(&mut req, started, &receipt, held), ack).0
    };
    let outcome = tokio::select! {
        biased;
        _ = token.cancelled() => Err(TaskError::Cancelled(shared.cancel_reason())),
        outcome = work => outcome,
    };
    if acked.load(Ordering::Relaxed) {
        // A daemon's one result was its start acknowledgement (docs/protocol.md §5.5).
        return match outcome {
            Ok(_) => info!(task_id = %id, "daemon task finished"),
            Err(e) => info!(task_id = %id, "daemon task ended: {}", e.log_text()),
        };
    }
    shared.publish_result(&id, outcome, &receipt).await;
}
