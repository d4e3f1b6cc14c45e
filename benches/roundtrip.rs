//! End-to-end benchmark: start → result round trips through a real mosquitto at QoS 2.
//!
//! Run with `just bench` (or `cargo bench --bench roundtrip`). It starts mosquitto on a free
//! loopback port, an in-process proplet, and a manager client, then measures:
//! 1. sequential round trips of a cached `add` export (p50/p90/p99), for a core module and
//!    for a component (WAVE inputs);
//! 2. a burst of 1,000 such tasks sent at once (tasks/s), with the largest heartbeat gap
//!    seen around the burst;
//! 3. the proplet's idle resident memory (VmRSS) after startup, in a separate process.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SEQUENTIAL: usize = 2000;
const BURST: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A task of the benchmark: a cached core-module export, or a component export.
type Make = fn(&str) -> Value;

fn core_add(id: &str) -> Value {
    start(id, json!({}))
}

fn component_add(id: &str) -> Value {
    start(
        id,
        json!({"file": guests::component_base64("greet"), "name": "add", "inputs": ["10", "20"]}),
    )
}

async fn sequential(m: &mut Manager, label: &str, make: Make) {
    // Warm up: the first task compiles the module.
    let warm = format!("warm-{label}");
    m.send_json("control/manager/start", &make(&warm)).await;
    m.result(&warm).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut times = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let id = format!("seq-{label}-{i}");
        let begun = Instant::now();
        m.send_json("control/manager/start", &make(&id)).await;
        m.result(&id).await;
        times.push(begun.elapsed());
    }
    times.sort();
    println!(
        "sequential {label}, start→result over mosquitto QoS 2 (n={SEQUENTIAL}): p50 {:.3?}  p90 {:.3?}  p99 {:.3?}",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99)
    );
}

async fn burst(m: &mut Manager, label: &str, make: Make) {
    let begun = Instant::now();
    for i in 0..BURST {
        m.send_json(
            "control/manager/start",
            &make(&format!("burst-{label}-{i}")),
        )
        .await;
    }
    for i in 0..BURST {
        let r = m.result(&format!("burst-{label}-{i}")).await;
        assert_eq!(r["results"], "30", "every task of the burst succeeds: {r}");
    }
    let took = begun.elapsed();
    // Heartbeats from one second before the burst to two seconds after it.
    m.expect_none("control/proplet/results", Duration::from_secs(2), |_| true)
        .await;
    let window = begun - Duration::from_secs(1)..Instant::now();
    let beats: Vec<Instant> = m
        .log
        .iter()
        .filter(|s| s.topic.ends_with("/alive") && window.contains(&s.at))
        .map(|s| s.at)
        .collect();
    let gap = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "burst of {BURST} {label} tasks: {:.0} tasks/s ({took:.2?}); largest heartbeat gap around the burst {gap:.2?} (interval 1s)",
        BURST as f64 / took.as_secs_f64()
    );
}

fn idle_rss(broker: &Broker) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proplet"))
        .env_clear()
        .envs(env(
            broker,
            &[
                ("PROPLET_CLIENT_ID", "rss-probe"),
                ("PROPLET_LOG_LEVEL", "error"),
            ],
        ))
        .spawn()
        .expect("spawn proplet");
    std::thread::sleep(Duration::from_secs(3));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: unknown")
        .to_owned();
    println!(
        "idle proplet process after 3 s: {}",
        rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    child.kill().ok();
    child.wait().ok();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; this bench has no test cases.
    }
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let worker = Worker::start(env(&broker, &[("PROPLET_LOG_LEVEL", "error")]));
    m.wait_ready().await;
    for (label, make) in [
        ("core-module add", core_add as Make),
        ("component add", component_add as Make),
    ] {
        sequential(&mut m, label, make).await;
        burst(&mut m, label, make).await;
    }
    worker.stop().await;
    idle_rss(&broker);
}
