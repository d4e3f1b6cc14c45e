//! Answers under pressure, against the real `proplet` binary and a real mosquitto:
//! a result too large for one MQTT packet is answered `output_limit` instead, and never
//! poisons the session (nothing oversized is handed to the client, so nothing is replayed).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::daemon::Daemon;
use common::*;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A WASI command that writes `bytes` bytes of `A` to stdout (its result) in one `fd_write`.
fn big_writer(bytes: u32) -> String {
    let wasm = wat::parse_str(format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 8)
             (func (export "_start")
               (memory.fill (i32.const 64) (i32.const 65) (i32.const {bytes}))
               (i32.store (i32.const 0) (i32.const 64))
               (i32.store (i32.const 4) (i32.const {bytes}))
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
    .expect("wat");
    b64(&wasm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_for_a_packet_is_answered_output_limit_and_never_replayed() {
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(
        &broker,
        &[
            ("PROPLET_MQTT_MAX_PACKET_SIZE", &MAX_PACKET.to_string()),
            ("PROPLET_OUTPUT_LIMIT", "1MiB"),
        ],
    );
    m.wait_ready().await;
    let deploy = json!({"file": guests::component_base64("greet"), "name": "greet",
        "inputs": ["\"nobody\""], "latent": true});
    m.send_json("control/manager/start", &start("greeter", deploy))
        .await;
    let big = json!({"file": big_writer(200_000), "name": "_start", "inputs": []});
    m.send_json("control/manager/start", &start("big", big))
        .await;
    let r = m.result("big").await;
    assert_err(&r, "output_limit", "PROPLET_MQTT_MAX_PACKET_SIZE");
    assert_eq!(r["usage"]["limit"], "output_limit", "{r}");

    // The session is healthy: the next task on the same worker works.
    m.send_json("control/manager/start", &start("next", json!({})))
        .await;
    assert_ok(&m.result("next").await, "30");

    // After a broker restart (a lost session) nothing is replayed for "big", and the
    // session comes back and works.
    broker.restart();
    m.expect("control/proplet/create", Duration::from_secs(60), |v| {
        v["proplet_id"] == P
    })
    .await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    m.expect_none("control/proplet/results", Duration::from_secs(2), |v| {
        v["task_id"] == "big"
    })
    .await;

    // An invocation whose result would not fit is answered the same way.
    let r = invoke_when_ready(&mut m, &oversized_invocation()).await;
    assert_err(&r, "output_limit", "PROPLET_MQTT_MAX_PACKET_SIZE");
}

/// `PROPLET_MQTT_MAX_PACKET_SIZE` in the oversized-result test.
const MAX_PACKET: usize = 64 << 10;

/// An invoke of the latent `greeter` that fits in one packet, but whose answer (the greeting
/// plus the usage receipt) does not.
fn oversized_invocation() -> Value {
    let shell = |name: &str| {
        json!({"id": "greeter", "invocation_id": "inv-big", "proplet_id": P,
            "inputs": [format!("\"{name}\"")]})
    };
    // The broker-side packet: fixed header (≤ 5), topic length (2) and topic, packet id (2).
    let overhead = 5 + 2 + topic("control/manager/invoke").len() + 2;
    let empty = serde_json::to_vec(&shell("")).expect("json").len();
    let name = "x".repeat(MAX_PACKET - overhead - empty - 16);
    shell(&name)
}

/// Sends `invoke` until the latent task has been precompiled (an earlier attempt is answered
/// "has not been precompiled"); returns the first other answer.
async fn invoke_when_ready(m: &mut Manager, invoke: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        m.send_json("control/manager/invoke", invoke).await;
        let r = m
            .expect(
                "control/proplet/invoke_results",
                Duration::from_secs(60),
                |v| v["invocation_id"] == invoke["invocation_id"],
            )
            .await;
        let waiting = r["error"]
            .as_str()
            .is_some_and(|e| e.contains("has not been precompiled"));
        if !waiting {
            return r;
        }
        assert!(Instant::now() < deadline, "the latent task never deployed");
    }
}
