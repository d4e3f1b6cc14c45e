//! Configuration values (`wasi:config/store`) from a real workload component: the start's
//! own `config`, operator values from `PROPLET_CONFIG_DIR` granted by `PROPLET_CONFIG_ALLOW`
//! (by task name or binary digest), refusals before anything runs, and no operator value in
//! the daemon's logs.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::*;
use serde_json::{Value, json};

const SECRET: &str = "hunter2-s3cret-value";

/// A start of the workload in `config` mode, showing the value of `shown`.
fn task(id: &str, shown: &str, extra: Value) -> Value {
    let mut t = start(
        id,
        json!({
            "file": guests::component_base64("workload"),
            "name": "run",
            "inputs": [shown],
            "cli_args": ["config"],
        }),
    );
    merge(&mut t, extra);
    t
}

/// A directory of operator values.
fn secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db_password"), SECRET).unwrap();
    std::fs::write(dir.path().join("api_token"), "tok").unwrap();
    dir
}

fn digest_of_workload() -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(guests::component_bytes("workload")))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_its_values_and_the_credentials_granted_to_it() {
    let dir = secrets();
    let allow = format!("db_password=ingest-*,api_token={}", digest_of_workload());
    let env = [
        ("PROPLET_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("PROPLET_CONFIG_ALLOW", allow.as_str()),
    ];
    let (_b, w, mut m) = setup(&env).await;

    // Its own values only: nothing of the operator's unless asked for.
    let own = json!({"config": {"mode": "fast"}});
    m.send_json("control/manager/start", &task("own", "mode", own))
        .await;
    let r = m.result("own").await;
    assert_ok(&r, "keys=mode:4 shown=fast");
    assert_eq!(r["usage"]["config_reads"], 2, "get-all and get: {r}");

    // A credential by task name, another by the binary's digest.
    let both = json!({"name": "ingest-7", "config": {"mode": "fast"}, "credentials": ["db_password", "api_token"]});
    m.send_json("control/manager/start", &task("both", "api_token", both))
        .await;
    let expected = format!(
        "keys=api_token:3,db_password:{},mode:4 shown=tok",
        SECRET.len()
    );
    assert_ok(&m.result("both").await, &expected);

    // No values at all: an empty store, and no receipt line.
    m.send_json("control/manager/start", &task("none", "mode", json!({})))
        .await;
    let r = m.result("none").await;
    assert_ok(&r, "keys= shown=");
    assert_eq!(r["usage"].get("config_reads"), None, "{r}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_beyond_the_policy_are_refused_before_anything_runs() {
    let dir = secrets();
    let env = [
        ("PROPLET_CONFIG_DIR", dir.path().to_str().unwrap()),
        (
            "PROPLET_CONFIG_ALLOW",
            "db_password=ingest-*,api_token=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];
    let (_b, w, mut m) = setup(&env).await;
    let cases = [
        (
            "name",
            json!({"name": "report", "credentials": ["db_password"]}),
            "denied",
        ),
        (
            "digest",
            json!({"name": "ingest-1", "credentials": ["api_token"]}),
            "denied",
        ),
        (
            "unlisted",
            json!({"credentials": ["root_password"]}),
            "denied",
        ),
        (
            "escape",
            json!({"credentials": ["../../../etc/passwd"]}),
            "invalid",
        ),
        (
            "hidden",
            json!({"credentials": [".db_password"]}),
            "invalid",
        ),
        (
            "twice",
            json!({"name": "ingest-1", "config": {"db_password": "x"}, "credentials": ["db_password"]}),
            "invalid",
        ),
    ];
    for (id, extra, kind) in cases {
        m.send_json("control/manager/start", &task(id, "db_password", extra))
            .await;
        let r = m.result(id).await;
        assert_err(&r, kind, "");
        assert!(!r.to_string().contains(SECRET), "{id}: {r}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_values_never_reach_the_logs() {
    let dir = secrets();
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("log");
    let mut d = Daemon::start_logged(
        &broker,
        &[
            ("PROPLET_CONFIG_DIR", dir.path().to_str().unwrap()),
            ("PROPLET_CONFIG_ALLOW", "db_password=*"),
            (
                "PROPLET_LOG_LEVEL",
                "debug,proplet=trace,guest=trace,cranelift_codegen=info,wasmtime_cranelift=info",
            ),
        ],
        &log,
    );
    m.wait_ready().await;
    // The guest reads the value (its length is reported) but does not show it.
    let t = task(
        "quiet",
        "mode",
        json!({"credentials": ["db_password"], "config": {"mode": "m"}}),
    );
    m.send_json("control/manager/start", &t).await;
    let expected = format!("keys=db_password:{},mode:1 shown=m", SECRET.len());
    assert_ok(&m.result("quiet").await, &expected);
    // A refused one names the key, never the value.
    let t = task(
        "refused",
        "",
        json!({"credentials": ["db_password", "../x"]}),
    );
    m.send_json("control/manager/start", &t).await;
    assert_err(&m.result("refused").await, "invalid", "\"../x\"");
    d.signal("-TERM");
    assert_eq!(d.wait(Duration::from_secs(30)).await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("quiet"), "the log has the task: {text}");
    assert!(!text.contains(SECRET), "an operator value reached the log");
}
