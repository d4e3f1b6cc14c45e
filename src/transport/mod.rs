//! Transport: the MQTT session (the only rumqttc user) and the [`Publisher`] handle that
//! the rest of the worker publishes through.
//!
//! The seam between the worker and MQTT is a pair of queues: tasks hand
//! [`crate::protocol::Outbound`] messages to a [`Publisher`] (which refuses any that would
//! not fit in one MQTT packet, and keeps heartbeats, results and refusals in separate
//! lanes), and the session hands decoded inbound messages to the task manager. Unit tests
//! read the publisher's [`Outbox`] directly.

mod backoff;
pub mod client;
mod mqtt;
mod outbox;
mod publisher;
mod tls;

pub use backoff::Backoff;
pub use mqtt::{Delivery, Handled, MqttSession, SessionEvents, SessionParts};
pub use outbox::Outbox;
pub use publisher::{Encoded, PacketLimit, Publisher};

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The session is shutting down; nothing more can be published.
    #[error("the MQTT session is closed")]
    Closed,
    /// The outbound queue is full (only from [`Publisher::try_send`]).
    #[error("the outbound queue is full")]
    Full,
    /// The message would not fit in one MQTT packet; it was not queued.
    #[error(
        "the message would be a {size}-byte MQTT packet, over PROPLET_MQTT_MAX_PACKET_SIZE ({limit} bytes)"
    )]
    TooLarge {
        /// The packet's size: payload, topic and MQTT header.
        size: usize,
        /// `PROPLET_MQTT_MAX_PACKET_SIZE`.
        limit: usize,
    },
    /// The event loop's thread or runtime could not be started.
    #[error("cannot start the MQTT event loop: {0}")]
    Runtime(std::io::Error),
    /// TLS files could not be read or used.
    #[error("MQTT TLS setup: {0}")]
    Tls(String),
}
