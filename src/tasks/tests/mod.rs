//! The task lifecycle as specifications: a real manager, fetcher and publisher around a
//! [`stub`] runtime, driven by decoded messages. No broker, no guest, no sleeps: a test
//! waits for what the stub reports (compiling, running) or for the next message out, and
//! ends with [`Harness::finish`], which waits for every job and reply and returns whatever
//! else was published, so that a second answer for any id cannot go unseen.

mod stub;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use self::stub::{Event, Stub};
use super::{Fetcher, ManagerParts, TaskManager};
use crate::config::{FetchSettings, TaskSettings};
use crate::protocol::{Topic, decode};
use crate::runtime::Features;
use crate::sandbox::{Budgets, Policy};
use crate::telemetry::Metrics;
use crate::transport::{Outbox, Publisher};

/// Longest a test waits for anything; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// What an in-process runtime supports.
const ALL: Features = Features {
    fuel: true,
    mounts: true,
    latent: true,
    components: true,
};

struct Harness {
    manager: TaskManager,
    outbox: Outbox,
    events: mpsc::UnboundedReceiver<Event>,
    released: watch::Sender<HashSet<String>>,
}

/// `slots` execution slots and `queue` waiting places.
fn settings(slots: usize, queue: usize) -> TaskSettings {
    TaskSettings {
        max_concurrent: NonZeroUsize::new(slots).expect("at least one slot"),
        queue_capacity: queue,
        queue_bytes: 1 << 20,
        scratch_bytes: 1 << 20,
        drain_timeout: Duration::from_secs(30),
        module_cache_entries: 8,
        module_cache_bytes: 1 << 20,
        latent_max_bytes: 1 << 20,
        external_runtime: None,
        volumes: Vec::new(),
        net_allow: Vec::new(),
    }
}

fn harness(features: Features, settings: TaskSettings) -> Harness {
    let (publisher, outbox) = Publisher::channel(64);
    let (stub, events) = Stub::new(features);
    let released = stub.releaser();
    let fetch = FetchSettings {
        chunk_timeout: PATIENCE * 2,
        max_binary_bytes: 1 << 20,
        max_assemblies: 4,
        http_timeout: PATIENCE,
    };
    let policy = Policy::default();
    let fetcher = Fetcher::new(&fetch, publisher.clone(), policy.clone()).expect("fetcher");
    let manager = TaskManager::new(ManagerParts {
        proplet_id: "p1".into(),
        publisher,
        runtime: Arc::new(stub),
        fetcher,
        budgets: Budgets::default(),
        policy,
        settings,
        metrics: Metrics::default(),
    });
    Harness {
        manager,
        outbox,
        events,
        released,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A start of `id` running the stub's `name` behaviour, with `extra` fields over it.
fn start_msg(id: &str, name: &str, extra: Value) -> Value {
    let mut msg =
        json!({"id": id, "name": name, "file": b64(&stub::binary("")), "inputs": ["a", "b"]});
    if let (Some(msg), Value::Object(extra)) = (msg.as_object_mut(), extra) {
        msg.extend(extra);
    }
    msg
}

impl Harness {
    fn send(&self, topic: Topic, msg: &Value) {
        let payload = serde_json::to_vec(msg).expect("json");
        self.manager.handle(decode(topic, &payload));
    }

    fn start(&self, id: &str, name: &str, extra: Value) {
        self.send(Topic::Start, &start_msg(id, name, extra));
    }

    fn stop(&self, id: &str) {
        self.send(Topic::Stop, &json!({"id": id}));
    }

    fn invoke(&self, id: &str, invocation: &str, extra: Value) {
        let mut msg = json!({"id": id, "invocation_id": invocation});
        if let (Some(msg), Value::Object(extra)) = (msg.as_object_mut(), extra) {
            msg.extend(extra);
        }
        self.send(Topic::Invoke, &msg);
    }

    fn release(&self, key: &str) {
        stub::release(&self.released, key);
    }

    /// The next message published.
    async fn next(&mut self) -> (Topic, Value) {
        let msg = tokio::time::timeout(PATIENCE, self.outbox.recv())
            .await
            .expect("a message in time")
            .expect("publisher open");
        let json = serde_json::from_slice(msg.payload()).expect("json payload");
        (msg.topic(), json)
    }

    /// The next message, which must be a result on `topic`.
    async fn answer(&mut self, topic: Topic) -> Value {
        let (got, json) = self.next().await;
        assert_eq!(got, topic, "{json}");
        json
    }

    async fn result(&mut self) -> Value {
        self.answer(Topic::Results).await
    }

    /// The next thing the stub reports.
    async fn event(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("a stub event in time")
            .expect("stub alive")
    }

    async fn running(&mut self, key: &str) {
        assert_eq!(self.event().await, Event::Running(key.into()));
    }

    /// Stops task `id` and expects its answer: `cancelled`.
    async fn stop_cancels(&mut self, id: &str) {
        self.stop(id);
        let answer = self.result().await;
        assert_err(&answer, id, "cancelled", "stopped by the manager");
    }

    /// Finishes, expecting nothing more to have been published.
    async fn quiet(self, why: &str) {
        assert_eq!(self.finish().await, vec![], "{why}");
    }

    /// Drains (cancelling what still runs), waits for every job and reply, and returns
    /// every message published meanwhile.
    async fn finish(mut self) -> Vec<(Topic, Value)> {
        self.manager.shutdown(Duration::ZERO).await;
        let mut rest = Vec::new();
        while let Some(msg) = self.outbox.try_recv() {
            let json = serde_json::from_slice(msg.payload()).expect("json payload");
            rest.push((msg.topic(), json));
        }
        rest
    }
}

fn assert_ok(result: &Value, id: &str, text: &str) {
    assert_eq!(result["task_id"], id, "{result}");
    assert_eq!(result["results"], text, "{result}");
    assert!(result["error"].is_null(), "{result}");
}

fn assert_err(result: &Value, id: &str, kind: &str, text: &str) {
    assert_eq!(result["task_id"], id, "{result}");
    assert_eq!(result["error_kind"], kind, "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains(text), "{text:?} not in {result}");
}

#[tokio::test]
async fn a_task_runs_and_is_answered_once_with_its_receipt() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("t", "echo", json!({}));
    let result = h.result().await;
    assert_ok(&result, "t", "a,b");
    assert!(result["usage"].is_object(), "{result}");
    assert!(result["digest"].is_string(), "{result}");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn stop_before_fetch_is_answered_cancelled() {
    let mut h = harness(ALL, settings(1, 0));
    h.start(
        "t",
        "echo",
        json!({"file": "", "image_url": "registry/app:1"}),
    );
    let (topic, request) = h.next().await;
    assert_eq!(
        topic,
        Topic::RegistryRequest,
        "the binary is asked for: {request}"
    );
    h.stop_cancels("t").await;
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn stop_during_compile_is_answered_cancelled() {
    let mut h = harness(ALL, settings(1, 0));
    let file = b64(&stub::binary("compile-hang"));
    h.start("t", "echo", json!({"file": file}));
    assert_eq!(h.event().await, Event::Compiling("t".into()));
    h.stop_cancels("t").await;
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn stop_during_execute_is_answered_cancelled_and_frees_the_slot() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("t", "hang", json!({}));
    h.running("t").await;
    h.stop_cancels("t").await;
    h.start("next", "echo", json!({}));
    assert_ok(&h.result().await, "next", "a,b");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn stop_after_the_result_changes_nothing() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("t", "echo", json!({}));
    assert_ok(&h.result().await, "t", "a,b");
    h.stop("t");
    h.stop("never-started");
    h.quiet("no second answer").await;
}

#[tokio::test]
async fn a_duplicate_start_of_an_active_task_is_ignored() {
    let mut h = harness(ALL, settings(2, 0));
    h.start("t", "hold", json!({}));
    h.running("t").await;
    h.start("t", "echo", json!({}));
    h.release("t");
    assert_ok(&h.result().await, "t", "released");
    h.quiet("the duplicate is never answered").await;
}

#[tokio::test]
async fn beyond_the_slots_and_the_queue_a_start_is_overloaded() {
    let mut h = harness(ALL, settings(1, 1));
    h.start("running", "hold", json!({}));
    h.running("running").await;
    h.start("queued", "echo", json!({}));
    h.start("refused", "echo", json!({}));
    assert_err(
        &h.result().await,
        "refused",
        "overloaded",
        "places are taken",
    );
    h.release("running");
    assert_ok(&h.result().await, "running", "released");
    assert_ok(&h.result().await, "queued", "a,b");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn grants_beyond_policy_or_the_runtime_are_denied_before_anything_runs() {
    let limited = Features {
        fuel: false,
        mounts: false,
        latent: false,
        components: false,
    };
    let mut h = harness(limited, settings(1, 4));
    h.start(
        "memory",
        "echo",
        json!({"limits": {"memory_bytes": 1u64 << 40}}),
    );
    assert_err(&h.result().await, "memory", "denied", "");
    h.start("fuel", "echo", json!({"limits": {"fuel": 1000}}));
    assert_err(&h.result().await, "fuel", "denied", "fuel");
    let mount = json!([{"volume": "data", "path": "/data"}]);
    h.start("mount", "echo", json!({"mounts": mount}));
    assert_err(&h.result().await, "mount", "denied", "mounts");
    h.start("component", "echo", json!({}));
    assert_err(&h.result().await, "component", "denied", "components");
    h.quiet("nothing more").await;
    // Nothing reached the runtime.
}

#[tokio::test]
async fn an_invalid_start_is_answered_invalid() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("t", "echo", json!({"file": "not base64!"}));
    assert_err(&h.result().await, "t", "invalid", "base64");
    h.send(
        Topic::Start,
        &json!({"id": "bad", "inputs": {"not": "a list"}}),
    );
    assert_err(&h.result().await, "bad", "invalid", "");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn a_daemon_is_answered_once_running_and_never_again() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("d", "hang", json!({"daemon": true}));
    h.running("d").await;
    assert_ok(&h.result().await, "d", "");
    h.stop("d");
    h.quiet("a stopped daemon answers nothing more").await;
}

#[tokio::test]
async fn an_invoke_before_any_deploy_is_refused() {
    let mut h = harness(ALL, settings(1, 0));
    h.invoke("lat", "i1", json!({}));
    let refused = h.answer(Topic::InvokeResults).await;
    assert_eq!(refused["invocation_id"], "i1", "{refused}");
    assert_err(&refused, "lat", "invalid", "has not been precompiled");
    h.quiet("nothing more").await;
}

/// Deploys `lat` running `name`, compiling as `tag` says.
fn deploy(h: &Harness, name: &str, tag: &str) {
    let file = b64(&stub::binary(tag));
    h.start(
        "lat",
        name,
        json!({"latent": true, "file": file, "env": {"WHO": "deploy"}}),
    );
}

#[tokio::test]
async fn an_invoke_while_its_task_compiles_waits_for_it() {
    let mut h = harness(ALL, settings(1, 4));
    deploy(&h, "env", "compile-hold");
    assert_eq!(h.event().await, Event::Compiling("compile".into()));
    h.invoke("lat", "i1", json!({"inputs": ["PROPLET_INVOCATION_ID"]}));
    h.release("compile");
    h.running("i1").await;
    let answer = h.answer(Topic::InvokeResults).await;
    assert_ok(&answer, "lat", "i1");
    assert_eq!(answer["invocation_id"], "i1");
    h.quiet("a deploy is not answered").await;
}

#[tokio::test]
async fn invokes_after_the_deploy_run_with_their_own_env_and_inputs() {
    let mut h = harness(ALL, settings(2, 4));
    deploy(&h, "env", "");
    h.invoke("lat", "i1", json!({"inputs": ["WHO"]}));
    assert_ok(&h.answer(Topic::InvokeResults).await, "lat", "deploy");
    let env = json!({"inputs": ["WHO"], "env": {"WHO": "invoke"}});
    h.invoke("lat", "i2", env);
    assert_ok(&h.answer(Topic::InvokeResults).await, "lat", "invoke");
    h.invoke("lat", "i3", json!({"inputs": ["PROPLET_ID"]}));
    assert_ok(&h.answer(Topic::InvokeResults).await, "lat", "p1");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn an_invocation_is_keyed_apart_from_tasks_and_duplicates_are_ignored() {
    let mut h = harness(ALL, settings(2, 4));
    deploy(&h, "hold", "");
    h.invoke("lat", "lat", json!({}));
    h.running("lat").await;
    h.invoke("lat", "lat", json!({}));
    h.start("lat-inv-lat", "echo", json!({}));
    assert_ok(&h.result().await, "lat-inv-lat", "a,b");
    h.release("lat");
    let answer = h.answer(Topic::InvokeResults).await;
    assert_ok(&answer, "lat", "released");
    h.quiet("the duplicate invoke is never answered").await;
}

#[tokio::test]
async fn stopping_a_latent_task_cancels_its_invocations_and_forgets_it() {
    let mut h = harness(ALL, settings(2, 4));
    deploy(&h, "hang", "");
    h.invoke("lat", "i1", json!({}));
    h.running("i1").await;
    h.stop("lat");
    let cancelled = h.answer(Topic::InvokeResults).await;
    assert_err(&cancelled, "lat", "cancelled", "stopped by the manager");
    h.invoke("lat", "i2", json!({}));
    let refused = h.answer(Topic::InvokeResults).await;
    assert_err(&refused, "lat", "invalid", "has not been precompiled");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn an_invoke_waiting_for_a_deploy_that_is_stopped_is_refused() {
    let mut h = harness(ALL, settings(1, 4));
    deploy(&h, "echo", "compile-hang");
    assert_eq!(h.event().await, Event::Compiling("compile".into()));
    h.invoke("lat", "i1", json!({}));
    h.stop("lat");
    let (first, second) = (h.next().await, h.next().await);
    let mut answers = [first, second];
    answers.sort_by_key(|(topic, _)| *topic == Topic::InvokeResults);
    assert_err(&answers[0].1, "lat", "cancelled", "stopped by the manager");
    assert_err(&answers[1].1, "lat", "invalid", "has not been precompiled");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn a_deploy_needs_a_runtime_that_compiles_ahead() {
    let mut h = harness(
        Features {
            latent: false,
            ..ALL
        },
        settings(1, 0),
    );
    deploy(&h, "echo", "");
    assert_err(&h.result().await, "lat", "invalid", "not supported");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn draining_refuses_new_work_and_finishes_the_queue() {
    let mut h = harness(ALL, settings(1, 2));
    for id in ["a", "b", "c"] {
        h.start(id, "hold", json!({}));
    }
    h.running("a").await;
    let manager = h.manager.clone();
    let drained = tokio::spawn(async move { manager.shutdown(PATIENCE * 3).await });
    // Draining starts synchronously with the shutdown's first poll; a start refused
    // "shutting down" shows it has.
    loop {
        h.start("late", "echo", json!({}));
        let refused = h.result().await;
        let error = refused["error"].as_str().unwrap_or_default().to_owned();
        if error.contains("shutting down") {
            break;
        }
        assert!(error.contains("places are taken"), "{refused}");
    }
    for id in ["a", "b", "c"] {
        if id != "a" {
            h.running(id).await;
        }
        h.release(id);
        assert_ok(&h.result().await, id, "released");
    }
    drained.await.expect("drained");
    h.quiet("nothing more").await;
}

#[tokio::test]
async fn the_drain_deadline_cancels_what_still_runs_and_answers_it() {
    let mut h = harness(ALL, settings(1, 1));
    h.start("running", "hang", json!({}));
    h.running("running").await;
    h.start("queued", "echo", json!({}));
    let rest = h.finish().await;
    let kinds: Vec<(&str, &str)> = rest
        .iter()
        .map(|(_, r)| {
            (
                r["task_id"].as_str().unwrap_or(""),
                r["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(rest.len(), 2, "{rest:?}");
    for (id, error) in kinds {
        assert!(["running", "queued"].contains(&id), "{id}");
        assert!(error.contains("shutting down"), "{id}: {error}");
    }
}
