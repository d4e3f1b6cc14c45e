//! The sample guests from `guest-examples/`, run through the real broker: commands,
//! exports of every numeric type, traps, exits, and every budget.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_command_gets_argv_and_only_the_task_env() {
    let (_b, w, mut m) = setup(&[]).await;
    let hello = guests::base64("hello");
    let body = json!({"file": hello, "name": "_start", "inputs": [], "cli_args": ["edge", "friends"], "env": {"GREETING": "Hi"}});
    m.send_json("control/manager/start", &start("cmd", body))
        .await;
    let r = m.result("cmd").await;
    assert_ok(
        &r,
        "Hi, edge friends!\nprogram: _start; env: [GREETING, PROPLET_ID]\n",
    );
    // An empty name is a command too; the host environment never leaks in.
    m.send_json(
        "control/manager/start",
        &start("cmd2", json!({"file": hello, "name": "", "inputs": []})),
    )
    .await;
    let r = m.result("cmd2").await;
    assert_ok(&r, "Hello, world!\nprogram: main.wasm; env: [PROPLET_ID]\n");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_traps_are_classified() {
    let (_b, w, mut m) = setup(&[]).await;
    let hello = guests::base64("hello");
    m.send_json(
        "control/manager/start",
        &start(
            "exit3",
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": ["exit", "3"]}),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "exit0",
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": ["exit", "0"]}),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "panic",
            json!({"file": hello, "name": "_start", "inputs": [], "cli_args": ["panic"]}),
        ),
    )
    .await;
    let add = guests::base64("add");
    m.send_json(
        "control/manager/start",
        &start(
            "div0",
            json!({"file": add, "name": "div", "inputs": ["1", "0"]}),
        ),
    )
    .await;
    let exit3 = m.result("exit3").await;
    assert_err(&exit3, "exit", "exited with status 3, stderr: hello: done");
    assert_err(&exit3, "exit", "stdout: Hello, exit 3!");
    assert!(
        m.result("exit0").await["results"]
            .as_str()
            .unwrap()
            .starts_with("Hello, exit 0!")
    );
    // The panic message the guest wrote to stderr comes with the trap.
    let panicked = m.result("panic").await;
    assert_err(&panicked, "trap", "unreachable");
    assert_err(&panicked, "trap", "stderr: thread 'main' (1) panicked at");
    assert_err(&panicked, "trap", "asked to panic");
    assert_err(&m.result("div0").await, "trap", "guest trapped");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_every_numeric_type() {
    let (_b, w, mut m) = setup(&[]).await;
    let add = guests::base64("add");
    let cases = [
        ("i32", "add", json!(["2147483647", "1"]), "-2147483648"),
        ("i64", "add64", json!(["9000000000", "1"]), "9000000001"),
        ("f32", "mul_f32", json!(["1.5", "2"]), "3"),
        ("f64", "div_f64", json!(["1", "4"]), "0.25"),
        (
            "seed-u64",
            "add64",
            json!([18446744073709551615u64, 2]),
            "1",
        ),
    ];
    for (id, name, inputs, _) in &cases {
        m.send_json(
            "control/manager/start",
            &start(id, json!({"file": add, "name": name, "inputs": inputs})),
        )
        .await;
    }
    for (id, _, _, expected) in cases {
        assert_ok(&m.result(id).await, expected);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_memory_and_time_budgets() {
    let (_b, w, mut m) = setup(&[
        ("PROPLET_OUTPUT_LIMIT", "64KiB"),
        ("PROPLET_TASK_MEMORY", "16MiB"),
        ("PROPLET_TASK_TIMEOUT", "1s"),
    ])
    .await;
    let started = Instant::now();
    m.send_json("control/manager/start", &start("flood", json!({"file": guests::base64("hello"), "name": "_start", "inputs": [], "cli_args": ["flood"]}))).await;
    m.send_json(
        "control/manager/start",
        &start(
            "big",
            json!({"file": guests::base64("alloc"), "name": "alloc", "inputs": ["64"]}),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "small",
            json!({"file": guests::base64("alloc"), "name": "alloc", "inputs": ["4"]}),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "spin",
            json!({"file": guests::base64("spin"), "name": "spin", "inputs": []}),
        ),
    )
    .await;
    assert_err(&m.result("flood").await, "output_limit", "65536 bytes");
    assert_err(&m.result("big").await, "memory", "memory limit exceeded");
    assert_ok(&m.result("small").await, "4");
    assert_err(&m.result("spin").await, "timeout", "timed out after 1s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline is enforced promptly"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_wasm_truncated_and_unlinkable_binaries_fail_to_compile() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (_b, w, mut m) = setup(&[]).await;
    let hello = guests::bytes("hello");
    let unknown_import = wat_module();
    m.send_json(
        "control/manager/start",
        &start("text", json!({"file": b64(b"#!/bin/sh\necho hi\n")})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start("trunc", json!({"file": b64(&hello[..hello.len() / 2])})),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &start(
            "import",
            json!({"file": b64(&unknown_import), "name": "f", "inputs": []}),
        ),
    )
    .await;
    assert_err(&m.result("text").await, "compile", "cannot compile");
    assert_err(&m.result("trunc").await, "compile", "cannot compile");
    assert_err(&m.result("import").await, "compile", "host::missing");
    w.stop().await;
}

/// A module importing a function no host provides.
fn wat_module() -> Vec<u8> {
    // (module (import "host" "missing" (func)) (func (export "f")))
    vec![
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x02, 0x10, 0x01, 0x04, b'h', b'o', b's', b't', 0x07, b'm', b'i', b's', b's', b'i', b'n',
        b'g', 0x00, 0x00, // import
        0x03, 0x02, 0x01, 0x00, // function section
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x01, // export "f" = func 1
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code
    ]
}
