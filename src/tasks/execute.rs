//! Running one start: budgets, admission of the binary, the runtime's task spec, an
//! execution slot, and the daemon's acknowledgement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::field::Empty;
use tracing::{Instrument as _, info};

use super::TaskError;
use super::fetch;
use super::held::Held;
use super::manager::Shared;
use super::receipt::Receipt;
use crate::protocol::StartRequest;
use crate::runtime::{Binary, Runtime, RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::Limits;
use crate::sandbox::{CapabilityError, LimitRequest, Mount, MountRequest, Source, capabilities};
use crate::telemetry::trace;

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

/// What a start is granted, decided before its binary is fetched.
pub(super) struct Grants {
    /// Its budgets.
    pub(super) limits: Limits,
    /// Its mounts.
    pub(super) mounts: Vec<Mount>,
}

impl Shared {
    /// Runs a start: grants, binary, slot, guest. While it waits for a slot, its binary
    /// (not its base64, which is dropped once decoded) is counted in `held`.
    pub(super) async fn execute(
        &self,
        req: &mut StartRequest,
        started: Option<oneshot::Sender<()>>,
        receipt: &Receipt,
        held: Held<'_>,
    ) -> Result<TaskOutput, TaskError> {
        let grants = self.grants(req, receipt)?;
        let binary = self.obtain(req, receipt).await?;
        drop(std::mem::take(&mut req.file));
        let held = self.resize(held, binary.bytes.len())?;
        let spec = self.spec(req, binary, receipt, grants);
        self.run_spec(spec, started, Some(held)).await
    }

    /// `held` now counting a binary of `bytes` instead, or `overloaded`.
    fn resize<'a>(&'a self, held: Held<'a>, bytes: usize) -> Result<Held<'a>, TaskError> {
        held.resize(bytes as u64)
            .ok_or_else(|| self.queue_bytes_overloaded())
    }

    /// The budgets and mounts of a start (recorded in its receipt), or why it gets none.
    pub(super) fn grants(
        &self,
        req: &StartRequest,
        receipt: &Receipt,
    ) -> Result<Grants, TaskError> {
        let mounts = self.grant(req)?;
        let limits = self.budget(req, receipt)?;
        Ok(Grants { limits, mounts })
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
    fn budget(&self, req: &StartRequest, receipt: &Receipt) -> Result<Limits, TaskError> {
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

    /// The runtime's view of a start: env with `PROPLET_ID` and the trace context, granted
    /// budgets and mounts.
    pub(super) fn spec(
        &self,
        req: &StartRequest,
        binary: Binary,
        receipt: &Receipt,
        grants: Grants,
    ) -> TaskSpec {
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
        TaskSpec {
            id: req.id.clone(),
            name: req.name.clone(),
            binary,
            inputs: req.inputs.clone(),
            args: req.cli_args.clone(),
            env,
            limits: grants.limits,
            mounts: grants.mounts,
            network: self.network.clone(),
            meter: receipt.meter(),
        }
    }

    /// The task's mounts: its request intersected with the node's volumes.
    fn grant(&self, req: &StartRequest) -> Result<Vec<Mount>, TaskError> {
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

    /// Waits for an execution slot, then runs. What the task `held` against the waiting
    /// tasks' byte budget is given back once it has its slot.
    pub(super) async fn run_spec(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
        held: Option<Held<'_>>,
    ) -> Result<TaskOutput, TaskError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TaskError::Cancelled("the proplet is shutting down"))?;
        drop(held);
        let _running = Running::new(self);
        Ok(self.runtime.run(spec, started).await?)
    }

    /// Compiles a latent task's binary as a task would run: under an execution slot and
    /// within its deadline. A compile that outlives the deadline still finishes into the
    /// cache (it is not redone), but the deploy is answered `timeout`.
    pub(super) async fn precompile(
        &self,
        binary: &Binary,
        deadline: Option<Duration>,
    ) -> Result<(), TaskError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TaskError::Cancelled("the proplet is shutting down"))?;
        let _running = Running::new(self);
        let compile = self.runtime.precompile(binary);
        let compiled = match deadline {
            Some(limit) => tokio::time::timeout(limit, compile)
                .await
                .unwrap_or(Err(RuntimeError::Timeout(limit))),
            None => compile.await,
        };
        Ok(compiled?)
    }

    /// For a daemon: publishes the empty success result once the guest is running.
    pub(super) async fn ack_when_started(
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
