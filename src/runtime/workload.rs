//! The host side of the proplet's WIT world (`wit/proplet.wit`): task context, result
//! reporting and logging, checked against the task's budgets on every call.

use std::sync::Arc;

use base64::Engine as _;
use tracing::{Level, event};
use wasmtime::component::HasSelf;

use crate::sandbox::Meter;

wasmtime::component::bindgen!({
    path: "wit",
    world: "workload",
    imports: {
        default: async,
        "propeller:proplet/trace.[drop]span": async | trappable,
        "wasi:keyvalue/store.[drop]bucket": async | trappable,
    },
    exports: { default: async },
    with: {
        "propeller:proplet/trace.span": crate::runtime::guest_spans::GuestSpan,
        "wasi:keyvalue/store.bucket": crate::runtime::kv::KvBucket,
    },
});

use propeller::proplet::{log, report, task, trace};

/// The name of the exported entry-point interface, by which workloads are recognised.
pub const HANDLER_INTERFACE: &str = "propeller:proplet/handler@0.1.0";

/// What a workload may read and has reported.
#[derive(Debug, Default)]
pub struct WorkloadContext {
    /// Task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// `cli_args`.
    pub args: Vec<String>,
    /// Sorted environment.
    pub env: Vec<(String, String)>,
    /// Inputs as sent.
    pub inputs: Vec<String>,
    /// The reported result, once reported.
    pub reported: Option<String>,
    /// Bytes of output budget left for the result and log lines.
    pub budget: usize,
    /// Set when a log line or the result did not fit the budget (an `output_limit` failure).
    pub overflowed: bool,
    /// Where written bytes are counted.
    pub meter: Arc<Meter>,
    /// Log lines written, for the local runner.
    pub log: Vec<(String, String)>,
    /// The guest's own spans.
    pub spans: crate::runtime::guest_spans::GuestSpans,
}

impl WorkloadContext {
    fn charge(&mut self, bytes: usize) -> bool {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                self.meter.output(bytes);
                true
            }
            None => {
                self.overflowed = true;
                false
            }
        }
    }

    fn report(&mut self, text: String, size: usize) -> Result<(), report::ReportError> {
        if self.reported.is_some() {
            return Err(report::ReportError::AlreadyReported);
        }
        if !self.charge(size) {
            return Err(report::ReportError::TooLarge(self.budget as u64));
        }
        self.reported = Some(text);
        Ok(())
    }
}

/// Adds the proplet's own workload imports (`task`, `report`, `log`, `trace`) to a component linker
/// whose store state gives its [`WorkloadContext`] through `get`. The world's WASI imports
/// (`wasi:config`) are added by their Wasmtime crates.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut WorkloadContext,
) -> wasmtime::Result<()> {
    task::add_to_linker::<T, HasSelf<WorkloadContext>>(linker, get)?;
    report::add_to_linker::<T, HasSelf<WorkloadContext>>(linker, get)?;
    trace::add_to_linker::<T, HasSelf<WorkloadContext>>(linker, get)?;
    log::add_to_linker::<T, HasSelf<WorkloadContext>>(linker, get)
}

/// Adds `wasi:keyvalue` (store, atomics, batch) to a component linker whose store state
/// gives its [`KvHost`](super::kv::KvHost) through `get`.
pub fn add_kv_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut super::kv::KvHost,
) -> wasmtime::Result<()> {
    use wasi::keyvalue::{atomics, batch, store};
    store::add_to_linker::<T, HasSelf<super::kv::KvHost>>(linker, get)?;
    atomics::add_to_linker::<T, HasSelf<super::kv::KvHost>>(linker, get)?;
    batch::add_to_linker::<T, HasSelf<super::kv::KvHost>>(linker, get)
}

impl task::Host for WorkloadContext {
    async fn id(&mut self) -> String {
        self.id.clone()
    }

    async fn name(&mut self) -> String {
        self.name.clone()
    }

    async fn args(&mut self) -> Vec<String> {
        self.args.clone()
    }

    async fn env(&mut self) -> Vec<(String, String)> {
        self.env.clone()
    }

    async fn inputs(&mut self) -> Vec<String> {
        self.inputs.clone()
    }

    async fn traceparent(&mut self) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == "TRACEPARENT")
            .map(|(_, v)| v.clone())
    }
}

impl report::Host for WorkloadContext {
    async fn text(&mut self, value: String) -> Result<(), report::ReportError> {
        let size = value.len();
        self.report(value, size)
    }

    async fn bytes(&mut self, value: Vec<u8>) -> Result<(), report::ReportError> {
        let size = value.len();
        self.report(
            base64::engine::general_purpose::STANDARD.encode(value),
            size,
        )
    }
}

impl log::Host for WorkloadContext {
    async fn write(&mut self, level: log::Level, message: String) {
        let ctx = self;
        if !ctx.charge(message.len()) {
            return;
        }
        let task_id = ctx.id.as_str();
        match level {
            log::Level::Trace => event!(target: "guest", Level::TRACE, task_id, "{message}"),
            log::Level::Debug => event!(target: "guest", Level::DEBUG, task_id, "{message}"),
            log::Level::Info => event!(target: "guest", Level::INFO, task_id, "{message}"),
            log::Level::Warn => event!(target: "guest", Level::WARN, task_id, "{message}"),
            log::Level::Error => event!(target: "guest", Level::ERROR, task_id, "{message}"),
        }
        ctx.log
            .push((format!("{level:?}").to_ascii_lowercase(), message));
    }
}
