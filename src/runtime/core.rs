//! Core modules (WASI preview 1) in-process (PROTOCOL.md §5.3, "H, Wasmtime").

use tokio::sync::oneshot;
use wasmtime::{Func, Instance, Store, Val};
use wasmtime_wasi::I32Exit;

use super::engine::{Prepared, WasmEngine};
use super::host::{Captured, HostState, host_state};
use super::{RuntimeError, TaskOutput, TaskSpec, values};

/// Exports tried, in order, when the requested one does not exist (as upstream does).
const FALLBACKS: [&str; 3] = ["main", "run", "_start"];

/// How a run went wrong, before classification.
enum Failure {
    Invalid(String),
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// What a finished call produced.
enum Finished {
    /// A command ran to completion: the result is its stdout.
    Command,
    /// An export returned these values.
    Values(Vec<Val>),
}

/// Runs a core module: compile (cached), instantiate in a fresh deny-by-default store,
/// call the export or `_start`, and classify the outcome.
pub async fn run(
    engine: &WasmEngine,
    spec: &TaskSpec,
    started: Option<oneshot::Sender<()>>,
) -> Result<TaskOutput, RuntimeError> {
    if spec.binary.is_component() {
        return Err(RuntimeError::Invalid(
            "this proplet runs core modules only; the binary is a component".into(),
        ));
    }
    let pre = engine
        .prepare(&spec.binary.digest, spec.binary.bytes.clone())
        .await?;
    let captured = Captured::new(&spec.limits);
    let mut store = Store::new(engine.engine(), host_state(spec, &captured));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let outcome = execute(&mut store, &pre, spec, started).await;
    classify(outcome, &store, &captured)
}

async fn execute(
    store: &mut Store<HostState>,
    pre: &Prepared,
    spec: &TaskSpec,
    started: Option<oneshot::Sender<()>>,
) -> Result<Finished, Failure> {
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failure::Instantiate)?;
    let (entry, func) = resolve(&instance, store, spec)?;
    let command = entry == "_start";
    if !command && let Some(init) = instance.get_func(&mut *store, "_initialize") {
        init.call_async(&mut *store, &[], &mut [])
            .await
            .map_err(Failure::Call)?;
    }
    let args = if command {
        Vec::new()
    } else {
        arguments(store, &func, &entry, &spec.inputs)?
    };
    if let Some(tx) = started {
        // The receiver may be gone (nobody waits for non-daemon starts); that is fine.
        tx.send(()).ok();
    }
    let mut results = vec![Val::I32(0); func.ty(&*store).results().len()];
    match func.call_async(&mut *store, &args, &mut results).await {
        Ok(()) if command => Ok(Finished::Command),
        Ok(()) => Ok(Finished::Values(results)),
        Err(e) if command && e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0) => {
            Ok(Finished::Command)
        }
        Err(e) => Err(Failure::Call(e)),
    }
}

/// Finds the function to call: `_start` for commands, else the named export, else the
/// upstream fallbacks.
fn resolve(
    instance: &Instance,
    store: &mut Store<HostState>,
    spec: &TaskSpec,
) -> Result<(String, Func), Failure> {
    let wanted = if spec.is_command() {
        "_start"
    } else {
        spec.name.as_str()
    };
    let candidates = std::iter::once(wanted).chain(FALLBACKS.into_iter().filter(|f| *f != wanted));
    for name in candidates {
        if let Some(func) = instance.get_func(&mut *store, name) {
            return Ok((name.to_owned(), func));
        }
    }
    let exports: Vec<String> = instance
        .exports(&mut *store)
        .map(|e| e.name().to_owned())
        .collect();
    Err(Failure::Invalid(format!(
        "Function '{wanted}' not found in module exports (also tried {}); exports: [{}]",
        FALLBACKS.join(", "),
        exports.join(", ")
    )))
}

fn arguments(
    store: &Store<HostState>,
    func: &Func,
    name: &str,
    inputs: &[String],
) -> Result<Vec<Val>, Failure> {
    let ty = func.ty(store);
    let params: Vec<_> = ty.params().collect();
    if params.len() != inputs.len() {
        return Err(Failure::Invalid(format!(
            "Argument count mismatch for function '{name}': expected {} arguments but got {}",
            params.len(),
            inputs.len()
        )));
    }
    inputs
        .iter()
        .zip(&params)
        .map(|(text, ty)| values::parse(text, ty).map_err(Failure::Invalid))
        .collect()
}

/// Maps the outcome to a result, checking the budgets first: a guest that hit a limit is
/// reported as such whatever error it then ran into.
fn classify(
    outcome: Result<Finished, Failure>,
    store: &Store<HostState>,
    captured: &Captured,
) -> Result<TaskOutput, RuntimeError> {
    let stderr = captured.stderr.text();
    let failure = match outcome {
        Ok(_) | Err(_) if captured.overflowed() => {
            return Err(RuntimeError::OutputLimit(captured.stdout.capacity()));
        }
        Ok(Finished::Command) => {
            return Ok(TaskOutput {
                result: captured.stdout.text(),
                stderr,
            });
        }
        Ok(Finished::Values(vals)) => {
            return Ok(TaskOutput {
                result: values::render(&vals),
                stderr,
            });
        }
        Err(failure) => failure,
    };
    if store.data().limiter.refused() {
        let e = match failure {
            Failure::Instantiate(e) | Failure::Call(e) => format!("{e:#}"),
            Failure::Invalid(e) => e,
        };
        return Err(RuntimeError::Memory(e));
    }
    Err(match failure {
        Failure::Invalid(msg) => RuntimeError::Invalid(msg),
        Failure::Instantiate(e) => RuntimeError::compile(e),
        Failure::Call(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => RuntimeError::Exit {
                code: exit.0,
                stderr,
            },
            None => RuntimeError::Trap(format!("{e:#}")),
        },
    })
}
