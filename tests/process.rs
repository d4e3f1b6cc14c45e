//! The real `proplet` binary as a process: signals, graceful drain, Last Will, broker
//! restarts, and heartbeats while every slot runs a spinning guest.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

fn spinner(id: &str) -> serde_json::Value {
    start(
        id,
        json!({"file": guests::base64("spin"), "name": "spin", "inputs": []}),
    )
}

/// A broker, a manager, and a ready daemon under `extra` whose output goes to a log file.
async fn logged(extra: &[(&str, &str)]) -> (Broker, Manager, Daemon, tempfile::NamedTempFile) {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let d = Daemon::start_logged(&broker, extra, log.path());
    m.wait_ready().await;
    (broker, m, d, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_reports_and_goes_offline() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let mut d = Daemon::start(
        &broker,
        &[
            ("PROPLET_DRAIN_TIMEOUT", "3s"),
            ("PROPLET_TASK_TIMEOUT", "1s"),
            ("PROPLET_MAX_CONCURRENT_TASKS", "4"),
        ],
    );
    m.wait_ready().await;
    m.send_json("control/manager/start", &spinner("finishes-in-drain"))
        .await;
    m.send_json(
        "control/manager/start",
        &start(
            "daemon",
            json!({"daemon": true, "file": guests::base64("spin"), "name": "spin", "inputs": []}),
        ),
    )
    .await;
    assert_ok(&m.result("daemon").await, "");
    d.signal("-TERM");
    // A task that ends within the drain window reports its own outcome...
    assert_err(&m.result("finishes-in-drain").await, "timeout", "timed out");
    // ...and the offline notice is the last thing published; then the process exits cleanly.
    let offline = m
        .expect("control/proplet/alive", LONG, |v| v["status"] == "offline")
        .await;
    assert_eq!(
        offline,
        json!({"proplet_id": P, "status": "offline", "namespace": "default"})
    );
    assert_eq!(d.wait(LONG).await, Some(0));
    m.expect_none("control/proplet/alive", Duration::from_millis(500), |v| {
        v["status"] == "offline"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cancels_what_the_drain_deadline_cuts_off() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let mut d = Daemon::start(&broker, &[("PROPLET_DRAIN_TIMEOUT", "500ms"), probe.env()]);
    m.wait_ready().await;
    m.send_json("control/manager/start", &spinner("cut-off"))
        .await;
    probe.wait_for("proplet_tasks_running 1").await;
    d.signal("-INT");
    assert_err(&m.result("cut-off").await, "cancelled", "shutting down");
    m.expect("control/proplet/alive", LONG, |v| v["status"] == "offline")
        .await;
    assert_eq!(d.wait(LONG).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proplet_leaves_its_last_will() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let mut d = Daemon::start(&broker, &[]);
    m.wait_ready().await;
    d.signal("-KILL");
    d.wait(LONG).await;
    let will = m
        .expect("control/proplet/alive", LONG, |v| v["status"] == "offline")
        .await;
    assert_eq!(will["proplet_id"], P);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_broker_restart_without_losing_results() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let _d = Daemon::start(&broker, &[("PROPLET_TASK_TIMEOUT", "2s"), probe.env()]);
    m.wait_ready().await;
    m.send_json("control/manager/start", &spinner("across-outage"))
        .await;
    probe.wait_for("proplet_tasks_running 1").await;
    broker.kill();
    // The task ends (timeout) while the broker is away; its result must not be lost.
    probe
        .wait_for(r#"proplet_tasks_total{outcome="error",error_kind="timeout"} 1"#)
        .await;
    broker.restart();
    m.expect("control/proplet/create", LONG, |v| v["proplet_id"] == P)
        .await;
    assert_err(&m.result("across-outage").await, "timeout", "timed out");
    m.expect("control/proplet/alive", LONG, |v| v["status"] == "alive")
        .await;
    m.send_json("control/manager/start", &start("after-restart", json!({})))
        .await;
    assert_ok(&m.result("after-restart").await, "30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_stops_work_while_every_slot_spins() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let _d = Daemon::start(
        &broker,
        &[("PROPLET_MAX_CONCURRENT_TASKS", "4"), probe.env()],
    );
    m.wait_ready().await;
    for i in 0..4 {
        m.send_json("control/manager/start", &spinner(&format!("spin-{i}")))
            .await;
    }
    probe.wait_for("proplet_tasks_running 4").await;
    let mut last = m.expect("control/proplet/alive", LONG, |_| true).await;
    let mut at = Instant::now();
    for _ in 0..4 {
        last = m.expect("control/proplet/alive", LONG, |_| true).await;
        let gap = at.elapsed();
        at = Instant::now();
        assert!(
            gap < Duration::from_millis(1500),
            "heartbeat gap {gap:?} with four spinning guests on two cores"
        );
    }
    assert_eq!(last["status"], "alive");
    let asked = Instant::now();
    m.send_json("control/manager/stop", &json!({"id": "spin-0"}))
        .await;
    assert_err(&m.result("spin-0").await, "cancelled", "stopped");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        asked.elapsed()
    );
}

/// At `info`, a task is one short line in the log (done, or failed with its kind), with no
/// span context and no colour codes in a file; the details are at `debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_short_line_at_info() {
    let (_broker, mut m, mut d, log) = logged(&[("PROPLET_LOG_LEVEL", "info")]).await;
    m.send_json("control/manager/start", &start("fine", json!({})))
        .await;
    m.send_json(
        "control/manager/start",
        &start("broken", json!({"name": "nope"})),
    )
    .await;
    m.result("fine").await;
    m.result("broken").await;
    d.signal("-TERM");
    d.wait(Duration::from_secs(30)).await;
    let text = std::fs::read_to_string(log.path()).expect("log");
    for id in ["fine", "broken"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id)).collect();
        assert_eq!(lines.len(), 1, "{id}: {lines:#?}");
        assert!(lines[0].len() < 200, "{}", lines[0]);
    }
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file: {text}"
    );
    assert!(
        !text.contains("messaging.system"),
        "no span context: {text}"
    );
}

/// `PROPLET_CPU_LATENCY`: the daemon holds the limit from before it is discovered until it
/// exits, and the limit goes with it. Where the device cannot be written (not root, no such
/// device), the daemon says so and works on. 7 µs is above what this kind of machine's
/// shallow idle states take to wake, so the test does not set the cores polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_latency_limit_is_held_while_the_daemon_runs_and_goes_with_it() {
    use proplet::power;
    let limit = Duration::from_micros(7);
    let (_broker, mut m, mut d, log) = logged(&[("PROPLET_CPU_LATENCY", "7us")]).await;
    let writable = power::can_hold().is_ok();
    if writable {
        let held = power::in_force().expect("read the limit in force");
        assert!(held <= limit, "{held:?} in force while the daemon runs");
    }
    m.send_json("control/manager/start", &start("works", json!({})))
        .await;
    let worked = m.result("works").await;
    assert_eq!(worked["error"], serde_json::Value::Null, "{worked}");
    d.signal("-TERM");
    assert_eq!(d.wait(LONG).await, Some(0));
    let text = std::fs::read_to_string(log.path()).expect("log");
    if writable {
        let after = power::in_force().expect("read the limit in force");
        assert!(after > limit, "{after:?} still in force after the daemon");
        assert!(
            text.contains("holding a CPU wake-up latency limit"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("cannot hold the CPU wake-up latency limit"),
            "{text}"
        );
    }
}
