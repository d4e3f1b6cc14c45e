//! Preparing a job before it runs: what it is granted (budgets and mounts, within what the
//! runtime supports), its binary (fetched and admitted by policy), and the runtime's
//! [`TaskSpec`].

use std::sync::Arc;

use tracing::field::Empty;
use tracing::{Instrument as _, debug};

use super::TaskError;
use super::fetch::{self, Fetcher};
use super::receipt::Receipt;
use crate::protocol::StartRequest;
use crate::runtime::{Binary, Features, KvAccess, TaskSpec};
use crate::sandbox::kv::{KvGrant, KvPolicy};
use crate::sandbox::{
    Budgets, CapabilityError, ConfigPolicy, ConfigRequest, HttpGrant, HttpPolicy, LimitRequest,
    Limits, Mount, MountRequest, NetRule, Policy, Source, Volume, capabilities,
};
use crate::state::kv::KvStore;
use crate::telemetry::{Metrics, trace};

/// What a job is granted, decided before its binary is fetched.
pub(super) struct Grants {
    /// Its budgets.
    pub(super) limits: Limits,
    /// Its mounts.
    pub(super) mounts: Vec<Mount>,
    /// Its HTTP origins and budget.
    pub(super) http: Option<HttpGrant>,
    /// Its key-value buckets.
    pub(super) kv: Option<KvGrant>,
}

/// The node's policies and sources a job is prepared with.
pub(super) struct Preparer {
    /// Our id, handed to guests as `PROPLET_ID`.
    pub(super) proplet_id: String,
    /// What the runtime supports.
    pub(super) features: Features,
    /// Where binaries come from.
    pub(super) fetcher: Fetcher,
    /// Node default and maximum budgets.
    pub(super) budgets: Budgets,
    /// Which binaries are accepted.
    pub(super) policy: Policy,
    /// Host directories tasks may mount.
    pub(super) volumes: Vec<Volume>,
    /// Where guests may connect.
    pub(super) network: Arc<[NetRule]>,
    /// Where guests may send HTTP requests.
    pub(super) http: HttpPolicy,
    /// Operator configuration values and who may read them.
    pub(super) config: ConfigPolicy,
    /// The key-value buckets tasks may open.
    pub(super) kv: KvPolicy,
    /// Where the buckets are kept.
    pub(super) kv_store: KvStore,
    /// Where fetched bytes are counted.
    pub(super) metrics: Metrics,
}

impl Preparer {
    /// The budgets and mounts of a start (recorded in its receipt), or why it gets none.
    pub(super) fn grants(
        &self,
        req: &StartRequest,
        receipt: &Receipt,
    ) -> Result<Grants, TaskError> {
        let mounts = self.mounts(req)?;
        self.supports(req)?;
        let http = self.http.grant(&req.http)?;
        let kv = self.kv.grant(&req.kv)?;
        let limits = self.budget(req, receipt)?;
        Ok(Grants {
            limits,
            mounts,
            http,
            kv,
        })
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
        if limits.fuel.is_some() && !self.features.fuel {
            return Err(denied("fuel metering is not available with this runtime"));
        }
        receipt.limits(limits);
        Ok(limits)
    }

    /// The task's mounts: its request intersected with the node's volumes.
    fn mounts(&self, req: &StartRequest) -> Result<Vec<Mount>, TaskError> {
        if req.mounts.is_empty() {
            return Ok(Vec::new());
        }
        if !self.features.mounts {
            return Err(denied("mounts are not supported by this runtime"));
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

    /// Refuses a start that asks for a host API the runtime does not give.
    fn supports(&self, req: &StartRequest) -> Result<(), TaskError> {
        let f = &self.features;
        let asks_config = !req.config.is_empty() || !req.credentials.is_empty();
        let asked = [
            (!req.http.is_empty() && !f.http, "outbound HTTP"),
            (asks_config && !f.config, "configuration values"),
            (!req.kv.is_empty() && !f.kv, "key-value buckets"),
        ];
        match asked.iter().find(|(unsupported, _)| *unsupported) {
            Some((_, what)) => Err(denied(&format!("{what}: not supported by this runtime"))),
            None => Ok(()),
        }
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
        debug!(task_id = %req.id, %digest, bytes = binary.bytes.len(), "binary fetched");
        self.policy
            .check_binary(&digest, req.digest.as_deref(), req.signature.as_deref())?;
        if binary.is_component() && !self.features.components {
            return Err(denied("this runtime does not run components"));
        }
        Ok(binary)
    }

    /// The runtime's view of a start: env with `PROPLET_ID` and the trace context, granted
    /// budgets, mounts and HTTP, and the configuration values it may read (decided here,
    /// where the binary's digest is known).
    pub(super) fn spec(
        &self,
        req: &StartRequest,
        binary: Binary,
        receipt: &Receipt,
        grants: Grants,
    ) -> Result<TaskSpec, TaskError> {
        let config = self.config.grant(&ConfigRequest {
            task: &req.name,
            digest: &binary.digest,
            values: &req.config,
            credentials: &req.credentials,
        })?;
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
        Ok(TaskSpec {
            id: req.id.clone(),
            name: req.name.clone(),
            binary,
            inputs: req.inputs.clone(),
            args: req.cli_args.clone(),
            env,
            limits: grants.limits,
            mounts: grants.mounts,
            network: self.network.clone(),
            http: grants.http,
            config,
            kv: grants.kv.map(|grant| KvAccess {
                grant,
                store: self.kv_store.clone(),
            }),
            meter: receipt.meter(),
            echo: false,
        })
    }
}

fn denied(why: &str) -> TaskError {
    CapabilityError::Denied(why.to_owned()).into()
}
