//! Transport: the MQTT session (the only rumqttc user) and the [`Publisher`] handle that
//! the rest of the worker publishes through.
//!
//! The seam between the worker and MQTT is a pair of bounded channels: tasks hand
//! [`Outbound`] messages to a [`Publisher`], and the session hands decoded inbound messages
//! to the task manager. Unit tests read the publisher's channel directly.

mod backoff;
mod mqtt;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use backoff::Backoff;
pub use mqtt::{MqttSession, SessionEvents};

use crate::protocol::Outbound;

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The session is shutting down; nothing more can be published.
    #[error("the MQTT session is closed")]
    Closed,
    /// The outbound queue is full (only from [`Publisher::try_send`]).
    #[error("the outbound queue is full")]
    Full,
    /// TLS files could not be read or used.
    #[error("MQTT TLS setup: {0}")]
    Tls(String),
}

/// A cloneable handle that queues messages for the MQTT session.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Outbound>,
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// A publisher and the receiving end of its queue (read by the session, or by tests).
    pub fn channel(capacity: usize) -> (Publisher, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Publisher {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Queues `msg`, waiting for room. Results and other must-deliver messages use this.
    pub async fn send(&self, msg: Outbound) -> Result<(), TransportError> {
        self.tx.send(msg).await.map_err(|_| TransportError::Closed)
    }

    /// Queues `msg` if there is room right now; otherwise drops it and counts the drop.
    /// Heartbeats use this so that a slow broker never delays the heartbeat loop.
    pub fn try_send(&self, msg: Outbound) -> Result<(), TransportError> {
        self.tx.try_send(msg).map_err(|e| {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => TransportError::Full,
                mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
            }
        })
    }

    /// Messages dropped by [`Publisher::try_send`].
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
