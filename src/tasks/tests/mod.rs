//! The task lifecycle as specifications: a real manager, fetcher and publisher around a
//! [`stub`] runtime, driven by decoded messages. No broker, no guest, no sleeps: a test
//! waits for what the stub reports (compiling, running), for the next message out or (one
//! bounded poll) for the journal to hold an answer, and ends with [`Harness::finish`], which
//! waits for every job and reply and returns whatever else was published, so that a second
//! answer for any id cannot go unseen.

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
use crate::state::{Entry, EntryKind, Journal, Recovered, StateDir};
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
    http: true,
    config: true,
    kv: true,
};

struct Harness {
    manager: TaskManager,
    /// The journal's directory, removed with the harness.
    _state: (tempfile::TempDir, StateDir),
    outbox: Outbox,
    /// The manager's journal, to see what it has stored.
    journal: Journal,
    events: mpsc::UnboundedReceiver<Event>,
    released: watch::Sender<HashSet<String>>,
}

/// `slots` execution slots and `queue` waiting places.
fn settings(slots: usize, queue: usize) -> TaskSettings {
    TaskSettings {
        max_concurrent: NonZeroUsize::new(slots).expect("at least one slot"),
        queue_capacity: queue,
        queue_bytes: 1 << 20,
        outbox_max_bytes: 1 << 20,
        scratch_bytes: 1 << 20,
        drain_timeout: Duration::from_secs(30),
        module_cache_entries: 8,
        module_cache_bytes: 1 << 20,
        latent_max_bytes: 1 << 20,
        instance_allocator: Default::default(),
        external_runtime: None,
        volumes: Vec::new(),
        net_allow: Vec::new(),
        apis: Default::default(),
        monitoring: false,
        metrics_interval: Duration::ZERO,
    }
}

fn harness(features: Features, settings: TaskSettings) -> Harness {
    harness_queueing(features, settings, 64)
}

/// A harness whose session queue takes `capacity` messages before a sender must wait.
fn harness_queueing(features: Features, settings: TaskSettings, capacity: usize) -> Harness {
    let (publisher, outbox) = Publisher::channel(capacity);
    let (stub, events) = Stub::new(features);
    let released = stub.releaser();
    let fetch = FetchSettings {
        chunk_timeout: PATIENCE * 2,
        max_binary_bytes: 1 << 20,
        max_assemblies: 4,
        http_timeout: PATIENCE,
    };
    let policy = Policy::default();
    let fetcher = Fetcher::new(&fetch, publisher.clone(), policy.clone());
    let root = tempfile::tempdir().expect("tempdir");
    let dir = StateDir::open(root.path()).expect("state dir");
    let (journal, _) = Journal::open(&dir, Metrics::default()).expect("journal");
    let manager = TaskManager::new(ManagerParts {
        proplet_id: "p1".into(),
        publisher,
        runtime: Arc::new(stub),
        fetcher,
        budgets: Budgets::default(),
        policy,
        settings,
        metrics: Metrics::default(),
        journal: journal.clone(),
    });
    Harness {
        manager,
        _state: (root, dir),
        outbox,
        journal,
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

    /// Waits until an answer to task `id` is on disk (and so handed to the session, or back
    /// for want of room, by the journal's thread right after).
    async fn stored(&self, id: &str) {
        let stored = async {
            while self.journal.answered_lately(id, None).is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(PATIENCE, stored)
            .await
            .expect("stored in time");
    }

    async fn running(&mut self, key: &str) {
        assert_eq!(self.event().await, Event::Running(key.into()));
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
async fn answers_that_find_the_session_queue_full_wait_for_room_and_none_is_lost() {
    // Room for one message: every answer after the first finds the queue full when the
    // journal's thread hands it over, and its job must wait for room itself.
    const TASKS: usize = 200;
    let mut h = harness_queueing(ALL, settings(4, TASKS), 1);
    let ids: Vec<String> = (0..TASKS).map(|n| format!("t{n}")).collect();
    for id in &ids {
        h.start(id, "echo", json!({}));
    }
    let mut answered = HashSet::new();
    for _ in 0..TASKS {
        let result = h.result().await;
        let id = result["task_id"].as_str().expect("a task id").to_owned();
        assert_ok(&result, &id, "a,b");
        assert!(answered.insert(id), "answered twice: {result}");
    }
    assert_eq!(answered, ids.into_iter().collect::<HashSet<_>>());
    h.quiet("one answer each").await;
}

#[tokio::test]
async fn a_daemons_running_answer_waiting_for_room_outlives_a_stop() {
    // One slot and room for one message: `a`'s result takes the room, so the daemon's
    // `running` answer, stored after it, is handed back and waits; the stop comes then.
    let mut h = harness_queueing(ALL, settings(1, 1), 1);
    h.start("a", "echo", json!({}));
    h.start("d", "hang", json!({"daemon": true}));
    h.running("a").await;
    h.running("d").await;
    h.stored("d").await;
    h.stop("d");
    assert_ok(&h.result().await, "a", "a,b");
    assert_ok(&h.result().await, "d", "");
    h.quiet("a stopped daemon is not answered again").await;
}

/// One step of a lifecycle script: a message in, an event awaited from the stub, a release,
/// or the next message out.
enum Step {
    /// A start of `id` running the stub's behaviour `name`, with more fields.
    Start(&'static str, &'static str, Value),
    /// The same, redelivered by the broker (the MQTT DUP flag).
    Redelivered(&'static str, &'static str),
    /// A latent deploy of `lat` running `name`, its compile behaving as the tag says.
    Deploy(&'static str, &'static str),
    /// A stop of `id`.
    Stop(&'static str),
    /// An invoke of `lat` as invocation `id`, with more fields.
    Invoke(&'static str, Value),
    /// The stub compiles (for `key`: a run's key, or `compile` for a deploy).
    Compiling(&'static str),
    /// The stub runs the guest keyed so.
    Running(&'static str),
    /// The stub lets the phase keyed so go.
    Release(&'static str),
    /// The stub holds the phase keyed so again (until the next release).
    Hold(&'static str),
    /// The next message asks the registry for a binary.
    Asked,
    /// The next message: task `id` answered with this result text.
    Ok(&'static str, &'static str),
    /// The next message: task `id` failed with this kind and text in the error.
    Failed(&'static str, &'static str, &'static str),
    /// The next message: invocation `id` of `lat` answered with this text.
    Invoked(&'static str, &'static str),
    /// The next message: invocation `id` of `lat` failed with this kind and text.
    Refused(&'static str, &'static str, &'static str),
}

use Step::*;

/// Plays `steps` against a fresh manager with `features` and `settings`, then checks that
/// nothing else was published by the time every job and reply is done.
async fn script(features: Features, settings: TaskSettings, steps: Vec<Step>) {
    let mut h = harness(features, settings);
    for step in steps {
        h.play(step).await;
    }
    h.quiet("no answer beyond the script's").await;
}

/// Defines a test that plays a script: `name(features, slots, queue) [steps]`.
macro_rules! lifecycle {
    ($(#[$meta:meta])* $name:ident($features:expr, $slots:literal, $queue:literal) [$($step:expr),* $(,)?]) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            script($features, settings($slots, $queue), vec![$($step),*]).await;
        }
    };
}

impl Harness {
    async fn play(&mut self, step: Step) {
        match step {
            Start(id, name, extra) => self.start(id, name, extra),
            Redelivered(id, name) => {
                let payload = serde_json::to_vec(&start_msg(id, name, none())).expect("json");
                let mut msg = decode(Topic::Start, &payload);
                if let Result::Ok(crate::protocol::Inbound::Start(req)) = &mut msg {
                    req.redelivered = true;
                }
                self.manager.handle(msg);
            }
            Deploy(name, tag) => {
                let file = b64(&stub::binary(tag));
                let latent = json!({"latent": true, "file": file, "env": {"WHO": "deploy"}});
                self.start("lat", name, latent);
            }
            Stop(id) => self.stop(id),
            Invoke(id, extra) => self.invoke("lat", id, extra),
            Compiling(key) => assert_eq!(self.event().await, Event::Compiling(key.into())),
            Running(key) => self.running(key).await,
            Release(key) => self.release(key),
            Hold(key) => stub::hold(&self.released, key),
            Asked => assert_eq!(self.next().await.0, Topic::RegistryRequest),
            Ok(id, text) => assert_ok(&self.result().await, id, text),
            Failed(id, kind, text) => assert_err(&self.result().await, id, kind, text),
            Invoked(id, text) => {
                let answer = self.answer(Topic::InvokeResults).await;
                assert_eq!(answer["invocation_id"], id, "{answer}");
                assert_ok(&answer, "lat", text);
            }
            Refused(id, kind, text) => {
                let answer = self.answer(Topic::InvokeResults).await;
                assert_eq!(answer["invocation_id"], id, "{answer}");
                assert_err(&answer, "lat", kind, text);
            }
        }
    }
}

const STOPPED: &str = "stopped by the manager";
const NOT_DEPLOYED: &str = "has not been precompiled";

fn none() -> Value {
    json!({})
}

lifecycle! {
    stop_before_fetch_is_answered_cancelled(ALL, 1, 0) [
        Start("t", "echo", json!({"file": "", "image_url": "registry/app:1"})),
        Asked,
        Stop("t"),
        Failed("t", "cancelled", STOPPED),
    ]
}

lifecycle! {
    stop_during_compile_is_answered_cancelled(ALL, 1, 0) [
        Start("t", "echo", json!({"file": b64(&stub::binary("compile-hang"))})),
        Compiling("t"),
        Stop("t"),
        Failed("t", "cancelled", STOPPED),
    ]
}

lifecycle! {
    stop_during_execute_is_answered_cancelled_and_frees_the_slot(ALL, 1, 0) [
        Start("t", "hang", none()),
        Running("t"),
        Stop("t"),
        Failed("t", "cancelled", STOPPED),
        Start("next", "echo", none()),
        Ok("next", "a,b"),
    ]
}

lifecycle! {
    stop_after_the_result_changes_nothing(ALL, 1, 0) [
        Start("t", "echo", none()),
        Ok("t", "a,b"),
        Stop("t"),
        Stop("never-started"),
    ]
}

lifecycle! {
    a_duplicate_start_of_an_active_task_is_ignored(ALL, 2, 0) [
        Start("t", "hold", none()),
        Running("t"),
        Start("t", "echo", none()),
        Release("t"),
        Ok("t", "released"),
    ]
}

lifecycle! {
    beyond_the_slots_and_the_queue_a_start_is_overloaded(ALL, 1, 1) [
        Start("running", "hold", none()),
        Running("running"),
        Start("queued", "echo", none()),
        Start("refused", "echo", none()),
        Failed("refused", "overloaded", "places are taken"),
        Release("running"),
        Ok("running", "released"),
        Ok("queued", "a,b"),
    ]
}

lifecycle! {
    // Were a redelivered start run, the stub would hold it for a release that never comes,
    // and its answer would not arrive.
    a_redelivered_start_is_answered_again_not_run_again(ALL, 1, 4) [
        // Never taken before: it runs.
        Redelivered("new", "echo"),
        Running("new"),
        Ok("new", "a,b"),
        Start("t", "hold", none()),
        Running("t"),
        Redelivered("t", "hold"),
        Release("t"),
        Ok("t", "released"),
        Redelivered("t", "hold"),
        Ok("t", "released"),
        // Sent again while the manager still counts it pending (state 0): its answer was
        // lost on the way, so it gets it again.
        Start("t", "hold", json!({"state": 0})),
        Ok("t", "released"),
        // Sent again as a completed task (state 3), or by a manager that sends no state:
        // the manager re-runs it on purpose (held, so that a copy comes while it runs).
        Hold("t"),
        Start("t", "hold", json!({"state": 3})),
        Running("t"),
        // A copy while the re-run runs: ignored, not answered with the last answer.
        Redelivered("t", "hold"),
        Release("t"),
        Ok("t", "released"),
        Start("t", "hold", none()),
        Running("t"),
        Release("t"),
        Ok("t", "released"),
    ]
}

#[tokio::test]
async fn a_full_durable_outbox_refuses_new_work() {
    // One byte: the first result (never acknowledged here) fills it.
    let settings = TaskSettings {
        outbox_max_bytes: 1,
        ..settings(1, 4)
    };
    let steps = vec![
        Start("first", "echo", none()),
        Ok("first", "a,b"),
        Start("second", "echo", none()),
        Failed("second", "overloaded", "PROPLET_OUTBOX_MAX_BYTES"),
    ];
    script(ALL, settings, steps).await;
}

/// A runtime that supports nothing optional.
const BARE: Features = Features {
    fuel: false,
    mounts: false,
    latent: false,
    components: false,
    http: false,
    config: false,
    kv: false,
};

lifecycle! {
    // Nothing reaches the runtime: the stub would report it, and the script would fail.
    grants_beyond_policy_or_the_runtime_are_denied_before_anything_runs(BARE, 1, 4) [
        Start("memory", "echo", json!({"limits": {"memory_bytes": 1u64 << 40}})),
        Failed("memory", "denied", "memory"),
        Start("fuel", "echo", json!({"limits": {"fuel": 1000}})),
        Failed("fuel", "denied", "fuel"),
        Start("mount", "echo", json!({"mounts": [{"volume": "data", "path": "/data"}]})),
        Failed("mount", "denied", "mounts"),
        Start("http", "echo", json!({"http": ["https://api.example.com"]})),
        Failed("http", "denied", "outbound HTTP: not supported"),
        Start("config", "echo", json!({"config": {"k": "v"}})),
        Failed("config", "denied", "configuration values: not supported"),
        Start("kv", "echo", json!({"kv": ["cache"]})),
        Failed("kv", "denied", "key-value buckets: not supported"),
        Start("component", "echo", none()),
        Failed("component", "denied", "components"),
    ]
}

lifecycle! {
    // No PROPLET_HTTP_ALLOW: no origin can be granted; a malformed one is invalid. No
    // PROPLET_CONFIG_ALLOW: no credential can be read; a path for a key is invalid.
    http_and_credentials_beyond_the_policy_are_denied(ALL, 1, 4) [
        Start("far", "echo", json!({"http": ["https://api.example.com"]})),
        Failed("far", "denied", "PROPLET_HTTP_ALLOW"),
        Start("bad", "echo", json!({"http": ["ftp://x"]})),
        Failed("bad", "invalid", "http or https"),
        Start("cred", "echo", json!({"credentials": ["db_password"]})),
        Failed("cred", "denied", "PROPLET_CONFIG_ALLOW"),
        Start("path", "echo", json!({"credentials": ["../../etc/shadow"]})),
        Failed("path", "invalid", "not a configuration key"),
        Start("bucket", "echo", json!({"kv": ["cache"]})),
        Failed("bucket", "denied", "PROPLET_KV_BUCKETS"),
    ]
}

#[tokio::test]
async fn an_invalid_start_is_answered_invalid() {
    let mut h = harness(ALL, settings(1, 0));
    h.start("t", "echo", json!({"file": "not base64!"}));
    assert_err(&h.result().await, "t", "invalid", "base64");
    let bad = json!({"id": "bad", "inputs": {"not": "a list"}});
    h.send(Topic::Start, &bad);
    assert_err(&h.result().await, "bad", "invalid", "");
    h.quiet("nothing more").await;
}

lifecycle! {
    a_daemon_is_answered_once_running_and_never_again(ALL, 1, 0) [
        Start("d", "hang", json!({"daemon": true})),
        Running("d"),
        Ok("d", ""),
        Stop("d"),
    ]
}

lifecycle! {
    an_invoke_before_any_deploy_is_refused(ALL, 1, 0) [
        Invoke("i1", none()),
        Refused("i1", "invalid", NOT_DEPLOYED),
    ]
}

lifecycle! {
    an_invoke_while_its_task_compiles_waits_for_it(ALL, 1, 4) [
        Deploy("env", "compile-hold"),
        Compiling("compile"),
        Invoke("i1", json!({"inputs": ["PROPLET_INVOCATION_ID"]})),
        Release("compile"),
        Running("i1"),
        Invoked("i1", "i1"),
    ]
}

lifecycle! {
    invokes_after_the_deploy_run_with_their_own_env_and_inputs(ALL, 2, 4) [
        Deploy("env", ""),
        Invoke("i1", json!({"inputs": ["WHO"]})),
        Invoked("i1", "deploy"),
        Invoke("i2", json!({"inputs": ["WHO"], "env": {"WHO": "invoke"}})),
        Invoked("i2", "invoke"),
        Invoke("i3", json!({"inputs": ["PROPLET_ID"]})),
        Invoked("i3", "p1"),
    ]
}

lifecycle! {
    // A task whose id is what a string-built invocation key would be, an invocation whose
    // id is its task's: all three are distinct jobs.
    an_invocation_is_keyed_apart_from_tasks_and_duplicates_are_ignored(ALL, 3, 4) [
        Deploy("hold", ""),
        Start("lat-inv-lat", "hold", none()),
        Running("lat-inv-lat"),
        Invoke("lat", none()),
        Running("lat"),
        Invoke("lat", none()),
        Release("lat"),
        Invoked("lat", "released"),
        Release("lat-inv-lat"),
        Ok("lat-inv-lat", "released"),
    ]
}

lifecycle! {
    stopping_a_latent_task_cancels_its_invocations_and_forgets_it(ALL, 2, 4) [
        Deploy("hang", ""),
        Invoke("i1", none()),
        Running("i1"),
        Stop("lat"),
        Refused("i1", "cancelled", STOPPED),
        Invoke("i2", none()),
        Refused("i2", "invalid", NOT_DEPLOYED),
    ]
}

lifecycle! {
    a_deploy_needs_a_runtime_that_compiles_ahead(Features { latent: false, ..ALL }, 1, 0) [
        Deploy("echo", ""),
        Failed("lat", "invalid", "not supported"),
    ]
}

lifecycle! {
    an_invoke_waiting_for_a_deploy_that_is_stopped_is_refused(ALL, 1, 4) [
        Deploy("echo", "compile-hang"),
        Compiling("compile"),
        Invoke("i1", none()),
        Stop("lat"),
            // The deploy is answered first: waiting invokes wake once it has ended.
        Failed("lat", "cancelled", STOPPED),
        Refused("i1", "invalid", NOT_DEPLOYED),
    ]
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

#[tokio::test]
async fn what_a_previous_process_left_is_answered_interrupted() {
    let mut h = harness(ALL, settings(1, 0));
    let entry = |task: &str, invocation: Option<&str>, kind| Entry {
        task: task.into(),
        invocation: invocation.map(Into::into),
        kind,
    };
    h.manager.recover(Recovered {
        unanswered: vec![
            entry("ran", None, EntryKind::Start),
            entry("lat", Some("i1"), EntryKind::Invoke),
            entry("redeploying", None, EntryKind::Deploy),
            entry("daemon", None, EntryKind::Start),
        ],
        latent: vec!["deployed".into(), "redeploying".into()],
        // A daemon's acknowledgement (it was running) does not close its job: it runs no
        // more, and is told so.
        outbox: vec![crate::state::Stored {
            seq: 0,
            topic: Topic::Results.suffix().into(),
            task: "daemon".into(),
            invocation: None,
            payload: b"{}".to_vec(),
        }],
    });
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(h.next().await);
    }
    answers.sort_by(|a, b| a.1["task_id"].as_str().cmp(&b.1["task_id"].as_str()));
    let daemon = answers.remove(0);
    assert_err(
        &daemon.1,
        "daemon",
        "interrupted",
        "stopped before answering",
    );
    assert_err(&answers[0].1, "deployed", "interrupted", "deploy it again");
    assert_eq!(answers[1].0, Topic::InvokeResults);
    assert_err(
        &answers[1].1,
        "lat",
        "interrupted",
        "stopped before answering",
    );
    assert_err(
        &answers[2].1,
        "ran",
        "interrupted",
        "stopped before answering",
    );
    let redeploy = &answers[3].1;
    assert_err(
        redeploy,
        "redeploying",
        "interrupted",
        "stopped before answering",
    );
    h.quiet("each is answered once, a redeploy too").await;
}
