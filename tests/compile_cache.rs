//! Compiled code kept on disk, against the real binary: a restarted proplet runs a binary
//! it has seen without compiling it again, `proplet run` shares the daemon's cache, and a
//! corrupt entry is compiled again and replaced, never trusted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use serde_json::json;

/// Every entry in `dir` (one directory per engine fingerprint).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let dirs = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let files = dirs.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten());
    files.map(|f| f.path()).collect()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proplet_loads_what_it_compiled_before() {
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().to_str().expect("utf-8").to_owned();
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let workload = guests::component_base64("workload");
    let task = |id: &str| start(id, json!({"file": workload, "inputs": ["1", "2"]}));
    let state = broker.state_dir().display().to_string();
    let env = |probe: &Probe| {
        let (k, v) = probe.env();
        [
            (k.to_owned(), v.to_owned()),
            ("PROPLET_CACHE_DIR".to_owned(), cache_dir.clone()),
            ("PROPLET_STATE_DIR".to_owned(), state.clone()),
        ]
    };
    for (round, expected) in [("first", "compiled"), ("second", "disk_hit")] {
        let probe = Probe::new();
        let vars = env(&probe);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut d = Daemon::start(&broker, &vars);
        m.wait_ready().await;
        m.send_json("control/manager/start", &task(round)).await;
        assert_ok(&m.result(round).await, "sum=3");
        let line = format!(r#"proplet_compile_cache_total{{result="{expected}"}} 1"#);
        probe.wait_for(&line).await;
        d.signal("-TERM");
        assert_eq!(d.wait(std::time::Duration::from_secs(10)).await, Some(0));
    }
    assert_eq!(entries(cache.path()).len(), 1, "one entry per binary");
}

#[test]
fn run_shares_the_cache_and_never_trusts_a_corrupt_entry() {
    let cache = tempfile::tempdir().expect("tempdir");
    let workload = guests::component_path("workload");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_proplet"))
            .args(["run", "--input", "40", "--input", "2"])
            .arg(&workload)
            .env_clear()
            .env("PROPLET_CACHE_DIR", cache.path())
            .output()
            .expect("run proplet")
    };
    let out = run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sum=42\n");
    let [entry] = entries(cache.path()).try_into().expect("one entry");
    let mode = std::fs::metadata(entry.parent().expect("dir"))
        .expect("meta")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let written = modified(&entry);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(String::from_utf8_lossy(&run().stdout), "sum=42\n");
    assert!(modified(&entry) > written, "the second run used the entry");
    // Flip one byte of the compiled code: refused, compiled again, replaced.
    let mut bytes = std::fs::read(&entry).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).expect("write");
    let out = run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sum=42\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compile cache entry is unusable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(&entry).expect("read"), bytes, "replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompile_warms_the_cache_the_daemon_reads() {
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().to_str().expect("utf-8");
    let broker = Broker::start();
    let fuel = [
        ("PROPLET_CACHE_DIR", cache_dir),
        ("PROPLET_TASK_FUEL_MAX", "1000000000"),
    ];
    let precompile = || {
        Command::new(env!("CARGO_BIN_EXE_proplet"))
            .arg("precompile")
            .arg(guests::component_path("workload"))
            .env_clear()
            .envs(env(&broker, &fuel))
            .output()
            .expect("run proplet precompile")
    };
    let out = precompile();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("compiled in"),
        "{out:?}"
    );
    let again = precompile();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already in the cache"));
    // The daemon, metering fuel as precompile did, starts its first task from the cache.
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let _d = Daemon::start(&broker, &[fuel[0], fuel[1], probe.env()]);
    m.wait_ready().await;
    let workload = guests::component_base64("workload");
    let task = start("warm", json!({"file": workload, "inputs": ["1", "2"]}));
    m.send_json("control/manager/start", &task).await;
    assert_ok(&m.result("warm").await, "sum=3");
    probe
        .wait_for(r#"proplet_compile_cache_total{result="disk_hit"} 1"#)
        .await;
    let (_, metrics) = probe.get("/metrics").await;
    assert!(!metrics.contains(r#"result="compiled""#), "{metrics}");
}
