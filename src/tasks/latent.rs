//! Latent tasks (docs/protocol.md §5.7): the ones deployed (fetched and precompiled, not
//! run), the ones being deployed, and the bounds on how many and how large. Each
//! `control/manager/invoke` then runs a deployed task once, with the invoke's env merged
//! over the deploy-time env and its inputs (when given) replacing the deploy-time inputs.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry::trace::SpanContext;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::TaskError;
use crate::protocol::{InvokeRequest, StartRequest};
use crate::runtime::Binary;
use crate::state::Journal;

/// A deployed latent task.
#[derive(Clone)]
pub(super) struct LatentTask {
    /// The start request (without its inline binary), the template of every invocation.
    pub(super) req: StartRequest,
    /// The component, already compiled in the engine cache.
    pub(super) binary: Binary,
    /// Parent of every invocation's run: a stop of the task cancels them all.
    pub(super) token: CancellationToken,
    /// The deploy's span, which every invocation's trace links to.
    pub(super) deploy: Option<SpanContext>,
}

impl LatentTask {
    /// The start an invocation runs: the deploy-time start with the invoke's env over it
    /// and its inputs (when given) instead. The guest sees the latent task's id, and the
    /// invocation id as `PROPLET_INVOCATION_ID`.
    pub(super) fn call(&self, invoke: &InvokeRequest) -> StartRequest {
        let mut call = self.req.clone();
        call.daemon = false;
        call.env.extend(invoke.env.clone());
        call.env
            .entry("PROPLET_INVOCATION_ID".into())
            .or_insert_with(|| invoke.invocation_id.clone());
        if let Some(inputs) = invoke.inputs.as_ref().filter(|i| !i.is_empty()) {
            call.inputs = inputs.clone();
        }
        call
    }
}

/// How many latent tasks may be deployed at once, and bytes of their binaries.
#[derive(Debug, Clone, Copy)]
pub(super) struct LatentLimits {
    /// Most deployed tasks (`PROPLET_MODULE_CACHE_ENTRIES`).
    pub(super) tasks: usize,
    /// Most bytes of their binaries (`PROPLET_LATENT_MAX_BYTES`).
    pub(super) bytes: u64,
}

/// Deployed latent tasks and deploys in progress, by task id.
pub(super) struct Deployments {
    deployed: Mutex<HashMap<String, LatentTask>>,
    deploying: Mutex<HashSet<String>>,
    /// Bumped whenever a deploy ends (ready or failed), for invokes waiting on one.
    settled: watch::Sender<u64>,
    limits: LatentLimits,
    /// Where deployed tasks are written down, so a restart can say they are gone.
    journal: Journal,
}

/// A deploy in progress (marked by [`Deployments::begin`]); when dropped, the mark goes
/// and the invokes waiting on a deploy wake.
pub(super) struct Deploying<'a> {
    deployments: &'a Deployments,
    id: String,
}

impl Drop for Deploying<'_> {
    fn drop(&mut self) {
        self.deployments.lock_deploying().remove(&self.id);
        self.deployments.settled.send_modify(|n| *n += 1);
    }
}

impl Deployments {
    /// Nothing deployed, within `limits`, written down in `journal`.
    pub(super) fn new(limits: LatentLimits, journal: Journal) -> Self {
        Deployments {
            deployed: Mutex::new(HashMap::new()),
            deploying: Mutex::new(HashSet::new()),
            settled: watch::Sender::new(0),
            limits,
            journal,
        }
    }

    fn lock_deployed(&self) -> MutexGuard<'_, HashMap<String, LatentTask>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.deployed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_deploying(&self) -> MutexGuard<'_, HashSet<String>> {
        // Entries are inserted and removed whole; a poisoned set is still consistent.
        self.deploying.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` as being deployed, synchronously with its admission, so that an invoke
    /// handled right after the deploy's start waits for it. The deploy's job takes the mark
    /// over with [`Deployments::deploying`].
    pub(super) fn begin(&self, id: &str) {
        self.lock_deploying().insert(id.to_owned());
    }

    /// The guard of `id`'s deploy in progress, removing its mark when dropped.
    pub(super) fn deploying(&self, id: &str) -> Deploying<'_> {
        Deploying {
            deployments: self,
            id: id.to_owned(),
        }
    }

    /// Whether `id` is deployed or being deployed.
    pub(super) fn known(&self, id: &str) -> bool {
        self.lock_deployed().contains_key(id) || self.lock_deploying().contains(id)
    }

    /// The deployed task `id`, waiting (at most `limit`) while it is being deployed.
    pub(super) async fn settled(&self, id: &str, limit: Duration) -> Option<LatentTask> {
        let mut changes = self.settled.subscribe();
        let settled = async {
            while self.lock_deploying().contains(id) {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(limit, settled).await.is_err() {
            warn!(task_id = %id, "an invoke waited {limit:?} for its deploy");
        }
        self.lock_deployed().get(id).cloned()
    }

    /// Remembers a deployed task (replacing one with the same id, whose invocations are
    /// cancelled), within the limits on how many may be deployed and how many bytes of
    /// binaries they hold.
    pub(super) fn keep(&self, latent: LatentTask) -> Result<(), TaskError> {
        let LatentLimits { tasks, bytes: max } = self.limits;
        let id = latent.req.id.clone();
        let mut map = self.lock_deployed();
        let others = map.iter().filter(|(k, _)| **k != id);
        let (count, bytes) = others.fold((0usize, 0u64), |(n, b), (_, l)| {
            (n + 1, b + l.binary.bytes.len() as u64)
        });
        if count >= tasks || bytes + latent.binary.bytes.len() as u64 > max {
            return Err(TaskError::Overloaded(format!(
                "{count} latent tasks hold {bytes} bytes; at most {tasks} tasks and {max} bytes (PROPLET_LATENT_MAX_BYTES); stop one first"
            )));
        }
        self.journal.deployed(&id);
        if let Some(previous) = map.insert(id, latent) {
            previous.token.cancel();
        }
        Ok(())
    }

    /// Forgets the deployed task `id` and cancels its invocations; whether there was one.
    pub(super) fn remove(&self, id: &str) -> bool {
        let removed = self.lock_deployed().remove(id);
        if removed.is_some() {
            self.journal.forgotten(id);
        }
        removed.map(|l| l.token.cancel()).is_some()
    }
}
