//! Task lifecycle: admission, concurrency, fetching, running, stopping, draining, and the
//! heartbeat.
//!
//! The lifecycle of one unit of work reads top to bottom in `job.rs`; the [`TaskManager`]
//! only decodes, admits and answers refusals. The modules depend one way:
//! `manager` → `job` → `admission`, `prepare`, `latent`, `publish` → `held`, `fetch`,
//! `receipt`, `error`.
//!
//! Depends on `protocol` (messages), `runtime` (a [`crate::runtime::TaskRuntime`] running a
//! [`crate::runtime::TaskSpec`]) and the [`crate::transport::Publisher`] handle — never on
//! rumqttc or Wasmtime directly.

mod admission;
mod chunks;
mod error;
mod fetch;
pub mod heartbeat;
mod held;
mod inline;
mod job;
mod latent;
mod manager;
pub mod monitor;
mod prepare;
mod publish;
mod receipt;
mod redelivery;
mod spans;
#[cfg(test)]
mod tests;

pub use chunks::{Assembler, ChunkError};
pub use error::TaskError;
pub use fetch::{FetchError, Fetcher};
pub use manager::{ManagerParts, TaskManager};
