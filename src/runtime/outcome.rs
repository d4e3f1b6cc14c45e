//! How a guest run ended, and its classification into a result or a [`RuntimeError`].

use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use tracing::Span;
use tracing::field::Empty;

use wasmtime::Store;

use super::engine::{Limited, WasmEngine};
use super::host::Captured;
use super::{RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::Meter;

/// How a run went wrong, before classification.
pub enum Failure {
    /// A bad request (missing export, arity, unparsable input).
    Invalid(String),
    /// Instantiation failed.
    Instantiate(wasmtime::Error),
    /// The call failed (trap, exit, host error).
    Call(wasmtime::Error),
    /// A command reported failure without exiting (`wasi:cli/run` returned an error).
    CommandFailed,
    /// A workload's `run` returned this error message.
    Failed(String),
}

/// What a finished run produced.
pub enum Finished {
    /// A command ran to completion: the result is its stdout.
    Command,
    /// An export returned; the result is this text.
    Text(String),
}

/// Ends a run: records the final fuel reading, classifies the outcome against the budgets
/// the store saw, and completes the `execute` span.
pub fn conclude<T: Limited>(
    engine: &WasmEngine,
    store: &mut Store<T>,
    spec: &TaskSpec,
    outcome: Result<Finished, Failure>,
    captured: &Captured,
    span: &Span,
) -> Result<TaskOutput, RuntimeError> {
    engine.settle(store, spec);
    let guards = Guards {
        memory_refused: store.data_mut().limiter().refused(),
        output_refused: store.data().output_exhausted(),
        fuel: spec.limits.fuel,
    };
    let result = classify(outcome, guards, captured);
    record(span, &result, &spec.meter);
    result
}

/// What the store saw of the budgets during a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guards {
    /// A memory or table growth was refused.
    pub memory_refused: bool,
    /// A log line or a reported result did not fit the output budget.
    pub output_refused: bool,
    /// The fuel the guest had, when metered.
    pub fuel: Option<u64>,
}

/// Maps the outcome to a result, checking the budgets first: a guest that hit a limit is
/// reported as such whatever error it then ran into.
pub fn classify(
    outcome: Result<Finished, Failure>,
    guards: Guards,
    captured: &Captured,
) -> Result<TaskOutput, RuntimeError> {
    let stderr = captured.stderr.text();
    let failure = match outcome {
        Ok(_) | Err(_) if captured.overflowed() || guards.output_refused => {
            return Err(RuntimeError::OutputLimit(captured.stdout.capacity()));
        }
        Ok(Finished::Command) => {
            return Ok(TaskOutput {
                result: captured.stdout.text(),
                stderr,
            });
        }
        Ok(Finished::Text(result)) => return Ok(TaskOutput { result, stderr }),
        Err(failure) => failure,
    };
    if guards.memory_refused {
        return Err(RuntimeError::Memory(describe(failure)));
    }
    if let (Failure::Call(e), Some(fuel)) = (&failure, guards.fuel)
        && e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel)
    {
        return Err(RuntimeError::Fuel(fuel));
    }
    Err(match failure {
        Failure::Invalid(msg) => RuntimeError::Invalid(msg),
        Failure::Instantiate(e) => RuntimeError::compile(e),
        Failure::CommandFailed => RuntimeError::Exit { code: 1, stderr },
        Failure::Failed(msg) => RuntimeError::Failed(msg),
        Failure::Call(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => RuntimeError::Exit {
                code: exit.0,
                stderr,
            },
            None => RuntimeError::Trap(format!("{e:#}")),
        },
    })
}

/// Whether a call error is a clean `exit(0)`, which ends a command successfully.
pub fn is_clean_exit(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0)
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Instantiate(e) | Failure::Call(e) => format!("{e:#}"),
        Failure::Invalid(e) | Failure::Failed(e) => e,
        Failure::CommandFailed => "the command failed".into(),
    }
}

/// Checks that `name` got as many inputs as it has parameters.
pub fn check_arity(name: &str, expected: usize, got: usize) -> Result<(), Failure> {
    if expected == got {
        return Ok(());
    }
    Err(Failure::Invalid(format!(
        "Argument count mismatch for function '{name}': expected {expected} arguments but got {got}"
    )))
}

/// The span of a guest's call: created before instantiation (which gets its own sibling
/// span), entered for the call, and completed by [`record`].
pub fn execute_span() -> Span {
    tracing::info_span!(
        "execute",
        code.function = Empty,
        outcome = Empty,
        usage.memory_peak_bytes = Empty,
        usage.output_bytes = Empty,
        usage.fuel = Empty
    )
}

/// Records how the call ended (`ok`, or the `error_kind`) and what it used.
pub fn record(span: &Span, result: &Result<TaskOutput, RuntimeError>, meter: &Meter) {
    let reading = meter.read();
    if let Some(peak) = reading.memory_peak_bytes {
        span.record("usage.memory_peak_bytes", peak);
    }
    if let Some(fuel) = reading.fuel {
        span.record("usage.fuel", fuel);
    }
    span.record("usage.output_bytes", reading.output_bytes);
    match result {
        Ok(_) => {
            span.record("outcome", "ok");
        }
        Err(e) => {
            let kind = e.kind().as_str();
            span.record("outcome", kind);
            crate::telemetry::trace::fail(span, kind, &format!("the guest run ended: {kind}"));
        }
    }
}
