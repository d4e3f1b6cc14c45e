//! Running one task: the only place that touches Wasmtime (with `sandbox/`).
//!
//! [`Runtime::run`] takes a [`TaskSpec`] and returns a [`TaskOutput`] or a [`RuntimeError`].
//! Dropping the returned future stops the guest: in-process guests yield at every epoch
//! tick, and an external runtime process is killed on drop. The task lifecycle sees a
//! runtime only through the [`TaskRuntime`] trait, whose [`Features`] say what it supports.

mod allocator;
mod component;
mod core;
mod disk_cache;
mod engine;
mod external;
mod guest_spans;
mod host;
mod http;
mod inspect;
mod kv;
mod outcome;
mod values;
mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

pub use allocator::{Allocation, Allocator, AllocatorChoice};
pub use disk_cache::{DiskCacheConfig, resolve_dir as resolve_cache_dir};
pub use engine::{CacheLimits, Files, Prepared, TICK, WasmEngine};
pub use external::ExternalRuntime;
pub use inspect::{Inspection, inspect};
pub use kv::KvAccess;

use crate::protocol::ErrorKind;
use crate::sandbox::{ConfigGrant, HttpGrant, Limits, Meter, Mount, NetRule};

/// A sha256 content digest, shown as `sha256:<hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest as 64 lowercase hex digits (no `sha256:` prefix).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown with every result: hex digits into a buffer on the stack, not a String.
        let mut digits = [0u8; 64];
        hex::encode_to_slice(self.0, &mut digits).map_err(|_| fmt::Error)?;
        let digits = std::str::from_utf8(&digits).map_err(|_| fmt::Error)?;
        write!(f, "sha256:{digits}")
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A workload binary and its digest.
#[derive(Clone, Debug)]
pub struct Binary {
    /// The bytes.
    pub bytes: Arc<[u8]>,
    /// sha256 of the bytes.
    pub digest: Digest,
}

impl Binary {
    /// Wraps `bytes`, computing the digest.
    pub fn new(bytes: Vec<u8>) -> Self {
        let digest = Digest::of(&bytes);
        Binary {
            bytes: bytes.into(),
            digest,
        }
    }

    /// Whether the bytes are a component (rather than a core module).
    pub fn is_component(&self) -> bool {
        wasmparser::Parser::is_component(&self.bytes)
    }
}

/// Everything needed to run one task.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Task id (used for temp file names and logs).
    pub id: String,
    /// Export to call; empty or `_start` runs the module as a command.
    pub name: String,
    /// The workload.
    pub binary: Binary,
    /// Positional arguments, as text.
    pub inputs: Vec<String>,
    /// Guest argv after the program name (external runtime: runtime arguments).
    pub args: Vec<String>,
    /// Guest environment (nothing else is visible to the guest).
    pub env: BTreeMap<String, String>,
    /// Budgets.
    pub limits: Limits,
    /// Granted mounts (besides the private scratch `/tmp` every task gets).
    pub mounts: Vec<Mount>,
    /// Where the guest may connect; empty means no network.
    pub network: Arc<[NetRule]>,
    /// Where the guest may send HTTP requests (`wasi:http`), and its HTTP budget; `None`
    /// means none.
    pub http: Option<HttpGrant>,
    /// The configuration values the guest may read (`wasi:config/store`).
    pub config: ConfigGrant,
    /// The key-value buckets the guest may open (`wasi:keyvalue`); `None`: none.
    pub kv: Option<KvAccess>,
    /// Where the run records what it used (memory peak, output, fuel) as it goes.
    pub meter: Arc<Meter>,
    /// Whether the guest's stdout and stderr are also copied to this process's, as they
    /// are written (`proplet run`); a fleet task's output is only captured.
    pub echo: bool,
}

impl TaskSpec {
    /// Whether `name` asks for the module's command entry point rather than an export.
    pub fn is_command(&self) -> bool {
        self.name.is_empty() || self.name == "_start" || self.name.starts_with("fl-round-")
    }
}

/// What a successful run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOutput {
    /// The result text (return value, or stdout of a command).
    pub result: String,
    /// Captured stderr.
    pub stderr: String,
    /// Whether `result` is the guest's stdout (a command), rather than a value it returned
    /// or reported.
    pub from_stdout: bool,
}

/// What a guest wrote before its run failed, kept to explain the failure: a panic
/// message, a traceback, the last lines it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestOutput {
    /// Its stdout, as captured (within the output budget).
    pub stdout: String,
    /// Its stderr, as captured (within the output budget).
    pub stderr: String,
}

/// The most of each stream a failure's message carries: its last bytes.
pub const OUTPUT_TAIL: usize = 4096;

impl GuestOutput {
    /// `, stderr: …, stdout: …` with the end of each stream that has something, for an
    /// error message (empty when the guest wrote nothing).
    fn suffix(&self) -> String {
        let mut text = String::new();
        for (name, stream) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
            let stream = stream.trim_start_matches(['\n', '\r']).trim_end();
            if !stream.is_empty() {
                text.push_str(&format!(", {name}: {}", tail(stream, OUTPUT_TAIL)));
            }
        }
        text
    }
}

/// The last `max` bytes of `text` (at a character boundary), marked `…` when cut.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Why a run failed. Each variant maps to one wire [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Bad request: missing export, wrong arity, unparsable input.
    #[error("{0}")]
    Invalid(String),
    /// Not valid wasm, or it cannot be linked or instantiated.
    #[error("cannot compile or instantiate the module: {0}")]
    Compile(String),
    /// The guest trapped.
    #[error("guest trapped: {message}{}", output.suffix())]
    Trap {
        /// The trap, with its backtrace.
        message: String,
        /// What the guest wrote before.
        output: GuestOutput,
    },
    /// Non-zero exit status.
    #[error("exited with status {code}{}", output.suffix())]
    Exit {
        /// Exit status.
        code: i32,
        /// What the guest wrote before.
        output: GuestOutput,
    },
    /// The guest reported failure (a workload's `run` returned an error).
    #[error("the task failed: {message}{}", output.suffix())]
    Failed {
        /// The workload's error.
        message: String,
        /// What the guest wrote before.
        output: GuestOutput,
    },
    /// Ran past the deadline.
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// Memory budget exceeded.
    #[error("{0}")]
    Memory(String),
    /// Fuel budget exhausted.
    #[error("fuel budget of {0} exhausted")]
    Fuel(u64),
    /// Output budget exceeded.
    #[error("output limit of {0} bytes exceeded")]
    OutputLimit(usize),
    /// HTTP budget exceeded (requests or bytes).
    #[error("HTTP budget exceeded: {0}")]
    HttpLimit(String),
    /// The scratch directory went past its quota (reported as `output_limit`).
    #[error("scratch limit exceeded: {0}")]
    Scratch(String),
    /// A host-side failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// The wire classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Invalid(_) => ErrorKind::Invalid,
            RuntimeError::Compile(_) => ErrorKind::Compile,
            RuntimeError::Trap { .. } => ErrorKind::Trap,
            RuntimeError::Exit { .. } | RuntimeError::Failed { .. } => ErrorKind::Exit,
            RuntimeError::Timeout(_) => ErrorKind::Timeout,
            RuntimeError::Memory(_) => ErrorKind::Memory,
            RuntimeError::Fuel(_) => ErrorKind::Fuel,
            RuntimeError::OutputLimit(_) | RuntimeError::Scratch(_) => ErrorKind::OutputLimit,
            RuntimeError::HttpLimit(_) => ErrorKind::HttpLimit,
            RuntimeError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The same error without the guest's output (for a reader who saw it as it was
    /// written).
    pub fn without_output(mut self) -> Self {
        if let RuntimeError::Trap { output, .. }
        | RuntimeError::Exit { output, .. }
        | RuntimeError::Failed { output, .. } = &mut self
        {
            *output = GuestOutput::default();
        }
        self
    }

    fn compile(e: wasmtime::Error) -> Self {
        RuntimeError::Compile(format!("{e:#}"))
    }

    fn internal(e: impl fmt::Display) -> Self {
        RuntimeError::Internal(e.to_string())
    }
}

/// Compiles (or finds in the cache) and runs `spec` in this process.
async fn run_in_process(
    engine: &Arc<WasmEngine>,
    spec: &TaskSpec,
    started: Option<oneshot::Sender<()>>,
) -> Result<TaskOutput, RuntimeError> {
    match engine
        .prepare(&spec.binary.digest, spec.binary.bytes.clone())
        .await?
    {
        Prepared::Core(pre, files) => {
            let execute = async |store: &mut _, span: &_| {
                core::execute(store, &pre, spec, started, span).await
            };
            outcome::run_guest(engine, spec, files, host::host_state, execute).await
        }
        Prepared::Component(pre, files) => {
            let target = component::target(&pre, spec)?;
            let execute = async |store: &mut _, span: &_| {
                component::execute(store, &pre, &target, spec, started, span).await
            };
            outcome::run_guest(engine, spec, files, host::component_state, execute).await
        }
    }
}

/// What a runtime can do. The task lifecycle asks this, never which runtime it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// It meters fuel (a task may ask for a fuel budget).
    pub fuel: bool,
    /// It gives guests granted host directories (a task may ask for mounts).
    pub mounts: bool,
    /// It compiles ahead of the first run (latent tasks can be deployed).
    pub latent: bool,
    /// It runs components, not only core modules.
    pub components: bool,
    /// It gives components outbound HTTP (a task may ask for origins).
    pub http: bool,
    /// It gives components configuration values (a task may bring or ask for them).
    pub config: bool,
    /// It gives components key-value buckets (a task may ask for them).
    pub kv: bool,
}

/// A boxed future of a runtime operation.
pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// Where tasks run, as the task lifecycle sees it: [`Runtime`] in the daemon, a stub in the
/// lifecycle's unit tests.
pub trait TaskRuntime: Send + Sync {
    /// What this runtime can do.
    fn features(&self) -> Features;

    /// `wasmtime-internal` or the external runtime's path, for discovery metadata.
    fn describe(&self) -> String;

    /// The in-process instance allocator (`pooling` or `on-demand`), for discovery
    /// metadata; `None` for runtimes that do not run guests in-process.
    fn allocator(&self) -> Option<String> {
        None
    }

    /// Compiles `binary` into the cache ahead of its first run (latent tasks).
    fn precompile<'a>(&'a self, binary: &'a Binary) -> RuntimeFuture<'a, ()>;

    /// Runs `spec` to completion under its deadline. `started` fires once the guest begins
    /// executing (after compile and instantiation). Dropping the future stops the guest.
    fn run(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> RuntimeFuture<'_, TaskOutput>;
}

/// Where tasks run: in-process Wasmtime, or an external runtime binary.
pub enum Runtime {
    /// In-process.
    Wasmtime(Arc<WasmEngine>),
    /// `PROPLET_EXTERNAL_WASM_RUNTIME`.
    External(ExternalRuntime),
}

impl Runtime {
    /// In-process Wasmtime with a cache of compiled code within `cache`, metering fuel
    /// when `fuel` is set, every task within the `sandbox` limits (WASI handles, scratch),
    /// instances allocated as `allocation` says, task scratch directories under `scratch`.
    pub fn wasmtime(
        cache: CacheLimits,
        fuel: bool,
        sandbox: crate::sandbox::SandboxLimits,
        metrics: crate::telemetry::Metrics,
        allocation: Allocation,
        scratch: crate::sandbox::ScratchRoot,
    ) -> Self {
        let engine =
            WasmEngine::new(cache, fuel, sandbox, metrics, scratch).with_allocation(allocation);
        Runtime::Wasmtime(Arc::new(engine))
    }

    /// An external runtime binary, with temp files under `workdir`.
    pub fn external(program: PathBuf, workdir: PathBuf) -> Self {
        Runtime::External(ExternalRuntime::new(program, workdir))
    }

    /// Runs `spec` to completion under its deadline (see [`TaskRuntime::run`]).
    pub async fn run(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> Result<TaskOutput, RuntimeError> {
        let timeout = spec.limits.timeout;
        let run = async {
            match self {
                Runtime::Wasmtime(engine) => run_in_process(engine, &spec, started).await,
                Runtime::External(ext) => ext.run(&spec, started).await,
            }
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or(Err(RuntimeError::Timeout(limit))),
            None => run.await,
        }
    }
}

impl TaskRuntime for Runtime {
    fn features(&self) -> Features {
        let in_process = matches!(self, Runtime::Wasmtime(_));
        Features {
            fuel: in_process,
            mounts: in_process,
            latent: in_process,
            components: true,
            http: in_process,
            config: in_process,
            kv: in_process,
        }
    }

    fn describe(&self) -> String {
        match self {
            Runtime::Wasmtime(_) => "wasmtime-internal".into(),
            Runtime::External(e) => e.program().display().to_string(),
        }
    }

    fn allocator(&self) -> Option<String> {
        match self {
            Runtime::Wasmtime(engine) => Some(engine.allocator().to_string()),
            Runtime::External(_) => None,
        }
    }

    fn precompile<'a>(&'a self, binary: &'a Binary) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            match self {
                Runtime::Wasmtime(engine) => engine
                    .prepare(&binary.digest, binary.bytes.clone())
                    .await
                    .map(|_| ()),
                Runtime::External(_) => Err(RuntimeError::Invalid(
                    "latent tasks are not supported by this runtime".into(),
                )),
            }
        })
    }

    fn run(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> RuntimeFuture<'_, TaskOutput> {
        Box::pin(Runtime::run(self, spec, started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_shows_as_sha256_and_lowercase_hex() {
        // sha256("abc"), from FIPS 180-2.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(Digest::of(b"abc").to_string(), format!("sha256:{abc}"));
        assert_eq!(Digest::of(b"abc").hex(), abc);
        assert_eq!(format!("{:?}", Digest::of(b"abc")), format!("sha256:{abc}"));
    }

    #[test]
    fn a_failure_carries_the_end_of_what_the_guest_wrote() {
        let output = GuestOutput {
            stdout: String::new(),
            stderr: format!("\n{}é{}\n", "x".repeat(10_000), "y".repeat(OUTPUT_TAIL - 1)),
        };
        let e = RuntimeError::Trap {
            message: "wasm trap: unreachable".into(),
            output: output.clone(),
        };
        let text = e.to_string();
        let shown = text.split_once(", stderr: …").expect("cut, and marked").1;
        assert_eq!(
            shown,
            "y".repeat(OUTPUT_TAIL - 1),
            "ends at a character boundary"
        );
        assert!(!text.contains("stdout"), "an empty stream is left out");
        let exit = RuntimeError::Exit { code: 3, output }.without_output();
        assert_eq!(exit.to_string(), "exited with status 3");
    }
}
