//! Task lifecycle: admission, concurrency, fetching, running, stopping, draining, and the
//! heartbeat.
//!
//! Depends on `protocol` (messages), `runtime` (running a [`crate::runtime::TaskSpec`]) and
//! the [`crate::transport::Publisher`] handle — never on rumqttc or Wasmtime directly.

mod chunks;
mod error;
mod execute;
mod fetch;
pub mod heartbeat;
mod held;
mod latent;
mod manager;
mod publish;
mod receipt;
mod spans;

pub use chunks::{Assembler, ChunkError};
pub use error::TaskError;
pub use fetch::{FetchError, Fetcher};
pub use manager::{ManagerParts, TaskManager};
