//! The manager's metrics topics: `control/proplet/metrics` from the process every
//! `PROPLET_METRICS_INTERVAL`, and `control/proplet/task_metrics` from each running task's
//! own meters as its `monitoring_profile` asks, in the form docs/protocol.md §4.10–4.11
//! gives, with RFC 3339 timestamps.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ON: [(&str, &str); 2] = [
    ("PROPLET_ENABLE_MONITORING", "true"),
    ("PROPLET_METRICS_INTERVAL", "1s"),
];

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| humantime::parse_rfc3339(t).is_ok())
}

/// User and system CPU seconds in a `control/proplet/metrics` message.
fn cpu_seconds(v: &Value) -> f64 {
    let cpu = &v["cpu_metrics"];
    cpu["user_seconds"].as_f64().unwrap() + cpu["system_seconds"].as_f64().unwrap()
}

/// A start of the core module `spin` (never returns), stopped by the test.
fn spinning(id: &str, profile: Value) -> Value {
    start(
        id,
        json!({"file": guests::base64("spin"), "name": "spin", "inputs": [], "monitoring_profile": profile}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_is_sampled_every_interval() {
    let (_b, w, mut m) = setup(&ON).await;
    // One a second; the bound is for a runner loaded by the rest of the suite.
    let within = Duration::from_secs(20);
    let first = m.expect("control/proplet/metrics", within, |_| true).await;
    assert_eq!(first["proplet_id"], P, "{first}");
    assert_eq!(first["namespace"], "default", "{first}");
    assert!(is_rfc3339(&first["timestamp"]), "{first}");
    assert!(
        first["memory_metrics"]["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{first}"
    );
    assert_eq!(first["memory_metrics"]["heap_alloc_bytes"], 0, "{first}");
    // CPU time is the kernel's, counted in clock ticks: a process that started a moment
    // ago on a loaded machine may still read 0. It grows as the process works.
    let before = cpu_seconds(&first);
    assert!(before >= 0.0, "{first}");
    let spun = std::time::Instant::now();
    while spun.elapsed() < Duration::from_millis(300) {
        std::hint::black_box(spun.elapsed());
    }
    let later = m
        .expect("control/proplet/metrics", within, |v| {
            cpu_seconds(v) > before
        })
        .await;
    assert!(later["cpu_metrics"]["percent"].is_f64(), "{later}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_sampled_from_its_own_meters() {
    let (_b, w, mut m) = setup(&ON).await;
    // A Go duration (1 s in nanoseconds), as the manager sends it.
    let profile = json!({"enabled": true, "interval": 1_000_000_000u64, "export_to_mqtt": true,
        "retain_history": true, "collect_cpu": true, "collect_memory": true, "history_size": 10});
    m.send_json("control/manager/start", &spinning("busy", profile))
        .await;
    let within = Duration::from_secs(20);
    let is_busy = |v: &Value| v["task_id"] == "busy";
    m.expect("control/proplet/task_metrics", within, is_busy)
        .await;
    let sample = m
        .expect("control/proplet/task_metrics", within, is_busy)
        .await;
    assert_eq!(sample["proplet_id"], P, "{sample}");
    assert!(is_rfc3339(&sample["timestamp"]), "{sample}");
    let metrics = &sample["metrics"];
    let cpu = metrics["cpu_percent"].as_f64().unwrap();
    // A spinning guest keeps a core busy when it has one; on a loaded machine it still gets
    // a share, and an unmeasured guest would show 0.
    assert!(
        cpu > 5.0,
        "a spinning guest's own CPU is measured: {sample}"
    );
    assert!(
        metrics["memory_bytes"].as_u64().unwrap() >= 65536,
        "{sample}"
    );
    assert!(
        metrics["memory_percent"].as_f64().unwrap() > 0.0,
        "{sample}"
    );
    assert_eq!(metrics["thread_count"], 1, "{sample}");
    let history = &sample["aggregated"];
    assert!(history["sample_count"].as_u64().unwrap() >= 2, "{sample}");
    assert!(
        history["max_cpu_usage"].as_f64().unwrap() >= cpu,
        "{sample}"
    );
    m.send_json("control/manager/stop", &json!({"id": "busy"}))
        .await;
    assert_err(&m.result("busy").await, "cancelled", "");
    m.expect_none(
        "control/proplet/task_metrics",
        Duration::from_millis(1500),
        is_busy,
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_samples_when_the_profile_or_the_operator_says_no() {
    let (_b, w, mut m) = setup(&ON).await;
    let quiet = json!({"enabled": true, "interval": 1, "export_to_mqtt": false});
    m.send_json("control/manager/start", &spinning("quiet", quiet))
        .await;
    let off = json!({"enabled": false, "interval": 1, "export_to_mqtt": true});
    m.send_json("control/manager/start", &spinning("off", off))
        .await;
    let either = |v: &Value| v["task_id"] == "quiet" || v["task_id"] == "off";
    m.expect_none(
        "control/proplet/task_metrics",
        Duration::from_secs(2),
        either,
    )
    .await;
    for id in ["quiet", "off"] {
        m.send_json("control/manager/stop", &json!({"id": id}))
            .await;
        m.result(id).await;
    }
    w.stop().await;

    let (_b, w, mut m) = setup(&[("PROPLET_ENABLE_MONITORING", "false")]).await;
    m.send_json(
        "control/manager/start",
        &spinning("dark", json!({"interval": 1})),
    )
    .await;
    m.expect_none(
        "control/proplet/task_metrics",
        Duration::from_secs(2),
        |_| true,
    )
    .await;
    m.expect_none("control/proplet/metrics", Duration::from_millis(10), |_| {
        true
    })
    .await;
    m.send_json("control/manager/stop", &json!({"id": "dark"}))
        .await;
    m.result("dark").await;
    w.stop().await;
}
