//! Hostile tenants against the real binary: each test is an attack that once got through
//! (a daemon abort, a widened capability, a budget overrun) and must now fail cleanly,
//! leaving the daemon and every other task unharmed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::daemon::Daemon;
use common::*;
use serde_json::{Value, json};

fn wat_base64(text: &str) -> String {
    let bytes = wat::parse_str(text).expect("valid WAT");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn fs_task(id: &str, ops: &[&str], mounts: Value) -> Value {
    start(
        id,
        json!({"file": guests::component_base64("fs"), "name": "_start", "inputs": [],
               "cli_args": ops, "mounts": mounts}),
    )
}

/// `op: ok <detail>` from the fs guest's report, or a panic naming the result.
fn detail<'a>(result: &'a Value, op: &str) -> &'a str {
    let text = result["results"].as_str().unwrap_or("");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{op}: ok ")))
        .unwrap_or_else(|| panic!("{op} did not succeed: {result}"))
}

/// Waits until `dir` holds no task scratch directory (removal runs in the background).
async fn wait_scratch_removed(tmp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leftover = scratch_dirs(tmp);
        if leftover.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "scratch left behind: {leftover:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The task scratch directories under `tmp` (in the scratch root in the proplet's working
/// directory: `tmp/proplet-*/proplet-scratch-*/task-*`).
fn scratch_dirs(tmp: &Path) -> Vec<String> {
    names_at_depth(tmp, 3)
        .into_iter()
        .filter(|n| n.starts_with("task-"))
        .collect()
}

/// A broker, a manager, and the real daemon with its temporary directory in `tmp` and
/// `extra` settings, ready.
async fn daemon_in(tmp: &Path, extra: &[(&str, &str)]) -> (Broker, Manager, Daemon) {
    let broker = Broker::start();
    let mut manager = Manager::connect(&broker).await;
    let tmpdir = tmp.to_str().expect("utf-8");
    let settings: Vec<(&str, &str)> = std::iter::once(("TMPDIR", tmpdir))
        .chain(extra.iter().copied())
        .collect();
    let daemon = Daemon::start(&broker, &settings);
    manager.wait_ready().await;
    (broker, manager, daemon)
}

/// Names `depth` levels below `dir`.
fn names_at_depth(dir: &Path, depth: usize) -> Vec<String> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    if depth == 1 {
        return entries
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    }
    entries
        .flat_map(|e| names_at_depth(&e.path(), depth - 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_memory_budget_covers_every_memory_and_table() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(&broker, &[("PROPLET_TASK_MEMORY", "4MiB")]);
    m.wait_ready().await;
    let main = r#"(func (export "main") (result i32) i32.const 7)"#;
    let cases = [
        // Eight memories of 2 MiB each: 16 MiB under a 4 MiB budget.
        ("many-memories", "(memory 32) ".repeat(8)),
        // A table of 600,000 references costs about 4.8 MB of host memory.
        ("huge-table", "(table 600000 funcref) ".to_owned()),
        (
            "memory-and-table",
            "(memory 48) (table 200000 funcref) ".to_owned(),
        ),
        ("two-within", "(memory 16) (memory 16) ".to_owned()),
    ];
    for (id, decls) in &cases {
        let module = format!("(module {decls} {main})");
        let task = start(
            id,
            json!({"file": wat_base64(&module), "name": "main", "inputs": []}),
        );
        m.send_json("control/manager/start", &task).await;
    }
    for id in ["many-memories", "huge-table", "memory-and-table"] {
        let r = m.result(id).await;
        assert_err(&r, "memory", "memory limit exceeded");
        assert_eq!(r["usage"]["limit"], "memory", "{r}");
        let peak = r["usage"]["memory_peak_bytes"].as_u64().expect("peak");
        assert!(peak <= 4 << 20, "the peak stays within the budget: {r}");
    }
    let within = m.result("two-within").await;
    assert_ok(&within, "7");
    assert_eq!(
        within["usage"]["memory_peak_bytes"].as_u64(),
        Some(2 << 20),
        "the receipt's peak is the sum of both memories: {within}"
    );
    drop(d);
}

/// A scratch directory left empty goes to the next task: none may ever see what an earlier
/// task left, be it a small file, a large one or a tree of directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_never_sees_what_an_earlier_one_left_in_its_scratch() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &[("PROPLET_MAX_CONCURRENT_TASKS", "1")]);
    m.wait_ready().await;
    let leaves = ["write-scratch", "deep=50", "fill=4096"];
    for round in 0..3 {
        for (n, leave) in leaves.iter().enumerate() {
            // A task that leaves something behind, then one that leaves nothing (its
            // directory is the one given again). Each lists /tmp first, on a line that is
            // never the last.
            for (k, ops) in [["list=/tmp", leave], ["list=/tmp", "list=/tmp"]]
                .iter()
                .enumerate()
            {
                let id = format!("scratch-{round}-{n}-{k}");
                m.send_json("control/manager/start", &fs_task(&id, ops, json!([])))
                    .await;
                let r = m.result(&id).await;
                assert_eq!(
                    detail(&r, "list=/tmp"),
                    "",
                    "{id} found a predecessor's files: {r}"
                );
                detail(&r, ops[1]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_fill_the_disk_or_bury_the_daemon_in_its_scratch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_broker, mut m, mut d) = daemon_in(tmp.path(), &[("PROPLET_SCRATCH_LIMIT", "8MiB")]).await;
    let attacks = [
        // Nested deeper than any path can name, through directory handles.
        ("deep", "deep=100000"),
        // 2 GB into one file.
        ("fill", "fill=2000000000"),
    ];
    for (id, op) in attacks {
        m.send_json("control/manager/start", &fs_task(id, &[op], json!([])))
            .await;
    }
    for (id, _) in attacks {
        let r = m.result(id).await;
        assert_err(&r, "output_limit", "scratch limit exceeded");
    }
    m.send_json(
        "control/manager/start",
        &fs_task("within", &["fill=4000000"], json!([])),
    )
    .await;
    assert_eq!(detail(&m.result("within").await, "fill=4000000"), "4000000");
    wait_scratch_removed(tmp.path()).await;
    m.send_json("control/manager/start", &start("after", json!({})))
        .await;
    assert_ok(&m.result("after").await, "30");
    d.signal("-TERM");
    assert_eq!(
        d.wait(Duration::from_secs(30)).await,
        Some(0),
        "a clean exit"
    );
    assert!(
        std::fs::read_dir(tmp.path()).expect("tmp").next().is_none(),
        "the scratch root is removed on exit"
    );
}

/// A core module whose `main` returns how many of descriptors 3 to 1023 are preopened
/// directories (asked with `fd_prestat_get`). It imports `path_open` (unused) when it
/// `opens_files`.
fn prestat_module(opens_files: bool) -> String {
    let path_open = if opens_files {
        r#"(import "wasi_snapshot_preview1" "path_open"
             (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#
    } else {
        ""
    };
    format!(
        r#"(module
             (import "wasi_snapshot_preview1" "fd_prestat_get"
               (func $prestat (param i32 i32) (result i32)))
             {path_open}
             (memory (export "memory") 1)
             (func (export "main") (result i32)
               (local $fd i32) (local $found i32)
               (local.set $fd (i32.const 3))
               (block $done
                 (loop $next
                   (br_if $done (i32.ge_u (local.get $fd) (i32.const 1024)))
                   (if (i32.eqz (call $prestat (local.get $fd) (i32.const 16)))
                     (then (local.set $found (i32.add (local.get $found) (i32.const 1)))))
                   (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
                   (br $next)))
               (local.get $found)))"#
    )
}

/// A guest that imports no way to open a file gets no scratch directory (nothing is
/// created for it, nothing is preopened at any descriptor); one that does gets its `/tmp`
/// and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_guest_that_can_open_files_gets_a_scratch_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_broker, mut m, d) = daemon_in(tmp.path(), &[]).await;
    let run = async |m: &mut Manager, id: &str, opens_files: bool| {
        let file = wat_base64(&prestat_module(opens_files));
        let task = start(id, json!({"file": file, "name": "main", "inputs": []}));
        m.send_json("control/manager/start", &task).await;
        m.result(id).await
    };
    for n in 0..3 {
        assert_ok(&run(&mut m, &format!("closed-{n}"), false).await, "0");
    }
    let made = scratch_dirs(tmp.path());
    assert!(made.is_empty(), "scratch made for nothing: {made:?}");
    assert_ok(&run(&mut m, "opener", true).await, "1");
    let made = scratch_dirs(tmp.path());
    assert_eq!(
        made.len(),
        1,
        "one scratch directory, kept for the next task: {made:?}"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_opening_files_hits_its_own_cap_not_the_process_limit() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start_with_nofile(&broker, &[("PROPLET_MAX_CONCURRENT_TASKS", "2")], 512);
    m.wait_ready().await;
    for id in ["greedy-1", "greedy-2"] {
        m.send_json(
            "control/manager/start",
            &fs_task(id, &["open-many"], json!([])),
        )
        .await;
    }
    // A full resource table ends the guest (Wasmtime traps rather than failing the open);
    // either way the cap is the task's, and both greedy tasks got their scratch.
    for id in ["greedy-1", "greedy-2"] {
        let r = m.result(id).await;
        let error = r["error"].as_str().unwrap_or("");
        if error.is_empty() {
            let opened: usize = detail(&r, "open-many").parse().expect("count");
            assert!(opened <= 128, "{id} opened {opened}: past its share of 512");
        } else {
            assert_err(&r, "trap", "resource table has no free keys");
        }
    }
    m.send_json(
        "control/manager/start",
        &fs_task("neighbour", &["write-scratch"], json!([])),
    )
    .await;
    let r = m.result("neighbour").await;
    assert_eq!(detail(&r, "write-scratch"), "scratch", "{r}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_the_directories_opened_at_start_up() {
    let host = tempfile::tempdir().expect("host");
    let root = std::fs::canonicalize(host.path()).expect("canonical");
    let (data, models) = (root.join("data"), root.join("models"));
    std::fs::create_dir(&data).expect("data");
    std::fs::create_dir(&models).expect("models");
    std::fs::write(models.join("weights.bin"), "original").expect("weights");
    let broker = Broker::start();

    // Nested volumes would let a task with write access to the outer one replace the
    // inner one's directory: refused at start-up.
    let nested = format!("data={}:rw,inner={}/sub:ro", data.display(), data.display());
    std::fs::create_dir(data.join("sub")).expect("sub");
    let mut refused = Daemon::start(&broker, &[("PROPLET_VOLUMES", &nested)]);
    assert_ne!(refused.wait(Duration::from_secs(30)).await, Some(0));

    let mut m = Manager::connect(&broker).await;
    let volumes = format!("data={}:rw,models={}:ro", data.display(), models.display());
    let d = Daemon::start(&broker, &[("PROPLET_VOLUMES", &volumes)]);
    m.wait_ready().await;
    // The path of a volume is swapped for a symlink to the host's root after start-up.
    std::fs::rename(&models, root.join("models-old")).expect("move away");
    std::os::unix::fs::symlink("/", &models).expect("swap in a symlink");
    let mounts = json!([{"volume": "models", "path": "/models"}]);
    m.send_json(
        "control/manager/start",
        &fs_task("swapped", &["list=/models"], mounts),
    )
    .await;
    let r = m.result("swapped").await;
    assert_eq!(detail(&r, "list=/models"), "weights.bin", "{r}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_result_counts_against_the_output_budget_as_sent() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(&broker, &[("PROPLET_OUTPUT_LIMIT", "1KiB")]);
    m.wait_ready().await;
    let greet = |id: &str, name: String| {
        let input = serde_json::to_string(&name).expect("wave string");
        start(
            id,
            json!({"file": guests::component_base64("greet"), "name": "greet", "inputs": [input]}),
        )
    };
    let tasks = [
        ("plain", "a".repeat(400)),
        ("long", "a".repeat(2000)),
        // 400 quotes fit as text but not once WAVE and JSON have escaped them.
        ("quotes", "\"".repeat(400)),
    ];
    for (id, name) in tasks {
        m.send_json("control/manager/start", &greet(id, name)).await;
    }
    let plain = m.result("plain").await;
    assert_eq!(plain["error"], Value::Null, "{plain}");
    assert_err(&m.result("long").await, "output_limit", "output limit");
    assert_err(&m.result("quotes").await, "output_limit", "output limit");
    drop(d);
}

/// `wasm` with a custom section of `size` bytes appended (distinct per `tag`).
fn padded(mut wasm: Vec<u8>, size: usize, tag: u32) -> Vec<u8> {
    let name = b"pad";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&tag.to_le_bytes());
    payload.resize(payload.len() + size, 0x5a);
    wasm.push(0);
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend_from_slice(&payload);
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tasks_hold_a_bounded_number_of_binary_bytes() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(
        &broker,
        &[
            ("PROPLET_MAX_CONCURRENT_TASKS", "1"),
            ("PROPLET_TASK_QUEUE_BYTES", "6MiB"),
            ("PROPLET_MQTT_MAX_PACKET_SIZE", "8MiB"),
        ],
    );
    m.wait_ready().await;
    let idle_rss = d.rss_bytes();
    let spin = wat::parse_str(r#"(module (func (export "main") (loop br 0)))"#).expect("wat");
    let ids: Vec<String> = (0..120).map(|n| format!("big-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let file = base64::engine::general_purpose::STANDARD.encode(padded(
            spin.clone(),
            1 << 20,
            n as u32,
        ));
        let task = start(
            id,
            json!({"file": file, "name": "main", "inputs": [], "limits": {"timeout_ms": 200}}),
        );
        m.send_json("control/manager/start", &task).await;
    }
    let mut peak = 0;
    let mut overloaded = 0;
    for id in &ids {
        let r = m.result(id).await;
        peak = peak.max(d.rss_bytes());
        match r["error_kind"].as_str() {
            Some("overloaded") => {
                overloaded += 1;
                assert!(
                    r["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("PROPLET_TASK_QUEUE_BYTES"),
                    "{r}"
                );
            }
            Some("timeout") => {}
            other => panic!("{id}: unexpected {other:?}: {r}"),
        }
    }
    assert!(overloaded >= 60, "only {overloaded} of 120 were refused");
    assert!(
        peak < idle_rss + (160 << 20),
        "RSS grew from {idle_rss} to {peak} for 120 MiB of binaries sent"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_latent_tasks_are_bounded_by_count_and_bytes() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    // Two 51 KB greet components fit in 120 KiB; a 221 KB fs component never does.
    let d = Daemon::start(
        &broker,
        &[
            ("PROPLET_MODULE_CACHE_ENTRIES", "2"),
            ("PROPLET_LATENT_MAX_BYTES", "120KiB"),
        ],
    );
    m.wait_ready().await;
    let latent = |id: &str, guest: &str| {
        start(
            id,
            json!({"file": guests::component_base64(guest), "name": "greet", "inputs": [], "latent": true}),
        )
    };
    m.send_json("control/manager/start", &latent("big", "fs"))
        .await;
    assert_err(
        &m.result("big").await,
        "overloaded",
        "PROPLET_LATENT_MAX_BYTES",
    );
    // Invokes wait for their deploys: once both answer, both are deployed.
    for id in ["one", "two"] {
        m.send_json("control/manager/start", &latent(id, "greet"))
            .await;
        let invoke = json!({"id": id, "invocation_id": id, "inputs": ["\"x\""], "proplet_id": P});
        m.send_json("control/manager/invoke", &invoke).await;
        let r = m
            .expect(
                "control/proplet/invoke_results",
                Duration::from_secs(30),
                |v| v["invocation_id"] == id,
            )
            .await;
        assert_eq!(r["results"], "\"Hello, x!\"", "{r}");
    }
    m.send_json("control/manager/start", &latent("three", "greet"))
        .await;
    assert_err(&m.result("three").await, "overloaded", "at most 2 tasks");
    drop(d);
}

/// A start over `PROPLET_MQTT_MAX_PACKET_SIZE` (a big inline binary) is answered `invalid`
/// by its id, with the way out (`image_url`); one past what the proplet reads at all (4×)
/// is dropped with a clean session, which the proplet announces again, and the next start
/// is answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_start_is_answered_and_a_huge_one_never_jams_the_session() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &[("PROPLET_MQTT_MAX_PACKET_SIZE", "1MiB")]);
    m.wait_ready().await;
    let bytes = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    let big = start("big", json!({"file": bytes(1 << 20), "name": "main"}));
    m.send_json("control/manager/start", &big).await;
    let r = m.result("big").await;
    assert_err(
        &r,
        "invalid",
        "over PROPLET_MQTT_MAX_PACKET_SIZE (1048576 bytes)",
    );
    assert_err(&r, "invalid", "image_url");
    let huge = start("huge", json!({"file": bytes(4 << 20), "name": "main"}));
    m.send_json("control/manager/start", &huge).await;
    m.expect("control/proplet/create", Duration::from_secs(10), |_| true)
        .await;
    let add = guests::base64("add");
    let after = start(
        "after",
        json!({"file": add, "name": "add", "inputs": ["1", "2"]}),
    );
    m.send_json("control/manager/start", &after).await;
    assert_ok(&m.result("after").await, "3");
    m.expect_none("control/proplet/results", Duration::from_secs(1), |v| {
        v["task_id"] == "huge"
    })
    .await;
}

/// A killed proplet cannot remove its working directory, task scratch included: the next
/// one on the same state directory removes it before it starts, however deep the tree a
/// guest left, without following a symbolic link out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_working_directory_goes_with_the_next_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tempfile::tempdir().expect("state");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("keep"), "x").expect("write");
    let settings = [("PROPLET_STATE_DIR", state.path().to_str().expect("utf-8"))];
    let (broker, mut m, mut first) = daemon_in(tmp.path(), &settings).await;
    m.send_json("control/manager/start", &start("before", json!({})))
        .await;
    assert_ok(&m.result("before").await, "30");
    let left = workdirs(tmp.path());
    assert_eq!(left.len(), 1, "{left:?}");
    plant_leftovers(&tmp.path().join(&left[0]), outside.path());
    first.signal("-KILL");
    first.wait(Duration::from_secs(30)).await;
    assert_eq!(workdirs(tmp.path()), left, "a killed worker leaves it");
    let tmpdir = tmp.path().to_str().expect("utf-8");
    let _second = Daemon::start(&broker, &[settings[0], ("TMPDIR", tmpdir)]);
    m.wait_ready().await;
    let now = workdirs(tmp.path());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(
        now, left,
        "the second worker has a working directory of its own"
    );
    assert!(outside.path().join("keep").exists(), "a link was followed");
}

/// The `proplet-*` working directories in `tmp`.
fn workdirs(tmp: &Path) -> Vec<String> {
    names_at_depth(tmp, 1)
        .into_iter()
        .filter(|n| n.starts_with("proplet-"))
        .collect()
}

/// What a killed worker's tasks could leave in its working directory: a tree 5,000 levels
/// deep, and a link to `outside`.
fn plant_leftovers(workdir: &Path, outside: &Path) {
    let root = names_at_depth(workdir, 1);
    let scratch = workdir.join(&root[0]);
    std::os::unix::fs::symlink(outside, scratch.join("escape")).expect("symlink");
    let mut dir = cap_std::fs::Dir::open_ambient_dir(&scratch, cap_std::ambient_authority())
        .expect("open the scratch root");
    for _ in 0..5_000 {
        dir.create_dir("d").expect("mkdir");
        dir = dir.open_dir("d").expect("open");
    }
    dir.write("file", "x").expect("write");
}
