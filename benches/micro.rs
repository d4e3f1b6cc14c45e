//! Micro-benchmarks (criterion) of the two pieces of a task's path that the worker owns
//! outright, measured in this process without a broker: decoding a start message, and
//! running a task whose binary is already compiled (store, instance, call, receipt) — for
//! the 41-byte core module and the 51 KB `greet` component of the end-to-end bench; and
//! the journal's writes for a task (accepted, result stored on disk, delivered), one task
//! at a time and in a burst.
//!
//! `cargo bench --bench micro` (the guests must be built: `just guests`). Run it without
//! `RUST_BACKTRACE` set, as a daemon runs: with it, Wasmtime captures a backtrace for each
//! error it makes internally, and the figures measure that instead.

#[allow(dead_code)]
#[path = "../tests/common/guests.rs"]
mod guests;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proplet::protocol::{Topic, decode};
use proplet::runtime::{Allocation, AllocatorChoice, Binary, Runtime, TaskSpec};
use proplet::sandbox::Limits;
use proplet::state::{Entry, EntryKind, Journal, StateDir, Unstored};
use proplet::telemetry::Metrics;

use guests::ADD_WASM;

fn start(file: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "c0ffee00-0000-4000-8000-000000000001", "name": "add", "state": 0,
        "file": file, "inputs": ["10", "20"], "cli_args": null, "broadcast": false,
        "daemon": false, "latent": false, "encrypted": false, "proplet_id": "p"
    }))
    .expect("json")
}

fn decoding(c: &mut Criterion) {
    let core = start(ADD_WASM);
    let component = start(&guests::component_base64("greet"));
    c.bench_function("decode start, core (inline 41 B)", |b| {
        b.iter(|| decode(Topic::Start, black_box(&core)).expect("valid"))
    });
    c.bench_function("decode start, component (inline 51 KB)", |b| {
        b.iter(|| decode(Topic::Start, black_box(&component)).expect("valid"))
    });
}

fn spec(binary: &Binary) -> TaskSpec {
    TaskSpec {
        id: "bench".into(),
        name: "add".into(),
        binary: binary.clone(),
        inputs: vec!["10".into(), "20".into()],
        args: Vec::new(),
        env: Default::default(),
        limits: Limits::default(),
        mounts: Vec::new(),
        network: Vec::new().into(),
        http: None,
        config: Default::default(),
        kv: None,
        meter: Default::default(),
        echo: false,
    }
}

/// A Tokio runtime with two worker threads, as many as the daemon has on a 2-core machine.
fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

fn running(c: &mut Criterion) {
    let tokio = two_worker_runtime();
    let core = Binary::new(base64_decode(ADD_WASM));
    let component = Binary::new(guests::component_bytes("greet"));
    for (allocator, choice) in [
        ("pooling", AllocatorChoice::Pooling),
        ("on-demand", AllocatorChoice::OnDemand),
    ] {
        // As the daemon sets it up by default: fuel metered, four tasks at once.
        let allocation = Allocation {
            choice,
            tasks: 4,
            ..Allocation::default()
        };
        let runtime = Runtime::wasmtime(
            Default::default(),
            true,
            Default::default(),
            Default::default(),
            allocation,
            proplet::sandbox::ScratchRoot::create().expect("scratch root"),
        );
        for (label, binary) in [("core module", &core), ("component", &component)] {
            let first = tokio.block_on(runtime.run(spec(binary), None));
            assert_eq!(first.expect("runs").result, "30", "{label}");
            let name = format!("run a cached {label}, {allocator}: add(10, 20)");
            c.bench_function(&name, |b| {
                b.to_async(&tokio)
                    .iter(|| async { runtime.run(spec(binary), None).await.expect("runs") })
            });
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// What the daemon writes to the journal for task `n`: accepted, its result stored (on
/// disk before this resolves), the result delivered.
async fn journal_task(journal: &Journal, n: usize) {
    let task = format!("c0ffee00-0000-4000-8000-{n:012}");
    journal.accepted(Entry {
        task: task.clone(),
        invocation: None,
        kind: EntryKind::Start,
    });
    let result = Unstored {
        topic: "control/proplet/results".into(),
        task,
        invocation: None,
        payload: br#"{"task_id":"c0ffee00","results":"30","error":null}"#.to_vec(),
        closes: true,
    };
    let seq = journal.store(result).await.expect("stored");
    journal.delivered(seq);
}

fn journaling(c: &mut Criterion) {
    let tokio = two_worker_runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::open(root.path()).expect("state dir");
    let (journal, _) = tokio
        .block_on(async { Journal::open(&dir, Metrics::new()) })
        .expect("journal");
    let journal = std::sync::Arc::new(journal);
    c.bench_function("journal a task: accepted, result on disk, delivered", |b| {
        b.to_async(&tokio).iter(|| journal_task(&journal, 0))
    });
    c.bench_function("journal a burst of 100 tasks at once", |b| {
        b.to_async(&tokio).iter(|| async {
            let mut burst = tokio::task::JoinSet::new();
            for n in 0..100 {
                let journal = journal.clone();
                burst.spawn(async move { journal_task(&journal, n).await });
            }
            burst.join_all().await
        })
    });
}

criterion_group!(benches, decoding, running, journaling);
criterion_main!(benches);
