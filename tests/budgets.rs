//! Per-task budgets (`limits` start field) within the node maximums, and the usage receipt
//! every result carries.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn with_limits(id: &str, guest: &str, name: &str, inputs: Value, limits: Value) -> Value {
    start(
        id,
        json!({"file": guests::base64(guest), "name": name, "inputs": inputs, "limits": limits}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_ask_for_budgets_within_the_node_maximums() {
    let (_b, w, mut m) = setup(&[
        ("PROPLET_TASK_MEMORY", "16MiB"),
        ("PROPLET_TASK_MEMORY_MAX", "32MiB"),
        ("PROPLET_TASK_TIMEOUT", "1s"),
        ("PROPLET_TASK_TIMEOUT_MAX", "2s"),
    ])
    .await;
    let tight = json!({"memory_bytes": 4 << 20});
    m.send_json(
        "control/manager/start",
        &with_limits("tight", "alloc", "alloc", json!(["8"]), tight),
    )
    .await;
    let roomy = json!({"memory_bytes": 24 << 20});
    m.send_json(
        "control/manager/start",
        &with_limits("roomy", "alloc", "alloc", json!(["20"]), roomy),
    )
    .await;
    let greedy = json!({"memory_bytes": 1u64 << 40, "timeout_ms": 3_600_000});
    m.send_json(
        "control/manager/start",
        &with_limits("greedy", "alloc", "alloc", json!(["1"]), greedy),
    )
    .await;
    let started = Instant::now();
    let short = json!({"timeout_ms": 300});
    m.send_json(
        "control/manager/start",
        &with_limits("short", "spin", "spin", json!([]), short),
    )
    .await;

    let tight = m.result("tight").await;
    assert_err(&tight, "memory", "memory limit exceeded");
    assert_eq!(tight["usage"]["limit"], "memory", "{tight}");
    assert_eq!(tight["usage"]["limits"]["memory_bytes"], 4 << 20);
    let peak = tight["usage"]["memory_peak_bytes"].as_u64().expect("peak");
    assert!(peak > 0 && peak <= 4 << 20, "{tight}");

    let roomy = m.result("roomy").await;
    assert_ok(&roomy, "20");
    assert!(
        roomy["usage"]["memory_peak_bytes"].as_u64() > Some(20 << 20),
        "{roomy}"
    );
    assert_eq!(roomy["usage"]["limit"], Value::Null);

    // Asking beyond a node maximum is refused, never silently capped.
    let greedy = m.result("greedy").await;
    assert_err(&greedy, "denied", "above this proplet's maximum");

    let short = m.result("short").await;
    assert_err(&short, "timeout", "timed out after 300ms");
    assert_eq!(short["usage"]["limit"], "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "deadline enforced promptly"
    );
    let wall = short["usage"]["wall_ms"].as_u64().expect("wall");
    assert!((300..2000).contains(&wall), "{short}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_result_carries_a_full_receipt() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json("control/manager/start", &start("add", json!({})))
        .await;
    let hello = start(
        "hello",
        json!({"file": guests::base64("hello"), "name": "_start", "inputs": [], "cli_args": ["hi"]}),
    );
    m.send_json("control/manager/start", &hello).await;
    let add = m.result("add").await;
    assert_ok(&add, "30");
    let usage = &add["usage"];
    assert_eq!(usage["fuel"], Value::Null, "unmetered: {add}");
    assert_eq!(usage["limit"], Value::Null);
    assert_eq!(usage["limits"]["memory_bytes"], 256 << 20);
    assert_eq!(usage["limits"]["timeout_ms"], 600_000);
    let digest = add["digest"].as_str().expect("digest");
    let bytes = base64_decode(ADD_WASM);
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&bytes)));
    let hello = m.result("hello").await;
    let out = hello["results"].as_str().expect("text").len() as u64;
    assert!(
        hello["usage"]["output_bytes"].as_u64() >= Some(out),
        "{hello}"
    );
    assert!(out > 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_metered_when_the_node_turns_it_on() {
    let (_b, w, mut m) = setup(&[("PROPLET_TASK_FUEL_MAX", "50000000")]).await;
    let spin = with_limits(
        "spin",
        "spin",
        "spin",
        json!([]),
        json!({"fuel": 2_000_000}),
    );
    m.send_json("control/manager/start", &spin).await;
    m.send_json("control/manager/start", &start("add", json!({})))
        .await;
    let greedy = with_limits(
        "greedy",
        "spin",
        "spin",
        json!([]),
        json!({"fuel": u64::MAX}),
    );
    m.send_json("control/manager/start", &greedy).await;
    let spin = m.result("spin").await;
    assert_err(&spin, "fuel", "fuel budget of 2000000 exhausted");
    assert_eq!(spin["usage"]["limit"], "fuel");
    assert_eq!(spin["usage"]["fuel"], 2_000_000, "{spin}");
    let add = m.result("add").await;
    assert_ok(&add, "30");
    let used = add["usage"]["fuel"].as_u64().expect("metered");
    assert!(used > 0 && used < 100, "{add}");
    assert_eq!(
        add["usage"]["limits"]["fuel"], 50_000_000,
        "the maximum is the default"
    );
    let greedy = m.result("greedy").await;
    assert_err(
        &greedy,
        "denied",
        "above this proplet's maximum of 50000000",
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_refused_where_it_is_not_metered_and_bad_budgets_are_invalid() {
    let (_b, w, mut m) = setup(&[]).await;
    let fuel = start("fuel", json!({"limits": {"fuel": 1000}}));
    m.send_json("control/manager/start", &fuel).await;
    let zero = start("zero", json!({"limits": {"timeout_ms": 0}}));
    m.send_json("control/manager/start", &zero).await;
    let wrong = start("wrong", json!({"limits": {"memory_bytes": "a lot"}}));
    m.send_json("control/manager/start", &wrong).await;
    let negative = start("negative", json!({"limits": {"output_bytes": -1}}));
    m.send_json("control/manager/start", &negative).await;
    assert_err(&m.result("fuel").await, "denied", "fuel metering is off");
    assert_err(
        &m.result("zero").await,
        "invalid",
        "timeout_ms must be greater than 0",
    );
    assert_err(&m.result("wrong").await, "invalid", "expected u64");
    assert_err(&m.result("negative").await, "invalid", "expected u64");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_results_share_the_output_budget() {
    let (_b, w, mut m) = setup(&[]).await;
    let file = guests::component_base64("workload");
    let chatty = start(
        "chatty",
        json!({"file": file, "name": "t", "cli_args": ["chatty"], "inputs": [], "limits": {"output_bytes": 65536}}),
    );
    m.send_json("control/manager/start", &chatty).await;
    let chatty = m.result("chatty").await;
    assert_err(&chatty, "output_limit", "output limit of 65536 bytes");
    assert_eq!(chatty["usage"]["limit"], "output_limit");
    assert!(
        chatty["usage"]["output_bytes"].as_u64() <= Some(65536),
        "{chatty}"
    );
    w.stop().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
