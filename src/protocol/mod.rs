//! The Propeller wire protocol: topics, inbound and outbound messages (PROTOCOL.md).
//!
//! Pure data and functions: this module knows nothing of MQTT clients, Wasmtime or tasks,
//! and depends only on serde. Everything here is unit-tested against the protocol's
//! golden fixtures (`tests/fixtures/`).

mod inbound;
mod lenient;
mod outbound;
mod topics;

pub use inbound::{
    Chunk, Inbound, InvokeRequest, LimitsSpec, MountSpec, Rejected, StartRequest, StopRequest,
    Target, decode,
};
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

#[cfg(test)]
mod tests;
