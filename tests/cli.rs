//! The `proplet` binary's local commands: `run`, `inspect`, `config`, and startup errors.

mod common;

use std::process::{Command, Output};

use common::guests;

fn proplet(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proplet"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run proplet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failed guest is not a black box: what it printed, its panic message and a backtrace
/// with function names come out, each once; output before an `exit` is kept.
#[test]
fn run_shows_why_a_guest_failed() {
    let workload = guests::component_path("workload");
    let out = proplet(&["run", workload.to_str().unwrap(), "panic"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(stdout, "about to panic\n");
    assert_eq!(
        stderr.matches("asked to panic with 0 inputs").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("guest trapped: wasm trap"), "{stderr}");
    assert!(stderr.contains("workload.wasm!"), "symbolicated: {stderr}");
    let hello = guests::path("hello");
    let out = proplet(&["run", hello.to_str().unwrap(), "exit", "3"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).starts_with("Hello, exit 3!"));
    assert_eq!(text(&out.stderr), "hello: done\n");
}

#[test]
fn run_calls_exports_commands_and_workloads() {
    let add = guests::path("add");
    let out = proplet(
        &["run", "--invoke", "add", add.to_str().unwrap(), "40", "2"],
        &[],
    );
    assert_eq!(text(&out.stdout), "42\n");
    let greet = guests::component_path("greet");
    let out = proplet(
        &[
            "run",
            "--invoke",
            "greet",
            "--input",
            "\"you\"",
            greet.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(text(&out.stdout), "\"Hello, you!\"\n");
    let workload = guests::component_path("workload");
    let out = proplet(
        &[
            "run",
            "--input",
            "1",
            "--input",
            "2",
            workload.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(text(&out.stdout), "sum=3\n");
    assert!(
        text(&out.stderr).contains("started with 2 inputs"),
        "guest log lines go to stderr"
    );
    let hello = guests::path("hello");
    let out = proplet(
        &[
            "run",
            "--env",
            "GREETING=Yo",
            hello.to_str().unwrap(),
            "exit",
            "4",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn inspect_describes_kinds_exports_and_capabilities() {
    let greet = guests::component_path("greet");
    let out = text(&proplet(&["inspect", greet.to_str().unwrap()], &[]).stdout);
    assert!(
        out.contains("greet: func(name: string) -> (string)"),
        "{out}"
    );
    assert!(out.contains("inputs are WAVE values"), "{out}");
    let add = guests::path("add");
    let out = text(&proplet(&["inspect", add.to_str().unwrap()], &[]).stdout);
    assert!(
        out.contains("add: func(i32, i32) -> (i32)") && out.contains("reactor"),
        "{out}"
    );
    let python = guests::python_workload_path();
    let python = python.to_str().unwrap();
    let out = text(&proplet(&["inspect", python], &[]).stdout);
    assert!(
        out.contains("handler@0.1.0#run") && !out.contains("exports#init"),
        "componentize-py's internals are hidden: {out}"
    );
    assert!(out.contains("binding-generator internals hidden"), "{out}");
    assert!(out.contains("outgoing HTTP"), "its world imports it: {out}");
    let out = text(&proplet(&["inspect", "--all", python], &[]).stdout);
    assert!(out.contains("exports#init"), "--all lists them: {out}");
    let http = guests::component_path("http");
    let out = text(&proplet(&["inspect", http.to_str().unwrap()], &[]).stdout);
    assert!(
        out.contains("outgoing HTTP (the start's `http` origins, within PROPLET_HTTP_ALLOW)"),
        "{out}"
    );
}

/// `proplet run` gives `--var` values and `--credential` values of `PROPLET_CONFIG_DIR`.
#[test]
fn run_gives_config_values_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0k3n").unwrap();
    let workload = guests::component_path("workload");
    let workload = workload.to_str().unwrap();
    let args = [
        "run",
        "--var",
        "mode=fast",
        "--credential",
        "token",
        "--input",
        "token",
        workload,
        "config",
    ];
    let out = proplet(
        &args,
        &[("PROPLET_CONFIG_DIR", dir.path().to_str().unwrap())],
    );
    assert_eq!(
        text(&out.stdout),
        "keys=mode:4,token:5 shown=t0k3n\n",
        "{}",
        text(&out.stderr)
    );
    let out = proplet(&args, &[]);
    assert!(
        text(&out.stderr).contains("PROPLET_CONFIG_DIR is not set"),
        "{}",
        text(&out.stderr)
    );
    let out = proplet(&["inspect", workload], &[]);
    assert!(
        text(&out.stdout).contains("configuration values"),
        "{}",
        text(&out.stdout)
    );
}

/// `proplet run --kv BUCKET --kv-store FILE` keeps a bucket in a file across runs.
#[test]
fn run_keeps_buckets_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.redb");
    let workload = guests::component_path("workload");
    let args = [
        "run".to_owned(),
        "--kv".into(),
        "state".into(),
        "--kv-store".into(),
        file.display().to_string(),
        "--input".into(),
        "state".into(),
        workload.display().to_string(),
        "kv".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for runs in 1..=2 {
        let out = proplet(&args, &[]);
        assert_eq!(
            text(&out.stdout),
            format!("runs={runs} last=local keys=last,mode,runs\n"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = proplet(&["run", "--kv", "state", workload.to_str().unwrap()], &[]);
    assert!(
        text(&out.stderr).contains("--kv-store"),
        "{}",
        text(&out.stderr)
    );
}

/// `proplet run` sends HTTP only where `--http-allow` (or `PROPLET_HTTP_ALLOW`) lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sends_http_only_where_allowed() {
    let base =
        common::http::serve(vec![("/hi", "200 OK", "text/plain", Some(b"hi".to_vec()))]).await;
    let http = guests::component_path("http");
    let http = http.to_str().unwrap().to_owned();
    let url = format!("{base}/hi");
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            text(&proplet(&args, &env).stdout)
        })
    };
    let args = |pre: &[&str]| {
        let mut v: Vec<String> = pre.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["run".into(), http.clone(), "get".into(), url.clone()]);
        v
    };
    let denied = run(args(&[]), vec![]).await.unwrap();
    assert_eq!(denied, "error=http-request-denied\n");
    let flag = run(args(&["--http-allow", &base]), vec![]).await.unwrap();
    assert_eq!(flag, "status=200 body=hi\n");
    let env = run(args(&[]), vec![("PROPLET_HTTP_ALLOW", base.clone())])
        .await
        .unwrap();
    assert_eq!(env, "status=200 body=hi\n");
}

#[test]
fn config_is_printed_redacted_and_bad_values_stop_startup() {
    let env = [
        ("PROPLET_DOMAIN_ID", "d"),
        ("PROPLET_CHANNEL_ID", "c"),
        ("PROPLET_CLIENT_ID", "p"),
        ("PROPLET_CLIENT_KEY", "hunter2"),
    ];
    let out = proplet(&["config"], &env);
    let shown = text(&out.stdout);
    assert!(
        out.status.success() && shown.contains("entity_id = \"p\"  # env PROPLET_CLIENT_ID"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"));
    let mut bad = env.to_vec();
    bad.push(("PROPLET_MQTT_QOS", "7"));
    let out = proplet(&[], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("PROPLET_MQTT_QOS"),
        "{}",
        text(&out.stderr)
    );
    let out = proplet(&["--mqtt-qos", "1", "--liveliness-interval", "often"], &env);
    assert!(
        text(&out.stderr).contains("--liveliness-interval"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_mounts_directories_and_volumes_within_policy() {
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("hello.txt"), "from a volume").unwrap();
    let fs = guests::component_path("fs");
    let fs = fs.to_str().unwrap();
    let volumes = format!("models={}:ro", vol.path().display());
    let env = [("PROPLET_VOLUMES", volumes.as_str())];
    let out = text(
        &proplet(
            &[
                "run",
                "--mount",
                "models:/models",
                "--arg",
                "read-volume",
                "--arg",
                "write-ro",
                fs,
            ],
            &env,
        )
        .stdout,
    );
    assert!(
        out.contains("read-volume: ok from a volume") && out.contains("write-ro: refused"),
        "{out}"
    );
    let refused = proplet(&["run", "--mount", "models:/models:rw", fs], &env);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("read-only"),
        "{}",
        text(&refused.stderr)
    );
    let typo = format!("{}:/data:wr", vol.path().display());
    let refused = proplet(&["run", "--mount", &typo, fs], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains(r#"mode "wr" (use ro or rw)"#),
        "{}",
        text(&refused.stderr)
    );
    let dir = format!("{}:/models:rw", vol.path().display());
    let out = text(
        &proplet(
            &[
                "run",
                "--mount",
                &dir,
                "--arg",
                "read-volume",
                "--arg",
                "write-ro",
                fs,
            ],
            &[],
        )
        .stdout,
    );
    assert!(
        out.contains("read-volume: ok") && out.contains("write-ro: ok"),
        "a host directory mounted rw: {out}"
    );
}

#[test]
fn the_demo_runs_from_a_bare_environment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = proplet(
        &["demo"],
        &[("TMPDIR", tmp.path().to_str().expect("utf-8"))],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.trim_end().ends_with("done"), "{stdout}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new(), "left in TMPDIR");
}

/// Interrupted once its proplets are online, the demo leaves nothing in TMPDIR.
#[test]
fn an_interrupted_demo_cleans_up() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_proplet"))
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run proplet");
    // Read to the end, so that the demo never writes into a closed pipe.
    let stdout = child.stdout.take().expect("stdout");
    let (online_tx, online) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("proplets online") {
                online_tx.send(()).ok();
            }
            lines.push(line);
        }
        lines
    });
    online
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the demo's proplets never came online");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    let lines = reader.join().expect("reader");
    assert!(
        !status.success(),
        "an interrupted demo reports it: {lines:?}"
    );
    assert_ne!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new(), "left in TMPDIR");
}

/// The names in `dir`.
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}
