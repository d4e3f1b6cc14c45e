//! The Propeller wire protocol: topics, inbound and outbound messages (docs/protocol.md).
//!
//! Pure data and functions: this module knows nothing of MQTT clients, Wasmtime or tasks,
//! and depends only on serde. Everything here is unit-tested against the protocol's
//! golden fixtures (`tests/fixtures/`).

mod inbound;
mod inline_file;
mod lenient;
pub mod metrics;
mod outbound;
mod salvage;
mod topics;

pub use inbound::{
    Chunk, Inbound, InvokeRequest, LimitsSpec, MountSpec, Rejected, StartRequest, StopRequest,
    Target, TraceFields, decode, decode_sharing, oversized,
};
pub use inline_file::{InlineFile, KnownTexts};
pub use metrics::{CpuMetrics, MemoryMetrics};
pub use outbound::{
    BinaryRequest, Budget, Discovery, ErrorKind, InvokeResult, Liveliness, Metadata, Outbound,
    Outcome, TaskResult, Usage,
};
pub use topics::{Topic, Topics};

/// Why a payload was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or a known key has the wrong type.
    #[error("undecodable message: {0}")]
    Json(String),
    /// Decoded, but a required field is missing or inconsistent.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl ProtocolError {
    /// The error for logs: decoder messages quote the offending values, so only the class
    /// of the problem is logged (the full text goes to the manager).
    pub fn log_text(&self) -> &'static str {
        match self {
            ProtocolError::Json(_) => "undecodable JSON or a field of the wrong type",
            ProtocolError::Invalid(_) => "a required field is missing or inconsistent",
        }
    }
}

#[cfg(test)]
mod tests;
