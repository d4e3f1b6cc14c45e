//! Latent tasks and invocations (docs/protocol.md §5.7): a latent start is fetched and
//! precompiled but not run; each `control/manager/invoke` then runs it once, with the
//! invoke's env merged over the deploy-time env and its inputs (when given) replacing the
//! deploy-time inputs, and answers on `invoke_results`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::TaskError;
use super::manager::{Admission, JobKey, Shared, TaskManager};
use super::receipt::Receipt;
use super::spans;
use crate::protocol::{ErrorKind, InvokeRequest, StartRequest};
use crate::runtime::Binary;
use crate::telemetry::{TraceHeaders, trace};
use tracing::Instrument as _;

/// How long an invoke waits for its deploy on a node without a default task timeout.
const DEPLOY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A deployed latent task.
pub(super) struct LatentTask {
    /// The start request (without its inline binary), the template of every invocation.
    pub(super) req: StartRequest,
    /// The component, already compiled in the engine cache.
    pub(super) binary: Binary,
    /// Parent of every invocation's token: a stop of the task cancels them all.
    pub(super) token: CancellationToken,
    /// The deploy's span, which every invocation's trace links to.
    pub(super) deploy: Option<opentelemetry::trace::SpanContext>,
}

/// Deploys a latent start: fetch, require a component, precompile, remember it. Publishes
/// nothing on success (as upstream); an error result otherwise.
pub(super) async fn deploy(
    shared: &Arc<Shared>,
    req: &StartRequest,
    token: &CancellationToken,
    receipt: &Receipt,
) {
    let work = async {
        let grants = shared.grants(req, receipt)?;
        let binary = shared.obtain(req, receipt).await?;
        if !binary.is_component() {
            let why = format!(
                "latent tasks require a WASM component; task {} is not a component",
                req.id
            );
            return Err(TaskError::Invalid(why));
        }
        shared.precompile(&binary, grants.limits.timeout).await?;
        Ok(binary)
    };
    let outcome = tokio::select! {
        biased;
        _ = token.cancelled() => Err(TaskError::Cancelled(shared.cancel_reason())),
        outcome = work => outcome,
    };
    match outcome {
        Ok(binary) => {
            info!(task_id = %req.id, digest = %binary.digest, "latent task precompiled");
            let mut template = req.clone();
            template.file.clear();
            let latent = LatentTask {
                req: template,
                binary,
                token: shared.shutdown.child_token(),
                deploy: trace::span_context(&tracing::Span::current()),
            };
            if let Err(e) = keep(shared, &req.id, latent) {
                shared.publish_result(&req.id, Err(e), receipt).await;
            }
        }
        Err(e) => shared.publish_result(&req.id, Err(e), receipt).await,
    }
}

/// A latent task being deployed (marked by [`Shared::deploying_from_now`] when it is
/// admitted); when dropped, the mark is removed and the invokes waiting on any deploy wake.
pub(super) struct Deploying<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl<'a> Deploying<'a> {
    /// Takes over the mark of `id`, set when it was admitted.
    pub(super) fn adopt(shared: &'a Shared, id: &'a str) -> Self {
        Deploying { shared, id }
    }
}

impl Drop for Deploying<'_> {
    fn drop(&mut self) {
        self.shared.lock_deploying().remove(self.id);
        self.shared.deployed.send_modify(|n| *n += 1);
    }
}

impl Shared {
    fn lock_deploying(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        // Entries are inserted and removed whole; a poisoned set is still consistent.
        self.deploying.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_deploying(&self, id: &str) -> bool {
        self.lock_deploying().contains(id)
    }

    /// Marks `id` as being deployed, synchronously with its admission, so that an invoke
    /// handled right after the deploy's start waits for it.
    pub(super) fn deploying_from_now(&self, id: &str) {
        self.lock_deploying().insert(id.to_owned());
    }
}

/// Remembers a deployed latent task (replacing one with the same id), within the limits on
/// how many may be deployed and how many bytes of binaries they hold.
fn keep(shared: &Shared, id: &str, latent: LatentTask) -> Result<(), TaskError> {
    let (max_tasks, max_bytes) = shared.latent_limits;
    let mut map = shared.lock_latent();
    let others = map.iter().filter(|(k, _)| k.as_str() != id);
    let (count, bytes) = others.fold((0usize, 0u64), |(n, b), (_, l)| {
        (n + 1, b + l.binary.bytes.len() as u64)
    });
    if count >= max_tasks || bytes + latent.binary.bytes.len() as u64 > max_bytes {
        return Err(TaskError::Overloaded(format!(
            "{count} latent tasks hold {bytes} bytes; at most {max_tasks} tasks and {max_bytes} bytes (PROPLET_LATENT_MAX_BYTES); stop one first"
        )));
    }
    if let Some(previous) = map.insert(id.to_owned(), latent) {
        previous.token.cancel();
    }
    Ok(())
}

impl TaskManager {
    /// Runs one invocation of a latent task, or answers that it is unknown here. An invoke
    /// for a task that is still being fetched or compiled waits for its deploy (at most
    /// the node's default task timeout) instead of being refused.
    pub(super) fn invoke(&self, req: InvokeRequest) {
        self.dispatch_invoke(req, true);
    }

    /// Waits (in the background) until `req`'s latent task is no longer being deployed or
    /// the wait times out, then dispatches it without waiting again.
    fn await_deploy(&self, req: InvokeRequest) {
        let manager = self.clone();
        let mut deployed = self.shared.deployed.subscribe();
        let limit = self.shared.budgets.default.timeout.unwrap_or(DEPLOY_WAIT);
        let wait = async move {
            let settled = async {
                while manager.shared.is_deploying(&req.id) {
                    if deployed.changed().await.is_err() {
                        break;
                    }
                }
            };
            if tokio::time::timeout(limit, settled).await.is_err() {
                warn!(task_id = %req.id, "an invoke waited {limit:?} for its deploy");
            }
            manager.dispatch_invoke(req, false);
        };
        self.shared.tracker.spawn(wait);
    }

    fn dispatch_invoke(&self, req: InvokeRequest, may_wait: bool) {
        let s = &self.shared;
        if !req.target.includes(&s.proplet_id) {
            return;
        }
        if req.invocation_id.is_empty() {
            return warn!(task_id = %req.id, "invoke without invocation_id ignored");
        }
        let found = s.lock_latent().get(&req.id).map(|l| {
            let span = spans::invoke(&req, &l.req.name, &s.proplet_id, l.deploy.clone());
            (l.req.clone(), l.binary.clone(), l.token.clone(), span)
        });
        let Some((mut call, binary, parent, span)) = found else {
            if may_wait && s.is_deploying(&req.id) {
                return self.await_deploy(req);
            }
            let why = format!(
                "task {} has not been precompiled; deploy it as a latent task first",
                req.id
            );
            return self.reply_invoke(req.id, req.invocation_id, ErrorKind::Invalid, why);
        };
        let key = JobKey::Invocation {
            task: req.id.clone(),
            invocation: req.invocation_id.clone(),
        };
        let token = match s.admit(key.clone(), &parent) {
            Ok(token) => token,
            Err(None) => {
                return info!(task_id = %req.id, invocation_id = %req.invocation_id, "duplicate invoke ignored");
            }
            Err(Some(e)) => {
                return self.reply_invoke(req.id, req.invocation_id, e.kind(), e.to_string());
            }
        };
        call.daemon = false;
        call.env.extend(req.env);
        call.env
            .entry("PROPLET_INVOCATION_ID".into())
            .or_insert_with(|| req.invocation_id.clone());
        if let Some(inputs) = req.inputs.filter(|i| !i.is_empty()) {
            call.inputs = inputs;
        }
        let incoming = spans::headers(&req.trace);
        let invocation = Invocation {
            key,
            call,
            binary,
            task_id: req.id,
            invocation_id: req.invocation_id,
            incoming,
        };
        let run = invocation.run(self.shared.clone(), token);
        s.tracker.spawn(run.instrument(span));
    }
}

/// One invocation in flight.
struct Invocation {
    /// Its key in the task table.
    key: JobKey,
    /// The deploy-time start with the invoke's env and inputs: the guest sees the latent
    /// task's id, and the invocation id as `PROPLET_INVOCATION_ID`.
    call: StartRequest,
    binary: Binary,
    task_id: String,
    invocation_id: String,
    /// The invoke's trace context.
    incoming: TraceHeaders,
}

impl Invocation {
    async fn run(self, shared: Arc<Shared>, token: CancellationToken) {
        let _admission = Admission {
            shared: &shared,
            key: self.key,
        };
        let receipt = Receipt::new(self.incoming);
        receipt.digest(&self.binary.digest);
        let run = async {
            let grants = shared.grants(&self.call, &receipt)?;
            let spec = shared.spec(&self.call, self.binary, &receipt, grants);
            shared.run_spec(spec, None, None).await
        };
        let outcome = tokio::select! {
            biased;
            _ = token.cancelled() => Err(TaskError::Cancelled(shared.cancel_reason())),
            outcome = run => outcome,
        };
        let outcome = Shared::invoke_outcome(&self.call.id, outcome, &receipt);
        let ids = (self.task_id, self.invocation_id);
        shared.publish_invoke(ids, outcome, receipt.elapsed()).await;
    }
}
