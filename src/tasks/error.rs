//! The one error type a task can end with, and its wire classification.

use super::FetchError;
use crate::protocol::ErrorKind;
use crate::runtime::RuntimeError;
use crate::sandbox::CapabilityError;

/// Why a task did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The start request is invalid.
    #[error("invalid start request: {0}")]
    Invalid(String),
    /// An invoke message could not be decoded (the decoder's text).
    #[error("{0}")]
    InvalidInvoke(String),
    /// An invoke names a task that is not deployed as a latent task here.
    #[error("task {0} has not been precompiled; deploy it as a latent task first")]
    NotDeployed(String),
    /// The binary could not be obtained.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Compiling or running failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A mount was refused or malformed.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// Stopped, or cancelled by shutdown.
    #[error("task cancelled: {0}")]
    Cancelled(&'static str),
    /// No room to run or queue it.
    #[error("proplet overloaded: {0}")]
    Overloaded(String),
    /// A previous process accepted it and stopped before answering.
    #[error("interrupted: {0}")]
    Interrupted(&'static str),
}

impl TaskError {
    /// The failure as it may appear in logs: never payload content (inputs, env, binary
    /// bytes or names from it, guest output) and never URL credentials. The full text goes
    /// to the manager in the result.
    pub fn log_text(&self) -> String {
        match self {
            TaskError::Invalid(_) | TaskError::InvalidInvoke(_) => {
                "invalid request (details in the result)".into()
            }
            TaskError::Runtime(RuntimeError::Invalid(_)) => {
                "the task does not fit the binary (details in the result)".into()
            }
            TaskError::Runtime(RuntimeError::Exit { code, .. }) => {
                format!("the guest exited with status {code}")
            }
            TaskError::Runtime(RuntimeError::Failed { .. }) => {
                "the workload reported failure".into()
            }
            TaskError::Runtime(RuntimeError::Trap { .. }) => "the guest trapped".into(),
            TaskError::Runtime(RuntimeError::Compile(_)) => {
                "the binary does not compile or link (details in the result)".into()
            }
            TaskError::Fetch(e) => e.log_text(),
            other => other.to_string(),
        }
    }

    /// The wire classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::Invalid(_) | TaskError::InvalidInvoke(_) | TaskError::NotDeployed(_) => {
                ErrorKind::Invalid
            }
            TaskError::Fetch(e) => e.kind(),
            TaskError::Runtime(e) => e.kind(),
            TaskError::Capability(CapabilityError::Denied(_)) => ErrorKind::Denied,
            TaskError::Capability(CapabilityError::Invalid(_)) => ErrorKind::Invalid,
            TaskError::Cancelled(_) => ErrorKind::Cancelled,
            TaskError::Overloaded(_) => ErrorKind::Overloaded,
            TaskError::Interrupted(_) => ErrorKind::Interrupted,
        }
    }
}
