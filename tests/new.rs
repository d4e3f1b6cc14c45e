//! `proplet new`: a project created from each template builds, passes its own tests
//! (`just test`: unit tests, then the component run by this proplet) and reports its
//! result over MQTT through `proplet submit`.

mod common;

use std::path::Path;
use std::process::Command;

use common::daemon::Daemon;
use common::*;

fn proplet() -> &'static str {
    env!("CARGO_BIN_EXE_proplet")
}

/// Creates project `name` in `parent`, then runs `just test` in it.
fn create_and_test(parent: &Path, name: &str, lang: &str) {
    let created = Command::new(proplet())
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(parent)
        .output()
        .expect("run proplet new");
    assert!(created.status.success(), "{created:?}");
    let dir = parent.join(name);
    let tested = Command::new("just")
        .arg("test")
        .current_dir(&dir)
        .env("PROPLET", proplet())
        .output()
        .expect("`just` is installed by scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && stdout.contains(&format!("{name}: all tests passed")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_project_builds_tests_and_runs_on_a_proplet() {
    let parent = tempfile::tempdir().expect("tempdir");
    create_and_test(parent.path(), "edge-sum", "rust");
    // From the project to a proplet over MQTT, as the README shows.
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &[]);
    m.wait_ready().await;
    let wasm = parent
        .path()
        .join("edge-sum/target/wasm32-wasip2/release/edge_sum.wasm");
    let out = tokio::process::Command::new(proplet())
        .args(["submit", "--input", "40", "--input", "2"])
        .arg(&wasm)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env(&broker, &[]))
        .output()
        .await
        .expect("run proplet submit");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sum=42\n", "{out:?}");
    // A project refuses to overwrite anything.
    let again = Command::new(proplet())
        .args(["new", "edge-sum", "--dir"])
        .arg(parent.path())
        .output()
        .expect("run proplet new");
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_python_project_builds_and_tests() {
    let parent = tempfile::tempdir().expect("tempdir");
    create_and_test(parent.path(), "py-sum", "python");
}

#[test]
fn the_wit_printed_is_the_wit_a_project_gets() {
    let out = Command::new(proplet()).arg("wit").output().expect("run");
    let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/proplet.wit"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), wit.expect("wit"));
}
