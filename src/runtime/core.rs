//! Core modules (WASI preview 1) in-process (docs/protocol.md §5.3, "H, Wasmtime").

use tokio::sync::oneshot;
use tracing::{Instrument as _, Span};
use wasmtime::{Func, Instance, InstancePre, Store, Val};

use super::host::HostState;
use super::outcome::{self, Failure, Finished, is_clean_exit};
use super::{TaskSpec, values};

/// Exports tried, in order, when the requested one does not exist (as upstream does).
const FALLBACKS: [&str; 3] = ["main", "run", "_start"];

/// Runs a prepared core module in `store`: instantiate, call the export or `_start`.
pub async fn execute(
    store: &mut Store<HostState>,
    pre: &InstancePre<HostState>,
    spec: &TaskSpec,
    started: Option<oneshot::Sender<()>>,
    span: &Span,
) -> Result<Finished, Failure> {
    let instance = outcome::instantiated(pre.instantiate_async(&mut *store)).await?;
    let (entry, func) = resolve(&instance, store, spec)?;
    span.record("code.function", entry.as_str());
    let command = entry == "_start";
    if !command && let Some(init) = instance.get_func(&mut *store, "_initialize") {
        init.call_async(&mut *store, &[], &mut [])
            .instrument(span.clone())
            .await
            .map_err(Failure::Call)?;
    }
    let args = if command {
        Vec::new()
    } else {
        let params: Vec<_> = func.ty(&*store).params().collect();
        outcome::arguments(&entry, &params, &spec.inputs, values::parse)?
    };
    outcome::announce(started);
    let mut results = vec![Val::I32(0); func.ty(&*store).results().len()];
    let call = func.call_async(&mut *store, &args, &mut results);
    match call.instrument(span.clone()).await {
        Ok(()) if command => Ok(Finished::Command),
        Ok(()) => Ok(Finished::Text(values::render(&results))),
        Err(e) if command && is_clean_exit(&e) => Ok(Finished::Command),
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
