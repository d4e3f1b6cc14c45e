//! The external runtime (`PROPLET_EXTERNAL_WASM_RUNTIME`): argv and env contract, stdout as
//! result, exit status, kill on stop, output cap, temp file cleanup.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;

async fn setup_external(runtime: &Path, extra: &[(&str, &str)]) -> (Broker, Worker, Manager) {
    let runtime = runtime.to_string_lossy().to_string();
    let mut vars = vec![("PROPLET_EXTERNAL_WASM_RUNTIME", runtime.as_str())];
    vars.extend_from_slice(extra);
    setup(&vars).await
}

/// Writes an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proplet_itself_as_the_external_runtime() {
    let (_b, w, mut m) = setup_external(Path::new(env!("CARGO_BIN_EXE_proplet")), &[]).await;
    m.send_json(
        "control/manager/start",
        &start("add", json!({"file": guests::base64("add")})),
    )
    .await;
    // With an external runtime, cli_args are runtime flags and a command's inputs are its argv.
    let hello = json!({"file": guests::base64("hello"), "name": "_start", "inputs": ["x"], "env": {"GREETING": "Hey"}});
    m.send_json("control/manager/start", &start("hello", hello))
        .await;
    let exit = json!({"file": guests::base64("hello"), "name": "_start", "inputs": ["exit", "3"]});
    m.send_json("control/manager/start", &start("exit", exit))
        .await;
    assert_ok(&m.result("add").await, "30\n");
    assert_ok(
        &m.result("hello").await,
        "Hey, x!\nprogram: main.wasm; env: [GREETING, PROPLET_ID]\n",
    );
    assert_err(
        &m.result("exit").await,
        "exit",
        "exited with status 3, stderr: hello: done",
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_env_and_temp_file_contract() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let body = format!(
        "printf '%s\\n' \"$@\" > {r}.argv; env | sort > {r}.env; echo ran",
        r = record.display()
    );
    let runtime = script(dir.path(), "runtime.sh", &body);
    let (_b, w, mut m) = setup_external(&runtime, &[]).await;
    let task = json!({"env": {"A": "1"}, "cli_args": ["-W", "x"]});
    m.send_json("control/manager/start", &start("argv", task))
        .await;
    assert_ok(&m.result("argv").await, "ran\n");
    let argv: Vec<String> = std::fs::read_to_string(record.with_extension("argv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let file = &argv[9];
    assert_eq!(
        argv,
        [
            "run",
            "--invoke",
            "add",
            "-W",
            "x",
            "--env",
            "A=1",
            "--env",
            &format!("PROPLET_ID={P}"),
            file,
            "10",
            "20"
        ]
    );
    assert!(
        file.ends_with(".wasm") && file.contains("proplet_argv_"),
        "{file}"
    );
    assert!(
        !Path::new(file).exists(),
        "the temp file is removed after the run"
    );
    let env = std::fs::read_to_string(record.with_extension("env")).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split('=').next())
        .filter(|n| !["PWD", "SHLVL", "_"].contains(n))
        .collect();
    assert!(
        names.iter().all(|n| ["PATH", "HOME"].contains(n)),
        "only PATH and HOME reach the runtime: {names:?}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_the_process_and_output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let runtime = script(
        dir.path(),
        "runtime.sh",
        &format!(
            "case \"$*\" in *flood*) exec yes ;; esac\necho $$ > {}\nexec sleep 60",
            pidfile.display()
        ),
    );
    let (_b, w, mut m) = setup_external(&runtime, &[("PROPLET_OUTPUT_LIMIT", "64KiB")]).await;
    m.send_json("control/manager/start", &start("sleeper", json!({})))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runtime did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    m.send_json("control/manager/stop", &json!({"id": "sleeper"}))
        .await;
    assert_err(
        &m.result("sleeper").await,
        "cancelled",
        "stopped by the manager",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "the runtime process {pid} was killed");
    m.send_json(
        "control/manager/start",
        &start("flood", json!({"cli_args": ["flood"]})),
    )
    .await;
    assert_err(&m.result("flood").await, "output_limit", "65536 bytes");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_process_runs_under_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    // `tail -c N` holds N bytes: 150 MB is over a 16 MiB budget (+ 64 MiB for the runtime).
    let hungry = script(
        dir.path(),
        "hungry",
        "head -c 200000000 /dev/zero | tail -c 150000000 > /dev/null && echo fine",
    );
    let (_b, w, mut m) = setup_external(&hungry, &[]).await;
    let small = json!({"limits": {"memory_bytes": 16 << 20}});
    m.send_json("control/manager/start", &start("small", small))
        .await;
    let roomy = json!({"limits": {"memory_bytes": 512 << 20}});
    m.send_json("control/manager/start", &start("roomy", roomy))
        .await;
    let small = m.result("small").await;
    assert_err(&small, "exit", "exited with status");
    assert_eq!(small["usage"]["memory_peak_bytes"], serde_json::Value::Null);
    assert_ok(&m.result("roomy").await, "fine\n");
    w.stop().await;
}
