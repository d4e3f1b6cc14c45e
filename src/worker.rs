//! The worker: wires config, transport, task manager and heartbeat together and runs them
//! until the shutdown future resolves.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use crate::config::Config;
use crate::power;
use crate::protocol::{Discovery, Liveliness, Metadata, Outbound, Topic};
use crate::runtime::{ExternalRuntime, Runtime, RuntimeError, TaskRuntime};
use crate::sandbox::ScratchRoot;
use crate::state::{Journal, StateDir, StateError, Stored};
use crate::tasks::{FetchError, Fetcher, ManagerParts, TaskManager, heartbeat};
use crate::telemetry::{self, Metrics};
use crate::transport::{
    Encoded, MqttSession, PacketLimit, Publisher, SessionEvents, SessionParts, TransportError,
};

/// Messages that may wait for the MQTT client, in each of the publisher's queues.
const OUTBOUND_CAPACITY: usize = 1024;
/// Batches of handled messages whose acknowledgement may wait for the journal at once.
const ACKS_PENDING: usize = 64;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The MQTT session could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP client for image downloads could not be set up.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The heartbeat thread could not be started.
    #[error("cannot start the heartbeat thread: {0}")]
    Heartbeat(std::io::Error),
    /// The directory for task scratch directories could not be created.
    #[error("cannot create a scratch directory: {0}")]
    Scratch(std::io::Error),
    /// No state directory is configured and no default location exists.
    #[error(
        "no state directory: set PROPLET_STATE_DIR (no HOME, XDG_STATE_HOME or STATE_DIRECTORY to default to)"
    )]
    NoStateDir,
    /// The state directory or the journal cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The health and metrics endpoint could not listen.
    #[error("cannot serve PROPLET_METRICS_ADDR {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Runs a proplet until `shutdown` resolves, then drains and disconnects:
/// stop intake → let tasks finish (up to the drain timeout) → cancel the rest (each reports
/// `cancelled`) → publish offline → disconnect.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let state = StateDir::open(config.state_dir.as_deref().ok_or(WorkerError::NoStateDir)?)?;
    let workdir = state.workdir()?;
    let metrics = Metrics::new();
    let http_stop = CancellationToken::new();
    let http = match config.metrics_addr {
        Some(addr) => Some(
            telemetry::http::serve(addr, metrics.clone(), http_stop.clone())
                .await
                .map_err(|source| WorkerError::Metrics { addr, source })?,
        ),
        None => None,
    };
    // Held until the worker is done, drained tasks included.
    let _latency = config.cpu_latency.and_then(hold_latency);
    let running = Running::start(&config, workdir.path(), &state, metrics)?;
    shutdown.await;
    running.stop(config.tasks.drain_timeout).await;
    http_stop.cancel();
    if let Some(Err(e)) = match http {
        Some(task) => Some(task.await),
        None => None,
    } {
        warn!(error = %e, "the health and metrics endpoint task failed");
    }
    remove_workdir(workdir);
    Ok(())
}

/// Removes the working directory level by level, as scratch is: a guest's tree in it may be
/// deeper than a recursive removal can go. What is left goes with the next start.
fn remove_workdir(dir: tempfile::TempDir) {
    let path = dir.keep();
    if let Err(e) = crate::sandbox::remove_path(&path) {
        warn!(error = %e, dir = %path.display(), "cannot remove the working directory");
    }
}

/// Holds the CPU wake-up latency limit `PROPLET_CPU_LATENCY` asks for; one that cannot be
/// held is a warning, and the worker runs without it.
fn hold_latency(limit: Duration) -> Option<power::LatencyLimit> {
    match power::LatencyLimit::hold(limit) {
        Ok(held) => {
            let limit_us = held.limit().as_micros();
            info!(limit_us, "holding a CPU wake-up latency limit");
            Some(held)
        }
        Err(e) => {
            warn!(error = %e, device = power::DEVICE, "cannot hold the CPU wake-up latency limit PROPLET_CPU_LATENCY asks for; running without it");
            None
        }
    }
}

/// A started worker: the session, the manager and the two background loops.
struct Running {
    session: MqttSession,
    manager: TaskManager,
    /// Ends the heartbeat and dispatcher loops.
    stop: CancellationToken,
    /// Ends them too when the worker is dropped without [`Running::stop`] (its future
    /// aborted): the heartbeat's thread would otherwise outlive it, and a runtime being
    /// shut down waits for that thread for ever.
    _stop_on_drop: DropGuard,
    loops: [(&'static str, JoinHandle<()>); 2],
    offline: Outbound,
    /// Flushed last, so that the next process does not answer again what this one did.
    journal: Journal,
}

impl Running {
    fn start(
        config: &Config,
        workdir: &Path,
        state: &StateDir,
        metrics: Metrics,
    ) -> Result<Running, WorkerError> {
        let (journal, recovered) = Journal::open(state, metrics.clone())?;
        let runtime: Arc<dyn TaskRuntime> = match &config.tasks.external_runtime {
            // A daemon has no deadline: its CPU time is capped at the longest one allowed.
            Some(program) => Arc::new(Runtime::External(
                ExternalRuntime::new(program.clone(), workdir.to_path_buf())
                    .with_cpu_limit(config.budgets.max.timeout),
            )),
            None => Arc::new(Runtime::wasmtime(
                crate::runtime::CacheLimits {
                    entries: config.tasks.module_cache_entries,
                    bytes: config.tasks.module_cache_bytes,
                    disk: config.compile_cache(),
                },
                config.budgets.metering(),
                sandbox_limits(config),
                metrics.clone(),
                config.allocation(),
                ScratchRoot::create_in(workdir).map_err(WorkerError::Scratch)?,
            )),
        };
        let id = &config.identity;
        let discovery = Outbound::Discovery(Discovery {
            proplet_id: id.proplet_id.clone(),
            namespace: id.namespace.clone(),
            metadata: metadata(config, runtime.as_ref()),
        });
        let limit = PacketLimit::new(&config.mqtt, id);
        let (publisher, outbound) = Publisher::new(OUTBOUND_CAPACITY, limit);
        let offline = liveliness(config, "offline");
        let fetcher = Fetcher::new(&config.fetch, publisher.clone(), config.admission.clone());
        let parts = SessionParts {
            discovery,
            offline: offline.clone(),
            outbox: outbound,
            metrics: metrics.clone(),
            journal: journal.clone(),
            replay: replay(&recovered.outbox),
            known_texts: fetcher.known_texts(),
        };
        let (session, events) = MqttSession::start(&config.mqtt, id, parts)?;
        info!(proplet_id = %id.proplet_id, broker = %config.mqtt.address, runtime = %runtime.describe(), "proplet starting");
        let manager = TaskManager::new(ManagerParts {
            proplet_id: id.proplet_id.clone(),
            publisher: publisher.clone(),
            fetcher,
            runtime,
            budgets: config.budgets,
            policy: config.admission.clone(),
            settings: config.tasks.clone(),
            metrics: metrics.clone(),
            journal: journal.clone(),
        });
        manager.recover(recovered);
        let stop = CancellationToken::new();
        let beat = liveliness(config, "alive");
        let every = config.liveliness_interval;
        let samples = proplet_metrics(config, &publisher, &events.ready, &stop);
        let beats = heartbeat::run(
            publisher,
            beat,
            every,
            events.ready.clone(),
            stop.clone(),
            metrics,
        );
        // The process's metrics share the heartbeat's thread: neither waits for a burst.
        let beats = heartbeat::spawn(async move {
            tokio::join!(beats, samples);
        })
        .map_err(WorkerError::Heartbeat)?;
        let dispatcher = tokio::spawn(dispatch(
            manager.clone(),
            events,
            journal.clone(),
            stop.clone(),
        ));
        Ok(Running {
            session,
            manager,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            loops: [("heartbeat", beats), ("dispatcher", dispatcher)],
            offline,
            journal,
        })
    }

    async fn stop(self, drain: Duration) {
        info!(
            active = self.manager.active(),
            "shutting down: draining tasks"
        );
        self.session.stop_intake();
        self.manager.shutdown(drain).await;
        self.stop.cancel();
        for (name, task) in self.loops {
            if let Err(e) = task.await {
                warn!(error = %e, "{name} task failed");
            }
        }
        self.session.close(self.offline).await;
        if let Err(e) = self.journal.flushed().await {
            warn!(error = %e, "the task journal was not flushed");
        }
        info!("proplet stopped");
    }
}

/// The sandbox of every in-process task: its share of the process's file descriptors and
/// its scratch quota.
fn sandbox_limits(config: &Config) -> crate::sandbox::SandboxLimits {
    let concurrent = config.tasks.max_concurrent.get();
    crate::sandbox::SandboxLimits {
        handles: crate::sandbox::descriptors::handles_per_task(concurrent),
        scratch: crate::sandbox::ScratchQuota {
            bytes: config.tasks.scratch_bytes,
            ..Default::default()
        },
    }
}

/// The results a previous process left in the durable outbox, to be sent first.
fn replay(stored: &[Stored]) -> Vec<Encoded> {
    let mut replay = Vec::with_capacity(stored.len());
    for entry in stored {
        match Topic::from_suffix(&entry.topic) {
            Some(topic) => replay.push(Encoded::replay(topic, entry.payload.clone(), entry.seq)),
            None => warn!(topic = %entry.topic, "dropping an outbox entry for an unknown topic"),
        }
    }
    if !replay.is_empty() {
        info!(
            results = replay.len(),
            "publishing first the results a previous process left"
        );
    }
    replay
}

/// Hands every inbound message to the manager until stopped. Whatever has arrived is
/// handled in one go; once the journal holds every job it admitted, the session may
/// acknowledge those messages to the broker (one commit for a whole burst). The journal's
/// thread tells the session so itself, as soon as the commit is done, so that the next
/// messages are handled meanwhile and the acknowledgement waits for no task. Messages
/// delivered at QoS 0 are flushed the same way (a job they brought is on disk within the
/// flush's wait), but the session hears nothing of them: it has nothing to send.
async fn dispatch(
    manager: TaskManager,
    mut events: SessionEvents,
    journal: Journal,
    stop: CancellationToken,
) {
    // Bounded: should the disk stall, the dispatcher stops taking messages in, as the
    // broker stops sending them once they go unacknowledged.
    let pending = Arc::new(Semaphore::new(ACKS_PENDING));
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            msg = events.inbound.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let mut last = first.0.awaits_acknowledgement().then_some(first.0);
        manager.handle(first.1);
        while let Ok((delivery, msg)) = events.inbound.try_recv() {
            manager.handle(msg);
            last = delivery
                .awaits_acknowledgement()
                .then_some(delivery)
                .or(last);
        }
        let Ok(permit) = pending.clone().acquire_owned().await else {
            break;
        };
        let handled = events.handled.clone();
        journal.acknowledgeable_then(move |flushed| {
            if let Err(e) = flushed {
                warn!(error = %e, "the task journal could not be written; acknowledging anyway");
            }
            // Messages delivered at QoS 0 are acknowledged to nobody: the session is not
            // woken for them.
            if let Some(last) = last {
                handled.through(last);
            }
            drop(permit);
        });
    }
    // Every acknowledgement asked for is with the session before the worker goes on.
    if pending.acquire_many(ACKS_PENDING as u32).await.is_err() {
        warn!("the acknowledgements' semaphore was closed");
    }
}

fn liveliness(config: &Config, status: &'static str) -> Outbound {
    let id = &config.identity;
    Outbound::Liveliness(Liveliness {
        proplet_id: id.proplet_id.clone(),
        status,
        namespace: id.namespace.clone(),
    })
}

fn metadata(config: &Config, runtime: &dyn TaskRuntime) -> Metadata {
    Metadata {
        description: config.metadata.description.clone(),
        tags: config.metadata.tags.clone(),
        location: config.metadata.location.clone(),
        os: std::env::consts::OS.into(),
        cpu_arch: std::env::consts::ARCH.into(),
        hostname: telemetry::hostname(),
        proplet_version: env!("CARGO_PKG_VERSION").into(),
        wasm_runtime: runtime.describe(),
        instance_allocator: runtime.allocator(),
    }
}

/// The loop of `control/proplet/metrics`, or nothing when monitoring is off or its interval
/// is zero.
fn proplet_metrics(
    config: &Config,
    publisher: &Publisher,
    ready: &tokio::sync::watch::Receiver<u64>,
    stop: &CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let every = config.tasks.metrics_interval;
    let on = config.tasks.monitoring && !every.is_zero();
    let samples = on.then(|| {
        crate::tasks::monitor::proplet_metrics(
            publisher.clone(),
            config.identity.proplet_id.clone(),
            config.identity.namespace.clone(),
            every,
            ready.clone(),
            stop.clone(),
        )
    });
    async move {
        if let Some(samples) = samples {
            samples.await;
        }
    }
}
