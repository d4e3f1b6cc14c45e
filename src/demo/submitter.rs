//! The demo's stand-in for the manager: publishes starts and stops, prints results.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// A connected submitter.
pub struct Submitter {
    client: AsyncClient,
    base: String,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    /// Messages received but not yet waited for.
    backlog: Vec<(String, Value)>,
}

impl Submitter {
    /// Connects and subscribes to everything the proplets publish.
    pub async fn connect(port: u16, tenant: &str, channel: &str) -> anyhow::Result<Submitter> {
        let base = format!("m/{tenant}/c/{channel}");
        let mut opts = MqttOptions::new("demo-manager", "127.0.0.1", port);
        opts.set_max_packet_size(10 << 20, 10 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(done) = subscribed_tx.take() {
                            // `connect` may have given up waiting; nothing to tell then.
                            done.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send((p.topic.clone(), json)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(format!("{base}/control/proplet/#"), QoS::AtLeastOnce)
            .await?;
        // Only once subscribed: a proplet that starts sooner would announce itself unheard.
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .context("the embedded broker did not confirm the subscription")?
            .context("the demo's MQTT client stopped")?;
        Ok(Submitter {
            client,
            base,
            rx,
            backlog: Vec::new(),
        })
    }

    /// Waits for a message on `suffix` matching `pred`.
    pub async fn wait_for(
        &mut self,
        suffix: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let topic = format!("{}/{suffix}", self.base);
        if let Some(i) = self
            .backlog
            .iter()
            .position(|(t, v)| *t == topic && pred(v))
        {
            return Ok(self.backlog.remove(i).1);
        }
        let (rx, backlog) = (&mut self.rx, &mut self.backlog);
        let wait = async {
            while let Some((t, v)) = rx.recv().await {
                if t == topic && pred(&v) {
                    return Some(v);
                }
                // Heartbeats are not waited for; keep everything else for a later wait.
                if !t.ends_with("/alive") {
                    backlog.push((t, v));
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .ok()
            .flatten()
            .with_context(|| format!("no message on {suffix}"))
    }

    /// Publishes a start.
    pub async fn send(&self, start: Value) -> anyhow::Result<()> {
        let topic = format!("{}/control/manager/start", self.base);
        Ok(self
            .client
            .publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&start)?)
            .await?)
    }

    /// Publishes a stop.
    pub async fn send_stop(&self, id: &str) -> anyhow::Result<()> {
        let topic = format!("{}/control/manager/stop", self.base);
        Ok(self
            .client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&serde_json::json!({"id": id}))?,
            )
            .await?)
    }

    /// Sends `start` and prints its result.
    pub async fn step(&mut self, what: &str, start: Value) -> anyhow::Result<()> {
        let id = start["id"].as_str().unwrap_or_default().to_owned();
        self.send(start).await?;
        self.report(what, &id).await
    }

    /// Prints the result of task `id`.
    pub async fn report(&mut self, what: &str, id: &str) -> anyhow::Result<()> {
        self.report_n(what, id, 1).await
    }

    /// Prints `n` results of task `id` (an untargeted start runs on every proplet).
    pub async fn report_n(&mut self, what: &str, id: &str, n: usize) -> anyhow::Result<()> {
        let sent = Instant::now();
        println!("• {what}");
        for _ in 0..n {
            let r = self
                .wait_for("control/proplet/results", |v| v["task_id"] == id)
                .await?;
            let took = sent.elapsed();
            match r["error"].as_str() {
                None => println!(
                    "    {} → results {}   ({took:.1?})",
                    r["proplet_id"], r["results"]
                ),
                Some(e) => println!(
                    "    {} → error_kind {}: {e}",
                    r["proplet_id"], r["error_kind"]
                ),
            }
        }
        Ok(())
    }

    /// Sends 200 cached `add` tasks one after another and prints round-trip percentiles.
    pub async fn latency(&mut self, start: impl Fn(usize) -> Value) -> anyhow::Result<()> {
        let mut times = Vec::new();
        for i in 0..200 {
            let begun = Instant::now();
            self.send(start(i)).await?;
            let id = format!("bench-{i}");
            self.wait_for("control/proplet/results", |v| v["task_id"] == id.as_str())
                .await?;
            times.push(begun.elapsed());
        }
        times.sort();
        println!(
            "• 200 cached add tasks in a row, start → result round trip (embedded broker, QoS 1)"
        );
        println!("    p50 {:.2?}   p99 {:.2?}", times[100], times[198]);
        Ok(())
    }
}

/// Merges `extra` into the object `base` (a `null` removes the key).
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}
