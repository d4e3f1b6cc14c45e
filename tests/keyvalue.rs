//! Key-value buckets (`wasi:keyvalue`: store, atomics, batch) from a real workload
//! component: declared by the operator, granted by the start's `kv`, kept in the state
//! directory across restarts of the real binary, bounded by their quotas.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::*;
use serde_json::{Value, json};

fn task(id: &str, bucket: &str, mode: &str, asks: &[&str]) -> Value {
    start(
        id,
        json!({
            "file": guests::component_base64("workload"),
            "name": "run",
            "inputs": [bucket],
            "cli_args": [mode],
            "kv": asks,
        }),
    )
}

fn results(r: &Value) -> &str {
    r["results"]
        .as_str()
        .unwrap_or_else(|| panic!("no results: {r}"))
}

const BUCKETS: (&str, &str) = ("PROPLET_KV_BUCKETS", "state=64KiB/100,tiny=8KiB/1000");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_outlive_the_process() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let state = broker.state_dir();
    let state_env = state.display().to_string();
    let env = [BUCKETS, ("PROPLET_STATE_DIR", state_env.as_str())];
    for (round, id) in [(1, "first"), (2, "second")] {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Daemon::start_logged(&broker, &env, &dir.path().join("log"));
        m.wait_ready().await;
        m.send_json(
            "control/manager/start",
            &task(id, "state", "kv", &["state"]),
        )
        .await;
        let r = m.result(id).await;
        assert_eq!(
            results(&r),
            format!("runs={round} last={id} keys=last,mode,runs"),
            "{r}"
        );
        assert_eq!(r["usage"]["kv_writes"], 2, "increment and set-many: {r}");
        assert_eq!(r["usage"]["kv_reads"], 2, "get and list-keys: {r}");
        d.signal("-KILL");
        d.wait(Duration::from_secs(10)).await;
    }
    std::fs::remove_dir_all(&state).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_opened_only_as_granted_and_filled_only_to_its_quota() {
    let (_b, w, mut m) = setup(&[BUCKETS]).await;
    // Asked for and declared: opens. Declared but not asked for: refused. Not declared at
    // all: the start is refused before anything runs.
    m.send_json(
        "control/manager/start",
        &task("own", "state", "kv-open", &["state"]),
    )
    .await;
    assert_ok(&m.result("own").await, "opened");
    m.send_json(
        "control/manager/start",
        &task("other", "tiny", "kv-open", &["state"]),
    )
    .await;
    assert_ok(&m.result("other").await, "open failed: Error::AccessDenied");
    m.send_json(
        "control/manager/start",
        &task("none", "state", "kv-open", &[]),
    )
    .await;
    assert_ok(&m.result("none").await, "open failed: Error::AccessDenied");
    m.send_json(
        "control/manager/start",
        &task("far", "x", "kv-open", &["secrets"]),
    )
    .await;
    assert_err(&m.result("far").await, "denied", "PROPLET_KV_BUCKETS");

    // 1 KiB values into an 8 KiB bucket: seven fit (keys count too), the eighth is refused
    // with a clear error and nothing of it is kept; the task goes on and reports.
    m.send_json(
        "control/manager/start",
        &task("fill", "tiny", "kv-fill", &["tiny"]),
    )
    .await;
    let r = m.result("fill").await;
    let text = results(&r);
    assert!(
        text.starts_with("stored=7 refused: Error::Other(\"bucket \\\"tiny\\\" is full:"),
        "{r}"
    );
    // Still full: the next fill stores nothing more.
    m.send_json(
        "control/manager/start",
        &task("again", "tiny", "kv-fill", &["tiny"]),
    )
    .await;
    let r = m.result("again").await;
    assert!(results(&r).contains("is full"), "{r}");
    w.stop().await;
}
