//! The per-task store state: WASI context, limiter and captured output.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::sandbox::{CappedOutput, Echo, MemoryLimiter, SCRATCH_PATH, Scratch, network};

use super::WasmEngine;
use super::http::{HttpState, Outbound};
use super::workload::WorkloadContext;
use super::{GuestOutput, TaskSpec};
use crate::sandbox::HttpBudget;
use crate::telemetry::TraceHeaders;

/// What a core module's `Store` holds.
pub struct HostState {
    /// WASI preview 1 context.
    pub wasi: WasiP1Ctx,
    /// Memory and table budget; records the peak and any refusal.
    pub limiter: MemoryLimiter,
    /// The guest's stdout and stderr.
    pub output: Captured,
}

/// What a component's `Store` holds.
pub struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    /// Memory and table budget; records the peak and any refusal.
    pub limiter: MemoryLimiter,
    /// What the proplet's WIT world exposes to the guest, and what it reported.
    pub workload: WorkloadContext,
    /// The guest's stdout and stderr.
    pub output: Captured,
    /// Outbound HTTP within the task's grant.
    http: HttpState,
    /// The configuration values the task may read.
    config: WasiConfigVariables,
    /// Where reads of them are counted.
    meter: std::sync::Arc<crate::sandbox::Meter>,
    /// The key-value buckets the task may open.
    kv: super::kv::KvHost,
}

impl ComponentState {
    /// The `wasi:config/store` view of the task's values; each call is one read.
    pub fn config(&mut self) -> WasiConfig<'_> {
        self.meter.config_read();
        WasiConfig::from(&self.config)
    }

    /// The task's `wasi:keyvalue` state.
    pub fn kv(&mut self) -> &mut super::kv::KvHost {
        &mut self.kv
    }
}

/// Store state that carries the task's memory limiter and knows its output budget.
pub trait Limited: Send + 'static {
    /// The limiter Wasmtime consults on every memory or table growth.
    fn limiter(&mut self) -> &mut MemoryLimiter;

    /// Whether the guest tried to write past its output budget (it is then stopped at the
    /// next epoch tick, whatever it does with the refused write).
    fn output_exhausted(&self) -> bool;

    /// Why the guest's HTTP budget is exhausted, if it is (it is then stopped at the next
    /// epoch tick).
    fn http_exhausted(&self) -> Option<String> {
        None
    }
}

impl Limited for HostState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    fn output_exhausted(&self) -> bool {
        self.output.overflowed()
    }
}

impl Limited for ComponentState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    fn output_exhausted(&self) -> bool {
        self.output.overflowed() || self.workload.overflowed
    }

    fn http_exhausted(&self) -> Option<String> {
        self.http.hooks.exhausted().map(|why| why.to_string())
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The guest's captured stdout and stderr.
#[derive(Clone)]
pub struct Captured {
    /// Guest stdout (the result of a command).
    pub stdout: CappedOutput,
    /// Guest stderr.
    pub stderr: CappedOutput,
}

impl Captured {
    /// Empty pipes capped at the task's output budget each, counted in its meter.
    pub fn new(spec: &TaskSpec) -> Self {
        let cap = spec.limits.output_bytes;
        let echo = |to| spec.echo.then_some(to);
        Captured {
            stdout: CappedOutput::echoing(cap, spec.meter.clone(), echo(Echo::Stdout)),
            stderr: CappedOutput::echoing(cap, spec.meter.clone(), echo(Echo::Stderr)),
        }
    }

    /// What was captured, to explain a failure.
    pub fn output(&self) -> GuestOutput {
        GuestOutput {
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }

    /// Whether either pipe hit its cap.
    pub fn overflowed(&self) -> bool {
        self.stdout.overflowed() || self.stderr.overflowed()
    }
}

/// A deny-by-default WASI context for `spec`: argv is the task name followed by
/// `cli_args`, the environment is exactly the task's `env`, stdin is empty, stdout and
/// stderr are captured, the only directories are the task's private scratch (`/tmp`, for
/// a guest that can open files) and its granted mounts (read-only unless granted
/// writable), and there is no network.
fn wasi_builder(
    spec: &TaskSpec,
    captured: &Captured,
    scratch: Option<&Scratch>,
) -> wasmtime::Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    if let Some(scratch) = scratch {
        builder.preopened_dir(scratch.path(), SCRATCH_PATH, FsPerms::ReadWrite)?;
    }
    for mount in &spec.mounts {
        let perms = if mount.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder.preopened_dir(mount.handle_path(), &mount.guest, perms)?;
    }
    builder.arg(program_name(spec));
    builder.args(&spec.args);
    for (k, v) in &spec.env {
        builder.env(k, v);
    }
    let rules = spec.network.clone();
    let networked = !rules.is_empty();
    builder
        .allow_tcp(networked)
        .allow_udp(networked)
        .allow_ip_name_lookup(false);
    builder.socket_addr_check(move |addr, usage| {
        let allowed = network::permits(&rules, &addr, usage);
        Box::pin(async move { allowed })
    });
    builder
        .stdout(captured.stdout.clone())
        .stderr(captured.stderr.clone());
    Ok(builder)
}

/// Store state for a core module, holding at most the engine's number of WASI handles.
pub fn host_state(
    spec: &TaskSpec,
    captured: &Captured,
    scratch: Option<&Scratch>,
    engine: &WasmEngine,
) -> wasmtime::Result<HostState> {
    let mut wasi = wasi_builder(spec, captured, scratch)?.build_p1();
    wasi.ctx().table.set_max_capacity(engine.task_handles());
    Ok(HostState {
        wasi,
        limiter: MemoryLimiter::new(&spec.limits, spec.meter.clone()),
        output: captured.clone(),
    })
}

/// Store state for a component, holding at most the engine's number of WASI handles, with
/// outbound HTTP within the task's grant.
pub fn component_state(
    spec: &TaskSpec,
    captured: &Captured,
    scratch: Option<&Scratch>,
    engine: &WasmEngine,
) -> wasmtime::Result<ComponentState> {
    let mut table = ResourceTable::new();
    table.set_max_capacity(engine.task_handles());
    Ok(ComponentState {
        ctx: wasi_builder(spec, captured, scratch)?.build(),
        table,
        limiter: MemoryLimiter::new(&spec.limits, spec.meter.clone()),
        workload: WorkloadContext {
            id: spec.id.clone(),
            name: spec.name.clone(),
            args: spec.args.clone(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            inputs: spec.inputs.clone(),
            budget: spec.limits.output_bytes,
            meter: spec.meter.clone(),
            ..WorkloadContext::default()
        },
        output: captured.clone(),
        http: http_state(spec, engine)?,
        config: config_values(spec),
        meter: spec.meter.clone(),
        kv: super::kv::KvHost::new(spec.kv.clone(), spec.meter.clone()),
    })
}

/// The task's configuration values, as `wasi:config` serves them.
fn config_values(spec: &TaskSpec) -> WasiConfigVariables {
    if !spec.config.is_empty() {
        spec.meter.config_granted();
    }
    spec.config.pairs().collect()
}

/// The task's `wasi:http` state: its grant and a fresh budget, or nothing granted.
fn http_state(spec: &TaskSpec, engine: &WasmEngine) -> wasmtime::Result<HttpState> {
    let budget = spec
        .http
        .as_ref()
        .map(|g| std::sync::Arc::new(HttpBudget::new(g.limits, spec.meter.clone())));
    let incoming = TraceHeaders {
        traceparent: spec.env.get("TRACEPARENT").cloned(),
        tracestate: spec.env.get("TRACESTATE").cloned(),
    };
    let hooks = Outbound::new(spec.http.as_ref(), budget, engine.http_clients(), incoming)?;
    Ok(HttpState {
        ctx: WasiHttpCtx::new(),
        hooks,
    })
}

fn program_name(spec: &TaskSpec) -> &str {
    if spec.name.is_empty() {
        "main.wasm"
    } else {
        &spec.name
    }
}
