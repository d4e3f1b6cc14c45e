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
}

impl TaskError {
    /// The wire classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::Invalid(_) => ErrorKind::Invalid,
            TaskError::Fetch(e) => e.kind(),
            TaskError::Runtime(e) => e.kind(),
            TaskError::Capability(CapabilityError::Denied(_)) => ErrorKind::Denied,
            TaskError::Capability(CapabilityError::Invalid(_)) => ErrorKind::Invalid,
            TaskError::Cancelled(_) => ErrorKind::Cancelled,
            TaskError::Overloaded(_) => ErrorKind::Overloaded,
        }
    }
}
