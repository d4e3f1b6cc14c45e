//! Answers under pressure, against the real `proplet` binary and a real mosquitto:
//! - a burst of thousands of starts, most refused as `overloaded`, never stalls the
//!   heartbeat or the MQTT keep-alive, and every task id gets exactly one answer;
//! - a result too large for one MQTT packet is answered `output_limit` instead, and never
//!   poisons the session (nothing oversized is handed to the client, so nothing is replayed).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::client::Client;
use common::daemon::Daemon;
use common::*;
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Starts in the burst: hundreds of times what the worker can hold.
const STARTS: usize = 15_000;
/// `PROPLET_LIVELINESS_INTERVAL` (the harness default).
const INTERVAL: Duration = Duration::from_secs(1);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A core module whose `spin` export counts its argument down to zero and returns 0.
fn spinner() -> String {
    let wasm = wat::parse_str(
        r#"(module (func (export "spin") (param i64) (result i64)
             (loop $l
               (local.set 0 (i64.sub (local.get 0) (i64.const 1)))
               (br_if $l (i64.gt_s (local.get 0) (i64.const 0))))
             (local.get 0)))"#,
    )
    .expect("wat");
    b64(&wasm)
}

/// A WASI command that writes `bytes` bytes of `A` to stdout (its result) in one `fd_write`.
fn big_writer(bytes: u32) -> String {
    let wasm = wat::parse_str(format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 8)
             (func (export "_start")
               (memory.fill (i32.const 64) (i32.const 65) (i32.const {bytes}))
               (i32.store (i32.const 0) (i32.const 64))
               (i32.store (i32.const 4) (i32.const {bytes}))
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
    .expect("wat");
    b64(&wasm)
}

/// Arrival times of `alive` heartbeats, seen by a subscriber of that topic alone (so the
/// flood of results to the manager cannot delay what it measures), on a thread and runtime
/// of its own (so the test's own work of sending starts and reading answers cannot delay
/// it either).
async fn watch_heartbeats(broker: &Broker) -> mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = oneshot::channel();
    let port = broker.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("watcher runtime");
    std::thread::Builder::new()
        .name("heartbeat-watcher".into())
        .spawn(move || runtime.block_on(watch(port, tx, subscribed_tx)))
        .expect("watcher thread");
    subscribed.await.expect("heartbeat watcher subscribed");
    rx
}

/// The watcher's loop: stamps each `alive` beat on arrival, until the test drops its
/// receiver.
async fn watch(port: u16, tx: mpsc::UnboundedSender<Instant>, subscribed: oneshot::Sender<()>) {
    let alive = [topic("control/proplet/alive")];
    let mut client = Client::connect(port, "heartbeat-watcher", QoS::AtMostOnce, 16, &alive).await;
    subscribed.send(()).ok();
    while let Some(msg) = client.next().await {
        let beat: Value = serde_json::from_slice(&msg.payload).unwrap_or(Value::Null);
        if beat["status"] == "alive" && tx.send(msg.at).is_err() {
            return;
        }
    }
}

/// The largest gap between consecutive beats, counting from `from` until `to`.
fn largest_gap(beats: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = beats
        .iter()
        .rev()
        .find(|t| **t <= from)
        .copied()
        .unwrap_or(from);
    let mut largest = Duration::ZERO;
    for t in beats.iter().filter(|t| **t > from && **t <= to) {
        largest = largest.max(*t - last);
        last = *t;
    }
    largest.max(to - last)
}

/// When the worker wrote its heartbeats, from its log at `log` (its `debug` lines
/// "heartbeat sent", stamped in UTC), as instants on the clock of `began`, which was
/// `began_at` by the system's.
fn sent_beats(log: &std::path::Path, began: Instant, began_at: SystemTime) -> Vec<Instant> {
    let text = std::fs::read_to_string(log).expect("the worker's log");
    text.lines()
        .filter(|line| line.contains("heartbeat sent"))
        .filter_map(|line| line.split_whitespace().next())
        .map(|stamp| humantime::parse_rfc3339_weak(stamp).expect("a UTC time stamp"))
        .map(|at| match at.duration_since(began_at) {
            Ok(after) => began + after,
            Err(before) => began - before.duration(),
        })
        .collect()
}

/// Reads results until every id in `pending` has one, counting answers per id.
async fn collect_answers(m: &mut Manager, ids: &[String]) -> HashMap<String, Vec<Value>> {
    let mut answers: HashMap<String, Vec<Value>> = HashMap::new();
    let mut unanswered = ids.len();
    while unanswered > 0 {
        let seen = m.next(Duration::from_secs(60)).await.unwrap_or_else(|| {
            panic!("{unanswered} starts still unanswered after 60 s of silence")
        });
        if seen.topic != topic("control/proplet/results") {
            continue;
        }
        let id = seen.json["task_id"].as_str().unwrap_or_default().to_owned();
        let entry = answers.entry(id).or_default();
        if entry.is_empty() {
            unanswered -= 1;
        }
        entry.push(seen.json);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_thousands_of_starts_never_stalls_heartbeats() {
    let broker = Broker::start();
    let mut beats_rx = watch_heartbeats(&broker).await;
    let mut m = Manager::connect(&broker).await;
    let log_dir = tempfile::tempdir().expect("log dir");
    let log = log_dir.path().join("proplet.log");
    let _d = Daemon::start_logged(
        &broker,
        &[
            ("PROPLET_MAX_CONCURRENT_TASKS", "2"),
            ("PROPLET_TASK_QUEUE_CAPACITY", "8"),
            // A stalled event loop would be disconnected by the broker after 1.5 × this.
            ("PROPLET_MQTT_KEEP_ALIVE", "5s"),
        ],
        &log,
    );
    m.wait_ready().await;
    beats_rx.recv().await.expect("a first heartbeat");

    let spinner = spinner();
    let ids: Vec<String> = (0..STARTS).map(|n| format!("burst-{n}")).collect();
    let began = Instant::now();
    let began_at = SystemTime::now();
    for id in &ids {
        let task = start(
            id,
            json!({"file": spinner, "name": "spin", "inputs": ["100000000"]}),
        );
        m.send_json("control/manager/start", &task).await;
    }
    let took = began.elapsed();
    let answers = collect_answers(&mut m, &ids).await;
    let ended = Instant::now();
    // Nothing more may come: a second answer for any id would show up here.
    m.expect_none("control/proplet/results", Duration::from_secs(1), |_| true)
        .await;

    let mut beats = Vec::new();
    while let Ok(t) = beats_rx.try_recv() {
        beats.push(t);
    }
    let gap = largest_gap(&beats, began, ended);
    let sent = sent_beats(&log, began, began_at);
    assert!(!sent.is_empty(), "the worker logs every heartbeat it sends");
    let sent_gap = largest_gap(&sent, began, ended);
    let (mut ok, mut overloaded) = (0, 0);
    for id in &ids {
        let got = &answers[id];
        assert_eq!(got.len(), 1, "{id} answered {} times: {got:?}", got.len());
        match got[0]["error_kind"].as_str() {
            None => ok += 1,
            Some("overloaded") => overloaded += 1,
            other => panic!("{id}: unexpected {other:?}: {}", got[0]),
        }
    }
    let reconnects = m
        .log
        .iter()
        .filter(|s| s.topic == topic("control/proplet/create"))
        .count();
    let timeline: Vec<String> = beats
        .iter()
        .filter(|t| **t > began)
        .map(|t| format!("{:.2}", (*t - began).as_secs_f64()))
        .collect();
    eprintln!(
        "burst: {STARTS} starts sent in {took:?}, all answered after {:?} ({ok} ran, \
         {overloaded} overloaded); largest heartbeat gap {sent_gap:?} as sent, {gap:?} as \
         received; {reconnects} announcements; beats received at {timeline:?} s",
        ended - began
    );
    assert!(ok >= 10, "the slots and the queue ran: {ok}");
    // What the worker controls: it sends a beat every interval, burst or not.
    assert!(
        sent_gap <= INTERVAL * 3 / 2,
        "heartbeat gap {sent_gap:?} as sent during the burst (interval {INTERVAL:?}), \
         answers done at {:.2} s",
        (ended - began).as_secs_f64()
    );
    // What the manager sees also depends on the broker, which carries the burst on the
    // same two cores (on a loaded machine it fell 3 s behind): beats may come late behind
    // it, but every one sent during the burst arrives.
    let due = sent
        .iter()
        .filter(|t| **t > began && **t + INTERVAL <= ended)
        .count();
    let received = beats.iter().filter(|t| **t > began).count();
    assert!(
        received >= due,
        "{due} beats sent during the burst, {received} received: {timeline:?} s"
    );
    assert_eq!(reconnects, 1, "the session was lost during the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_for_a_packet_is_answered_output_limit_and_never_replayed() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(
        &broker,
        &[
            ("PROPLET_MQTT_MAX_PACKET_SIZE", &MAX_PACKET.to_string()),
            ("PROPLET_OUTPUT_LIMIT", "1MiB"),
        ],
    );
    m.wait_ready().await;
    let deploy = json!({"file": guests::component_base64("greet"), "name": "greet",
        "inputs": ["\"nobody\""], "latent": true});
    m.send_json("control/manager/start", &start("greeter", deploy))
        .await;
    let big = json!({"file": big_writer(200_000), "name": "_start", "inputs": []});
    m.send_json("control/manager/start", &start("big", big))
        .await;
    let r = m.result("big").await;
    assert_err(&r, "output_limit", "PROPLET_MQTT_MAX_PACKET_SIZE");
    assert_eq!(r["usage"]["limit"], "output_limit", "{r}");

    // The session is healthy: the next task on the same worker works.
    m.send_json("control/manager/start", &start("next", json!({})))
        .await;
    assert_ok(&m.result("next").await, "30");

    // After a broker restart (a lost session) nothing is replayed for "big", and the
    // session comes back and works.
    broker.restart();
    m.expect("control/proplet/create", Duration::from_secs(60), |v| {
        v["proplet_id"] == P
    })
    .await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    m.expect_none("control/proplet/results", Duration::from_secs(2), |v| {
        v["task_id"] == "big"
    })
    .await;

    // An invocation whose result would not fit is answered the same way.
    let r = invoke_and_answer(&mut m, &oversized_invocation()).await;
    assert_err(&r, "output_limit", "PROPLET_MQTT_MAX_PACKET_SIZE");
}

/// `PROPLET_MQTT_MAX_PACKET_SIZE` in the oversized-result test.
const MAX_PACKET: usize = 96 << 10;

/// An invoke of the latent `greeter` that fits in one packet, but whose answer (the greeting
/// plus the usage receipt) does not.
fn oversized_invocation() -> Value {
    let shell = |name: &str| {
        json!({"id": "greeter", "invocation_id": "inv-big", "proplet_id": P,
            "inputs": [format!("\"{name}\"")]})
    };
    // The broker-side packet: fixed header (≤ 5), topic length (2) and topic, packet id (2).
    let overhead = 5 + 2 + topic("control/manager/invoke").len() + 2;
    let empty = serde_json::to_vec(&shell("")).expect("json").len();
    let name = "x".repeat(MAX_PACKET - overhead - empty - 16);
    shell(&name)
}

/// Sends `invoke` and returns its answer (an invoke sent while its latent task is still
/// compiling waits for the deploy).
async fn invoke_and_answer(m: &mut Manager, invoke: &Value) -> Value {
    m.send_json("control/manager/invoke", invoke).await;
    m.expect(
        "control/proplet/invoke_results",
        Duration::from_secs(60),
        |v| v["invocation_id"] == invoke["invocation_id"],
    )
    .await
}
