//! The durable outbox, against the real `proplet` binary and a real mosquitto: results
//! that finished while the broker was away survive the worker being killed or stopped,
//! and the next process on the same state directory delivers them, once each.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);
const TASKS: usize = 4;

/// Tasks finish while the broker is down; the worker ends by `signal`; broker and worker
/// come back: every result arrives, once, as it was (not `interrupted`).
async fn results_outlive_the_worker(signal: &str) {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = state_dir().display().to_string();
    let probe = Probe::new();
    let mut first = Daemon::start(
        &broker,
        &[
            ("PROPLET_STATE_DIR", &state),
            ("PROPLET_TASK_TIMEOUT", "1s"),
            ("PROPLET_MAX_CONCURRENT_TASKS", "4"),
            probe.env(),
        ],
    );
    m.wait_ready().await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    for n in 0..TASKS {
        m.send_json(
            "control/manager/start",
            &start(&format!("kept-{n}"), spin.clone()),
        )
        .await;
    }
    probe
        .wait_for(&format!("proplet_tasks_running {TASKS}"))
        .await;
    broker.kill();
    // Every result is on disk before the worker goes.
    probe
        .wait_for(&format!("proplet_outbox_messages {TASKS}"))
        .await;
    let stopped = Instant::now();
    first.signal(signal);
    first.wait(LONG).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "with the broker away and every result kept, the worker ends at once ({:?})",
        stopped.elapsed()
    );
    broker.restart();
    let probe = Probe::new();
    let _second = Daemon::start(&broker, &[("PROPLET_STATE_DIR", &state), probe.env()]);
    for n in 0..TASKS {
        let r = m.result(&format!("kept-{n}")).await;
        assert_err(&r, "timeout", "timed out");
    }
    m.expect_none("control/proplet/results", Duration::from_secs(1), |v| {
        v["task_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("kept-"))
    })
    .await;
    probe.wait_for("proplet_outbox_messages 0").await;
    probe
        .wait_for(&format!("proplet_outbox_replayed_total {TASKS}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_outlive_a_killed_worker() {
    results_outlive_the_worker("-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_outlive_a_worker_stopped_with_the_broker_away() {
    results_outlive_the_worker("-TERM").await;
}
