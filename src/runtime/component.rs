//! Components (WASI preview 2) in-process (docs/protocol.md §5.3, "H, Wasmtime"): a named
//! export called with WAVE-encoded inputs, or a `wasi:cli/run` command whose stdout is the
//! result. Which one a component is, is read from its type, never from its bytes.

use tokio::sync::oneshot;
use tracing::{Instrument as _, Span};
use wasmtime::component::types::{Component, ComponentItem};
use wasmtime::component::{Func, Instance, InstancePre, Val};
use wasmtime::{Engine, Store};

use super::host::ComponentState;
use super::outcome::{self, Failure, Finished, is_clean_exit};
use super::workload::HANDLER_INTERFACE;
use super::{RuntimeError, TaskSpec};

/// What to call in a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `run` of the proplet's own `handler` interface (`wit/proplet.wit`).
    Workload,
    /// `run` of the exported `wasi:cli/run@…` instance.
    Command {
        /// The full instance name, e.g. `wasi:cli/run@0.2.3`.
        interface: String,
    },
    /// A function, at top level or inside an exported instance.
    Function {
        /// The exported instance holding it, if any.
        interface: Option<String>,
        /// The function name.
        name: String,
    },
}

impl Target {
    /// The called function as `interface#name` (for traces).
    pub fn describe(&self) -> String {
        match self {
            Target::Workload => format!("{HANDLER_INTERFACE}#run"),
            Target::Command { interface } => format!("{interface}#run"),
            Target::Function {
                interface: Some(i),
                name,
            } => format!("{i}#{name}"),
            Target::Function {
                interface: None,
                name,
            } => name.clone(),
        }
    }
}

/// Resolves what `spec` asks for against the component's exported types: a workload's
/// handler (whatever the task's name, unless it is `iface#func` of another export), the
/// command entry point for `_start`/empty names, else `iface#func`, a top-level function,
/// or a function of that name in any exported instance.
pub fn resolve(component: &Component, engine: &Engine, spec: &TaskSpec) -> Result<Target, String> {
    let exports: Vec<(&str, ComponentItem)> =
        component.exports(engine).map(|(n, e)| (n, e.ty)).collect();
    let names = || {
        exports
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A workload runs as a workload whatever the task calls it, its handler export included.
    let names_other_export =
        spec.name.contains('#') && !spec.name.starts_with(&format!("{HANDLER_INTERFACE}#"));
    if !names_other_export && exports.iter().any(|(n, _)| *n == HANDLER_INTERFACE) {
        return Ok(Target::Workload);
    }
    if spec.is_command() {
        return exports
            .iter()
            .find(|(n, item)| n.starts_with("wasi:cli/run@") && matches!(item, ComponentItem::ComponentInstance(_)))
            .map(|(n, _)| Target::Command { interface: (*n).to_owned() })
            .ok_or_else(|| format!("the component is not a command (it does not export wasi:cli/run); exports: [{}]", names()));
    }
    let (wanted_iface, func) = match spec.name.split_once('#') {
        Some((iface, func)) => (Some(iface), func),
        None => (None, spec.name.as_str()),
    };
    for (name, item) in &exports {
        match item {
            ComponentItem::ComponentFunc(_) if wanted_iface.is_none() && *name == func => {
                return Ok(Target::Function {
                    interface: None,
                    name: func.to_owned(),
                });
            }
            ComponentItem::ComponentInstance(inst) if wanted_iface.is_none_or(|w| w == *name) => {
                if matches!(
                    inst.get_export(engine, func).map(|e| e.ty),
                    Some(ComponentItem::ComponentFunc(_))
                ) {
                    return Ok(Target::Function {
                        interface: Some((*name).to_owned()),
                        name: func.to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    Err(format!(
        "Function '{}' not found in component exports; exports: [{}]",
        spec.name,
        names()
    ))
}

/// The export a task calls in a prepared component, or why there is none.
pub fn target(pre: &InstancePre<ComponentState>, spec: &TaskSpec) -> Result<Target, RuntimeError> {
    resolve(
        &pre.component().component_type(),
        pre.component().engine(),
        spec,
    )
    .map_err(RuntimeError::Invalid)
}

/// Runs a prepared component in `store`: instantiate, call the `target`.
pub async fn execute(
    store: &mut Store<ComponentState>,
    pre: &InstancePre<ComponentState>,
    target: &Target,
    spec: &TaskSpec,
    started: Option<oneshot::Sender<()>>,
    span: &Span,
) -> Result<Finished, Failure> {
    let instance = outcome::instantiated(pre.instantiate_async(&mut *store)).await?;
    let func = lookup(&instance, store, target)?;
    span.record("code.function", target.describe().as_str());
    let params = match target {
        Target::Command { .. } | Target::Workload => Vec::new(),
        Target::Function { name, .. } => {
            let params: Vec<_> = func.ty(&*store).params().map(|(_, t)| t).collect();
            outcome::arguments(name, &params, &spec.inputs, wave)?
        }
    };
    outcome::announce(started);
    let mut results = vec![Val::Bool(false); func.ty(&*store).results().len()];
    let command = matches!(target, Target::Command { .. });
    let call = func.call_async(&mut *store, &params, &mut results);
    match call.instrument(span.clone()).await {
        Ok(()) => {}
        Err(e) if command && is_clean_exit(&e) => return Ok(Finished::Command),
        Err(e) => return Err(Failure::Call(e)),
    }
    if matches!(target, Target::Workload) {
        return workload_outcome(store, results.first());
    }
    match (command, results.first()) {
        (true, Some(Val::Result(Err(_)))) => Err(Failure::CommandFailed),
        (true, _) => Ok(Finished::Command),
        (false, None) => Ok(Finished::Text(String::new())),
        (false, Some(v)) => v.to_wave().map(Finished::Text).map_err(Failure::Call),
    }
}

fn lookup(
    instance: &Instance,
    store: &mut Store<ComponentState>,
    target: &Target,
) -> Result<Func, Failure> {
    let (interface, name) = match target {
        Target::Workload => (Some(HANDLER_INTERFACE), "run"),
        Target::Command { interface } => (Some(interface.as_str()), "run"),
        Target::Function { interface, name } => (interface.as_deref(), name.as_str()),
    };
    let parent = match interface {
        Some(i) => Some(
            instance
                .get_export_index(&mut *store, None, i)
                .ok_or_else(|| missing(i))?,
        ),
        None => None,
    };
    let index = instance
        .get_export_index(&mut *store, parent.as_ref(), name)
        .ok_or_else(|| missing(name))?;
    instance
        .get_func(&mut *store, index)
        .ok_or_else(|| missing(name))
}

/// A workload's result: what it reported (or its stdout if it reported nothing), or the
/// error message its `run` returned.
fn workload_outcome(
    store: &mut Store<ComponentState>,
    returned: Option<&Val>,
) -> Result<Finished, Failure> {
    match returned {
        Some(Val::Result(Err(Some(msg)))) => match msg.as_ref() {
            Val::String(text) => Err(Failure::Failed(text.clone())),
            other => Err(Failure::Failed(format!("{other:?}"))),
        },
        Some(Val::Result(Err(None))) => Err(Failure::Failed("run returned an error".into())),
        _ => Ok(match store.data_mut().workload.reported.take() {
            Some(text) => Finished::Text(text),
            None => Finished::Command,
        }),
    }
}

fn missing(name: &str) -> Failure {
    Failure::Invalid(format!("export '{name}' disappeared after instantiation"))
}

/// An input parsed as a WAVE value of its parameter's type.
fn wave(text: &str, ty: &wasmtime::component::Type) -> Result<Val, String> {
    Val::from_wave(ty, text).map_err(|e| {
        format!(
            "Failed to parse {text:?} as a WAVE value of type {}: {e:#}",
            type_name(ty)
        )
    })
}

fn type_name(ty: &wasmtime::component::Type) -> String {
    format!("{ty:?}").to_ascii_lowercase()
}
