//! A job: one admitted unit of work, as a value, and its lifecycle.
//!
//! The manager decodes a message, admits it (a place in the task table and a stop switch)
//! and hands the [`Job`] to [`Job::run`], which reads top to bottom as the lifecycle:
//!
//! 1. **grant** — budgets and mounts, within the node's policy and what the runtime supports;
//! 2. **hold** — the binary's bytes count against the waiting jobs' byte budget;
//! 3. **fetch** — inline, registry or HTTP, admitted by digest and signature;
//! 4. **slot** — wait for an execution slot (the held bytes are given back);
//! 5. **compile, instantiate, execute** — in the runtime, under the job's budgets;
//! 6. **seal and publish** — one answer with the usage receipt.
//!
//! A deploy stops after compiling and remembers the latent task; an invocation starts at
//! its latent task (waiting while it is still being deployed) and skips hold and fetch.
//! A stop or the drain deadline fires the job's switch at any step: the job ends at once
//! and still answers `cancelled` (a daemon already acknowledged answers nothing more).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, Span, info};

use super::TaskError;
use super::admission::{Admissions, JobKey};
use super::latent::{Deployments, LatentTask};
use super::monitor::Sampled;
use super::prepare::Preparer;
use super::publish::{Answers, Closed, Freed};
use super::receipt::Receipt;
use super::spans;
use crate::protocol::metrics::MonitoringProfile;
use crate::protocol::{InvokeRequest, StartRequest};
use crate::runtime::{Binary, RuntimeError, TaskRuntime};
use crate::state::{Entry, EntryKind, Journal};
use crate::telemetry::trace;

/// Everything a job runs against. Built once by the manager.
pub(super) struct Context {
    /// The task table, slots and queue.
    pub(super) admissions: Admissions,
    /// Grants, binaries and specs.
    pub(super) prepare: Preparer,
    /// Where guests run.
    pub(super) runtime: Arc<dyn TaskRuntime>,
    /// Latent tasks deployed and being deployed.
    pub(super) deployments: Deployments,
    /// Where answers go.
    pub(super) answers: Answers,
    /// Longest an invoke waits for its latent task's deploy.
    pub(super) deploy_wait: Duration,
    /// Where accepted and answered jobs are written down.
    pub(super) journal: Journal,
    /// Tasks the previous process left unanswered.
    pub(super) recovered: super::redelivery::Recovered,
    /// Where running tasks' samples go.
    pub(super) monitor: super::monitor::Monitor,
}

/// What a job does.
pub(super) enum Kind {
    /// Run a start once (or, for a daemon, until it ends or is stopped).
    Start(Box<StartRequest>),
    /// Fetch and precompile a latent task, to be invoked later.
    Deploy(Box<StartRequest>),
    /// Run one invocation of a latent task.
    Invoke(Box<InvokeRequest>),
}

/// One admitted unit of work: its place in the task table, what it does, the receipt of
/// what it used since its message arrived, its stop switch and its root span.
pub(super) struct Job {
    key: JobKey,
    kind: Kind,
    receipt: Receipt,
    cancel: CancellationToken,
    span: Span,
}

/// A job's place in the task table and in the journal: taken when it starts, given back
/// when its last answer is handed to the session, or when it ends, whichever way and
/// whichever comes first (its answer is queued by then).
struct Place {
    cx: Arc<Context>,
    key: JobKey,
    entry: Entry,
    /// Its last answer crossed it out of the journal already.
    closed: Closed,
    /// Whether its place in the task table is given back (once: a job of the same key may
    /// be admitted right after).
    released: Arc<AtomicBool>,
}

impl Place {
    /// The place of a job already written down as accepted (see [`Job::accepted`]).
    fn take(cx: &Arc<Context>, key: JobKey, kind: &Kind) -> Self {
        let entry = journal_entry(&key, kind);
        Place {
            cx: cx.clone(),
            key,
            entry,
            closed: Closed(false),
            released: Arc::default(),
        }
    }

    /// Gives the place in the task table back, for the job's last answer to call as it is
    /// handed to the session.
    fn freed(&self) -> Freed {
        let (cx, key, released) = (self.cx.clone(), self.key.clone(), self.released.clone());
        Freed::new(move || release(&cx, &key, &released))
    }
}

/// Gives `key`'s place in the task table back, unless `released` says it is already.
fn release(cx: &Context, key: &JobKey, released: &AtomicBool) {
    if !released.swap(true, Ordering::AcqRel) {
        cx.admissions.release(key);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        release(&self.cx, &self.key, &self.released);
        // A job that ended without a stored last answer (a daemon stopped after its
        // acknowledgement, a deploy that succeeded, a disk that failed) is crossed out now.
        if self.closed == Closed(false) {
            self.cx.journal.answered(self.entry.clone());
        }
    }
}

/// How the journal names a job.
fn journal_entry(key: &JobKey, kind: &Kind) -> Entry {
    let kind = match kind {
        Kind::Start(_) => EntryKind::Start,
        Kind::Deploy(_) => EntryKind::Deploy,
        Kind::Invoke(_) => EntryKind::Invoke,
    };
    let (task, invocation) = match key {
        JobKey::Task(id) => (id.clone(), None),
        JobKey::Invocation { task, invocation } => (task.clone(), Some(invocation.clone())),
    };
    Entry {
        task,
        invocation,
        kind,
    }
}

impl Job {
    /// The job admitted as `key` with its stop switch `cancel`.
    pub(super) fn new(
        key: JobKey,
        cancel: CancellationToken,
        kind: Kind,
        receipt: Receipt,
        span: Span,
    ) -> Self {
        Job {
            key,
            kind,
            receipt,
            cancel,
            span,
        }
    }

    /// Writes the job down in the journal as accepted: done by the manager as it admits the
    /// job, before the message that brought it is acknowledged to the broker.
    pub(super) fn accepted(&self, cx: &Context) {
        cx.journal.accepted(journal_entry(&self.key, &self.kind));
    }

    /// Runs the job to its one answer, then gives its place back.
    pub(super) async fn run(self, cx: Arc<Context>) {
        let Job {
            key,
            kind,
            receipt,
            cancel,
            span,
        } = self;
        let mut place = Place::take(&cx, key, &kind);
        let freed = place.freed();
        let lifecycle = async {
            match kind {
                Kind::Start(req) => start(&cx, *req, &cancel, &receipt, freed).await,
                Kind::Deploy(req) => deploy(&cx, *req, &cancel, &receipt, freed).await,
                Kind::Invoke(req) => invoke(&cx, *req, &cancel, &receipt, freed).await,
            }
        };
        place.closed = lifecycle.instrument(span).await;
    }
}

impl Context {
    /// `work`, unless `switch` fires first: then `cancelled`, with the reason.
    async fn cancellable<T>(
        &self,
        switch: &CancellationToken,
        work: impl Future<Output = Result<T, TaskError>>,
    ) -> Result<T, TaskError> {
        tokio::select! {
            biased;
            _ = switch.cancelled() => Err(TaskError::Cancelled(self.admissions.cancel_reason())),
            outcome = work => outcome,
        }
    }

    /// Grant, hold, fetch: a start's binary and grants, its bytes still held.
    async fn fetch<'a>(
        &'a self,
        req: &mut StartRequest,
        receipt: &Receipt,
    ) -> Result<(Binary, super::prepare::Grants, super::held::Held<'a>), TaskError> {
        let grants = self.prepare.grants(req, receipt)?;
        let held = self.admissions.hold(req.file.len())?;
        let binary = self.prepare.obtain(req, receipt).await?;
        // The base64 is no longer needed: only the binary stays held.
        drop(std::mem::take(&mut req.file));
        let held = self.admissions.resize(held, binary.bytes.len())?;
        Ok((binary, grants, held))
    }
}

/// What the manager asked to be sampled of `req`, or the defaults.
fn profile(req: &StartRequest) -> MonitoringProfile {
    match req
        .monitoring_profile
        .as_ref()
        .or(req.monitoring_profile_camel.as_ref())
    {
        Some(value) => MonitoringProfile::read(value, req.daemon),
        None => MonitoringProfile::default_for(req.daemon),
    }
}

/// A start: grant, hold, fetch, slot, run, answer. A daemon is answered as soon as its
/// guest runs; its end is only logged (docs/protocol.md §5.5).
async fn start(
    cx: &Context,
    mut req: StartRequest,
    cancel: &CancellationToken,
    receipt: &Receipt,
    freed: Freed,
) -> Closed {
    let id = req.id.clone();
    let acked = AtomicBool::new(false);
    let (started_tx, started_rx) = oneshot::channel();
    let started = req.daemon.then_some(started_tx);
    // Boxed: the job's future stays small, so spawning it and moving it as it is polled
    // copies a few hundred bytes, not this block's kilobytes.
    let run = Box::pin(async {
        let (binary, grants, held) = cx.fetch(&mut req, receipt).await?;
        let spec = cx.prepare.spec(&req, binary, receipt, grants)?;
        let _slot = cx.admissions.slot().await?;
        drop(held);
        let sampled = cx.monitor.sample(Sampled {
            id: &id,
            profile: profile(&req),
            meter: spec.meter.clone(),
            memory_budget: spec.limits.memory_bytes,
            arrived: receipt.arrived(),
        });
        tokio::select! {
            ran = cx.runtime.run(spec, started) => Ok(ran?),
            never = sampled => match never {},
        }
    });
    let ack = async {
        if started_rx.await.is_ok() {
            // Acknowledged from here on: once stored, the answer is published from the
            // journal's thread even if a stop ends this job before it hears so.
            acked.store(true, Ordering::Relaxed);
            cx.answers.running(&id, receipt).await;
        }
    };
    // Only the run is cancelled: once the daemon runs, a stop must not drop its `running`
    // answer while it waits for room in the session's queue (its id would go unanswered).
    let (outcome, ()) = tokio::join!(cx.cancellable(cancel, run), ack);
    if !acked.load(Ordering::Relaxed) {
        return cx.answers.result(&id, outcome, receipt, freed).await;
    }
    match outcome {
        Ok(_) => info!(task_id = %id, "daemon task finished"),
        Err(e) => info!(task_id = %id, "daemon task ended: {}", e.log_text()),
    }
    Closed(false)
}

/// A deploy: grant, hold, fetch, require a component, slot, precompile, remember. Answers
/// nothing on success (as upstream); an error result otherwise. Invokes waiting for it wake
/// when it ends, whichever way.
async fn deploy(
    cx: &Context,
    mut req: StartRequest,
    cancel: &CancellationToken,
    receipt: &Receipt,
    freed: Freed,
) -> Closed {
    let id = req.id.clone();
    let _deploying = cx.deployments.deploying(&id);
    let compiled = cx
        .cancellable(cancel, precompile(cx, &mut req, receipt))
        .await;
    let kept = compiled.and_then(|binary| {
        info!(task_id = %id, digest = %binary.digest, "latent task precompiled");
        cx.deployments.keep(LatentTask {
            req,
            binary,
            token: cx.admissions.shutdown_switch().child_token(),
            deploy: trace::span_context(&Span::current()),
        })
    });
    match kept {
        Err(e) => cx.answers.result(&id, Err(e), receipt, freed).await,
        Ok(()) => Closed(false),
    }
}

/// Compiles a latent task's binary as a task would run: under an execution slot and within
/// its deadline. A compile that outlives the deadline still finishes into the cache (it is
/// not redone), but the deploy is answered `timeout`.
async fn precompile(
    cx: &Context,
    req: &mut StartRequest,
    receipt: &Receipt,
) -> Result<Binary, TaskError> {
    if !cx.prepare.features.latent {
        let why = "latent tasks are not supported by this runtime".to_owned();
        return Err(RuntimeError::Invalid(why).into());
    }
    let (binary, grants, held) = cx.fetch(req, receipt).await?;
    if !binary.is_component() {
        let why = format!(
            "latent tasks require a WASM component; task {} is not a component",
            req.id
        );
        return Err(TaskError::Invalid(why));
    }
    let _slot = cx.admissions.slot().await?;
    drop(held);
    let compile = cx.runtime.precompile(&binary);
    let compiled = match grants.limits.timeout {
        Some(limit) => tokio::time::timeout(limit, compile)
            .await
            .unwrap_or(Err(RuntimeError::Timeout(limit))),
        None => compile.await,
    };
    compiled?;
    Ok(binary)
}

/// An invocation: its latent task (waiting while it is deployed), grant, slot, run, answer.
/// A stop of the latent task cancels it too.
async fn invoke(
    cx: &Context,
    req: InvokeRequest,
    cancel: &CancellationToken,
    receipt: &Receipt,
    freed: Freed,
) -> Closed {
    let run = async {
        let latent = cx.deployments.settled(&req.id, cx.deploy_wait).await;
        let latent = latent.ok_or_else(|| TaskError::NotDeployed(req.id.clone()))?;
        spans::invoked(&Span::current(), &latent.req.name, latent.deploy.clone());
        receipt.digest(&latent.binary.digest);
        let call = latent.call(&req);
        let grants = cx.prepare.grants(&call, receipt)?;
        let spec = cx.prepare.spec(&call, latent.binary, receipt, grants)?;
        let work = async {
            let _slot = cx.admissions.slot().await?;
            Ok(cx.runtime.run(spec, None).await?)
        };
        cx.cancellable(&latent.token, work).await
    };
    let outcome = cx.cancellable(cancel, run).await;
    let ids = (req.id.as_str(), req.invocation_id.as_str());
    cx.answers.invocation(ids, outcome, receipt, freed).await
}
