//! `proplet submit` against a real mosquitto and a real proplet: a task goes out as the
//! manager would send it, and its result (or why it failed) comes back on the command line.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;
use serde_json::Value;

/// Runs `proplet submit ARGS` with the test proplet's own settings (plus `extra`).
async fn submit(broker: &Broker, args: &[&str], extra: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_proplet"))
        .arg("submit")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env(broker, extra))
        .output()
        .await
        .expect("run proplet submit")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_sends_a_task_and_prints_its_result() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &[]);
    m.wait_ready().await;
    let add = guests::path("add");
    let out = submit(
        &broker,
        &["--invoke", "add", add.to_str().unwrap(), "40", "2"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");

    // A workload component, inputs as flags, and the whole message for scripts.
    let workload = guests::component_path("workload");
    let out = submit(
        &broker,
        &[
            "--json",
            "--id",
            "submitted-1",
            "--input",
            "1",
            "--input",
            "2",
            "--traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            workload.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(result["task_id"], "submitted-1");
    assert_eq!(result["results"], "sum=3");
    assert_eq!(result["proplet_id"], P);
    // The manager saw exactly what a manager would have sent.
    let start = m
        .expect("control/manager/start", Duration::from_secs(5), |v| {
            v["id"] == "submitted-1"
        })
        .await;
    assert_eq!(start["proplet_id"], P);
    assert_eq!(start["inputs"], serde_json::json!(["1", "2"]));
    assert!(start["traceparent"].is_string());

    // A failed task: exit status 1, and why it failed (the panic message) on stderr.
    let out = submit(
        &broker,
        &["--timeout", "5s", workload.to_str().unwrap(), "panic"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("trap: guest trapped"), "{stderr}");
    assert!(stderr.contains("asked to panic"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_says_what_is_wrong_without_waiting() {
    let broker = Broker::start();
    // Too large for one packet: refused before connecting, with the way out.
    let python = guests::python_workload_path();
    let out = submit(&broker, &[python.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("PROPLET_MQTT_MAX_PACKET_SIZE"), "{stderr}");
    assert!(stderr.contains("image_url"), "{stderr}");
    // A typo in a file name is not sent as a URL.
    let out = submit(&broker, &["nowhere/add.wasm"], &[]).await;
    assert!(text(&out.stderr).contains("no such file"));
    // Nobody answers: the wait ends with a clear message.
    let add = guests::path("add");
    let began = Instant::now();
    let out = submit(
        &broker,
        &[
            "--wait",
            "1s",
            "--invoke",
            "add",
            add.to_str().unwrap(),
            "1",
            "2",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no answer within 1s"),
        "{}",
        text(&out.stderr)
    );
    assert!(began.elapsed() < Duration::from_secs(10));
    // No broker at all.
    let out = submit(
        &broker,
        &["--invoke", "add", add.to_str().unwrap(), "1", "2"],
        &[
            ("PROPLET_MQTT_ADDRESS", "tcp://127.0.0.1:9"),
            ("PROPLET_MQTT_TIMEOUT", "2s"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("MQTT broker 127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
}
