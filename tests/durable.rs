//! The durable outbox, against the real `proplet` binary and a real mosquitto: results
//! that finished while the broker was away survive the worker being killed or stopped,
//! and the next process on the same state directory delivers them, once each.

mod common;

use std::collections::HashMap;
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
    let state = broker.state_dir().display().to_string();
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

/// The error kinds (`ok` for none) each task id was answered with.
type Answers = HashMap<String, Vec<String>>;

/// Records `msg` if it is a result.
fn record(seen: &mut Answers, msg: &Seen) -> bool {
    if msg.topic != topic("control/proplet/results") {
        return false;
    }
    let id = msg.json["task_id"].as_str().unwrap_or_default().to_owned();
    let kind = msg.json["error_kind"].as_str().unwrap_or("ok").to_owned();
    seen.entry(id).or_default().push(kind);
    true
}

/// The ids of `ids` without an answer in `seen`.
fn missing<'a>(seen: &Answers, ids: &'a [String]) -> Vec<&'a String> {
    ids.iter().filter(|id| !seen.contains_key(*id)).collect()
}

/// Reads results into `seen` until every one of `ids` has one.
async fn until_answered(m: &mut Manager, seen: &mut Answers, ids: &[String]) {
    let deadline = Instant::now() + LONG;
    loop {
        let missing = missing(seen, ids);
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "unanswered: {missing:?}");
        if let Some(msg) = m.next(Duration::from_secs(5)).await {
            record(seen, &msg);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_burst_leaves_no_task_unanswered() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir().display().to_string();
    let env = [
        ("PROPLET_STATE_DIR", state.as_str()),
        ("PROPLET_MQTT_CLEAN_SESSION", "false"),
        // Two slots for the spinning tasks, one for the burst: most of it waits in the queue.
        ("PROPLET_MAX_CONCURRENT_TASKS", "3"),
    ];
    let mut first = Daemon::start(&broker, &env);
    m.wait_ready().await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = format!("spinning-{n}");
        m.send_json("control/manager/start", &start(&id, spin.clone()))
            .await;
        ids.push(id);
    }
    // Each takes a few milliseconds (it touches 8 MiB), so that the burst outlasts the
    // first 50 answers on any machine: some are still queued when the worker dies.
    let alloc = json!({"file": guests::base64("alloc"), "name": "alloc", "inputs": ["8"]});
    for n in 0..300 {
        let id = format!("burst-{n}");
        m.send_json("control/manager/start", &start(&id, alloc.clone()))
            .await;
        ids.push(id);
    }
    // Kill it once some results are out: the rest are running, queued, or waiting to be
    // published.
    let mut seen = Answers::new();
    let mut answered = 0;
    while answered < 50 {
        let msg = m.next(LONG).await.expect("results flow");
        answered += usize::from(record(&mut seen, &msg));
    }
    first.signal("-KILL");
    first.wait(LONG).await;
    let _second = Daemon::start(&broker, &env);
    until_answered(&mut m, &mut seen, &ids).await;
    for n in 0..2 {
        let kinds = &seen[&format!("spinning-{n}")];
        assert!(kinds.iter().all(|k| k == "interrupted"), "{kinds:?}");
    }
    let interrupted = seen
        .values()
        .filter(|kinds| kinds.iter().any(|k| k == "interrupted"))
        .count();
    assert!(
        interrupted > 2,
        "queued tasks were answered interrupted too ({interrupted})"
    );
    for (id, kinds) in &seen {
        let ok = kinds.iter().any(|k| k == "ok");
        assert!(
            kinds.iter().all(|k| k == "ok" || k == "interrupted"),
            "{id}: {kinds:?}"
        );
        assert!(
            !(ok && kinds.iter().any(|k| k == "interrupted")),
            "{id} both finished and interrupted: {kinds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_is_set_aside_and_the_worker_carries_on() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir();
    let state_text = state.display().to_string();
    let env = [("PROPLET_STATE_DIR", state_text.as_str())];
    let mut first = Daemon::start(&broker, &env);
    m.wait_ready().await;
    m.send_json("control/manager/start", &start("before", json!({})))
        .await;
    assert_ok(&m.result("before").await, "30");
    first.signal("-TERM");
    assert_eq!(first.wait(LONG).await, Some(0));
    // Damage the journal's first record, as a bad disk or a bad copy would.
    let journal = state.join("journal.log");
    let mut bytes = std::fs::read(&journal).expect("a journal");
    bytes[12] ^= 0xff;
    std::fs::write(&journal, &bytes).expect("damage");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut second = Daemon::start_logged(&broker, &env, &log);
    m.wait_ready().await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    let text = second.wait_for_log(&log, |t| t.contains("set aside")).await;
    assert!(text.contains("damaged"), "{text}");
    let aside = std::fs::read_dir(&state)
        .expect("list")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(aside, "the unreadable journal is kept aside");
}

/// Runs counted by the proplet (every answered run, whatever its outcome).
async fn runs(probe: &Probe) -> u64 {
    let (_, body) = probe.get("/metrics").await;
    body.lines()
        .filter(|l| l.starts_with("proplet_tasks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_burst_loses_no_answer_and_runs_nothing_twice() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir().display().to_string();
    let probe = Probe::new();
    let env = [
        ("PROPLET_STATE_DIR", state.as_str()),
        ("PROPLET_MQTT_CLEAN_SESSION", "false"),
        ("PROPLET_MAX_CONCURRENT_TASKS", "4"),
        probe.env(),
    ];
    let _worker = Daemon::start(&broker, &env);
    m.wait_ready().await;
    let ids: Vec<String> = (0..1000).map(|n| format!("burst-{n}")).collect();
    for id in &ids {
        m.send_json("control/manager/start", &start(id, json!({})))
            .await;
    }
    let mut seen = Answers::new();
    while seen.len() < 200 {
        let msg = m.next(LONG).await.expect("results flow");
        record(&mut seen, &msg);
    }
    // Killed: whatever it acknowledged since it last saved is gone, starts and answers.
    broker.kill();
    broker.restart();
    // The manager sends again (still pending: state 0) every start it has no answer for,
    // as it would after a timeout, until each has one.
    let deadline = Instant::now() + LONG;
    loop {
        let missing = missing(&seen, &ids);
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "unanswered: {missing:?}");
        for id in missing {
            m.send_json("control/manager/start", &start(id, json!({})))
                .await;
        }
        let round = Instant::now() + Duration::from_secs(3);
        while let Some(msg) = m
            .next(round.saturating_duration_since(Instant::now()))
            .await
        {
            record(&mut seen, &msg);
        }
    }
    assert!(seen.values().flatten().all(|k| k == "ok"), "{seen:?}");
    assert_eq!(runs(&probe).await, 1000, "each task ran once");
}
