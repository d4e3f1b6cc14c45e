//! Sessions that outlive a process, and brokers that are not there: against the real
//! `proplet` binary and a real mosquitto.
//! - a worker that died in the middle of a QoS 2 exchange (the broker had its PUBREC and
//!   will re-send the PUBREL) works again on restart instead of reconnecting forever;
//! - a broker that refuses connections at start-up is retried with capped, jittered
//!   backoff, and the log says so once per kind of failure, not once per attempt.

mod common;

use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;

/// Plays the part of a proplet (its client id, a persistent session) that takes the starts
/// `ids` and dies: right after acknowledging them all with PUBREC when `acknowledge` (the
/// broker keeps the exchanges and will send their PUBRELs again to the next process with
/// this client id), else before acknowledging the first at all (the broker will deliver it
/// again, flagged DUP).
async fn stand_in_dies_with_starts(broker: &Broker, m: &Manager, ids: &[&str], acknowledge: bool) {
    let mut opts = MqttOptions::new(P, "127.0.0.1", broker.port);
    opts.set_clean_session(false).set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let start_topic = topic("control/manager/start");
    let mut sent = false;
    let mut received = Vec::new();
    let mut acknowledged = 0;
    let exchange = async {
        loop {
            match eventloop.poll().await.expect("the broker is up") {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(start_topic.clone(), QoS::ExactlyOnce)
                        .await
                        .expect("subscribe");
                }
                Event::Incoming(Packet::SubAck(_)) if !sent => {
                    sent = true;
                    for id in ids {
                        m.send_json("control/manager/start", &start(id, json!({})))
                            .await;
                    }
                }
                Event::Incoming(Packet::Publish(_)) if !acknowledge => return,
                // Acknowledged together once all are in: none is released before the end.
                Event::Incoming(Packet::Publish(p)) => {
                    received.push(p);
                    if received.len() == ids.len() {
                        for p in &received {
                            client.ack(p).await.expect("ack");
                        }
                    }
                }
                Event::Outgoing(Outgoing::PubRec(_)) => {
                    acknowledged += 1;
                    if acknowledged == ids.len() {
                        return;
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the starts reached the stand-in");
    // Dropping the event loop closes the socket without reading anything more.
    drop(eventloop);
}

/// A proplet on the persistent session of a process that died with `ids` acknowledged
/// (PUBREC) and never released: it connects, completes the releases on its first
/// connection (never dropping it), and runs a new start.
async fn pubrels_left_by_a_dead_process_do_not_keep_the_next_one_off_the_air(ids: &[&str]) {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    stand_in_dies_with_starts(&broker, &m, ids, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let _d = Daemon::start_logged(&broker, &[("PROPLET_MQTT_CLEAN_SESSION", "false")], &log);
    m.wait_ready().await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    // Settled: no further reconnect (each would announce the proplet again).
    m.expect_none("control/proplet/create", Duration::from_secs(2), |_| true)
        .await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains("MQTT connection error"),
        "the first connection stayed up:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrel_left_by_a_dead_process_does_not_keep_the_next_one_off_the_air() {
    pubrels_left_by_a_dead_process_do_not_keep_the_next_one_off_the_air(&["lost"]).await;
}

/// The broker re-sends every release at once: one connection has to expect them all (one
/// learnt per connection, dropped by the next, reconnected for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pubrels_left_by_a_dead_process_do_not_keep_the_next_one_off_the_air() {
    let ids: Vec<String> = (0..5).map(|n| format!("lost-{n}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    pubrels_left_by_a_dead_process_do_not_keep_the_next_one_off_the_air(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_connections_is_retried_with_one_warning() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    broker.kill();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut d = Daemon::start_logged(&broker, &[], &log);
    let again = "MQTT connection failed again";
    d.wait_for_log(&log, |text| text.matches(again).count() >= 3)
        .await;
    broker.restart();
    m.wait_ready().await;
    let text = d
        .wait_for_log(&log, |text| {
            text.contains("connected after repeated failures")
        })
        .await;
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("MQTT"))
        .count();
    assert_eq!(warnings, 1, "one warning for one kind of failure:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_results_never_crowds_out_the_subscriptions() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let _d = Daemon::start(
        &broker,
        &[
            // The client's request queue holds one message: a backlog fills it at once.
            ("PROPLET_MQTT_REQUEST_CHANNEL_CAPACITY", "1"),
            ("PROPLET_MAX_CONCURRENT_TASKS", "4"),
            ("PROPLET_TASK_TIMEOUT", "1s"),
            probe.env(),
        ],
    );
    m.wait_ready().await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    for n in 0..4 {
        let id = format!("backlog-{n}");
        m.send_json("control/manager/start", &start(&id, spin.clone()))
            .await;
    }
    probe.wait_for("proplet_tasks_running 4").await;
    broker.kill();
    probe
        .wait_for(r#"proplet_tasks_total{outcome="error",error_kind="timeout"} 4"#)
        .await;
    broker.restart();
    m.wait_ready().await;
    for n in 0..4 {
        let r = m.result(&format!("backlog-{n}")).await;
        assert_err(&r, "timeout", "timed out");
    }
    m.send_json("control/manager/start", &start("subscribed", json!({})))
        .await;
    assert_ok(&m.result("subscribed").await, "30");
}

/// A broker, a manager, and a ready proplet process with a state directory of its own
/// (returned for the next process) and a metrics probe.
async fn journaled_worker() -> (Broker, Manager, String, Probe, Daemon) {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir().display().to_string();
    let probe = Probe::new();
    let first = Daemon::start(&broker, &[("PROPLET_STATE_DIR", &state), probe.env()]);
    m.wait_ready().await;
    (broker, m, state, probe, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_a_killed_worker_left_are_answered_interrupted_by_the_next() {
    let (broker, mut m, state, probe, mut first) = journaled_worker().await;
    let deploy =
        json!({"file": guests::component_base64("greet"), "name": "greet", "latent": true});
    m.send_json("control/manager/start", &start("lat", deploy))
        .await;
    let invoke = json!({"id": "lat", "invocation_id": "i1", "inputs": ["\"x\""], "proplet_id": P});
    m.send_json("control/manager/invoke", &invoke).await;
    m.expect("control/proplet/invoke_results", LONG, |v| {
        v["invocation_id"] == "i1"
    })
    .await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    // A daemon, acknowledged as running: its job stays open while it runs.
    let daemon =
        json!({"file": guests::base64("spin"), "name": "spin", "inputs": [], "daemon": true});
    m.send_json("control/manager/start", &start("daemon", daemon))
        .await;
    assert_ok(&m.result("daemon").await, "");
    m.send_json("control/manager/start", &start("mid-run", spin))
        .await;
    probe.wait_for("proplet_tasks_running 2").await;
    // All are on disk: the running task and daemon, and the deployed latent task.
    probe
        .wait_for(r#"proplet_journal_entries{table="jobs"} 2"#)
        .await;
    probe
        .wait_for(r#"proplet_journal_entries{table="latent"} 1"#)
        .await;
    // A start that is refused, naming the running task: its answer must not cross the
    // running task out of the journal.
    m.send_json(
        "control/manager/start",
        &start("mid-run", json!({"file": ""})),
    )
    .await;
    assert_err(&m.result("mid-run").await, "invalid", "file or image_url");
    // Every answer is stored durably, and makes what came before it durable too: the
    // delivery of the refusal above, which the next process is not to send again.
    m.send_json(
        "control/manager/start",
        &start("flush", json!({"file": ""})),
    )
    .await;
    assert_err(&m.result("flush").await, "invalid", "file or image_url");
    first.signal("-KILL");
    first.wait(LONG).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let _second = Daemon::start_logged(&broker, &[("PROPLET_STATE_DIR", &state)], &log);
    let ran = m.result("mid-run").await;
    assert_err(&ran, "interrupted", "stopped before answering");
    assert_err(&m.result("lat").await, "interrupted", "deploy it again");
    let daemon = m.result("daemon").await;
    assert_err(&daemon, "interrupted", "stopped before answering");
    // Each is answered once, and the journal is empty again.
    m.expect_none("control/proplet/results", Duration::from_secs(1), |v| {
        ["mid-run", "lat", "daemon"].contains(&v["task_id"].as_str().unwrap_or_default())
    })
    .await;

    let mut third = Daemon::start_logged(&broker, &[("PROPLET_STATE_DIR", &state)], &log);
    assert_ne!(
        third.wait(LONG).await,
        Some(0),
        "a second proplet on one state directory"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("in use by another proplet"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_cleanly_leaves_nothing_to_answer_again() {
    let (broker, mut m, state, probe, mut first) = journaled_worker().await;
    for id in ["one", "two"] {
        m.send_json("control/manager/start", &start(id, json!({})))
            .await;
        assert_ok(&m.result(id).await, "30");
    }
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
    m.send_json("control/manager/start", &start("drained", spin))
        .await;
    probe.wait_for("proplet_tasks_running 1").await;
    first.signal("-TERM");
    assert_err(&m.result("drained").await, "cancelled", "shutting down");
    assert_eq!(first.wait(LONG).await, Some(0));
    let _second = Daemon::start(&broker, &[("PROPLET_STATE_DIR", &state)]);
    m.wait_ready().await;
    m.expect_none("control/proplet/results", Duration::from_secs(1), |_| true)
        .await;
}

/// The environment of a proplet on the state directory `state` whose MQTT session the
/// broker keeps from one process to the next: what one leaves unacknowledged, the broker
/// delivers again to the next.
fn persistent(state: &str) -> [(&'static str, &str); 2] {
    [
        ("PROPLET_STATE_DIR", state),
        ("PROPLET_MQTT_CLEAN_SESSION", "false"),
    ]
}

/// A broker, a manager, and a ready proplet process on a persistent session (see
/// [`persistent`]), with the state directory for the next process.
async fn persistent_worker() -> (Broker, Manager, String, Daemon) {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir().display().to_string();
    let first = Daemon::start(&broker, &persistent(&state));
    m.wait_ready().await;
    (broker, m, state, first)
}

/// A start delivered at QoS 0 is acknowledged to nobody and answered all the same. Mixed
/// with QoS 2 starts on a persistent session, it takes nothing from theirs: each of those
/// is acknowledged, so the next process on the session is given none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_at_qos_0_among_qos_2_ones_are_answered_and_the_rest_still_acknowledged() {
    let (broker, mut m, state, mut first) = persistent_worker().await;
    let env = persistent(&state);
    let sent = [
        ("two-a", QoS::ExactlyOnce),
        ("zero-a", QoS::AtMostOnce),
        ("two-b", QoS::ExactlyOnce),
        ("zero-b", QoS::AtMostOnce),
        ("zero-c", QoS::AtMostOnce),
    ];
    for (id, qos) in sent {
        let payload = serde_json::to_vec(&start(id, json!({}))).expect("json");
        m.send_at("control/manager/start", payload, qos).await;
    }
    for (id, _) in sent {
        assert_ok(&m.result(id).await, "30");
    }
    first.signal("-TERM");
    assert_eq!(first.wait(LONG).await, Some(0));
    let _second = Daemon::start(&broker, &env);
    m.wait_ready().await;
    m.expect_none("control/proplet/results", Duration::from_secs(1), |_| true)
        .await;
}

/// A session at QoS 0 (`PROPLET_MQTT_QOS=0`): starts come at QoS 0 whatever the manager
/// published them at, nothing is acknowledged, and every one is answered, alone or
/// together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_at_qos_0_answers_every_start() {
    let (_broker, _worker, mut m) = setup(&[("PROPLET_MQTT_QOS", "0")]).await;
    m.send_json("control/manager/start", &start("alone", json!({})))
        .await;
    assert_ok(&m.result("alone").await, "30");
    let ids: Vec<String> = (0..20).map(|n| format!("together-{n}")).collect();
    for id in &ids {
        m.send_json("control/manager/start", &start(id, json!({})))
            .await;
    }
    for id in &ids {
        assert_ok(&m.result(id).await, "30");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_start_of_a_finished_task_is_answered_again_not_run_again() {
    let (broker, mut m, state, mut first) = persistent_worker().await;
    let env = persistent(&state);
    m.send_json("control/manager/start", &start("once", json!({})))
        .await;
    let answer = m.result("once").await;
    assert_ok(&answer, "30");
    first.signal("-TERM");
    assert_eq!(first.wait(LONG).await, Some(0));
    // The broker hands the start to a process that dies before acknowledging it ...
    stand_in_dies_with_starts(&broker, &m, &["once"], false).await;
    // ... and delivers it again, flagged DUP, to the next proplet on this session.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let mut second = Daemon::start_logged(&broker, &env, &log);
    let again = m.result("once").await;
    assert_eq!(again, answer, "the same answer, not a new run");
    second
        .wait_for_log(&log, |text| {
            text.contains("copy of the start of a task already answered")
        })
        .await;
}
