//! Hostile input, tried for real against the `proplet` binary: malformed and deeply nested
//! JSON, wrong types, huge inputs, oversized messages, bad base64, non-wasm and truncated
//! binaries, unknown imports, chunk floods, 10,000 starts in a burst, stops for unknown
//! ids, a start whose text differs from a remembered one only in its last characters, and
//! guests that spin, allocate, print without end or try to escape. The worker stays up,
//! stays within a stated memory bound, answers every task that has an id with the right
//! `error_kind` (and runs the binary it was sent), keeps heartbeating — and its logs never
//! show credentials or payloads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::daemon::Daemon;
use common::*;
use serde_json::{Value, json};

/// The stated bound on the daemon's resident memory under this suite (guest budgets here
/// are 32 MiB each, two at a time).
const RSS_BOUND: u64 = 160 << 20;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Samples a process's RSS every 20 ms and keeps the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kib: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                p.fetch_max(kib * 1024, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

/// (id, raw payload, expected error_kind or "ok").
fn hostile_starts() -> Vec<(String, Vec<u8>, &'static str)> {
    let deep = format!(
        r#"{{"id":"deep","file":"{ADD_WASM}","inputs":{}1{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let hello = guests::bytes("hello");
    let unknown_import =
        wat::parse_str(r#"(module (import "host" "missing" (func)) (func (export "f")))"#)
            .expect("wat");
    let raw = |v: Value| serde_json::to_vec(&v).expect("json");
    let task = |id: &str, fields: Value| raw(start(id, fields));
    // Every start that must end with something else than a timeout gets 20 s: its compile
    // counts against its deadline, and with the others of this list compiling and running
    // beside it on a loaded machine that can take seconds. The room costs nothing: each
    // one ends as soon as it is refused or hits its limit.
    let roomy = |id: &str, mut fields: Value| {
        fields["limits"] = json!({"timeout_ms": 20000});
        task(id, fields)
    };
    vec![
        ("deep".into(), deep.into_bytes(), "invalid"),
        (
            "types".into(),
            br#"{"id":"types","file":7,"inputs":{"a":1},"daemon":"yes"}"#.to_vec(),
            "invalid",
        ),
        (
            "truncated-json".into(),
            br#"{"id":"truncated-json","file":"AGFz"#.to_vec(),
            "invalid",
        ),
        (
            "huge-inputs".into(),
            // 200,000 inputs are refused once the module is compiled and instantiated.
            roomy("huge-inputs", json!({"inputs": vec!["1"; 200_000]})),
            "invalid",
        ),
        (
            "bad-base64".into(),
            task("bad-base64", json!({"file": "%%% not base64 %%%"})),
            "invalid",
        ),
        (
            "not-wasm".into(),
            roomy("not-wasm", json!({"file": b64(b"#!/bin/sh\nrm -rf /\n")})),
            "compile",
        ),
        (
            "truncated".into(),
            roomy("truncated", json!({"file": b64(&hello[..hello.len() / 2])})),
            "compile",
        ),
        (
            "unknown-import".into(),
            roomy(
                "unknown-import",
                json!({"file": b64(&unknown_import), "name": "f", "inputs": []}),
            ),
            "compile",
        ),
        (
            "spin".into(),
            task(
                "spin",
                json!({"file": guests::base64("spin"), "name": "spin", "inputs": []}),
            ),
            "timeout",
        ),
        (
            "alloc".into(),
            roomy(
                "alloc",
                json!({"file": guests::base64("alloc"), "name": "alloc", "inputs": ["1000"]}),
            ),
            "memory",
        ),
        (
            "print".into(),
            roomy(
                "print",
                json!({"file": guests::base64("hello"), "name": "_start", "inputs": [], "cli_args": ["flood"]}),
            ),
            "output_limit",
        ),
        (
            "fuel".into(),
            task("fuel", json!({"limits": {"fuel": 10}})),
            "denied",
        ),
        (
            "reg-conflict".into(),
            task(
                "reg-conflict",
                json!({"file": null, "image_url": "reg/conflict"}),
            ),
            "fetch",
        ),
        (
            "reg-absurd".into(),
            task(
                "reg-absurd",
                json!({"file": null, "image_url": "reg/absurd"}),
            ),
            "fetch",
        ),
        (
            "escape".into(),
            roomy(
                "escape",
                json!({"file": guests::component_base64("fs"), "name": "_start", "inputs": [],
            "cli_args": ["dotdot", "absolute", "symlink-make", "symlink-dotdot", "list-root", "connect=1.1.1.1:53"]}),
            ),
            "ok",
        ),
    ]
}

async fn chunk_floods(m: &Manager) {
    let chunk = |app: &str, idx: u64, total: u64| json!({"app_name": app, "chunk_idx": idx, "total_chunks": total, "data": "AAAA"});
    m.send_json("registry/server", &chunk("reg/conflict", 0, 3))
        .await;
    for total in [5, 7, 0] {
        m.send_json("registry/server", &chunk("reg/conflict", 1, total))
            .await;
    }
    for (idx, total) in [
        (1u64 << 62, 1u64 << 63),
        (u64::MAX, u64::MAX),
        (5, 3),
        (0, 1 << 40),
    ] {
        m.send_json("registry/server", &chunk("reg/absurd", idx, total))
            .await;
    }
    for n in 0..500 {
        m.send_json("registry/server", &chunk(&format!("nobody/{n}"), 0, 1))
            .await;
    }
    m.send("registry/server", b"{\"app_name\":[[[[".to_vec())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_survives_everything_thrown_at_it() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(
        &broker,
        &[
            ("PROPLET_MAX_CONCURRENT_TASKS", "2"),
            ("PROPLET_TASK_QUEUE_CAPACITY", "256"),
            ("PROPLET_TASK_TIMEOUT", "1s"),
            ("PROPLET_TASK_MEMORY", "32MiB"),
            ("PROPLET_OUTPUT_LIMIT", "64KiB"),
            ("PROPLET_MQTT_MAX_PACKET_SIZE", "4MiB"),
            ("PROPLET_CHUNK_TIMEOUT", "2s"),
        ],
    );
    m.wait_ready().await;
    let rss = RssPeak::start(d.pid());

    // An oversized message without an id is refused; one past four times the limit cannot
    // even be read (nor answered): the worker drops it and reconnects.
    m.send("control/manager/start", vec![b' '; 5 << 20]).await;
    m.send("control/manager/start", vec![b' '; 17 << 20]).await;
    m.wait_ready().await;

    let starts = hostile_starts();
    for (_, payload, _) in &starts {
        m.send("control/manager/start", payload.clone()).await;
    }
    for n in 0..100 {
        m.send_json(
            "control/manager/stop",
            &json!({"id": format!("unknown-{n}")}),
        )
        .await;
    }
    chunk_floods(&m).await;
    for (id, _, kind) in &starts {
        let r = m.result(id).await;
        assert_receipt(&r);
        if *kind == "ok" {
            assert_eq!(r["error"], Value::Null, "{id}: {r}");
            let text = r["results"].as_str().expect("text");
            assert!(!text.contains(": ok"), "an escape succeeded: {text}");
        } else {
            assert_eq!(r["error_kind"], *kind, "{id}: {r}");
        }
    }

    // 10,000 starts in one burst: every one is answered, with a result or `overloaded`.
    for n in 0..10_000 {
        m.send_json(
            "control/manager/start",
            &start(&format!("burst-{n}"), json!({})),
        )
        .await;
    }
    let (mut ok, mut overloaded) = (0, 0);
    for n in 0..10_000 {
        let r = m.result(&format!("burst-{n}")).await;
        match r["error_kind"].as_str() {
            None => ok += 1,
            Some("overloaded") => overloaded += 1,
            other => panic!("burst-{n}: unexpected {other:?}: {r}"),
        }
    }
    assert!(
        ok >= 258,
        "at least the slots and the queue ran: {ok} ({overloaded} overloaded)"
    );
    // Each burst id was answered once: a second answer for any of them would be here.
    m.expect_none("control/proplet/results", Duration::from_secs(1), |v| {
        v["task_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("burst-"))
    })
    .await;

    m.expect("control/proplet/alive", Duration::from_secs(5), |v| {
        v["status"] == "alive"
    })
    .await;
    m.send_json("control/manager/start", &start("still-up", json!({})))
        .await;
    assert_ok(&m.result("still-up").await, "30");
    let peak = rss.peak();
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MiB over the stated bound",
        peak >> 20
    );
    eprintln!(
        "hostile suite: peak RSS {} MiB, {ok} burst tasks ran, {overloaded} overloaded",
        peak >> 20
    );
    drop(d);
}

/// A module whose export `f` returns `value`, after a hundred other functions: two such
/// modules differ only in their last few bytes, so their base64 texts are as long and
/// differ only in their last characters.
fn answering(value: u8) -> String {
    let others: String = (0..100)
        .map(|_| "(func (result i32) i32.const 7)")
        .collect();
    let wat = format!(r#"(module {others} (func (export "f") (result i32) i32.const {value}))"#);
    b64(&wat::parse_str(wat).expect("wat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_nearly_the_same_as_a_remembered_one_runs_its_own_binary() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(&broker, &[]);
    m.wait_ready().await;
    let (one, two) = (answering(1), answering(2));
    assert_eq!(one.len(), two.len());
    let common = one
        .bytes()
        .zip(two.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common + 4 >= one.len(),
        "the texts differ only at their end"
    );
    let run = |id: &str, file: &str| start(id, json!({"file": file, "name": "f", "inputs": []}));
    // The first is decoded and remembered; the near twins then come while it is.
    m.send_json("control/manager/start", &run("one", &one))
        .await;
    let first = m.result("one").await;
    assert_ok(&first, "1");
    for (id, file) in [("two", &two), ("one-again", &one), ("two-again", &two)] {
        m.send_json("control/manager/start", &run(id, file)).await;
    }
    let second = m.result("two").await;
    assert_ok(&second, "2");
    assert_ne!(second["digest"], first["digest"], "{second}");
    let again = m.result("one-again").await;
    assert_ok(&again, "1");
    assert_eq!(again["digest"], first["digest"], "{again}");
    let last = m.result("two-again").await;
    assert_ok(&last, "2");
    assert_eq!(last["digest"], second["digest"], "{last}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_credentials_or_payloads() {
    const SECRET: &str = "hunter2-c0rrect-h0rse";
    const KEY: &str = "s3cr3t-api-key-value";
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proplet.log");
    let d = Daemon::start_logged(
        &broker,
        &[
            ("PROPLET_LOG_LEVEL", "trace"),
            ("PROPLET_CLIENT_KEY", KEY),
            ("PROPLET_LOG_FORMAT", "json"),
        ],
        &log,
    );
    m.wait_ready().await;
    let hello = guests::base64("hello");
    let tasks = [
        (
            "env",
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": [SECRET], "env": {"TOKEN": SECRET}}),
        ),
        ("inputs", json!({"inputs": [SECRET, SECRET]})),
        ("typed", json!({"inputs": [SECRET, "1"]})),
        (
            "url",
            json!({"file": null, "image_url": format!("http://user:{SECRET}@127.0.0.1:1/x.wasm?token={SECRET}")}),
        ),
        (
            "exit",
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": ["exit", SECRET]}),
        ),
    ];
    for (id, fields) in &tasks {
        m.send_json("control/manager/start", &start(id, fields.clone()))
            .await;
    }
    m.send(
        "control/manager/start",
        format!(r#"{{"id":"bad","inputs":{{"{SECRET}":1}},"daemon":"{SECRET}"}}"#),
    )
    .await;
    for (id, _) in &tasks {
        m.result(id).await;
    }
    m.result("bad").await;
    d.signal("-TERM");
    let mut d = d;
    d.wait(Duration::from_secs(30)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("task admitted"),
        "the log was captured: {text}"
    );
    for needle in [SECRET, KEY, "AGFzbQ"] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert!(leaks.is_empty(), "{needle} leaked into the log: {leaks:#?}");
    }
}
