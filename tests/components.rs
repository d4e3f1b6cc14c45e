//! Components (WASI preview 2): named exports called with WAVE inputs (docs/protocol.md vector
//! V17), `wasi:cli/run` commands, and latent tasks with invocations (V15, V16).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn greet(id: &str, name: &str, inputs: Value) -> Value {
    start(
        id,
        json!({"file": guests::component_base64("greet"), "name": name, "inputs": inputs}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v17_named_exports_take_and_return_wave() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &greet("v17", "greet", json!(["\"world\""])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &greet("unquoted", "greet", json!(["world"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &greet("add", "add", json!(["40", "2"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &greet("sum", "sum", json!(["[1, 2, 3]"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &greet("arity", "add", json!(["1"])),
    )
    .await;
    m.send_json("control/manager/start", &greet("missing", "mul", json!([])))
        .await;
    m.send_json(
        "control/manager/start",
        &greet("not-a-command", "_start", json!([])),
    )
    .await;
    assert_ok(&m.result("v17").await, "\"Hello, world!\"");
    assert_err(&m.result("unquoted").await, "invalid", "WAVE");
    assert_ok(&m.result("add").await, "42");
    assert_ok(&m.result("sum").await, "6");
    assert_err(
        &m.result("arity").await,
        "invalid",
        "expected 2 arguments but got 1",
    );
    assert_err(
        &m.result("missing").await,
        "invalid",
        "Function 'mul' not found in component exports",
    );
    assert_err(
        &m.result("not-a-command").await,
        "invalid",
        "does not export wasi:cli/run",
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_components_run_with_argv_env_and_exit_status() {
    let (_b, w, mut m) = setup(&[]).await;
    let hello = guests::component_base64("hello");
    let run = |id: &str, args: Value| {
        start(
            id,
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": args, "env": {"GREETING": "Hej"}}),
        )
    };
    m.send_json("control/manager/start", &run("cmd", json!(["component"])))
        .await;
    m.send_json("control/manager/start", &run("exit", json!(["exit", "3"])))
        .await;
    assert_ok(
        &m.result("cmd").await,
        "Hej, component!\nprogram: _start; env: [GREETING, PROPLET_ID]\n",
    );
    assert_err(&m.result("exit").await, "exit", "hello: done");
    w.stop().await;
}

fn invoke(id: &str, invocation: &str, inputs: Value) -> Value {
    json!({"broadcast": false, "id": id, "inputs": inputs, "invocation_id": invocation, "proplet_id": P})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v15_v16_latent_tasks_and_invocations() {
    let (_b, w, mut m) = setup(&[]).await;
    // V15: unknown latent task.
    m.send_json(
        "control/manager/invoke",
        &invoke(T, "inv-0", json!(["\"world\""])),
    )
    .await;
    let r = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(10),
            |v| v["invocation_id"] == "inv-0",
        )
        .await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("has not been precompiled"),
        "{r}"
    );
    assert_eq!(
        (r["task_id"].as_str(), r["results"].as_str()),
        (Some(T), Some(""))
    );
    // V16: a core module cannot be latent.
    m.send_json(
        "control/manager/start",
        &start("core-latent", json!({"latent": true})),
    )
    .await;
    assert_err(
        &m.result("core-latent").await,
        "invalid",
        "latent tasks require a WASM component; task core-latent is not a component",
    );
    // V16: a component is precompiled silently, then invoked; invokes sent right after
    // the deploy wait for its compile instead of being refused.
    let mut latent = greet("lat", "greet", json!(["\"nobody\""]));
    latent["latent"] = json!(true);
    m.send_json("control/manager/start", &latent).await;
    m.send_json(
        "control/manager/invoke",
        &invoke("lat", "inv-1", json!(["\"world\""])),
    )
    .await;
    m.send_json(
        "control/manager/invoke",
        &invoke("lat", "inv-2", Value::Null),
    )
    .await;
    let r1 = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(10),
            |v| v["invocation_id"] == "inv-1",
        )
        .await;
    assert_eq!(
        upstream_fields(&r1),
        json!({"task_id": "lat", "invocation_id": "inv-1", "proplet_id": P, "results": "\"Hello, world!\"", "error": null})
    );
    let r2 = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(10),
            |v| v["invocation_id"] == "inv-2",
        )
        .await;
    assert_eq!(
        r2["results"], "\"Hello, nobody!\"",
        "without inputs the deploy-time inputs are used"
    );
    m.expect_none("control/proplet/results", Duration::from_millis(200), |v| {
        v["task_id"] == "lat"
    })
    .await;
    // A stop forgets the latent task (the stop is handled before the invoke that follows it
    // from the same client).
    m.send_json("control/manager/stop", &json!({"id": "lat"}))
        .await;
    m.send_json(
        "control/manager/invoke",
        &invoke("lat", "inv-3", json!(["\"x\""])),
    )
    .await;
    let r3 = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(10),
            |v| v["invocation_id"] == "inv-3",
        )
        .await;
    assert!(
        r3["error"]
            .as_str()
            .unwrap()
            .contains("has not been precompiled"),
        "{r3}"
    );
    m.expect_none("control/proplet/results", Duration::from_millis(300), |v| {
        v["task_id"] == "lat"
    })
    .await;
    w.stop().await;
}

fn workload(id: &str, args: Value, inputs: Value) -> Value {
    let file = guests::component_base64("workload");
    start(
        id,
        json!({"file": file, "name": "summing task", "cli_args": args, "inputs": inputs, "env": {"X": "1"}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_use_the_wit_task_context_and_report_once() {
    let (_b, w, mut m) = setup(&[]).await;
    m.send_json(
        "control/manager/start",
        &workload("sum", json!([]), json!(["1", "2", "39"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &workload("env", json!(["env"]), json!([])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &workload("twice", json!(["twice"]), json!(["5"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &workload("fail", json!(["fail"]), json!([])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &workload("bad-input", json!([]), json!(["x"])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &workload("big", json!(["big"]), json!([])),
    )
    .await;
    let mut named = workload("named", json!([]), json!(["40", "2"]));
    named["name"] = json!("propeller:proplet/handler@0.1.0#run");
    m.send_json("control/manager/start", &named).await;
    assert_ok(&m.result("sum").await, "sum=42");
    assert_ok(&m.result("named").await, "sum=42");
    assert_ok(&m.result("env").await, &format!("PROPLET_ID={P},X=1"));
    assert_ok(&m.result("twice").await, "sum=5");
    assert_err(
        &m.result("fail").await,
        "exit",
        "the task failed: asked to fail",
    );
    assert_err(
        &m.result("bad-input").await,
        "exit",
        "input \"x\" is not a number",
    );
    assert_err(&m.result("big").await, "output_limit", "output limit");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_workload_runs_on_the_same_world() {
    // The componentize-py component (CPython inside) is 18 MB; 24 MB as base64.
    let env = [
        ("PROPLET_MQTT_MAX_PACKET_SIZE", "64MiB"),
        ("PROPLET_KV_BUCKETS", "state=1MiB/100"),
    ];
    let (_b, w, mut m) = setup(&env).await;
    let file = guests::python_workload_base64();
    m.send_json(
        "control/manager/start",
        &start(
            "py",
            json!({"file": file, "name": "python task", "inputs": ["40", "2"]}),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "py-fail",
            json!({"file": file, "name": "python task", "inputs": [], "cli_args": ["fail"]}),
        ),
    )
    .await;
    let r = m
        .expect(
            "control/proplet/results",
            std::time::Duration::from_secs(120),
            |v| v["task_id"] == "py",
        )
        .await;
    assert_ok(&r, "sum=42 (python)");
    // Key-value state from Python: the same buckets as any component.
    let kv = json!({"file": file, "name": "python task", "inputs": ["state"], "cli_args": ["kv"], "kv": ["state"]});
    m.send_json("control/manager/start", &start("py-kv", kv))
        .await;
    assert_ok(&m.result("py-kv").await, "runs=1 (python)");
    assert_err(
        &m.result("py-fail").await,
        "exit",
        "the task failed: asked to fail",
    );
    // An exception that escapes: its traceback and what it printed reach the manager.
    m.send_json(
        "control/manager/start",
        &start(
            "py-raise",
            json!({"file": file, "name": "python task", "inputs": ["1"], "cli_args": ["raise"]}),
        ),
    )
    .await;
    let raised = m.result("py-raise").await;
    assert_err(&raised, "trap", "ValueError: asked to raise with 1 inputs");
    assert_err(&raised, "trap", "Traceback (most recent call last)");
    assert_err(&raised, "trap", "stdout: about to raise");
    w.stop().await;
}

/// An invocation is keyed by its task and invocation ids, never by a string built from
/// them: a task whose id looks like such a string does not swallow the invoke, and the
/// guest sees the latent task's real id and its invocation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_have_keys_of_their_own() {
    let (_b, w, mut m) = setup(&[]).await;
    let spin =
        json!({"file": guests::base64("spin"), "name": "spin", "inputs": [], "daemon": true});
    m.send_json("control/manager/start", &start("lat-inv-1", spin))
        .await;
    m.result("lat-inv-1").await;
    let mut latent = workload("lat", json!(["id"]), json!([]));
    latent["latent"] = json!(true);
    m.send_json("control/manager/start", &latent).await;
    m.send_json("control/manager/invoke", &invoke("lat", "1", Value::Null))
        .await;
    let r = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(30),
            |v| v["invocation_id"] == "1",
        )
        .await;
    assert_eq!(r["results"], "lat 1", "{r}");
    m.send_json("control/manager/stop", &json!({"id": "lat-inv-1"}))
        .await;
    w.stop().await;
}
