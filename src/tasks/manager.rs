//! The task manager: one entry point for every inbound message. It decodes, admits and
//! hands each unit of work to its [`Job`]; what it refuses (invalid, overloaded, unknown
//! latent task) it answers itself, so every id gets one answer.

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument as _, Span, debug, info, warn};

use super::admission::{Admissions, JobKey, Refusal};
use super::job::{Context, Job, Kind};
use super::latent::{Deployments, LatentLimits};
use super::prepare::Preparer;
use super::publish::Answers;
use super::receipt::Receipt;
use super::{Fetcher, TaskError, redelivery, spans};
use crate::config::TaskSettings;
use crate::protocol::{Inbound, InvokeRequest, Rejected, StartRequest, Topic};
use crate::runtime::TaskRuntime;
use crate::sandbox::{Budgets, Policy};
use crate::state::{Journal, Recovered};
use crate::telemetry::{Metrics, TraceHeaders, trace};
use crate::transport::Publisher;

/// How long an invoke waits for its deploy on a node without a default task timeout.
const DEPLOY_WAIT: Duration = Duration::from_secs(600);

/// What the manager is built from.
pub struct ManagerParts {
    /// Our id on the wire.
    pub proplet_id: String,
    /// Where results go.
    pub publisher: Publisher,
    /// Where tasks run.
    pub runtime: Arc<dyn TaskRuntime>,
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
    /// Where accepted jobs and deployed latent tasks are written down.
    pub journal: Journal,
}

/// Owns every task from admission to its one result. Cheap to clone.
#[derive(Clone)]
pub struct TaskManager {
    cx: Arc<Context>,
}

impl TaskManager {
    /// A manager with nothing running.
    pub fn new(parts: ManagerParts) -> Self {
        let settings = &parts.settings;
        let prepare = Preparer {
            proplet_id: parts.proplet_id.clone(),
            features: parts.runtime.features(),
            fetcher: parts.fetcher,
            budgets: parts.budgets,
            policy: parts.policy,
            volumes: settings.volumes.clone(),
            network: settings.net_allow.clone().into(),
            http: settings.apis.http.clone(),
            config: settings.apis.config.clone(),
            kv: settings.apis.kv.clone(),
            kv_store: parts.journal.kv(),
            metrics: parts.metrics.clone(),
        };
        let limits = LatentLimits {
            tasks: settings.module_cache_entries,
            bytes: settings.latent_max_bytes,
        };
        let monitor = super::monitor::Monitor::new(
            parts.publisher.clone(),
            parts.proplet_id.clone(),
            settings.monitoring,
        );
        let cx = Context {
            admissions: Admissions::new(settings, parts.metrics.clone(), parts.journal.clone()),
            prepare,
            runtime: parts.runtime,
            deployments: Deployments::new(limits, parts.journal.clone()),
            answers: Answers::new(
                parts.proplet_id,
                parts.publisher,
                parts.metrics,
                parts.journal.clone(),
            ),
            deploy_wait: parts.budgets.default.timeout.unwrap_or(DEPLOY_WAIT),
            journal: parts.journal,
            recovered: Default::default(),
            monitor,
        };
        TaskManager { cx: Arc::new(cx) }
    }

    /// Answers what a previous process accepted and never answered, and the latent tasks
    /// it had deployed (lost with it), with `interrupted` errors: the manager can start or
    /// deploy them again. A job whose last answer was stored left the journal in the same
    /// commit (that answer is replayed from the outbox instead); a daemon acknowledged and
    /// still running when the process died is answered `interrupted`, as it runs no more.
    pub fn recover(&self, recovered: Recovered) {
        // A latent task being redeployed when the proplet stopped is answered once, for the
        // deploy.
        let redeploying: Vec<String> = recovered
            .unanswered
            .iter()
            .filter(|e| e.invocation.is_none())
            .map(|e| e.task.clone())
            .collect();
        for entry in &recovered.unanswered {
            let entry = entry.clone();
            self.cx.recovered.insert(&entry.task);
            let why = "the proplet stopped before answering (the task was accepted or running)";
            let error = TaskError::Interrupted(why);
            match entry.invocation {
                Some(invocation) => self.reply_invoke((entry.task, invocation), error, receipt()),
                None => self.reply_interrupted(&entry.task, error),
            }
        }
        for id in recovered
            .latent
            .iter()
            .filter(|id| !redeploying.contains(id))
        {
            let why = "the latent task was lost when the proplet restarted; deploy it again";
            self.reply_interrupted(id, TaskError::Interrupted(why));
        }
    }

    fn reply_interrupted(&self, id: &str, error: TaskError) {
        let span = spans::interrupted(id, self.proplet_id());
        self.reply(id, error, receipt(), span);
    }

    /// Tasks admitted and not yet finished.
    pub fn active(&self) -> usize {
        self.cx.admissions.active()
    }

    /// Handles one inbound message without blocking: work is spawned.
    pub fn handle(&self, msg: Result<Inbound, Rejected>) {
        match msg {
            Ok(Inbound::Start(req)) => self.start(req),
            Ok(Inbound::Stop(req)) => self.stop(&req.id),
            Ok(Inbound::Invoke(req)) => self.invoke(req),
            Ok(Inbound::Chunk(chunk)) => self.cx.prepare.fetcher.on_chunk(chunk),
            Err(rejected) => self.rejected(rejected),
        }
    }

    fn proplet_id(&self) -> &str {
        self.cx.answers.proplet_id()
    }

    /// Decode, admit, spawn: a start (a task, a daemon or a latent deploy).
    fn start(&self, req: Box<StartRequest>) {
        if !req.target.includes(self.proplet_id()) {
            return debug!(task_id = %req.id, "start is for another proplet");
        }
        let span = spans::task(&req, self.proplet_id());
        let receipt = Receipt::new(spans::headers(&req.trace));
        if let Err(e) = span.in_scope(|| validate(&req)) {
            return self.reply(&req.id, e, receipt, span);
        }
        if req.may_be_a_copy() && redelivery::handled(&self.cx, &req.id) {
            return;
        }
        let key = JobKey::Task(req.id.clone());
        let cancel = match self.cx.admissions.admit(key.clone()) {
            Ok(cancel) => cancel,
            Err(Refusal::Duplicate) => {
                return info!(task_id = %req.id, "duplicate start of an active task ignored");
            }
            Err(Refusal::Full(e)) => return self.reply(&req.id, e, receipt, span),
        };
        span.in_scope(
            || debug!(task_id = %req.id, name = %req.name, daemon = req.daemon, "task admitted"),
        );
        let kind = if req.latent {
            // Before anything else is handled, so that an invoke right behind it waits.
            self.cx.deployments.begin(&req.id);
            Kind::Deploy(req)
        } else {
            Kind::Start(req)
        };
        self.spawn(Job::new(key, cancel, kind, receipt, span));
    }

    /// Decode, admit, spawn: one invocation of a latent task deployed or being deployed.
    fn invoke(&self, req: InvokeRequest) {
        if !req.target.includes(self.proplet_id()) {
            return;
        }
        if req.invocation_id.is_empty() {
            return warn!(task_id = %req.id, "invoke without invocation_id ignored");
        }
        let receipt = Receipt::new(spans::headers(&req.trace));
        let ids = (req.id.clone(), req.invocation_id.clone());
        if !self.cx.deployments.known(&req.id) {
            return self.reply_invoke(ids, TaskError::NotDeployed(req.id), receipt);
        }
        let key = JobKey::Invocation {
            task: req.id.clone(),
            invocation: req.invocation_id.clone(),
        };
        let cancel = match self.cx.admissions.admit(key.clone()) {
            Ok(cancel) => cancel,
            Err(Refusal::Duplicate) => {
                return info!(task_id = %req.id, invocation_id = %req.invocation_id, "duplicate invoke ignored");
            }
            Err(Refusal::Full(e)) => return self.reply_invoke(ids, e, receipt),
        };
        let span = spans::invoke(&req, self.proplet_id());
        let kind = Kind::Invoke(Box::new(req));
        self.spawn(Job::new(key, cancel, kind, receipt, span));
    }

    fn spawn(&self, job: Job) {
        job.accepted(&self.cx);
        // Boxed where it is made: the job's future is large, and each move on its way into
        // the runtime would copy all of it.
        let run = Box::pin(job.run(self.cx.clone()));
        self.cx.admissions.tracker().spawn(run);
    }

    /// Fires the switch of task `id` (a start, a daemon or a deploy in progress), and
    /// forgets the latent task `id`, cancelling its invocations.
    fn stop(&self, id: &str) {
        let running = self.cx.admissions.switch(&JobKey::Task(id.to_owned()));
        let latent = self.cx.deployments.remove(id);
        if running.is_none() && !latent {
            return debug!(task_id = %id, "Task {id} not found in running tasks");
        }
        info!(task_id = %id, "stopping task");
        if let Some(switch) = running {
            switch.cancel();
        }
    }

    /// Answers a message that could not be decoded, when it names what to answer.
    fn rejected(&self, r: Rejected) {
        warn!(
            topic = r.topic.suffix(),
            task_id = r.id.as_deref().unwrap_or(""),
            "rejected message: {}",
            r.error.log_text()
        );
        if !r.target.includes(self.proplet_id()) {
            return;
        }
        let receipt = Receipt::new(TraceHeaders::default());
        match (r.topic, r.id, r.invocation_id) {
            (Topic::Start, Some(id), _) => {
                let span = spans::rejected(r.topic, &id, self.proplet_id());
                span.in_scope(|| {
                    let decode = tracing::info_span!("decode");
                    trace::fail(&decode, "invalid", r.error.log_text());
                });
                let error = TaskError::Invalid(r.error.to_string());
                self.reply(&id, error, receipt, span)
            }
            (Topic::Invoke, Some(id), Some(inv)) => {
                let e = TaskError::InvalidInvoke(r.error.to_string());
                self.reply_invoke((id, inv), e, receipt)
            }
            _ => {}
        }
    }

    /// Publishes a start's answer in the background (no job runs for it).
    fn reply(&self, id: &str, error: TaskError, receipt: Receipt, span: Span) {
        if id.is_empty() {
            return;
        }
        let cx = self.cx.clone();
        let id = id.to_owned();
        let reply = async move { cx.answers.refusal(&id, error, &receipt).await };
        self.cx.admissions.tracker().spawn(reply.instrument(span));
    }

    /// Publishes an invoke's refusal in the background (no job runs for it).
    fn reply_invoke(&self, ids: (String, String), error: TaskError, receipt: Receipt) {
        let cx = self.cx.clone();
        let reply = async move {
            let ids = (ids.0.as_str(), ids.1.as_str());
            cx.answers.invocation_refusal(ids, error, &receipt).await
        };
        self.cx.admissions.tracker().spawn(reply);
    }

    /// Stops intake, lets admitted tasks finish for up to `drain`, then cancels the rest
    /// (each still publishes its `cancelled` result) and waits for every reply to go out.
    pub async fn shutdown(&self, drain: Duration) {
        let admissions = &self.cx.admissions;
        admissions.drain();
        let tracker = admissions.tracker();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            warn!(
                remaining = self.active(),
                "drain deadline passed; cancelling the remaining tasks"
            );
            admissions.shutdown_switch().cancel();
            tracker.wait().await;
        }
    }
}

/// The receipt of an answer that no message of this process asked for.
fn receipt() -> Receipt {
    Receipt::new(TraceHeaders::default())
}

/// Checks a start under a `decode` span, marked failed when it is invalid.
fn validate(req: &StartRequest) -> Result<(), TaskError> {
    let decode = tracing::info_span!("decode").entered();
    req.validate().map_err(|e| {
        trace::fail(&decode, "invalid", e.log_text());
        TaskError::Invalid(e.to_string())
    })
}
