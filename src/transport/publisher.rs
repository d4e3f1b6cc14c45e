//! The [`Publisher`]: where the rest of the worker hands messages to the MQTT session.
//!
//! Every message is encoded and measured here, once, against the session's packet limit
//! (topic and MQTT header included). One that would not fit is refused with
//! [`TransportError::TooLarge`] and never reaches the MQTT client: rumqttc stores a QoS 1/2
//! publish before its own size check fails, and would replay it on every reconnect.
//!
//! Messages travel in three lanes, so that none starves another:
//! - heartbeats: a single slot (a newer beat replaces one not yet sent), always taken first;
//! - refusals (`overloaded` answers): a queue of their own, so a burst of refusals cannot
//!   hold back the results of tasks that ran;
//! - everything else (results, registry requests): the main queue.
//!
//! The [`Outbox`] (read by the session, or by unit tests) takes the two queues in turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{Outbox, TransportError};
use crate::config::{Identity, MqttConfig};
use crate::protocol::{ErrorKind, Outbound, Topic, Topics};

/// Which lane a message travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Heartbeat,
    Refusal,
    Main,
}

impl Lane {
    fn of(msg: &Outbound) -> Lane {
        let kind = match msg {
            Outbound::Liveliness(_) => return Lane::Heartbeat,
            Outbound::Result(r) => r.outcome.error_kind,
            Outbound::InvokeResult(r) => r.outcome.error_kind,
            Outbound::Discovery(_)
            | Outbound::BinaryRequest(_)
            | Outbound::PropletMetrics(_)
            | Outbound::TaskMetrics(_) => None,
        };
        match kind {
            Some(ErrorKind::Overloaded) => Lane::Refusal,
            _ => Lane::Main,
        }
    }
}

/// A message ready for the wire: where it goes, its encoded payload and, for a result kept
/// in the durable outbox, its place there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    topic: Topic,
    payload: Bytes,
    lane: Lane,
    stored: Option<u64>,
}

impl Encoded {
    /// Encodes `msg` without checking its size.
    pub(super) fn new(msg: &Outbound) -> Encoded {
        Encoded {
            topic: msg.topic(),
            payload: Bytes::from(msg.encode()),
            lane: Lane::of(msg),
            stored: None,
        }
    }

    /// An encoded result for `topic` (published again, or replayed).
    pub fn from_parts(topic: Topic, payload: Vec<u8>) -> Encoded {
        Encoded {
            topic,
            payload: Bytes::from(payload),
            lane: Lane::Main,
            stored: None,
        }
    }

    /// A result a previous process left in the durable outbox as entry `seq`.
    pub fn replay(topic: Topic, payload: Vec<u8>, seq: u64) -> Encoded {
        Encoded::from_parts(topic, payload).stored_as(seq)
    }

    /// The same message, stored in the durable outbox as entry `seq`: the session removes
    /// it from there once the broker has acknowledged it.
    pub fn stored_as(self, seq: u64) -> Encoded {
        Encoded {
            stored: Some(seq),
            ..self
        }
    }

    /// Its entry in the durable outbox, if it is kept there.
    pub fn stored(&self) -> Option<u64> {
        self.stored
    }

    /// Where the message goes.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// The encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, shared (cheap to clone).
    pub(super) fn bytes(&self) -> Bytes {
        self.payload.clone()
    }
}

/// The largest MQTT packet the session may send, and how to measure one.
#[derive(Debug, Clone)]
pub struct PacketLimit {
    topics: Topics,
    max_packet_size: usize,
}

impl PacketLimit {
    /// The limit of the session configured by `cfg` for `identity`.
    pub fn new(cfg: &MqttConfig, identity: &Identity) -> Self {
        PacketLimit {
            topics: Topics::new(&identity.tenant_id, &identity.channel_id),
            max_packet_size: cfg.max_packet_size,
        }
    }

    /// The size of the PUBLISH packet carrying `payload` bytes on `topic`, as rumqttc
    /// measures it against the limit: the fixed header (a type byte and 1–4 length bytes),
    /// the topic with its 2-byte length, the 2-byte packet id (counted even at QoS 0) and
    /// the payload.
    fn packet_size(&self, topic: Topic, payload: usize) -> usize {
        let remaining = 2 + self.topics.render(topic).len() + 2 + payload;
        1 + length_bytes(remaining) + remaining
    }

    fn check(&self, encoded: &Encoded) -> Result<(), TransportError> {
        let size = self.packet_size(encoded.topic, encoded.payload.len());
        if size > self.max_packet_size {
            return Err(TransportError::TooLarge {
                size,
                limit: self.max_packet_size,
            });
        }
        Ok(())
    }
}

/// Bytes of MQTT's variable-length encoding of `n`.
fn length_bytes(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cloneable handle that queues messages for the MQTT session.
#[derive(Debug, Clone)]
pub struct Publisher {
    main: mpsc::Sender<Encoded>,
    refusals: mpsc::Sender<Encoded>,
    heartbeat: Arc<watch::Sender<Option<Encoded>>>,
    /// `None` only for unit tests that read the [`Outbox`] directly.
    limit: Option<PacketLimit>,
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// A publisher whose messages are checked against `limit`, and its [`Outbox`]. Each
    /// queue holds `capacity` messages.
    pub fn new(capacity: usize, limit: PacketLimit) -> (Publisher, Outbox) {
        Publisher::build(capacity, Some(limit))
    }

    /// A publisher with no size limit, and its [`Outbox`] (for unit tests).
    pub fn channel(capacity: usize) -> (Publisher, Outbox) {
        Publisher::build(capacity, None)
    }

    fn build(capacity: usize, limit: Option<PacketLimit>) -> (Publisher, Outbox) {
        let (main, main_rx) = mpsc::channel(capacity.max(1));
        let (refusals, refusals_rx) = mpsc::channel(capacity.max(1));
        let (heartbeat, heartbeat_rx) = watch::channel(None);
        let publisher = Publisher {
            main,
            refusals,
            heartbeat: Arc::new(heartbeat),
            limit,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let outbox = Outbox::new(heartbeat_rx, main_rx, refusals_rx);
        (publisher, outbox)
    }

    /// Encodes `msg` and checks that it fits in one MQTT packet: [`TransportError::TooLarge`]
    /// if not.
    pub fn encode(&self, msg: &Outbound) -> Result<Encoded, TransportError> {
        let encoded = Encoded::new(msg);
        match &self.limit {
            Some(limit) => limit.check(&encoded).map(|()| encoded),
            None => Ok(encoded),
        }
    }

    /// Queues an encoded message in its lane, waiting for room (a heartbeat never waits).
    pub async fn send_encoded(&self, msg: Encoded) -> Result<(), TransportError> {
        let Some(queue) = self.queue(msg.lane) else {
            return self.beat(msg).map_err(|(_, e)| e);
        };
        queue.send(msg).await.map_err(|_| TransportError::Closed)
    }

    /// Queues an encoded message in its lane if there is room right now, without waiting
    /// and from any thread; otherwise gives it back with the reason
    /// ([`TransportError::Full`] or [`TransportError::Closed`]).
    pub fn try_send_encoded(&self, msg: Encoded) -> Result<(), (Encoded, TransportError)> {
        let Some(queue) = self.queue(msg.lane) else {
            return self.beat(msg);
        };
        queue.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(msg) => (msg, TransportError::Full),
            mpsc::error::TrySendError::Closed(msg) => (msg, TransportError::Closed),
        })
    }

    /// Encodes, checks and queues `msg`, waiting for room. Results and other must-deliver
    /// messages use this.
    pub async fn send(&self, msg: Outbound) -> Result<(), TransportError> {
        let encoded = self.encode(&msg)?;
        self.send_encoded(encoded).await
    }

    /// Queues `msg` if there is room right now; otherwise drops it and counts the drop.
    /// A heartbeat always has room: it replaces one not yet sent.
    pub fn try_send(&self, msg: Outbound) -> Result<(), TransportError> {
        let encoded = self.encode(&msg)?;
        let Some(queue) = self.queue(encoded.lane) else {
            return self.beat(encoded).map_err(|(_, e)| e);
        };
        queue.try_send(encoded).map_err(|e| {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => TransportError::Full,
                mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
            }
        })
    }

    /// The queue of `lane`; none for the heartbeat, which has a slot of its own.
    fn queue(&self, lane: Lane) -> Option<&mpsc::Sender<Encoded>> {
        match lane {
            Lane::Heartbeat => None,
            Lane::Refusal => Some(&self.refusals),
            Lane::Main => Some(&self.main),
        }
    }

    /// Puts `msg` in the heartbeat's slot, in place of one not yet sent; gives it back if
    /// the session is gone.
    fn beat(&self, msg: Encoded) -> Result<(), (Encoded, TransportError)> {
        if self.heartbeat.is_closed() {
            return Err((msg, TransportError::Closed));
        }
        if self.heartbeat.send_replace(Some(msg)).is_some() {
            // The previous beat is replaced; if it was never taken, it is lost.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Messages dropped by [`Publisher::try_send`].
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BinaryRequest, Liveliness, TaskResult};

    fn result(id: &str, kind: Option<ErrorKind>, text: &str) -> Outbound {
        let outcome = match kind {
            Some(kind) => crate::protocol::Outcome::failed(kind, text.into()),
            None => crate::protocol::Outcome::ok(text.into()),
        };
        Outbound::Result(TaskResult {
            task_id: id.into(),
            proplet_id: "p".into(),
            outcome,
        })
    }

    fn beat() -> Outbound {
        Outbound::Liveliness(Liveliness {
            proplet_id: "p".into(),
            status: "alive",
            namespace: "default".into(),
        })
    }

    fn limit(max_packet_size: usize) -> PacketLimit {
        PacketLimit {
            topics: Topics::new("tenant", "channel"),
            max_packet_size,
        }
    }

    #[test]
    fn the_packet_size_is_what_rumqttc_checks() {
        let limit = limit(1 << 20);
        for payload in [0, 1, 100, 127, 128, 16_300, 16_400, 70_000, 2_100_000] {
            let mut publish = rumqttc::Publish::new(
                limit.topics.render(Topic::Results),
                rumqttc::QoS::ExactlyOnce,
                vec![b'x'; payload],
            );
            publish.pkid = 1;
            assert_eq!(
                limit.packet_size(Topic::Results, payload),
                publish.size(),
                "{payload}"
            );
        }
    }

    #[tokio::test]
    async fn a_message_over_the_packet_limit_is_refused_and_never_queued() {
        let fits = result("t", None, "ok");
        let size = Encoded::new(&fits).payload.len();
        let overhead = limit(0).packet_size(Topic::Results, size) - size;
        let (publisher, mut outbox) = Publisher::new(4, limit(overhead + size));
        publisher.send(fits).await.expect("fits exactly");
        let err = publisher
            .send(result("t", None, "ok!"))
            .await
            .expect_err("one byte over");
        assert!(
            matches!(err, TransportError::TooLarge { size: s, limit: l } if s == l + 1),
            "{err}"
        );
        assert!(outbox.try_recv().is_some());
        assert!(
            outbox.try_recv().is_none(),
            "the oversized one was not queued"
        );
    }

    #[tokio::test]
    async fn a_heartbeat_jumps_full_queues_and_replaces_an_unsent_one() {
        let (publisher, mut outbox) = Publisher::channel(2);
        for n in 0..2 {
            publisher
                .try_send(result(&format!("r{n}"), None, "1"))
                .expect("room");
            let refusal = result(&format!("o{n}"), Some(ErrorKind::Overloaded), "full");
            publisher.try_send(refusal).expect("room");
        }
        let registry = Outbound::BinaryRequest(BinaryRequest {
            app_name: "x".into(),
        });
        assert!(matches!(
            publisher.try_send(registry),
            Err(TransportError::Full)
        ));
        publisher.try_send(beat()).expect("a beat always has room");
        publisher
            .try_send(beat())
            .expect("and replaces an unsent one");
        assert_eq!(publisher.dropped(), 2);
        let order: Vec<Topic> = std::iter::from_fn(|| outbox.try_recv())
            .map(|m| m.topic())
            .collect();
        assert_eq!(order[0], Topic::Alive);
        assert_eq!(order.len(), 5, "one beat and four queued: {order:?}");
        drop(publisher);
        assert!(
            outbox.recv().await.is_none(),
            "closed once publishers are gone"
        );
    }

    #[tokio::test]
    async fn refusals_and_results_are_taken_in_turn() {
        let (publisher, mut outbox) = Publisher::channel(4);
        for n in 0..2 {
            let refusal = result(&format!("o{n}"), Some(ErrorKind::Overloaded), "full");
            publisher.send(refusal).await.expect("room");
        }
        for n in 0..2 {
            let ok = result(&format!("r{n}"), None, "1");
            publisher.send(ok).await.expect("room");
        }
        let mut lanes = Vec::new();
        while let Some(m) = outbox.try_recv() {
            lanes.push(m.lane);
        }
        assert_eq!(
            lanes,
            [Lane::Main, Lane::Refusal, Lane::Main, Lane::Refusal],
            "the two queues are taken in turn"
        );
    }
}
