//! A plain MQTT client at a chosen QoS: what it receives, raw and time-stamped, in a
//! channel. The heartbeat watcher of the burst test and the bench's clients are this.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};

/// One received message.
pub struct Msg {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub at: Instant,
}

/// A client subscribed to some filters, with what it receives in a channel.
pub struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    qos: QoS,
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Client {
    /// Connects as `name` with `inflight` unacknowledged publishes at most, and subscribes
    /// to `filters` at `qos`.
    pub async fn connect(
        port: u16,
        name: &str,
        qos: QoS,
        inflight: u16,
        filters: &[String],
    ) -> Client {
        let mut opts = MqttOptions::new(name, "127.0.0.1", port);
        opts.set_max_packet_size(64 << 20, 64 << 20);
        opts.set_inflight(inflight);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready = Some(ready_tx);
        let subscriber = client.clone();
        let filters = filters.to_vec();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            subscriber.try_subscribe(f.clone(), qos).ok();
                        }
                        if filters.is_empty()
                            && let Some(r) = ready.take()
                        {
                            r.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            r.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Msg {
                            topic: p.topic,
                            payload: p.payload,
                            at: Instant::now(),
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("bench client: {e}");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("connected and subscribed in time")
            .ok();
        Client { client, rx, qos }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, self.qos, false, payload.into())
            .await
            .expect("publish");
    }

    /// The next message; a minute of silence fails.
    pub async fn recv(&mut self) -> Msg {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("a message within a minute")
            .expect("the client is running")
    }

    /// The next message, however long it takes; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Msg> {
        self.rx.recv().await
    }
}
