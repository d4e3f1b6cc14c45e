//! A runtime for the lifecycle's unit tests: it runs nothing, reports what it is doing,
//! and holds each phase until the test lets it go.
//!
//! A stub binary is a component header followed by a tag naming how its compile behaves:
//! `compile-hold` (until [`Stub::release`] of `"compile"`), `compile-hang` (until dropped),
//! anything else (at once). The task's `name` says how its run behaves:
//! - `echo`: returns its inputs joined by commas;
//! - `env`: returns the value of the env variable named by its first input;
//! - `hold`: runs until [`Stub::release`] of its key, then returns `released`;
//! - `hang`: runs until dropped.
//!
//! A run's key is its `PROPLET_INVOCATION_ID` when it has one, else its task id.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};

use crate::runtime::{
    Binary, Digest, Features, RuntimeError, RuntimeFuture, TaskOutput, TaskRuntime, TaskSpec,
};

/// What the stub is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// Compiling the binary of the run keyed so (`"compile"` for a deploy).
    Compiling(String),
    /// Running the guest keyed so.
    Running(String),
}

/// The stub runtime.
pub(super) struct Stub {
    features: Features,
    events: mpsc::UnboundedSender<Event>,
    released: watch::Sender<HashSet<String>>,
    /// Binaries compiled so far (a run of one of them compiles nothing, as with a cache).
    compiled: Mutex<HashSet<Digest>>,
}

/// The component header (`\0asm`, layer 1): enough for `Binary::is_component`.
const COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// A stub binary whose compile behaves as `tag` says.
pub(super) fn binary(tag: &str) -> Vec<u8> {
    [COMPONENT, tag.as_bytes()].concat()
}

impl Stub {
    /// A stub declaring `features`, and the events it reports.
    pub(super) fn new(features: Features) -> (Stub, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let stub = Stub {
            features,
            events,
            released: watch::Sender::new(HashSet::new()),
            compiled: Mutex::new(HashSet::new()),
        };
        (stub, rx)
    }

    /// A handle that lets held phases go.
    pub(super) fn releaser(&self) -> watch::Sender<HashSet<String>> {
        self.released.clone()
    }

    fn report(&self, event: Event) {
        // The test may have stopped listening; the stub goes on regardless.
        self.events.send(event).ok();
    }

    async fn held(&self, key: &str) {
        let mut released = self.released.subscribe();
        // The sender lives in `self`; waiting can only end by the key's release.
        released.wait_for(|set| set.contains(key)).await.ok();
    }

    async fn compile(&self, binary: &Binary, key: &str) {
        if self.lock_compiled().contains(&binary.digest) {
            return;
        }
        let tag = binary.bytes.get(COMPONENT.len()..).unwrap_or_default();
        match tag {
            b"compile-hold" => {
                self.report(Event::Compiling(key.to_owned()));
                self.held("compile").await;
            }
            b"compile-hang" => {
                self.report(Event::Compiling(key.to_owned()));
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        self.lock_compiled().insert(binary.digest.clone());
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        self.compiled
            .lock()
            .expect("no test panics while holding it")
    }

    async fn execute(&self, spec: &TaskSpec, key: &str) -> Result<TaskOutput, RuntimeError> {
        let result = match spec.name.as_str() {
            "echo" => spec.inputs.join(","),
            "env" => {
                let name = spec.inputs.first().cloned().unwrap_or_default();
                spec.env.get(&name).cloned().unwrap_or_default()
            }
            "hold" => {
                self.held(key).await;
                "released".into()
            }
            "hang" => std::future::pending().await,
            other => return Err(RuntimeError::Invalid(format!("stub: no behaviour {other}"))),
        };
        Ok(TaskOutput {
            result,
            stderr: String::new(),
            from_stdout: false,
        })
    }
}

/// Lets the phase keyed `key` go.
pub(super) fn release(released: &watch::Sender<HashSet<String>>, key: &str) {
    released.send_modify(|set| {
        set.insert(key.to_owned());
    });
}

/// Holds the phase keyed `key` again: a run of it from now on waits for the next release.
pub(super) fn hold(released: &watch::Sender<HashSet<String>>, key: &str) {
    released.send_modify(|set| {
        set.remove(key);
    });
}

impl TaskRuntime for Stub {
    fn features(&self) -> Features {
        self.features
    }

    fn describe(&self) -> String {
        "stub".into()
    }

    fn precompile<'a>(&'a self, binary: &'a Binary) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.compile(binary, "compile").await;
            Ok(())
        })
    }

    fn run(
        &self,
        spec: TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> RuntimeFuture<'_, TaskOutput> {
        Box::pin(async move {
            let key = spec
                .env
                .get("PROPLET_INVOCATION_ID")
                .unwrap_or(&spec.id)
                .clone();
            self.compile(&spec.binary, &key).await;
            self.report(Event::Running(key.clone()));
            if let Some(started) = started {
                started.send(()).ok();
            }
            self.execute(&spec, &key).await
        })
    }
}
