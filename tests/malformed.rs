//! Bad input of every kind, thrown at a running worker: it stays up, keeps heartbeating,
//! and answers every start that has an id with a clear error.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_malformed_input_and_answers_where_it_can() {
    let (_broker, w, mut m) = setup(&[("PROPLET_MAX_BINARY_SIZE", "1MiB")]).await;
    let start_topic = "control/manager/start";
    // Undecodable: no id to answer.
    for raw in [
        &b"not json"[..],
        b"",
        b"[1,2]",
        b"{\"id\":",
        b"\xff\xfe\x00",
        b"null",
        b"{\"id\":42}",
    ] {
        m.send(start_topic, raw).await;
    }
    // Too deeply nested to parse: the id is still found by a shallow scan and answered.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    m.send(start_topic, format!(r#"{{"id":"deep","inputs":{deep}}}"#))
        .await;
    // Wrong types, with an id: answered as invalid.
    m.send(
        start_topic,
        r#"{"id":"wrong-daemon","name":"add","file":"AA==","daemon":"yes"}"#,
    )
    .await;
    m.send(
        start_topic,
        r#"{"id":"wrong-inputs","name":"add","file":"AA==","inputs":{"a":1}}"#,
    )
    .await;
    m.send(
        start_topic,
        r#"{"id":"wrong-env","name":"add","file":"AA==","env":["A=1"]}"#,
    )
    .await;
    // Bad binaries and calls.
    m.send_json(start_topic, &start("bad-b64", json!({"file": "%%%"})))
        .await;
    // The inline file is taken as bytes, unchecked as text: bytes that are not UTF-8, a raw
    // control character or an escape in it still end in an answer (from the base64 decoder).
    for (id, file) in [
        ("b64-not-utf8", &b"AGFz\xff\xfe\x80bQ=="[..]),
        ("b64-control", b"AGFz\x01\x1fbQ=="),
        ("b64-escaped", br"AGFz\u0000\\bQ=="),
    ] {
        let mut raw = format!(r#"{{"id":"{id}","name":"add","file":""#).into_bytes();
        raw.extend_from_slice(file);
        raw.extend_from_slice(b"\"}");
        m.send(start_topic, raw).await;
    }
    m.send_json(
        start_topic,
        &start("not-wasm", json!({"file": "aGVsbG8gd29ybGQ="})),
    )
    .await;
    m.send_json(
        start_topic,
        &start("truncated", json!({"file": &ADD_WASM[..24]})),
    )
    .await;
    m.send_json(
        start_topic,
        &start("missing-export", json!({"name": "nope"})),
    )
    .await;
    m.send_json(
        start_topic,
        &start("arity", json!({"inputs": ["1", "2", "3"]})),
    )
    .await;
    m.send_json(
        start_topic,
        &start("huge-input", json!({"inputs": ["9".repeat(100_000), "1"]})),
    )
    .await;
    m.send_json(
        start_topic,
        &start("too-big", json!({"file": "A".repeat(2 << 20)})),
    )
    .await;
    // Stops for unknown ids, bogus chunks, invokes of unknown tasks.
    m.send(
        start_topic.replace("start", "stop").as_str(),
        r#"{"id":"unknown"}"#,
    )
    .await;
    m.send("control/manager/stop", "garbage").await;
    m.send(
        "registry/server",
        r#"{"app_name":"x","chunk_idx":5,"total_chunks":2,"data":"AA=="}"#,
    )
    .await;
    m.send(
        "registry/server",
        r#"{"app_name":"x","chunk_idx":0,"total_chunks":-1,"data":"AA=="}"#,
    )
    .await;
    m.send(
        "registry/server",
        r#"{"app_name":"x","chunk_idx":0,"total_chunks":1,"data":"!!"}"#,
    )
    .await;
    m.send("control/manager/invoke", r#"{"id":"nope","invocation_id":"inv-1","proplet_id":"c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"}"#).await;

    for id in ["wrong-daemon", "wrong-inputs", "wrong-env"] {
        assert_err(&m.result(id).await, "invalid", "undecodable");
    }
    assert_err(&m.result("bad-b64").await, "invalid", "base64");
    for id in ["b64-not-utf8", "b64-control", "b64-escaped"] {
        assert_err(&m.result(id).await, "invalid", "base64");
    }
    assert_err(&m.result("not-wasm").await, "compile", "cannot compile");
    assert_err(&m.result("truncated").await, "compile", "cannot compile");
    assert_err(
        &m.result("missing-export").await,
        "invalid",
        "Function 'nope' not found",
    );
    assert_err(
        &m.result("arity").await,
        "invalid",
        "expected 2 arguments but got 3",
    );
    assert_err(&m.result("huge-input").await, "invalid", "Failed to parse");
    assert_err(
        &m.result("too-big").await,
        "denied",
        "larger than the limit",
    );
    let inv = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(10),
            |v| v["invocation_id"] == "inv-1",
        )
        .await;
    assert!(
        inv["error"]
            .as_str()
            .unwrap()
            .contains("has not been precompiled"),
        "{inv}"
    );

    assert_err(
        &m.result("deep").await,
        "invalid",
        "recursion limit exceeded",
    );
    // Still alive and still working.
    m.expect("control/proplet/alive", Duration::from_secs(5), |_| true)
        .await;
    m.send_json(start_topic, &start("after", json!({}))).await;
    assert_ok(&m.result("after").await, "30");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded_and_duplicates_are_ignored() {
    let (_broker, w, mut m) = setup(&[
        ("PROPLET_MAX_CONCURRENT_TASKS", "1"),
        ("PROPLET_TASK_QUEUE_CAPACITY", "1"),
    ])
    .await;
    let spin = guests::base64("spin");
    let spinner = |id: &str| start(id, json!({"file": spin, "name": "spin", "inputs": []}));
    m.send_json("control/manager/start", &spinner("run")).await;
    m.send_json("control/manager/start", &spinner("run")).await;
    m.send_json("control/manager/start", &spinner("queued"))
        .await;
    m.send_json("control/manager/start", &spinner("rejected"))
        .await;
    assert_err(
        &m.result("rejected").await,
        "overloaded",
        "places are taken",
    );
    for id in ["run", "queued"] {
        m.send_json("control/manager/stop", &json!({"id": id}))
            .await;
        assert_err(&m.result(id).await, "cancelled", "stopped");
    }
    m.expect_none("control/proplet/results", Duration::from_secs(1), |v| {
        v["task_id"] == "run"
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_does_not_take_the_proplet_down() {
    let (_b, w, mut m) = setup(&[("PROPLET_MQTT_MAX_PACKET_SIZE", "64KiB")]).await;
    m.send_json(
        "control/manager/start",
        &start("huge", json!({"file": "A".repeat(1 << 20)})),
    )
    .await;
    // The connection drops on the oversized packet, the next session starts clean so the
    // broker cannot redeliver it, and the proplet announces itself again and keeps working.
    m.wait_ready().await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    m.expect("control/proplet/alive", Duration::from_secs(5), |v| {
        v["status"] == "alive"
    })
    .await;
    m.expect_none("control/proplet/results", Duration::from_millis(500), |v| {
        v["task_id"] == "huge"
    })
    .await;
    w.stop().await;
}
