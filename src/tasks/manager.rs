//! The task manager: one entry point for every inbound message, one result per task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::Empty;
use tracing::{Instrument as _, Span, debug, info, warn};

use super::latent::{self, LatentTask};
use super::receipt::Receipt;
use super::{Fetcher, TaskError, fetch, spans};
use crate::config::TaskSettings;
use crate::protocol::{
    ErrorKind, Inbound, InvokeResult, Outbound, Outcome, Rejected, StartRequest, TaskResult, Topic,
};
use crate::runtime::{Binary, Runtime, TaskOutput, TaskSpec};
use crate::sandbox::{
    Budgets, CapabilityError, LimitRequest, Mount, MountRequest, Policy, Source, capabilities,
};
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
    /// Admitted tasks (queued, fetching or running) by id, with their stop switch.
    pub(super) tasks: Mutex<HashMap<String, CancellationToken>>,
    /// Execution slots: `PROPLET_MAX_CONCURRENT_TASKS`.
    pub(super) slots: Semaphore,
    /// Running plus waiting tasks may not exceed this.
    pub(super) capacity: usize,
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
    /// Precompiled latent tasks, by task id (PROTOCOL.md §5.7).
    pub(super) latent: Mutex<HashMap<String, LatentTask>>,
}

/// Removes a task from the table when its future ends, whichever way.
pub(super) struct Admission<'a> {
    pub(super) shared: &'a Shared,
    pub(super) id: &'a str,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.shared.lock_tasks().remove(self.id);
        self.shared.admitted.fetch_sub(1, Ordering::Relaxed);
        self.shared.occupancy();
    }
}

/// Counts a task as running while it holds an execution slot.
struct Running<'a>(&'a Shared);

impl<'a> Running<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.running.fetch_add(1, Ordering::Relaxed);
        shared.occupancy();
        Running(shared)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.occupancy();
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
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            metrics: parts.metrics,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
            latent: Mutex::new(HashMap::new()),
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
        let token = match s.admit(&req.id, &s.shutdown) {
            Ok(token) => token,
            Err(None) => {
                return info!(task_id = %req.id, "duplicate start of an active task ignored");
            }
            Err(Some(e)) => return self.reply(&req.id, Err(e), receipt, span),
        };
        span.in_scope(
            || info!(task_id = %req.id, name = %req.name, daemon = req.daemon, "task admitted"),
        );
        let task = run_task(self.shared.clone(), req, token, receipt);
        s.tracker.spawn(task.instrument(span));
    }

    fn stop(&self, id: &str) {
        let running = self.shared.lock_tasks().get(id).cloned();
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
        self.shared
            .tracker
            .spawn(async move { shared.publish_invoke(task_id, invocation_id, outcome).await });
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
    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<String, CancellationToken>> {
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
        key: &str,
        parent: &CancellationToken,
    ) -> Result<CancellationToken, Option<TaskError>> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Some(TaskError::Overloaded(
                "the proplet is shutting down".into(),
            )));
        }
        let mut tasks = self.lock_tasks();
        if tasks.contains_key(key) {
            return Err(None);
        }
        if self.admitted.load(Ordering::Relaxed) >= self.capacity {
            let why = format!("all {} running and queued places are taken", self.capacity);
            return Err(Some(TaskError::Overloaded(why)));
        }
        let token = parent.child_token();
        tasks.insert(key.to_owned(), token.clone());
        self.admitted.fetch_add(1, Ordering::Relaxed);
        drop(tasks);
        self.occupancy();
        Ok(token)
    }

    /// Publishes the admitted and running counts to the metrics.
    fn occupancy(&self) {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        self.metrics.occupancy(admitted, running);
    }

    /// Logs a failure (and marks the current task span failed) and turns the run's outcome
    /// into wire fields.
    fn outcome(id: &str, outcome: Result<TaskOutput, TaskError>) -> Outcome {
        match outcome {
            Ok(out) => Outcome::ok(out.result),
            Err(e) => {
                let kind = e.kind();
                let text = e.log_text();
                warn!(task_id = %id, kind = kind.as_str(), "task failed: {text}");
                trace::fail(&Span::current(), kind.as_str(), &text);
                Outcome::failed(kind, e.to_string())
            }
        }
    }

    pub(super) async fn publish_result(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) {
        let outcome = receipt.seal(Self::outcome(id, outcome));
        let kind = outcome.error_kind.map(ErrorKind::as_str);
        self.metrics.task_finished(kind, receipt.elapsed());
        let msg = TaskResult {
            task_id: id.to_owned(),
            proplet_id: self.proplet_id.clone(),
            outcome,
        };
        let publish = publish_span(Topic::Results);
        let sent = self.publisher.send(Outbound::Result(msg));
        if sent.instrument(publish).await.is_err() {
            warn!(task_id = %id, "result lost: the MQTT session is closed");
        }
    }

    pub(super) async fn publish_invoke(
        &self,
        task_id: String,
        invocation_id: String,
        outcome: Outcome,
    ) {
        let msg = InvokeResult {
            task_id,
            invocation_id,
            proplet_id: self.proplet_id.clone(),
            outcome,
        };
        let sent = self.publisher.send(Outbound::InvokeResult(msg));
        if sent
            .instrument(publish_span(Topic::InvokeResults))
            .await
            .is_err()
        {
            warn!("invoke result lost: the MQTT session is closed");
        }
    }

    pub(super) fn invoke_outcome(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) -> Outcome {
        let outcome = receipt.seal(Self::outcome(id, outcome));
        let kind = outcome.error_kind.map(ErrorKind::as_str);
        self.metrics.task_finished(kind, receipt.elapsed());
        outcome
    }

    pub(super) fn cancel_reason(&self) -> &'static str {
        if self.shutdown.is_cancelled() {
            "the proplet is shutting down"
        } else {
            "stopped by the manager"
        }
    }

    async fn execute(
        &self,
        req: &StartRequest,
        started: Option<oneshot::Sender<()>>,
        receipt: &Receipt,
    ) -> Result<TaskOutput, TaskError> {
        self.grant(req)?;
        self.budget(req, receipt)?;
        let binary = self.obtain(req, receipt).await?;
        self.run_spec(self.spec(req, binary, receipt)?, started)
            .await
    }

    /// Fetches a task's binary and admits it: an allowed source, the pinned digest, a
    /// trusted signature when one is given or required — all before anything is compiled.
    pub(super) async fn obtain(
        &self,
        req: &StartRequest,
        receipt: &Receipt,
    ) -> Result<Binary, TaskError> {
        let url = fetch::http_url(req)?;
        let source = match &url {
            _ if !req.file.is_empty() => Source::Inline,
            Some(url) => Source::Http(url),
            None => Source::Registry,
        };
        self.policy.check_source(source)?;
        let span = tracing::info_span!(
            "fetch",
            binary.source = source.name(),
            binary.size = Empty,
            binary.digest = Empty
        );
        let fetched = self.fetcher.fetch(req).instrument(span.clone()).await;
        let binary =
            fetched.inspect_err(|e| trace::fail(&span, e.kind().as_str(), &e.log_text()))?;
        receipt.digest(&binary.digest);
        let digest = binary.digest.to_string();
        span.record("binary.size", binary.bytes.len());
        span.record("binary.digest", digest.as_str());
        self.metrics.fetched(source.name(), binary.bytes.len());
        info!(task_id = %req.id, %digest, bytes = binary.bytes.len(), "binary fetched");
        self.policy
            .check_binary(&digest, req.digest.as_deref(), req.signature.as_deref())?;
        Ok(binary)
    }

    /// The task's budgets: its request within the node maximums.
    pub(super) fn budget(
        &self,
        req: &StartRequest,
        receipt: &Receipt,
    ) -> Result<crate::sandbox::Limits, TaskError> {
        let asked = LimitRequest {
            timeout_ms: req.limits.timeout_ms,
            memory_bytes: req.limits.memory_bytes,
            fuel: req.limits.fuel,
            output_bytes: req.limits.output_bytes,
        };
        let limits = self.budgets.grant(&asked, req.daemon)?;
        if limits.fuel.is_some() && matches!(self.runtime, Runtime::External(_)) {
            return Err(CapabilityError::Denied(
                "fuel metering is not available with the external runtime".into(),
            )
            .into());
        }
        receipt.limits(limits);
        Ok(limits)
    }

    /// The runtime's view of a start: env with `PROPLET_ID`, granted budgets and mounts.
    pub(super) fn spec(
        &self,
        req: &StartRequest,
        binary: Binary,
        receipt: &Receipt,
    ) -> Result<TaskSpec, TaskError> {
        let mut env = req.env.clone();
        env.entry("PROPLET_ID".into())
            .or_insert_with(|| self.proplet_id.clone());
        let trace = receipt.outgoing_trace();
        for (name, value) in [
            ("TRACEPARENT", trace.traceparent),
            ("TRACESTATE", trace.tracestate),
        ] {
            if let Some(value) = value {
                env.entry(name.into()).or_insert(value);
            }
        }
        let limits = self.budget(req, receipt)?;
        Ok(TaskSpec {
            id: req.id.clone(),
            name: req.name.clone(),
            binary,
            inputs: req.inputs.clone(),
            args: req.cli_args.clone(),
            env,
            limits,
            mounts: self.grant(req)?,
            network: self.network.clone(),
            meter: receipt.meter(),
        })
    }

    /// The task's mounts: its request intersected with the node's volumes.
    pub(super) fn grant(&self, req: &StartRequest) -> Result<Vec<Mount>, TaskError> {
        if req.mounts.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(self.runtime, Runtime::External(_)) {
            return Err(CapabilityError::Denied(
                "mounts are not supported with the external runtime".into(),
            )
            .into());
        }
        let requests: Vec<MountRequest> = req
            .mounts
            .iter()
            .map(|m| MountRequest {
                volume: m.volume.clone(),
                path: m.path.clone(),
                mode: m.mode.clone(),
            })
            .collect();
        Ok(capabilities::grant(&self.volumes, &requests)?)
    }

    /// Waits for an execution slot, then runs.
    pub(super) async fn run_spec(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> Result<TaskOutput, TaskError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TaskError::Cancelled("the proplet is shutting down"))?;
        let _running = Running::new(self);
        Ok(self.runtime.run(spec, started).await?)
    }

    /// For a daemon: publishes the empty success result once the guest is running.
    async fn ack_when_started(
        &self,
        id: &str,
        started: oneshot::Receiver<()>,
        acked: &AtomicBool,
        receipt: &Receipt,
    ) {
        if started.await.is_ok() {
            let running = TaskOutput {
                result: String::new(),
                stderr: String::new(),
            };
            self.publish_result(id, Ok(running), receipt).await;
            acked.store(true, Ordering::Relaxed);
        }
    }
}

/// The span of publishing a result.
fn publish_span(topic: Topic) -> Span {
    tracing::info_span!(
        "publish",
        otel.kind = "producer",
        messaging.system = "mqtt",
        messaging.operation.type = "send",
        messaging.destination.name = topic.suffix()
    )
}

/// One task from admission to its result.
async fn run_task(
    shared: Arc<Shared>,
    req: StartRequest,
    token: CancellationToken,
    receipt: Receipt,
) {
    let _admission = Admission {
        shared: &shared,
        id: &req.id,
    };
    if req.latent {
        return latent::deploy(&shared, &req, &token, &receipt).await;
    }
    let acked = AtomicBool::new(false);
    let (started_tx, started_rx) = oneshot::channel();
    let work = async {
        let started = req.daemon.then_some(started_tx);
        let ack = async {
            if req.daemon {
                shared
                    .ack_when_started(&req.id, started_rx, &acked, &receipt)
                    .await;
            }
        };
        tokio::join!(shared.execute(&req, started, &receipt), ack).0
    };
    let outcome = tokio::select! {
        biased;
        _ = token.cancelled() => Err(TaskError::Cancelled(shared.cancel_reason())),
        outcome = work => outcome,
    };
    if acked.load(Ordering::Relaxed) {
        // A daemon's one result was its start acknowledgement (PROTOCOL.md §5.5).
        return match outcome {
            Ok(_) => info!(task_id = %req.id, "daemon task finished"),
            Err(e) => info!(task_id = %req.id, "daemon task ended: {}", e.log_text()),
        };
    }
    shared.publish_result(&req.id, outcome, &receipt).await;
}
