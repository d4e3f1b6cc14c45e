//! The per-task store state: WASI context, limiter and captured output.

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::sandbox::{CappedOutput, Limits, MemoryLimiter};

use super::TaskSpec;

/// What a task's `Store` holds.
pub struct HostState {
    /// WASI preview 1 context.
    pub wasi: WasiP1Ctx,
    /// Memory and table budget; records the peak and any refusal.
    pub limiter: MemoryLimiter,
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
    /// Empty pipes capped at `limits.output_bytes` each.
    pub fn new(limits: &Limits) -> Self {
        Captured {
            stdout: CappedOutput::new(limits.output_bytes),
            stderr: CappedOutput::new(limits.output_bytes),
        }
    }

    /// Whether either pipe hit its cap.
    pub fn overflowed(&self) -> bool {
        self.stdout.overflowed() || self.stderr.overflowed()
    }
}

/// Builds a deny-by-default store state for `spec`: argv is the task name followed by
/// `cli_args`, the environment is exactly the task's `env`, stdin is empty, stdout and
/// stderr are captured, and there are no preopens and no network.
pub fn host_state(spec: &TaskSpec, captured: &Captured) -> HostState {
    let mut builder = WasiCtxBuilder::new();
    builder.arg(program_name(spec));
    builder.args(&spec.args);
    for (k, v) in &spec.env {
        builder.env(k, v);
    }
    builder
        .stdout(captured.stdout.clone())
        .stderr(captured.stderr.clone());
    HostState {
        wasi: builder.build_p1(),
        limiter: MemoryLimiter::new(&spec.limits),
    }
}

fn program_name(spec: &TaskSpec) -> &str {
    if spec.name.is_empty() {
        "main.wasm"
    } else {
        &spec.name
    }
}
