//! The MQTT session: one task, on a thread of its own, drives the connection. rumqttc
//! connects and keeps the protocol state (packet ids, QoS 2 exchanges); we choose what is
//! sent, when, and under which packet id, so that an acknowledgement names exactly the
//! message it delivers.
//!
//! Rules kept here (docs/protocol.md §8):
//! - the loop never waits on anything but the network, the outbox, its commands and the
//!   keep-alive: decoded messages go to the task manager through a queue that never makes
//!   it wait; reconnection is connecting again after a capped, jittered backoff;
//! - a waiting heartbeat goes before anything else; while every packet id awaits the
//!   broker's acknowledgement (as under a burst) heartbeats still go out, at QoS 0, which
//!   needs no packet id — so no burst can starve heartbeats;
//! - after every CONNACK we subscribe to start, stop, invoke and registry chunks first, send
//!   again what was not acknowledged, and only once the SUBACK arrives do we announce
//!   ourselves (discovery) and signal `ready`, so no start sent in answer to our discovery
//!   can be missed;
//! - a result stored in the durable outbox leaves it only when the broker acknowledged it
//!   (PUBACK, or PUBCOMP at QoS 2; at QoS 0, once written); what a previous process left
//!   there is sent first, in order;
//! - a QoS 2 release (PUBREL) the broker re-sends for a message this process never
//!   received (a previous process acknowledged it and died) is expected on the next
//!   connection and completed, instead of ending every connection;
//! - a Last Will on the alive topic tells the manager we went away uncleanly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, NetworkOptions, Packet,
    Publish, QoS, Request, StateError, Subscribe, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::{Backoff, Encoded, Outbox, TransportError};
use crate::config::{Identity, MqttConfig};
use crate::protocol::{self, Inbound, KnownTexts, Outbound, Rejected, Topic, Topics};
use crate::state::Journal;
use crate::telemetry::Metrics;

/// What the session hands to the worker.
pub struct SessionEvents {
    /// Decoded (or rejected) messages on the subscribed topics, numbered in delivery order.
    ///
    /// Unbounded on purpose: the session must never wait for room (that would stall the
    /// keep-alive and every publish), and must not drop a start that needs an answer. The
    /// reader hands each message to the task manager, which never blocks (it answers
    /// `overloaded` itself), so the queue drains as fast as the broker delivers.
    pub inbound: mpsc::UnboundedReceiver<(Delivery, Result<Inbound, Rejected>)>,
    /// Bumped each time the session is (re)subscribed and announced.
    pub ready: watch::Receiver<u64>,
    /// Where the reader says how far it has handled the messages.
    pub handled: Handled,
}

/// A message's place in the order of delivery, and whether the broker waits for its
/// acknowledgement (not for a message delivered at QoS 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivery {
    seq: u64,
    acknowledged: bool,
}

impl Delivery {
    /// Whether the broker waits for this message's acknowledgement: only then does the
    /// session need to hear that it is handled.
    pub fn awaits_acknowledgement(&self) -> bool {
        self.acknowledged
    }
}

/// Tells the session that every message up to a [`Delivery`] is handled — for a start,
/// written down in the journal — so that the broker may now be told (PUBACK, or PUBREC at
/// QoS 2). Until then the broker keeps each one, and delivers it again to the next process
/// should this one die.
#[derive(Debug, Clone)]
pub struct Handled(mpsc::UnboundedSender<Delivery>);

impl Handled {
    /// Every message up to `delivery` is handled.
    pub fn through(&self, delivery: Delivery) {
        if self.0.send(delivery).is_err() {
            debug!("the MQTT session has ended; nothing left to acknowledge");
        }
    }
}

/// What a session is made of, besides its configuration.
pub struct SessionParts {
    /// Announced after every subscription.
    pub discovery: Outbound,
    /// The Last Will (and what [`MqttSession::close`] publishes).
    pub offline: Outbound,
    /// The receiving end of the worker's [`super::Publisher`].
    pub outbox: Outbox,
    /// Connection state and reconnects.
    pub metrics: Metrics,
    /// Where delivered results are removed from the durable outbox.
    pub journal: Journal,
    /// Results a previous process left in the durable outbox, sent first, in order.
    pub replay: Vec<Encoded>,
    /// Inline binaries' texts the worker holds: a start that repeats one shares it.
    pub known_texts: Arc<dyn KnownTexts>,
}

/// A running MQTT session.
pub struct MqttSession {
    commands: mpsc::UnboundedSender<Command>,
    topics: Topics,
    intake_open: Arc<AtomicBool>,
    task: JoinHandle<()>,
    /// Ends the session's thread at once if the session is dropped without
    /// [`MqttSession::close`] (its owner was aborted): nobody is left to flush for.
    abandoned: DropGuard,
}

/// What the worker asks of a running session.
enum Command {
    /// Stop receiving on these topics.
    Unsubscribe(Vec<String>),
    /// Send what is queued and then this, wait for the acknowledgements, disconnect.
    Close(Box<Outbound>),
}

impl MqttSession {
    /// Connects (in the background) and starts serving.
    pub fn start(
        cfg: &MqttConfig,
        identity: &Identity,
        parts: SessionParts,
    ) -> Result<(MqttSession, SessionEvents), TransportError> {
        let topics = Topics::new(&identity.tenant_id, &identity.channel_id);
        let options = options(cfg, identity, &topics, &parts.offline)?;
        let mut el = EventLoop::new(options, 1);
        el.network_options = network_options(cfg);
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(0);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (handled, handled_rx) = mpsc::unbounded_channel();
        let intake_open = Arc::new(AtomicBool::new(true));
        let abandoned = CancellationToken::new();
        parts.metrics.replayed(parts.replay.len() as u64);
        let st = LoopState {
            clean_session: cfg.clean_session,
            topics: topics.clone(),
            qos: qos(cfg.qos),
            keep_alive: cfg.keep_alive,
            timeout: cfg.timeout,
            max_packet_size: cfg.max_packet_size,
            discovery: Encoded::new(&parts.discovery),
            inbound_tx,
            ready_tx,
            intake_open: intake_open.clone(),
            metrics: parts.metrics,
            journal: parts.journal,
            known_texts: parts.known_texts,
            abandoned: abandoned.clone(),
            failures: Failures::default(),
            inflight: Inflight::new(cfg.inflight),
            backlog: parts.replay.into(),
            closing: None,
            outbox_open: true,
            announced: false,
            control: VecDeque::new(),
            delivered: 0,
            unacknowledged: VecDeque::new(),
            written_once: Vec::new(),
        };
        let inputs = Inputs {
            outbox: parts.outbox,
            commands: commands_rx,
            handled: handled_rx,
            handled_open: true,
        };
        let task = on_own_thread(run_loop(el, st, inputs))?;
        let session = MqttSession {
            commands,
            topics,
            intake_open,
            task,
            abandoned: abandoned.drop_guard(),
        };
        let events = SessionEvents {
            inbound,
            ready,
            handled: Handled(handled),
        };
        Ok((session, events))
    }

    /// Stops intake of new work: unsubscribes from starts and invokes (stops and registry
    /// chunks still arrive, for the tasks that are draining).
    pub fn stop_intake(&self) {
        self.intake_open.store(false, Ordering::Relaxed);
        let topics = [Topic::Start, Topic::Invoke].map(|t| self.topics.render(t));
        if self
            .commands
            .send(Command::Unsubscribe(topics.into()))
            .is_err()
        {
            warn!("could not unsubscribe: the MQTT session has ended");
        }
    }

    /// Publishes what is still queued, then `offline`, waits for the broker to acknowledge
    /// everything (at most the MQTT timeout), and disconnects. With the broker away it
    /// ends at once: every result waiting is in the durable outbox, for the next start.
    pub async fn close(self, offline: Outbound) {
        self.abandoned.disarm();
        if self
            .commands
            .send(Command::Close(Box::new(offline)))
            .is_err()
        {
            warn!("the MQTT session had already ended");
        }
        if let Err(e) = self.task.await {
            warn!(error = %e, "the MQTT session's thread failed");
        }
    }
}

/// The QoS of a configured level (0, 1, anything else 2).
pub(super) fn qos(level: u8) -> QoS {
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
        .set_max_packet_size(read_limit(cfg.max_packet_size), cfg.max_packet_size)
        .set_inflight(cfg.inflight)
        .set_request_channel_capacity(cfg.request_channel_capacity)
        // Acknowledged once the worker has handled (and journaled) each message.
        .set_manual_acks(true)
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

/// The largest packet read: [`OVERSIZE_READ`] times the configured limit (within MQTT's
/// own), so that a start a little too large (a big inline binary) is read far enough to be
/// answered `invalid` by its id; a larger one ends the connection and is dropped.
fn read_limit(max_packet_size: usize) -> usize {
    max_packet_size
        .saturating_mul(OVERSIZE_READ)
        .min(MQTT_MAX_PACKET)
        .max(max_packet_size)
}

/// How many times `PROPLET_MQTT_MAX_PACKET_SIZE` an incoming packet may be, to be refused
/// with an answer rather than dropped.
pub const OVERSIZE_READ: usize = 4;

/// The largest packet MQTT can carry (its remaining length is at most 268,435,455 bytes).
const MQTT_MAX_PACKET: usize = 268_435_460;

/// TCP_NODELAY on: without it every QoS 1/2 exchange waits on Nagle and delayed ACKs
/// (about 40 ms per hop).
fn network_options(cfg: &MqttConfig) -> NetworkOptions {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(cfg.timeout.as_secs().max(1));
    net
}

/// Runs the session on a thread of its own with a small runtime of its own (I/O and
/// timers): the OS schedules it, so sending heartbeats, reading, acknowledging and
/// keep-alive never wait in the shared runtime's run queue behind thousands of tasks (as
/// under a burst of starts).
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

/// Everything the session loop owns besides the `EventLoop`, the outbox and its commands.
struct LoopState {
    /// The configured clean-session flag (overridden once to drop an oversized message).
    clean_session: bool,
    topics: Topics,
    qos: QoS,
    keep_alive: Duration,
    /// The MQTT timeout: for a flush, and for closing.
    timeout: Duration,
    /// `PROPLET_MQTT_MAX_PACKET_SIZE`: a larger message is refused (answered, when it
    /// names a task).
    max_packet_size: usize,
    discovery: Encoded,
    inbound_tx: mpsc::UnboundedSender<(Delivery, Result<Inbound, Rejected>)>,
    ready_tx: watch::Sender<u64>,
    intake_open: Arc<AtomicBool>,
    /// Connection state and reconnects, for `/readyz` and `/metrics`.
    metrics: Metrics,
    /// Where acknowledged results leave the durable outbox.
    journal: Journal,
    /// Inline texts a start may share instead of a copy of its own.
    known_texts: Arc<dyn KnownTexts>,
    /// Fired when the session is dropped without being closed.
    abandoned: CancellationToken,
    /// Connection failures, logged once per kind.
    failures: Failures,
    /// Publishes awaiting acknowledgement, by packet id.
    inflight: Inflight,
    /// Taken from the outbox (or replayed), not yet sent: sent before the outbox is read
    /// again.
    backlog: VecDeque<Encoded>,
    /// Once closing: by when everything must be acknowledged.
    closing: Option<Instant>,
    /// Whether a [`super::Publisher`] is still there (and the session is not closing).
    outbox_open: bool,
    /// Whether this connection has subscribed and announced.
    announced: bool,
    /// Requests other than publishes (an unsubscription, acknowledgements), sent before
    /// the backlog.
    control: VecDeque<Request>,
    /// Messages delivered so far (across connections).
    delivered: u64,
    /// Messages of this connection handed to the worker and not yet acknowledged: their
    /// delivery, packet id and QoS.
    unacknowledged: VecDeque<(Delivery, u16, QoS)>,
    /// Stored results written at QoS 0 and not yet flushed: delivered once flushed.
    written_once: Vec<u64>,
}

/// What the session loop reads besides the network.
struct Inputs {
    /// Messages to publish.
    outbox: Outbox,
    /// The owner's commands.
    commands: mpsc::UnboundedReceiver<Command>,
    /// How far the worker has handled the messages delivered.
    handled: mpsc::UnboundedReceiver<Delivery>,
    /// Whether the worker's reader is still there.
    handled_open: bool,
}

mod event_loop;
mod failures;
mod inflight;
use event_loop::run_loop;
use failures::Failures;
use inflight::Inflight;
