//! Messages the proplet publishes, and the one function that encodes them.

use serde::Serialize;

use super::Topic;

/// Why a task failed, in a form a machine can act on.
///
/// Sent as `error_kind` next to the human-readable `error` text (managers ignore unknown
/// keys, docs/protocol.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Undecodable or invalid request, bad inputs, missing export, wrong arity.
    Invalid,
    /// The binary could not be obtained.
    Fetch,
    /// Not valid wasm, or it cannot be instantiated.
    Compile,
    /// The guest trapped.
    Trap,
    /// The guest (or external runtime) exited with a non-zero status.
    Exit,
    /// The task ran past its deadline.
    Timeout,
    /// Stopped by the manager, or cancelled during shutdown.
    Cancelled,
    /// The guest exceeded its memory budget.
    Memory,
    /// The guest used up its fuel budget.
    Fuel,
    /// The guest wrote more output than allowed.
    OutputLimit,
    /// The guest made more HTTP requests, or moved more HTTP body bytes, than allowed.
    HttpLimit,
    /// The proplet is at capacity and its queue is full.
    Overloaded,
    /// Refused by policy or capability checks.
    Denied,
    /// A bug or an unexpected host failure.
    Internal,
    /// The proplet stopped (crashed, was killed, lost power) while the task was accepted or
    /// running; answered by the next process from its journal.
    Interrupted,
}

impl ErrorKind {
    /// The wire name (`"output_limit"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Fetch => "fetch",
            ErrorKind::Compile => "compile",
            ErrorKind::Trap => "trap",
            ErrorKind::Exit => "exit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Memory => "memory",
            ErrorKind::Fuel => "fuel",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::HttpLimit => "http_limit",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Denied => "denied",
            ErrorKind::Internal => "internal",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

/// Discovery metadata (latest manager, docs/protocol.md §4.1); every member is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metadata {
    /// Free text from `PROPLET_DESCRIPTION`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Placement tags from `PROPLET_TAGS`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Location from `PROPLET_LOCATION`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `linux`, `macos`, …
    pub os: String,
    /// `x86_64`, `aarch64`, …
    pub cpu_arch: String,
    /// Host name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// This crate's version.
    pub proplet_version: String,
    /// External runtime path, or `wasmtime-internal`.
    pub wasm_runtime: String,
    /// How the in-process runtime allocates instances: `pooling` or `on-demand` (our
    /// extension; absent with an external runtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_allocator: Option<String>,
}

/// `control/proplet/create`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovery {
    /// Our id.
    pub proplet_id: String,
    /// `PROPLET_MANAGER_K8S_NAMESPACE`.
    pub namespace: String,
    /// Host description for the latest manager; ignored by seed managers.
    pub metadata: Metadata,
}

/// `control/proplet/alive`, both the heartbeat and the offline notice (Last Will).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Liveliness {
    /// Our id.
    pub proplet_id: String,
    /// `"alive"` or `"offline"`.
    pub status: &'static str,
    /// `PROPLET_MANAGER_K8S_NAMESPACE`.
    pub namespace: String,
}

/// How a task or invocation ended: the fields shared by both result messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The result text; `""` on failure.
    pub results: String,
    /// Failure text with its whole cause chain; `null` on success.
    pub error: Option<String>,
    /// Machine-readable failure class; omitted on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// The binary's digest, `sha256:<hex>`, once it was obtained (an extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What the task used (an extension); the proplet always sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// W3C trace context of the task's span, for the manager to link to (an extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The usage receipt of one task or invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// From the start (or invoke) message's arrival to the result, in milliseconds.
    pub wall_ms: u64,
    /// Fuel consumed; `null` unless the task ran metered.
    pub fuel: Option<u64>,
    /// Largest linear memory the guest reached; `null` when unknown (external runtime) or
    /// when nothing was instantiated.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes of stdout, stderr, log lines and result the guest produced.
    pub output_bytes: u64,
    /// HTTP requests the guest sent; omitted unless the task was granted HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<u64>,
    /// Bytes of HTTP request and response bodies; omitted unless the task was granted HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_bytes: Option<u64>,
    /// Reads of configuration values; omitted unless the task was given any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_reads: Option<u64>,
    /// Key-value reads; omitted unless the task was granted a bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_reads: Option<u64>,
    /// Key-value writes; omitted unless the task was granted a bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_writes: Option<u64>,
    /// The `error_kind` of the budget that ended the task (`timeout`, `memory`, `fuel`,
    /// `output_limit`, `http_limit`), or `null`.
    pub limit: Option<ErrorKind>,
    /// The budgets the task ran under; omitted when it was refused before they were set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Budget>,
}

/// The budgets granted to a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Wall-clock deadline; `null` for none.
    pub timeout_ms: Option<u64>,
    /// Linear memory, in bytes.
    pub memory_bytes: u64,
    /// Fuel; `null` when unmetered.
    pub fuel: Option<u64>,
    /// Output budget, in bytes.
    pub output_bytes: u64,
}

impl Outcome {
    /// A success with `results`.
    pub fn ok(results: String) -> Self {
        Outcome {
            results,
            ..Outcome::default()
        }
    }

    /// A failure of `kind` described by `error`.
    pub fn failed(kind: ErrorKind, error: String) -> Self {
        Outcome {
            error: Some(error),
            error_kind: Some(kind),
            ..Outcome::default()
        }
    }
}

/// `control/proplet/results` (docs/protocol.md §4.6, §8.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskResult {
    /// The start's `id`.
    pub task_id: String,
    /// Our id.
    pub proplet_id: String,
    /// `results`, `error`, `error_kind`.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `control/proplet/invoke_results` (docs/protocol.md §4.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvokeResult {
    /// The latent task id.
    pub task_id: String,
    /// The invoke's `invocation_id`.
    pub invocation_id: String,
    /// Our id.
    pub proplet_id: String,
    /// `results`, `error`, `error_kind`.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `registry/proplet`: ask the proxy for a binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryRequest {
    /// The `image_url` exactly as received.
    pub app_name: String,
}

/// Anything the proplet publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Sent after every (re)connection, once subscriptions are in place.
    Discovery(Discovery),
    /// Heartbeat or offline notice.
    Liveliness(Liveliness),
    /// One per task.
    Result(TaskResult),
    /// One per invocation.
    InvokeResult(InvokeResult),
    /// Registry fetch.
    BinaryRequest(BinaryRequest),
    /// The proplet's process metrics.
    PropletMetrics(super::metrics::PropletMetrics),
    /// A running task's metrics.
    TaskMetrics(super::metrics::TaskMetrics),
}

impl Outbound {
    /// Where the message goes.
    pub fn topic(&self) -> Topic {
        match self {
            Outbound::Discovery(_) => Topic::Create,
            Outbound::Liveliness(_) => Topic::Alive,
            Outbound::Result(_) => Topic::Results,
            Outbound::InvokeResult(_) => Topic::InvokeResults,
            Outbound::BinaryRequest(_) => Topic::RegistryRequest,
            Outbound::PropletMetrics(_) => Topic::Metrics,
            Outbound::TaskMetrics(_) => Topic::TaskMetrics,
        }
    }

    /// The JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Outbound::Discovery(m) => serde_json::to_vec(m),
            Outbound::Liveliness(m) => serde_json::to_vec(m),
            Outbound::Result(m) => serde_json::to_vec(m),
            Outbound::InvokeResult(m) => serde_json::to_vec(m),
            Outbound::BinaryRequest(m) => serde_json::to_vec(m),
            Outbound::PropletMetrics(m) => serde_json::to_vec(m),
            Outbound::TaskMetrics(m) => serde_json::to_vec(m),
        };
        // Invariant: these types hold only strings, booleans, numbers and string maps, which
        // serde_json always encodes (a non-finite float is written as null).
        encoded.expect("outbound messages are always encodable")
    }
}
