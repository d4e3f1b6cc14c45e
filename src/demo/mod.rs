//! The demo: an embedded broker, two proplets and a small submitter, all in one process.
//!
//! `proplet demo` starts rumqttd on a loopback port, one proplet running tasks in-process
//! with Wasmtime and one using an external runtime (`PROPLET_EXTERNAL_WASM_RUNTIME`, or this
//! very binary's `proplet run`), then plays the manager: it sends a few tasks the way both
//! manager generations do and prints every result.

mod broker;
mod samples;
mod submitter;

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Config;
use submitter::Submitter;

const TENANT: &str = "demo";
const CHANNEL: &str = "demo";
const IN_PROCESS: &str = "demo-wasmtime";
const EXTERNAL: &str = "demo-external";

/// Runs the demo and prints what happens.
pub async fn run() -> anyhow::Result<()> {
    let otel = Config::load(None, &otel_env(&[]), vec![])
        .map(|c| c.otel)
        .unwrap_or_default();
    let log = crate::config::LogSettings {
        level: "error,rumqttd=off".into(),
        json: false,
    };
    let telemetry = crate::telemetry::init(&log, &otel, "demo")?;
    if let Some(endpoint) = &otel.traces_endpoint {
        println!("proplet demo: exporting traces to {endpoint}");
    }
    let outcome = tokio::select! {
        outcome = scenario() => outcome,
        // Dropping the scenario removes the proplets' state directories; their working
        // directories go as the runtime drops their tasks.
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    telemetry.shutdown().await;
    outcome
}

/// The demo's settings, with the standard `OTEL_*` variables taken from the environment.
fn otel_env(vars: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars = vars.to_vec();
    let base = [
        ("PROPLET_TENANT_ID", TENANT),
        ("PROPLET_CHANNEL_ID", CHANNEL),
        ("PROPLET_ENTITY_ID", IN_PROCESS),
    ];
    move |k: &str| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                base.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
            .or_else(|| {
                k.starts_with("OTEL_")
                    .then(|| std::env::var(k).ok())
                    .flatten()
            })
    }
}

async fn scenario() -> anyhow::Result<()> {
    let port = broker::start()?;
    println!("proplet demo: embedded MQTT broker on 127.0.0.1:{port}");
    let external = match std::env::var("PROPLET_EXTERNAL_WASM_RUNTIME") {
        Ok(path) if !path.is_empty() => path,
        _ => std::env::current_exe()?.display().to_string(),
    };
    let mut submitter = Submitter::connect(port, TENANT, CHANNEL).await?;
    // Each proplet needs a state directory of its own (its task journal, locked to it).
    let state = tempfile::Builder::new().prefix("proplet-demo-").tempdir()?;
    let workers = [
        start_worker(port, IN_PROCESS, None, state.path())?,
        start_worker(port, EXTERNAL, Some(&external), state.path())?,
    ];
    for id in [IN_PROCESS, EXTERNAL] {
        submitter
            .wait_for("control/proplet/create", |v| v["proplet_id"] == id)
            .await?;
    }
    println!(
        "proplets online: {IN_PROCESS} (Wasmtime in-process), {EXTERNAL} (external runtime: {external})\n"
    );
    play(&mut submitter).await?;
    println!("\nshutting down the proplets (drain, offline notice, disconnect)");
    for (stop, task) in workers {
        stop.send(()).ok();
        task.await.context("worker task")??;
    }
    println!("done");
    Ok(())
}

type WorkerHandle = (
    oneshot::Sender<()>,
    JoinHandle<Result<(), crate::worker::WorkerError>>,
);

fn start_worker(
    port: u16,
    id: &str,
    external: Option<&str>,
    state: &std::path::Path,
) -> anyhow::Result<WorkerHandle> {
    let address = format!("tcp://127.0.0.1:{port}");
    let mut vars = vec![
        ("PROPLET_ENTITY_ID", id.to_owned()),
        ("PROPLET_STATE_DIR", state.join(id).display().to_string()),
        ("PROPLET_MQTT_ADDRESS", address),
        ("PROPLET_MQTT_QOS", "1".to_owned()),
        ("PROPLET_DRAIN_TIMEOUT", "1s".to_owned()),
    ];
    if let Some(path) = external {
        vars.push(("PROPLET_EXTERNAL_WASM_RUNTIME", path.to_owned()));
    }
    let config = Config::load(None, &otel_env(&vars), vec![])?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::run(config, async move {
        rx.await.ok();
    }));
    Ok((tx, task))
}

/// The scripted session: each step sends one start and prints its result.
async fn play(s: &mut Submitter) -> anyhow::Result<()> {
    let add = samples::base64(samples::ADD)?;
    let hello = samples::base64(samples::HELLO)?;
    let spin = samples::base64(samples::SPIN)?;
    let component = samples::base64(samples::ADD_COMPONENT)?;
    let latest = |id: &str, target: &str, extra: Value| {
        let mut start = json!({"id": id, "name": "add", "state": 0, "file": add, "inputs": ["10", "20"],
            "cli_args": null, "broadcast": false, "daemon": false, "latent": false, "encrypted": false, "proplet_id": target});
        crate::demo::submitter::merge(&mut start, extra);
        start
    };
    s.step(
        "latest manager: add(10, 20), a core-module export",
        latest("t1", IN_PROCESS, json!({})),
    )
    .await?;
    let seed = json!({"cli_args": null, "daemon": false, "env": null, "file": add, "id": "t2", "image_url": "",
        "inputs": [7, 35], "monitoring_profile": null, "name": "add", "state": 0});
    s.send(seed).await?;
    s.report_n(
        "seed-era manager: untargeted start with numeric inputs [7, 35]; every proplet runs it",
        "t2",
        2,
    )
    .await?;
    s.step(
        "a component export: add(40, 2) with WAVE inputs",
        latest(
            "t7",
            IN_PROCESS,
            json!({"file": component, "inputs": ["40", "2"]}),
        ),
    )
    .await?;
    s.step(
        "a WASI command: stdout is the result",
        latest(
            "t3",
            IN_PROCESS,
            json!({"file": hello, "name": "_start", "inputs": []}),
        ),
    )
    .await?;
    s.step(
        "a missing export: an error result with error_kind",
        latest("t4", IN_PROCESS, json!({"name": "mul"})),
    )
    .await?;
    s.send(latest(
        "t5",
        IN_PROCESS,
        json!({"file": spin, "name": "spin", "inputs": []}),
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.send_stop("t5").await?;
    s.report("a spinning guest, then a stop", "t5").await?;
    s.step(
        "the external runtime: add(1, 2)",
        latest("t6", EXTERNAL, json!({"inputs": ["1", "2"]})),
    )
    .await?;
    s.latency(|i| latest(&format!("bench-{i}"), IN_PROCESS, json!({})))
        .await
}
