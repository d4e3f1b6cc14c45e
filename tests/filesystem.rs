//! Capability-scoped filesystems, proven with a hostile guest: a task sees its private
//! scratch `/tmp` and exactly the volumes it was granted (read-only unless granted
//! writable), and every escape fails.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const OPS: [&str; 11] = [
    "read-volume",
    "write-scratch",
    "write-rw",
    "write-ro",
    "dotdot",
    "absolute",
    "symlink-out",
    "symlink-make",
    "symlink-dotdot",
    "hardlink",
    "list-root",
];

/// What a task with `/models` (ro) and `/data` (rw) may do; everything else must fail.
const ALLOWED: [&str; 3] = ["read-volume", "write-scratch", "write-rw"];

fn fs_task(id: &str, mounts: Value) -> Value {
    let file = guests::component_base64("fs");
    start(
        id,
        json!({"file": file, "name": "_start", "inputs": [], "cli_args": OPS, "mounts": mounts}),
    )
}

/// `op` → `true` if it succeeded, from the guest's report lines.
fn outcomes(result: &Value) -> HashMap<String, bool> {
    let text = result["results"]
        .as_str()
        .unwrap_or_else(|| panic!("no results: {result}"));
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(op, rest)| (op.to_owned(), rest.starts_with("ok")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_volumes_and_scratch_only_and_no_escape() {
    let models = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("hello.txt"), "hello from a volume\n").unwrap();
    std::os::unix::fs::symlink("/etc", models.path().join("escape")).unwrap();
    let volumes = format!(
        "models={}:ro,data={}:rw",
        models.path().display(),
        data.path().display()
    );
    let (_b, w, mut m) = setup(&[("PROPLET_VOLUMES", &volumes)]).await;

    let mounts = json!([{"volume": "models", "path": "/models", "mode": "ro"}, {"volume": "data", "path": "/data", "mode": "rw"}]);
    m.send_json("control/manager/start", &fs_task("granted", mounts))
        .await;
    let r = m.result("granted").await;
    let got = outcomes(&r);
    assert!(
        r["results"]
            .as_str()
            .unwrap()
            .contains("read-volume: ok hello from a volume"),
        "{r}"
    );
    for op in ALLOWED {
        assert_eq!(got.get(op), Some(&true), "{op} should work: {r}");
    }
    for op in OPS.iter().filter(|op| !ALLOWED.contains(op)) {
        assert_eq!(got.get(*op), Some(&false), "{op} must be refused: {r}");
    }
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "written"
    );
    assert!(!models.path().join("new.txt").exists());

    // Deny by default: without mounts only the scratch exists.
    m.send_json("control/manager/start", &fs_task("bare", json!([])))
        .await;
    let bare = outcomes(&m.result("bare").await);
    assert_eq!(
        (bare["read-volume"], bare["write-scratch"], bare["write-rw"]),
        (false, true, false)
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_more_than_policy_allows_is_denied() {
    let models = tempfile::tempdir().unwrap();
    let volumes = format!("models={}:ro", models.path().display());
    let (_b, w, mut m) = setup(&[("PROPLET_VOLUMES", &volumes)]).await;
    m.send_json(
        "control/manager/start",
        &fs_task(
            "rw-on-ro",
            json!([{"volume": "models", "path": "/m", "mode": "rw"}]),
        ),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &fs_task("unknown", json!([{"volume": "secrets", "path": "/s"}])),
    )
    .await;
    m.send_json(
        "control/manager/start",
        &fs_task("bad-path", json!([{"volume": "models", "path": "/a/../b"}])),
    )
    .await;
    assert_err(
        &m.result("rw-on-ro").await,
        "denied",
        "read-only on this proplet",
    );
    assert_err(
        &m.result("unknown").await,
        "denied",
        "not offered by this proplet",
    );
    assert_err(
        &m.result("bad-path").await,
        "invalid",
        "not a plain absolute path",
    );
    m.expect_none("registry/proplet", Duration::from_millis(100), |_| true)
        .await;
    w.stop().await;
}
