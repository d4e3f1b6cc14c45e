//! Test harness: a real mosquitto, the real worker, and a scripted manager client.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod broker;
pub mod client;
pub mod daemon;
pub mod guests;
pub mod http;
pub mod otlp;
pub mod pki;
pub mod probe;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use broker::Broker;

pub const A: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
pub const C: &str = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";
pub const P: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";
pub const Q: &str = "d9e8f7a6-b5c4-4d3e-8f2a-1b0c9d8e7f6a";
pub const T: &str = "8f14e45f-ceea-467f-a8e0-2c3b1f7d9a10";
pub use guests::ADD_WASM;

/// `m/{A}/c/{C}/<suffix>`.
pub fn topic(suffix: &str) -> String {
    format!("m/{A}/c/{C}/{suffix}")
}

/// The environment of a test proplet `P` on `broker`, with `extra` on top.
pub fn env(broker: &Broker, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("PROPLET_DOMAIN_ID", A),
        ("PROPLET_CHANNEL_ID", C),
        ("PROPLET_CLIENT_ID", P),
        ("PROPLET_LIVELINESS_INTERVAL", "1s"),
        ("PROPLET_MQTT_TIMEOUT", "5s"),
        ("PROPLET_DRAIN_TIMEOUT", "2s"),
        ("PROPLET_LOG_LEVEL", "proplet=debug"),
        // The metrics topics are tested on their own (tests/monitoring.rs); elsewhere they
        // would only add messages to every exchange.
        ("PROPLET_ENABLE_MONITORING", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("PROPLET_MQTT_ADDRESS".into(), broker.url());
    env.insert(
        "PROPLET_STATE_DIR".into(),
        broker.state_dir().display().to_string(),
    );
    // A proplet process killed by a test cannot remove its working directory: kept in the
    // broker's directory, it goes with the broker's.
    env.insert("TMPDIR".into(), broker.tmp_dir().display().to_string());
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// A broker, a connected manager and a ready in-process worker configured with `extra`.
pub async fn setup(extra: &[(&str, &str)]) -> (Broker, Worker, Manager) {
    let broker = Broker::start();
    let mut manager = Manager::connect(&broker).await;
    let worker = Worker::start(env(&broker, extra));
    manager.wait_ready().await;
    (broker, worker, manager)
}

/// A worker running in this process; shut down by [`Worker::stop`] (or on drop, abruptly).
pub struct Worker {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker configured by `env`.
    pub fn start(env: HashMap<String, String>) -> Worker {
        let config = proplet::Config::load(None, &move |k| env.get(k).cloned(), vec![])
            .expect("test config is valid");
        init_logging();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                rx.await.ok();
            };
            proplet::run(config, shutdown).await.expect("worker runs");
        });
        Worker {
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits for it to complete.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("worker stops in time")
                .expect("worker task");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "proplet=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .ok();
}

/// A message seen on the broker.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub json: Value,
    pub at: Instant,
}

/// A scripted manager: subscribes to the whole channel and publishes starts, stops, chunks.
pub struct Manager {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Everything received so far, in order.
    pub log: Vec<Seen>,
    /// Received but not yet matched by an `expect`.
    unmatched: Vec<Seen>,
}

impl Manager {
    /// Connects to `broker` and subscribes to `m/{A}/c/{C}/#`.
    pub async fn connect(broker: &Broker) -> Manager {
        let id = format!("manager-{}", uuid::Uuid::new_v4());
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port);
        // A session the broker keeps (and saves, below): across a broker restart, what the
        // proplet publishes before this client is back is queued for it, not lost.
        opts.set_clean_session(false);
        opts.set_max_packet_size(64 << 20, 64 << 20);
        opts.set_inflight(20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, sub_rx) = oneshot::channel();
        let mut sub_tx = Some(sub_tx);
        let filter = format!("m/{A}/c/{C}/#");
        let resubscribe = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    // Subscribe on every connection: the broker may have restarted. At QoS
                    // 1: rumqttc (this stand-in manager's client, not the proplet's
                    // session) cannot take a QoS 2 release the broker re-sends after its
                    // own restart, and would reconnect forever.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        resubscribe
                            .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            .ok();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = sub_tx.take() {
                            tx.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let seen = Seen {
                            topic: p.topic.clone(),
                            json,
                            at: Instant::now(),
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), sub_rx)
            .await
            .expect("suback in time")
            .ok();
        broker.save();
        Manager {
            client,
            rx,
            log: Vec::new(),
            unmatched: Vec::new(),
        }
    }

    /// Publishes `payload` (JSON or raw) on `m/{A}/c/{C}/<suffix>` at QoS 2.
    pub async fn send(&self, suffix: &str, payload: impl Into<Vec<u8>>) {
        self.send_at(suffix, payload, QoS::ExactlyOnce).await;
    }

    /// Publishes `payload` on `m/{A}/c/{C}/<suffix>` at `qos`.
    pub async fn send_at(&self, suffix: &str, payload: impl Into<Vec<u8>>, qos: QoS) {
        self.client
            .publish(topic(suffix), qos, false, payload.into())
            .await
            .expect("publish");
    }

    /// Publishes a JSON value at QoS 2.
    pub async fn send_json(&self, suffix: &str, value: &Value) {
        self.send(suffix, serde_json::to_vec(value).expect("json"))
            .await;
    }

    /// Waits for the first message on `suffix` that satisfies `pred` and was not matched
    /// before (messages are matched at most once, whatever order they arrived in).
    pub async fn expect(
        &mut self,
        suffix: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let wanted = topic(suffix);
        if let Some(i) = self
            .unmatched
            .iter()
            .position(|s| s.topic == wanted && pred(&s.json))
        {
            return self.unmatched.remove(i).json;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => seen,
                _ => panic!(
                    "no message on {suffix} matching the predicate within {within:?}; seen: {:#?}",
                    self.log
                ),
            };
            self.log.push(seen.clone());
            if seen.topic == wanted && pred(&seen.json) {
                return seen.json;
            }
            self.unmatched.push(seen);
        }
    }

    /// The result for task `id`. The wait is generous because a neighbouring test may be
    /// compiling a large component on both cores; a missing result still fails the test.
    pub async fn result(&mut self, id: &str) -> Value {
        self.expect("control/proplet/results", Duration::from_secs(60), |v| {
            v["task_id"] == id
        })
        .await
    }

    /// Asserts that nothing on `suffix` satisfying `pred` arrives for `during`.
    pub async fn expect_none(
        &mut self,
        suffix: &str,
        during: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        let wanted = topic(suffix);
        for seen in &self.unmatched {
            assert!(
                !(seen.topic == wanted && pred(&seen.json)),
                "unexpected message on {suffix}: {}",
                seen.json
            );
        }
        let deadline = tokio::time::Instant::now() + during;
        while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.log.push(seen.clone());
            self.unmatched.push(seen.clone());
            assert!(
                !(seen.topic == wanted && pred(&seen.json)),
                "unexpected message on {suffix}: {}",
                seen.json
            );
        }
    }

    /// The next message on the channel (any topic, matched or not), or `None` if nothing
    /// arrives `within`. It is logged but not kept for later `expect`s.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        if !self.unmatched.is_empty() {
            return Some(self.unmatched.remove(0));
        }
        let seen = tokio::time::timeout(within, self.rx.recv()).await.ok()??;
        self.log.push(seen.clone());
        Some(seen)
    }

    /// Waits until the proplet has announced itself (so its subscriptions are in place).
    pub async fn wait_ready(&mut self) {
        self.expect("control/proplet/create", Duration::from_secs(60), |v| {
            v["proplet_id"] == P
        })
        .await;
    }
}

/// A latest-manager start for proplet `P` with `overrides` merged in.
pub fn start(id: &str, overrides: Value) -> Value {
    let mut base = json!({
        "id": id, "name": "add", "state": 0, "file": ADD_WASM, "inputs": ["10", "20"],
        "cli_args": null, "broadcast": false, "daemon": false, "latent": false,
        "encrypted": false, "proplet_id": P
    });
    merge(&mut base, overrides);
    base
}

/// Merges `overrides` into `base`; a `null` override removes the key.
pub fn merge(base: &mut Value, overrides: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), overrides) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

/// Asserts a successful result with `results`.
/// A result without its extension fields (`usage`, `digest`, `error_kind`), after checking
/// that the receipt is there: what an upstream manager reads.
pub fn upstream_fields(result: &Value) -> Value {
    assert_receipt(result);
    let mut v = result.clone();
    if let Some(map) = v.as_object_mut() {
        for key in ["usage", "digest", "error_kind"] {
            map.remove(key);
        }
    }
    v
}

/// Every result carries a usage receipt.
pub fn assert_receipt(result: &Value) {
    let usage = &result["usage"];
    assert!(usage["wall_ms"].is_u64(), "no usage receipt: {result}");
    assert!(usage["output_bytes"].is_u64(), "{result}");
    for key in ["fuel", "memory_peak_bytes", "limit"] {
        assert!(usage.get(key).is_some(), "usage.{key} missing: {result}");
    }
}

pub fn assert_ok(result: &Value, results: &str) {
    assert_receipt(result);
    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(result["results"], results, "{result}");
    assert_eq!(result["proplet_id"], P, "{result}");
}

/// Asserts an error result of `kind`, whose text contains `text`.
pub fn assert_err(result: &Value, kind: &str, text: &str) {
    assert_receipt(result);
    assert_eq!(result["results"], "", "{result}");
    assert_eq!(result["error_kind"], kind, "{result}");
    let error = result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error is not a string: {result}"));
    assert!(
        error.contains(text),
        "error {error:?} does not contain {text:?}"
    );
}
