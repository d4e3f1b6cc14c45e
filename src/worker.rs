//! The worker: wires config, transport, task manager and heartbeat together and runs them
//! until the shutdown future resolves.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::protocol::{Discovery, Liveliness, Metadata, Outbound};
use crate::runtime::{Runtime, RuntimeError};
use crate::tasks::{Fetcher, ManagerParts, TaskManager, heartbeat};
use crate::transport::{MqttSession, Publisher, TransportError};

/// Messages that may wait for the MQTT client.
const OUTBOUND_CAPACITY: usize = 1024;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The MQTT session could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The scratch directory for the external runtime could not be created.
    #[error("cannot create a working directory: {0}")]
    Workdir(std::io::Error),
}

/// Runs a proplet until `shutdown` resolves, then drains and disconnects:
/// stop intake → let tasks finish (up to the drain timeout) → cancel the rest (each reports
/// `cancelled`) → publish offline → disconnect.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let workdir = tempfile::Builder::new()
        .prefix("proplet-")
        .tempdir()
        .map_err(WorkerError::Workdir)?;
    let runtime = match &config.tasks.external_runtime {
        Some(program) => Runtime::external(program.clone(), workdir.path().to_path_buf()),
        None => Runtime::wasmtime(config.tasks.module_cache_entries)?,
    };
    let id = &config.identity;
    let discovery = Outbound::Discovery(Discovery {
        proplet_id: id.proplet_id.clone(),
        namespace: id.namespace.clone(),
        metadata: metadata(&config, &runtime),
    });
    let liveliness = |status| {
        Outbound::Liveliness(Liveliness {
            proplet_id: id.proplet_id.clone(),
            status,
            namespace: id.namespace.clone(),
        })
    };
    let (publisher, outbound) = Publisher::channel(OUTBOUND_CAPACITY);
    let (session, mut events) =
        MqttSession::start(&config.mqtt, id, discovery, liveliness("offline"), outbound)?;
    info!(proplet_id = %id.proplet_id, broker = %config.mqtt.address, runtime = %runtime.describe(), "proplet starting");
    let manager = TaskManager::new(ManagerParts {
        proplet_id: id.proplet_id.clone(),
        publisher: publisher.clone(),
        fetcher: Fetcher::new(&config.fetch, publisher.clone()),
        runtime,
        limits: config.limits,
        settings: config.tasks.clone(),
    });
    let stop = CancellationToken::new();
    let beats = tokio::spawn(heartbeat::run(
        publisher.clone(),
        liveliness("alive"),
        config.liveliness_interval,
        events.ready.clone(),
        stop.clone(),
    ));
    let dispatch_manager = manager.clone();
    let dispatch_stop = stop.clone();
    let dispatcher = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = dispatch_stop.cancelled() => return,
                msg = events.inbound.recv() => match msg {
                    Some(msg) => dispatch_manager.handle(msg),
                    None => return,
                },
            }
        }
    });
    shutdown.await;
    info!(active = manager.active(), "shutting down: draining tasks");
    session.stop_intake();
    manager.shutdown(config.tasks.drain_timeout).await;
    stop.cancel();
    for (name, task) in [("heartbeat", beats), ("dispatcher", dispatcher)] {
        if let Err(e) = task.await {
            warn!(error = %e, "{name} task failed");
        }
    }
    session.close(liveliness("offline")).await;
    info!("proplet stopped");
    Ok(())
}

fn metadata(config: &Config, runtime: &Runtime) -> Metadata {
    Metadata {
        description: config.metadata.description.clone(),
        tags: config.metadata.tags.clone(),
        location: config.metadata.location.clone(),
        os: std::env::consts::OS.into(),
        cpu_arch: std::env::consts::ARCH.into(),
        hostname: std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty()),
        proplet_version: env!("CARGO_PKG_VERSION").into(),
        wasm_runtime: runtime.describe(),
    }
}
