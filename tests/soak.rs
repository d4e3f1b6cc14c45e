//! A bounded soak: sustained mixed traffic against the real binary and a real mosquitto,
//! with the broker restarted (gracefully) and the worker killed (SIGKILL) and started again
//! in turn. At the end: every task id answered (none lost), the outbox drained, and the
//! worker's memory, descriptors and state directory flat. Prints one summary line.
//!
//! The suite runs it briefly; `just soak` runs it for `PROPLET_SOAK_SECONDS` (default 300).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use serde_json::{Value, json};

/// How long the suite's short soak runs.
const SHORT: u64 = 16;
/// Starts sent per round, and the pause between rounds.
const PER_ROUND: usize = 20;
const ROUND: Duration = Duration::from_millis(250);
/// A restart (broker or worker, in turn) every so often.
const RESTART_EVERY: Duration = Duration::from_secs(4);

/// What the worker process uses, seen from outside.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    fds: usize,
    state: u64,
}

fn sample(worker: &Daemon, state: &Path) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", worker.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let state = std::fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    Sample {
        rss: worker.rss_bytes(),
        fds,
        state,
    }
}

/// The n-th start of the mix: mostly quick successes, some failures, some that time out.
fn task(n: usize, spin: &Value) -> (String, Value) {
    let id = format!("soak-{n}");
    let overrides = match n % 10 {
        0 => spin.clone(),
        1 => json!({"name": "no_such_export"}),
        _ => json!({}),
    };
    (id.clone(), start(&id, overrides))
}

struct Tally {
    sent: Vec<String>,
    answers: HashMap<String, usize>,
}

impl Tally {
    fn read(&mut self, msg: &Seen) {
        if msg.topic == topic("control/proplet/results") {
            let id = msg.json["task_id"].as_str().unwrap_or_default().to_owned();
            *self.answers.entry(id).or_default() += 1;
        }
    }

    fn lost(&self) -> Vec<&String> {
        self.sent
            .iter()
            .filter(|id| !self.answers.contains_key(*id))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_restarts_loses_nothing_and_stays_flat() {
    let seconds = std::env::var("PROPLET_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SHORT);
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir();
    let state_text = state.display().to_string();
    let probe = Probe::new();
    let env = [
        ("PROPLET_STATE_DIR", state_text.as_str()),
        ("PROPLET_MQTT_CLEAN_SESSION", "false"),
        ("PROPLET_MAX_CONCURRENT_TASKS", "4"),
        ("PROPLET_TASK_TIMEOUT", "1s"),
        probe.env(),
    ];
    let mut worker = Daemon::start(&broker, &env);
    m.wait_ready().await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    let mut tally = Tally {
        sent: Vec::new(),
        answers: HashMap::new(),
    };
    let mut samples = Vec::new();
    let (mut broker_restarts, mut worker_restarts) = (0, 0);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut next_restart = Instant::now() + RESTART_EVERY;
    while Instant::now() < end {
        for _ in 0..PER_ROUND {
            let (id, msg) = task(tally.sent.len(), &spin);
            m.send_json("control/manager/start", &msg).await;
            tally.sent.push(id);
        }
        let round = Instant::now() + ROUND;
        while let Some(msg) = m
            .next(round.saturating_duration_since(Instant::now()))
            .await
        {
            tally.read(&msg);
        }
        if Instant::now() >= next_restart {
            next_restart = Instant::now() + RESTART_EVERY;
            if (broker_restarts + worker_restarts) % 2 == 0 {
                broker.restart_gracefully();
                broker_restarts += 1;
            } else {
                samples.push(sample(&worker, &state));
                worker.signal("-KILL");
                worker.wait(Duration::from_secs(30)).await;
                worker = Daemon::start(&broker, &env);
                worker_restarts += 1;
            }
        }
    }
    // Settle: everything sent gets its answer.
    let settle = Instant::now() + Duration::from_secs(60);
    while !tally.lost().is_empty() && Instant::now() < settle {
        if let Some(msg) = m.next(Duration::from_secs(1)).await {
            tally.read(&msg);
        }
    }
    probe.wait_for("proplet_outbox_messages 0").await;
    samples.push(sample(&worker, &state));
    let duplicated = tally.answers.values().filter(|n| **n > 1).count();
    let lost = tally.lost();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    println!(
        "soak: {seconds}s sent={} answered={} duplicated={duplicated} lost={} restarts: broker={broker_restarts} worker={worker_restarts} rss_kib={}..{} (peak {}) fds={}..{} state_bytes={}..{}",
        tally.sent.len(),
        tally.answers.len(),
        lost.len(),
        first.rss / 1024,
        last.rss / 1024,
        peak / 1024,
        first.fds,
        last.fds,
        first.state,
        last.state,
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(last.fds <= first.fds + 16, "descriptors grew: {samples:?}");
    assert!(peak <= first.rss * 2, "memory grew: {samples:?}");
    assert!(
        last.state <= first.state * 2 + (4 << 20),
        "the state directory grew: {samples:?}"
    );
}
