//! The MQTT session: one task owns rumqttc's `EventLoop`; another forwards the messages
//! queued in the [`Outbox`] to the client. Each runs on a thread of its own.
//!
//! Rules kept here (rumqttc's contract and docs/protocol.md §8):
//! - the event loop never awaits anything but the next event inside its poll loop: what it
//!   sends itself (subscriptions, the announcement, an expedited heartbeat) goes straight
//!   into the event loop's own queue, never a bounded channel, and decoded messages go to
//!   the task manager through a queue that never makes it wait; reconnection is polling
//!   again after a capped, jittered backoff;
//! - the forwarder takes a waiting heartbeat before anything else, then results and
//!   refusals in turn (see [`super::Publisher`]); and while rumqttc takes no publish from
//!   its queue (every in-flight slot awaits the broker's acknowledgement, as under a burst)
//!   the event loop puts the heartbeat in front of everything at QoS 0, which needs no
//!   slot — so no burst can starve heartbeats;
//! - after every CONNACK we subscribe to start, stop, invoke and registry chunks, and only
//!   once the SUBACK arrives do we announce ourselves (discovery) and signal `ready`, so no
//!   start sent in answer to our discovery can be missed;
//! - publishes not acknowledged when a connection dies are replayed on the next one, even
//!   when the broker lost our session (rumqttc drops them in that case);
//! - a QoS 2 release (PUBREL) the broker re-sends for a message this process never
//!   received (a previous process acknowledged it and died) is expected on the next
//!   connection and completed, instead of ending every connection;
//! - a Last Will on the alive topic tells the manager we went away uncleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, Request, StateError, Subscribe, SubscribeFilter,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::{Backoff, Encoded, Outbox, TransportError};
use crate::config::{Identity, MqttConfig};
use crate::protocol::{self, Inbound, Outbound, Rejected, Topic, Topics};
use crate::telemetry::Metrics;

/// What the session hands to the worker.
pub struct SessionEvents {
    /// Decoded (or rejected) messages on the subscribed topics.
    ///
    /// Unbounded on purpose: the event loop must never wait for room (that would stall the
    /// keep-alive and every publish), and must not drop a start that needs an answer. The
    /// reader hands each message to the task manager, which never blocks (it answers
    /// `overloaded` itself), so the queue drains as fast as the broker delivers.
    pub inbound: mpsc::UnboundedReceiver<Result<Inbound, Rejected>>,
    /// Bumped each time the session is (re)subscribed and announced.
    pub ready: watch::Receiver<u64>,
}

/// A running MQTT session.
pub struct MqttSession {
    client: AsyncClient,
    topics: Topics,
    intake_open: Arc<AtomicBool>,
    close_tx: oneshot::Sender<Outbound>,
    forwarder: JoinHandle<()>,
    event_loop: JoinHandle<()>,
    /// Ends the event loop's thread at once if the session is dropped without
    /// [`MqttSession::close`] (its owner was aborted): nobody is left to flush for.
    abandoned: DropGuard,
}

/// Shared between the forwarder and the event loop to know when everything went out.
#[derive(Default)]
struct Flush {
    enqueued: AtomicU64,
}

impl MqttSession {
    /// Connects (in the background) and starts serving. `outbound` is the receiving end of
    /// the worker's [`super::Publisher`]; `discovery` is announced after every subscription.
    pub fn start(
        cfg: &MqttConfig,
        identity: &Identity,
        discovery: Outbound,
        offline: Outbound,
        outbound: Outbox,
        metrics: Metrics,
    ) -> Result<(MqttSession, SessionEvents), TransportError> {
        let topics = Topics::new(&identity.tenant_id, &identity.channel_id);
        let qos = qos(cfg.qos);
        let options = options(cfg, identity, &topics, &offline)?;
        let (client, mut eventloop) = AsyncClient::new(options, cfg.request_channel_capacity);
        eventloop.set_network_options(network_options(cfg));
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(0);
        let (close_tx, close_rx) = oneshot::channel();
        let (finish_tx, finish_rx) = oneshot::channel();
        let flush = Arc::new(Flush::default());
        let intake_open = Arc::new(AtomicBool::new(true));
        let heartbeats = outbound.heartbeats();
        let abandoned = CancellationToken::new();
        let state = LoopState {
            client: client.clone(),
            clean_session: cfg.clean_session,
            topics: topics.clone(),
            qos,
            discovery: discovery.encode(),
            inbound_tx,
            ready_tx,
            intake_open: intake_open.clone(),
            announced: false,
            saved: Vec::new(),
            published: 0,
            flush: flush.clone(),
            metrics,
            heartbeats,
            abandoned: abandoned.clone(),
            unreleased: Vec::new(),
            failures: Failures::default(),
        };
        let fwd = Forwarder {
            client: client.clone(),
            topics: topics.clone(),
            qos,
            flush,
        };
        let event_loop = on_own_thread(run_loop(eventloop, state, finish_rx, cfg.timeout))?;
        let forwarder = on_own_thread(fwd.run(outbound, close_rx, finish_tx))?;
        let session = MqttSession {
            client,
            topics,
            intake_open,
            close_tx,
            forwarder,
            event_loop,
            abandoned: abandoned.drop_guard(),
        };
        Ok((session, SessionEvents { inbound, ready }))
    }

    /// Stops intake of new work: unsubscribes from starts and invokes (stops and registry
    /// chunks still arrive, for the tasks that are draining).
    pub fn stop_intake(&self) {
        self.intake_open.store(false, Ordering::Relaxed);
        for topic in [Topic::Start, Topic::Invoke] {
            if let Err(e) = self.client.try_unsubscribe(self.topics.render(topic)) {
                warn!(error = %e, "could not unsubscribe from {}", topic.suffix());
            }
        }
    }

    /// Publishes what is still queued, then `offline`, waits for the broker to acknowledge
    /// everything (at most the MQTT timeout), and disconnects.
    pub async fn close(self, offline: Outbound) {
        // An orderly close: the event loop flushes, then ends by itself.
        self.abandoned.disarm();
        if self.close_tx.send(offline).is_err() {
            warn!("MQTT forwarder already stopped");
        }
        for (name, thread) in [
            ("forwarder", self.forwarder),
            ("event loop", self.event_loop),
        ] {
            if let Err(e) = thread.await {
                warn!(error = %e, "MQTT {name} thread failed");
            }
        }
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn options(
    cfg: &MqttConfig,
    identity: &Identity,
    topics: &Topics,
    offline: &Outbound,
) -> Result<MqttOptions, TransportError> {
    let mut o = MqttOptions::new(&identity.client_id, &cfg.address.host, cfg.address.port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(cfg.clean_session)
        .set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size)
        .set_inflight(cfg.inflight)
        .set_request_channel_capacity(cfg.request_channel_capacity)
        .set_last_will(LastWill::new(
            topics.render(Topic::Alive),
            offline.encode(),
            qos(cfg.qos),
            false,
        ));
    o.set_credentials(
        identity.proplet_id.clone(),
        identity.api_key.clone().unwrap_or_default(),
    );
    if cfg.address.tls {
        o.set_transport(tls_transport(cfg)?);
    }
    Ok(o)
}

/// TCP_NODELAY on: without it every QoS 1/2 exchange waits on Nagle and delayed ACKs
/// (about 40 ms per hop).
fn network_options(cfg: &MqttConfig) -> NetworkOptions {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(cfg.timeout.as_secs().max(1));
    net
}

/// Runs a session task (the forwarder or the event loop) on a thread of its own with a
/// small runtime of its own (I/O and timers): the OS schedules it, so handing over
/// heartbeats, reading, acknowledging and keep-alive never wait in the shared runtime's run
/// queue behind thousands of tasks (as under a burst of starts).
fn on_own_thread(
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, TransportError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TransportError::Runtime)?;
    Ok(tokio::task::spawn_blocking(move || runtime.block_on(task)))
}

/// Always our own rustls configuration (configured CA or system roots, `ring` provider):
/// rumqttc's default one needs a process-wide crypto provider and panics without one.
fn tls_transport(cfg: &MqttConfig) -> Result<Transport, TransportError> {
    let config = super::tls::client_config(&cfg.tls)?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(config)))
}

/// Takes queued messages (heartbeats first) and hands them to the client.
struct Forwarder {
    client: AsyncClient,
    topics: Topics,
    qos: QoS,
    flush: Arc<Flush>,
}

impl Forwarder {
    async fn run(
        self,
        mut outbox: Outbox,
        mut close: oneshot::Receiver<Outbound>,
        finish: oneshot::Sender<()>,
    ) {
        let mut offline = None;
        loop {
            tokio::select! {
                biased;
                msg = outbox.recv() => match msg {
                    Some(msg) => self.publish(msg).await,
                    None => break,
                },
                last = &mut close => {
                    while let Some(msg) = outbox.try_recv() {
                        self.publish(msg).await;
                    }
                    offline = last.ok();
                    break;
                }
            }
        }
        // Signal the event loop first, then hand over the offline notice: its publish wakes
        // the loop, which then sees that it is closing. (The loop may already be gone if
        // the session failed for good.)
        finish.send(()).ok();
        if let Some(offline) = offline {
            self.publish(Encoded::new(&offline)).await;
        }
    }

    /// Hands `msg` to the client (already checked against the packet limit by the
    /// [`super::Publisher`], except the small offline notice).
    async fn publish(&self, msg: Encoded) {
        let suffix = msg.topic().suffix();
        let topic = self.topics.render(msg.topic());
        // Count before handing over, so the event loop never sees more publishes than this.
        self.flush.enqueued.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .client
            .publish(topic, self.qos, false, msg.into_payload())
            .await;
        if let Err(e) = sent {
            self.flush.enqueued.fetch_sub(1, Ordering::Relaxed);
            warn!(error = %e, "dropping {suffix} message: MQTT client closed");
        }
    }
}

/// Everything the event loop task owns besides the `EventLoop` itself.
struct LoopState {
    client: AsyncClient,
    /// The configured clean-session flag (overridden once to drop an oversized message).
    clean_session: bool,
    topics: Topics,
    qos: QoS,
    discovery: Vec<u8>,
    inbound_tx: mpsc::UnboundedSender<Result<Inbound, Rejected>>,
    ready_tx: watch::Sender<u64>,
    intake_open: Arc<AtomicBool>,
    /// Whether this connection has subscribed and announced.
    announced: bool,
    /// Publishes that were not acknowledged when the last connection died.
    saved: Vec<Publish>,
    /// Publishes written to the network (for the shutdown flush).
    published: u64,
    flush: Arc<Flush>,
    /// Connection state and reconnects, for `/readyz` and `/metrics`.
    metrics: Metrics,
    /// Heartbeats, for when the client's queue is closed to publishes (see
    /// `expedite_heartbeat`).
    heartbeats: watch::Receiver<Option<Encoded>>,
    /// Fired when the session is dropped without being closed.
    abandoned: CancellationToken,
    /// Packet ids of QoS 2 messages whose release the broker re-sent unexpectedly.
    unreleased: Vec<u16>,
    /// Connection failures, logged once per kind.
    failures: Failures,
}

mod event_loop;
mod failures;
use event_loop::run_loop;
use failures::Failures;
