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

/// Waits until `path` exists.
async fn wait_for_file(path: &Path, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid written to `path`.
fn read_pid(path: &Path) -> u32 {
    let text = std::fs::read_to_string(path).expect("pid file");
    text.trim().parse().expect("a pid")
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone.
async fn wait_dead(pid: u32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} ({pid}) is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("recorded file")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_env_and_temp_file_contract() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let body = format!(
        "printf '%s\\n' \"$@\" > {r}.argv; tr '\\000' '\\n' < /proc/$$/cmdline > {r}.cmdline; \
         env | sort > {r}.env; echo ran",
        r = record.display()
    );
    let runtime = script(dir.path(), "runtime.sh", &body);
    let (_b, w, mut m) = setup_external(&runtime, &[]).await;
    let secret = "s3cr3t-token-value";
    let task = json!({"env": {"API_TOKEN": secret}, "cli_args": ["-W", "max-memory-size=1048576"]});
    m.send_json("control/manager/start", &start("argv", task))
        .await;
    assert_ok(&m.result("argv").await, "ran\n");
    let argv = lines(&record.with_extension("argv"));
    let file = &argv[9];
    assert_eq!(
        argv,
        [
            "run",
            "--invoke",
            "add",
            "-W",
            "max-memory-size=1048576",
            "--env",
            "API_TOKEN",
            "--env",
            "PROPLET_ID",
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
    let cmdline = lines(&record.with_extension("cmdline"));
    assert!(cmdline.contains(&"API_TOKEN".to_owned()), "{cmdline:?}");
    assert!(
        cmdline.iter().all(|a| !a.contains(secret)),
        "an env value is readable in /proc/<pid>/cmdline: {cmdline:?}"
    );
    let env = lines(&record.with_extension("env"));
    assert!(env.contains(&format!("API_TOKEN={secret}")), "{env:?}");
    assert!(env.contains(&format!("PROPLET_ID={P}")), "{env:?}");
    let names: Vec<&str> = env
        .iter()
        .filter_map(|l| l.split('=').next())
        .filter(|n| !["PWD", "SHLVL", "_"].contains(n))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["PATH", "HOME", "API_TOKEN", "PROPLET_ID"].contains(n)),
        "only PATH, HOME and the task's env reach the runtime: {names:?}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_args_cannot_name_another_file_or_widen_access() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let body = format!("echo \"$@\" >> {}; echo ok", ran.display());
    let runtime = script(dir.path(), "runtime.sh", &body);
    let (_b, w, mut m) = setup_external(&runtime, &[]).await;
    let refused = [
        json!({"cli_args": ["--preload", "env=/tmp/other.wasm"]}),
        json!({"cli_args": ["--dir", "/"]}),
        json!({"cli_args": ["--dir=/::/host"]}),
        json!({"cli_args": ["/tmp/other.wasm"]}),
        json!({"cli_args": ["--", "/tmp/other.wasm"]}),
        json!({"cli_args": ["--allow-precompiled"]}),
        json!({"cli_args": ["--config", "/tmp/wasmtime.toml"]}),
        json!({"cli_args": ["-S", "inherit-network"]}),
        json!({"cli_args": ["-S", "cli,tcplisten=0.0.0.0:8080"]}),
        json!({"cli_args": ["-Sinherit-env"]}),
        json!({"cli_args": ["-D", "coredump=/tmp/core"]}),
        json!({"cli_args": ["-W", "max-memory-size=1048576", "--dir=/"]}),
        json!({"cli_args": ["--invoke", "--dir=/"]}),
        json!({"name": "--dir=/"}),
        json!({"env": {"LD_PRELOAD": "/tmp/evil.so"}}),
        json!({"env": {"BASH_ENV": "/tmp/evil.sh"}}),
        json!({"env": {"PATH": "/tmp"}}),
        json!({"env": {"X=Y": "1"}}),
    ];
    for (i, task) in refused.iter().enumerate() {
        let id = format!("bad-{i}");
        m.send_json("control/manager/start", &start(&id, task.clone()))
            .await;
        let result = m.result(&id).await;
        assert_err(&result, "invalid", "refused for the external runtime");
    }
    assert!(
        !ran.exists(),
        "a refused start never reaches the runtime: {:?}",
        std::fs::read_to_string(&ran)
    );
    let safe = json!({"cli_args": ["-S", "cli", "-W", "fuel=1000,simd=y", "-O", "opt-level=0", "--invoke", "add"]});
    m.send_json("control/manager/start", &start("safe", safe))
        .await;
    assert_ok(&m.result("safe").await, "ok\n");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_the_process_group_and_output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let grandchild = dir.path().join("grandchild");
    let runtime = script(
        dir.path(),
        "runtime.sh",
        &format!(
            "[ -n \"$FLOOD\" ] && exec yes\nsleep 300 &\necho $! > {g}\necho $$ > {p}\nwait",
            g = grandchild.display(),
            p = pidfile.display()
        ),
    );
    let (_b, w, mut m) = setup_external(&runtime, &[("PROPLET_OUTPUT_LIMIT", "64KiB")]).await;
    m.send_json("control/manager/start", &start("sleeper", json!({})))
        .await;
    wait_for_file(&pidfile, Duration::from_secs(30)).await;
    let pid = read_pid(&pidfile);
    let grandchild = read_pid(&grandchild);
    m.send_json("control/manager/stop", &json!({"id": "sleeper"}))
        .await;
    assert_err(
        &m.result("sleeper").await,
        "cancelled",
        "stopped by the manager",
    );
    wait_dead(pid, "the runtime process").await;
    wait_dead(grandchild, "the runtime's child").await;
    m.send_json(
        "control/manager/start",
        &start("flood", json!({"env": {"FLOOD": "1"}})),
    )
    .await;
    assert_err(&m.result("flood").await, "output_limit", "65536 bytes");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_does_not_outlive_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let grandchild = dir.path().join("grandchild");
    // The background sleep keeps the stdout pipe open after the runtime exits.
    let runtime = script(
        dir.path(),
        "runtime.sh",
        &format!("sleep 300 &\necho $! > {}\necho done", grandchild.display()),
    );
    let (_b, w, mut m) = setup_external(&runtime, &[]).await;
    m.send_json("control/manager/start", &start("forks", json!({})))
        .await;
    assert_ok(&m.result("forks").await, "done\n");
    wait_dead(read_pid(&grandchild), "the runtime's child").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_task_is_held_to_a_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let xcpu = dir.path().join("xcpu");
    let runtime = script(
        dir.path(),
        "runtime.sh",
        &format!(
            "echo $$ > {p}\ntrap 'echo hit > {x}; exit 1' XCPU\nwhile :; do :; done",
            p = pidfile.display(),
            x = xcpu.display()
        ),
    );
    // A daemon has no deadline; its CPU time is capped at the node's longest deadline.
    let limits = [
        ("PROPLET_TASK_TIMEOUT", "1s"),
        ("PROPLET_TASK_TIMEOUT_MAX", "1s"),
    ];
    let (_b, w, mut m) = setup_external(&runtime, &limits).await;
    m.send_json(
        "control/manager/start",
        &start("spinner", json!({"daemon": true})),
    )
    .await;
    assert_ok(&m.result("spinner").await, "");
    wait_for_file(&pidfile, Duration::from_secs(30)).await;
    wait_for_file(&xcpu, Duration::from_secs(60)).await;
    wait_dead(read_pid(&pidfile), "the spinning daemon").await;
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
