//! proplet: the Propeller worker daemon.
//!
//! A proplet takes WebAssembly tasks from the Propeller manager over MQTT, runs them in
//! Wasmtime (or an external runtime), and reports results and heartbeats.
//!
//! # Layout
//!
//! - [`cli`] — the command line (subcommands and one flag per setting).
//! - [`config`] — settings from defaults, a TOML file, `PROPLET_*` env and CLI flags.
//! - [`crypto`] — the one rustls crypto provider (`ring`) behind every TLS client.
//! - [`protocol`] — pure wire types and topic names (docs/protocol.md).
//! - [`transport`] — the MQTT session — the only rumqttc user — and the [`transport::Publisher`].
//! - [`tasks`] — admission, concurrency, fetching binaries, stop, drain, heartbeat.
//! - [`runtime`] — running one task — the only Wasmtime user, with [`sandbox`].
//! - [`sandbox`] — budgets, admission policy, capabilities, limits and capped output.
//! - [`keys`] — `proplet keygen` / `proplet sign`, the operator's side of signatures.
//! - [`telemetry`] — logs, OpenTelemetry traces, trace context, metrics and health.
//! - [`worker`] — wires the parts together and runs them until shutdown.
//! - [`local`] — `proplet run`, a task run locally.
//! - [`power`] — the CPU wake-up latency limit the daemon may hold (`PROPLET_CPU_LATENCY`).
//! - `demo` — an embedded broker, a worker and a submitter in one process (cargo feature
//!   `demo`, on by default; a device build leaves it out with `--no-default-features`).
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod crypto;
#[cfg(feature = "demo")]
pub mod demo;
pub mod keys;
pub mod local;
pub mod power;
pub mod protocol;
pub mod runtime;
pub mod sandbox;
pub mod scaffold;
pub mod state;
pub mod submit;
pub mod tasks;
pub mod telemetry;
pub mod transport;
pub mod worker;

pub use config::Config;
pub use worker::run;
