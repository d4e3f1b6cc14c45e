//! The echo peer: it stands where the proplet would, to measure what the broker itself
//! costs for the same two hops.

use rumqttc::QoS;

use crate::common::client::Client;

/// Topic the echo peer listens on, and the one it answers on.
pub const PING: &str = "bench/ping";
pub const PONG: &str = "bench/pong";

/// An echo peer: every message on [`PING`] is published again on [`PONG`], at `qos`, with
/// the proplet's session settings (10 publishes in flight).
pub async fn echo(port: u16, qos: QoS) {
    let mut peer = Client::connect(port, "bench-echo", qos, 10, &[PING.to_owned()]).await;
    tokio::spawn(async move {
        while let Some(msg) = peer.next().await {
            peer.publish(PONG, msg.payload.to_vec()).await;
        }
    });
}
