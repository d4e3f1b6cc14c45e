//! docs/protocol.md §10 conformance vectors V1–V14 and V19, for both manager generations,
//! against a real mosquitto and the real worker.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_startup_announces_then_heartbeats() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let worker = Worker::start(env(&broker, &[]));
    let create = m.expect("control/proplet/create", LONG, |_| true).await;
    assert_eq!(create["proplet_id"], P);
    assert_eq!(create["namespace"], "default");
    assert_eq!(create["metadata"]["wasm_runtime"], "wasmtime-internal");
    // Subscriptions are in place before the announcement: a start sent right now is served.
    m.send_json("control/manager/start", &start(T, json!({})))
        .await;
    let first = m.expect("control/proplet/alive", LONG, |_| true).await;
    assert_eq!(
        first,
        json!({"proplet_id": P, "status": "alive", "namespace": "default"})
    );
    let t0 = std::time::Instant::now();
    m.expect("control/proplet/alive", LONG, |_| true).await;
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "heartbeats repeat every interval"
    );
    assert_ok(&m.result(T).await, "30");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_seed_start_with_numeric_inputs() {
    let (_b, w, mut m) = setup(&[]).await;
    let seed = include_str!("fixtures/inbound/start_seed.json");
    m.send("control/manager/start", seed).await;
    let r = m.result(T).await;
    assert_eq!(
        upstream_fields(&r),
        json!({"task_id": T, "proplet_id": P, "results": "30", "error": null})
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_latest_targeted_start() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send(
        "control/manager/start",
        include_str!("fixtures/inbound/start_latest.json"),
    )
    .await;
    assert_eq!(
        upstream_fields(&m.result(T).await),
        json!({"task_id": T, "proplet_id": P, "results": "30", "error": null})
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_start_for_another_proplet_is_ignored() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json("control/manager/start", &start(T, json!({"proplet_id": Q})))
        .await;
    m.send_json(
        "control/manager/start",
        &start(
            "other-registry",
            json!({"proplet_id": Q, "file": null, "image_url": "x/y:latest"}),
        ),
    )
    .await;
    m.expect_none("control/proplet/results", Duration::from_secs(3), |_| true)
        .await;
    assert!(
        !m.log.iter().any(|s| s.topic == topic("registry/proplet")),
        "no registry request for another proplet's task"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_broadcast_start_runs_everywhere() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &start(T, json!({"proplet_id": null, "broadcast": true})),
    )
    .await;
    assert_ok(&m.result(T).await, "30");
    m.send_json(
        "control/manager/start",
        &start("t-bq", json!({"proplet_id": Q, "broadcast": true})),
    )
    .await;
    assert_ok(&m.result("t-bq").await, "30");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v6_to_v9_errors_are_reported_with_kinds() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &start("v6", json!({"inputs": ["10"]})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start("v7", json!({"inputs": ["ten", "20"]})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start("v8", json!({"name": "mul"})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start("v9", json!({"file": "not-valid-base64!@#$"})),
    )
    .await;
    assert_err(
        &m.result("v6").await,
        "invalid",
        "Argument count mismatch for function 'add': expected 2 arguments but got 1",
    );
    assert_err(
        &m.result("v7").await,
        "invalid",
        "Failed to parse 'ten' as i32",
    );
    let v8 = m.result("v8").await;
    assert_err(&v8, "invalid", "Function 'mul' not found");
    assert!(v8["error"].as_str().unwrap().contains("main, run, _start"));
    assert_err(&m.result("v9").await, "invalid", "base64");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v10_invalid_starts() {
    // Deliberate difference from upstream (and from V10's "nothing"): a start that carries an
    // id always gets an answer, so the manager never waits forever (issue #2). Without an
    // id there is nobody to answer, and nothing is published.
    let (_b, w, mut m) = setup(&[]).await;
    let no_binary = json!({"id":"v10","name":"add","state":0,"cli_args":null,"broadcast":false,"daemon":false,"latent":false,"encrypted":false,"proplet_id":P});
    m.send_json("control/manager/start", &no_binary).await;
    assert_err(
        &m.result("v10").await,
        "invalid",
        "either file or image_url must be provided",
    );
    m.send_json(
        "control/manager/start",
        &json!({"id":"","name":"add","file":ADD_WASM}),
    )
    .await;
    m.expect_none("control/proplet/results", Duration::from_secs(2), |_| true)
        .await;
    w.stop().await;
}

fn chunk(idx: u64, data: &str) -> Value {
    json!({"app_name":"docker.io/example/addition:latest","chunk_idx":idx,"total_chunks":2,"data":data})
}

async fn registry_transfer(m: &mut Manager, id: &str) {
    m.expect("registry/proplet", LONG, |v| {
        v == &json!({"app_name":"docker.io/example/addition:latest"})
    })
    .await;
    m.send_json("registry/server", &chunk(1, "AAcHAQNhZGQAAAoJAQcAIAAgAWoL"))
        .await;
    m.send_json("registry/server", &chunk(0, "AGFzbQEAAAABBwFgAn9/AX8DAgE="))
        .await;
    m.send_json("registry/server", &chunk(0, "AGFzbQEAAAABBwFgAn9/AX8DAgE="))
        .await;
    assert_ok(&m.result(id).await, "30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v11_registry_transfer_both_eras() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send(
        "control/manager/start",
        include_str!("fixtures/inbound/start_registry.json"),
    )
    .await;
    registry_transfer(&mut m, T).await;
    let mut seed: Value =
        serde_json::from_str(include_str!("fixtures/inbound/start_seed.json")).unwrap();
    merge(
        &mut seed,
        json!({"id": "v11-seed", "image_url": "docker.io/example/addition:latest"}),
    );
    seed["file"] = Value::Null;
    m.send_json("control/manager/start", &seed).await;
    registry_transfer(&mut m, "v11-seed").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v11_two_tasks_waiting_for_one_image_are_both_served() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &start(
            "w1",
            json!({"file": null, "image_url": "docker.io/example/addition:latest"}),
        ),
    )
    .await;
    m.send_json("control/manager/start", &start("w2", json!({"file": null, "image_url": "docker.io/example/addition:latest", "inputs": ["1", "2"]}))).await;
    m.expect("registry/proplet", LONG, |_| true).await;
    m.expect_none("registry/proplet", Duration::from_millis(500), |_| true)
        .await;
    m.send_json("registry/server", &chunk(0, "AGFzbQEAAAABBwFgAn9/AX8DAgE="))
        .await;
    m.send_json("registry/server", &chunk(1, "AAcHAQNhZGQAAAoJAQcAIAAgAWoL"))
        .await;
    assert_ok(&m.result("w1").await, "30");
    assert_ok(&m.result("w2").await, "3");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v12_registry_timeout() {
    let (_b, w, mut m) = setup(&[("PROPLET_CHUNK_TIMEOUT", "2s")]).await;
    m.send(
        "control/manager/start",
        include_str!("fixtures/inbound/start_registry.json"),
    )
    .await;
    assert_err(
        &m.result(T).await,
        "fetch",
        "Timeout waiting for binary chunks",
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v13_stop_latest_and_seed_bodies() {
    let (_b, w, mut m) = setup(&[]).await;
    let spin = guests::base64("spin");
    m.send_json(
        "control/manager/start",
        &start("s1", json!({"file": spin, "name": "spin", "inputs": []})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start("s2", json!({"file": spin, "name": "spin", "inputs": []})),
    )
    .await;
    // No wait: the stops come from the same client, after the starts, and the proplet
    // handles messages in order, so both tasks are admitted when their stop arrives.
    m.send_json(
        "control/manager/stop",
        &json!({"broadcast": false, "id": "s1", "proplet_id": P}),
    )
    .await;
    assert_err(&m.result("s1").await, "cancelled", "stopped by the manager");
    let mut seed_stop: Value =
        serde_json::from_str(include_str!("fixtures/inbound/stop_seed.json")).unwrap();
    seed_stop["id"] = json!("s2");
    m.send_json("control/manager/stop", &seed_stop).await;
    assert_err(&m.result("s2").await, "cancelled", "stopped by the manager");
    m.send_json("control/manager/stop", &json!({"id": "nope"}))
        .await;
    // No second result for the stopped tasks, and nothing for the unknown id.
    m.expect_none("control/proplet/results", Duration::from_secs(2), |_| true)
        .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v14_daemon_is_acknowledged_once_running_and_stoppable() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &start("d1", json!({"daemon": true})),
    )
    .await;
    assert_eq!(
        upstream_fields(&m.result("d1").await),
        json!({"task_id": "d1", "proplet_id": P, "results": "", "error": null})
    );
    let spin = guests::base64("spin");
    m.send_json(
        "control/manager/start",
        &start(
            "d2",
            json!({"daemon": true, "file": spin, "name": "spin", "inputs": []}),
        ),
    )
    .await;
    assert_ok(&m.result("d2").await, "");
    m.send_json("control/manager/stop", &json!({"id": "d2"}))
        .await;
    m.expect_none("control/proplet/results", Duration::from_secs(2), |_| true)
        .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v19_unknown_and_ignored_fields() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send(
        "control/manager/start",
        include_str!("fixtures/inbound/start_extra_fields.json"),
    )
    .await;
    assert_ok(&m.result(T).await, "30");
    m.expect_none(
        "control/proplet/task_metrics",
        Duration::from_secs(1),
        |_| true,
    )
    .await;
    w.stop().await;
}
