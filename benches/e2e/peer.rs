//! The echo peer: it stands where the proplet would, to measure what the broker itself
//! costs for the same two hops.

use rumqttc::QoS;

use crate::common::client::Client;

/// Topic the echo peer answers on.
pub const PONG: &str = "bench/pong";

/// The topic of a ping the peer answers with `answer` bytes, as the proplet answers a
/// start with a result of its own size.
pub fn ping_topic(answer: usize) -> String {
    format!("bench/ping/{answer}")
}

/// An echo peer: every message on `bench/ping/<n>` is answered on [`PONG`] with `n` bytes,
/// at `qos`, with the proplet's session settings (10 publishes in flight).
pub async fn echo(port: u16, qos: QoS) {
    let filters = ["bench/ping/+".to_owned()];
    let mut peer = Client::connect(port, "bench-echo", qos, 10, &filters).await;
    tokio::spawn(async move {
        while let Some(msg) = peer.next().await {
            let answer = msg
                .topic
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("bench/ping/<answer bytes>");
            peer.publish(PONG, vec![b'x'; answer]).await;
        }
    });
}
