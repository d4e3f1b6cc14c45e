//! How a guest run ended, and its classification into a result or a [`RuntimeError`].

use std::time::Duration;

use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use tracing::field::Empty;
use tracing::{Instrument as _, Span};

use wasmtime::Store;

use super::engine::{Files, WasmEngine};
use super::host::Captured;
use super::host::Limited;
use super::{GuestOutput, RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::{Meter, Scratch, quota};
use tokio::sync::oneshot;

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
    /// The scratch directory went past its quota.
    Scratch(String),
}

/// What a finished run produced.
pub enum Finished {
    /// A command ran to completion: the result is its stdout.
    Command,
    /// An export returned; the result is this text.
    Text(String),
}

/// Makes the state of a fresh store: the guest's WASI context over `captured` output and
/// its `scratch` (none for a guest that cannot open files), with at most the engine's
/// number of handles.
pub type MakeState<T> =
    fn(&TaskSpec, &Captured, Option<&Scratch>, &WasmEngine) -> wasmtime::Result<T>;

/// Runs `execute` on a fresh deny-by-default store for `spec` (its state made by `state`)
/// and classifies how it ended. A guest that can reach `files` gets a scratch directory
/// and runs within its quota; any other guest gets none, since it could never use it.
pub async fn run_guest<T: Limited>(
    engine: &WasmEngine,
    spec: &TaskSpec,
    files: Files,
    state: MakeState<T>,
    execute: impl AsyncFnOnce(&mut Store<T>, &Span) -> Result<Finished, Failure>,
) -> Result<TaskOutput, RuntimeError> {
    let captured = Captured::new(spec);
    let _ticking = engine.ticking()?;
    let scratch = match files {
        Files::Reached => Some(engine.scratch()?),
        Files::Unreached => None,
    };
    let data = state(spec, &captured, scratch.as_ref(), engine).map_err(RuntimeError::internal)?;
    let mut store = engine.store(data, spec)?;
    let span = execute_span();
    let run = cpu_timed(execute(&mut store, &span), &spec.meter);
    let outcome = match &scratch {
        Some(scratch) => within_quota(engine, scratch, run).await,
        None => run.await,
    };
    conclude(engine, &mut store, spec, outcome, &captured, &span)
}

/// Awaits `run`; while `meter` times the CPU (a task being sampled), adds the CPU time of
/// the thread around each poll: the guest's own, whichever worker thread runs it. Untimed,
/// a poll costs one atomic load more.
async fn cpu_timed<T>(run: impl Future<Output = T>, meter: &Meter) -> T {
    let thread_cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    };
    let mut run = std::pin::pin!(run);
    std::future::poll_fn(|cx| {
        if !meter.cpu_timed() {
            return run.as_mut().poll(cx);
        }
        let before = thread_cpu();
        let polled = run.as_mut().poll(cx);
        meter.cpu(thread_cpu().saturating_sub(before));
        polled
    })
    .await
}

/// Awaits an instantiation under an `instantiate` span.
pub async fn instantiated<I>(
    instantiate: impl Future<Output = wasmtime::Result<I>>,
) -> Result<I, Failure> {
    instantiate
        .instrument(tracing::info_span!("instantiate"))
        .await
        .map_err(Failure::Instantiate)
}

/// Tells whoever waits for it (a daemon's acknowledgement) that the guest is running.
pub fn announce(started: Option<oneshot::Sender<()>>) {
    if let Some(tx) = started {
        // Nobody waits for non-daemon starts; a dropped receiver is fine.
        tx.send(()).ok();
    }
}

/// Runs `execute` unless the task's `scratch` goes past the engine's scratch quota first
/// (the guest is then stopped: dropping the future stops it at the next epoch tick).
pub async fn within_quota(
    engine: &WasmEngine,
    scratch: &Scratch,
    execute: impl Future<Output = Result<Finished, Failure>>,
) -> Result<Finished, Failure> {
    let dir = scratch
        .open()
        .map_err(|e| Failure::Scratch(format!("cannot open the scratch directory: {e}")))?;
    tokio::select! {
        outcome = execute => outcome,
        why = quota::watch(dir, engine.scratch_quota()) => Err(Failure::Scratch(why)),
    }
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
        http: store.data().http_exhausted(),
        fuel: spec.limits.fuel,
    };
    let result = classify(outcome, guards, captured, &spec.meter);
    record(span, &result, &spec.meter);
    result
}

/// What the store saw of the budgets during a run.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    /// A memory or table growth was refused.
    pub memory_refused: bool,
    /// A log line or a reported result did not fit the output budget.
    pub output_refused: bool,
    /// Why the HTTP budget ended the run, if it did.
    pub http: Option<String>,
    /// The fuel the guest had, when metered.
    pub fuel: Option<u64>,
}

/// Maps the outcome to a result, checking the budgets first: a guest that hit a limit is
/// reported as such whatever error it then ran into. The result text (a command's stdout,
/// an export's return value, a workload's error) counts against the output budget as it
/// will be sent, JSON escaping included.
pub fn classify(
    outcome: Result<Finished, Failure>,
    guards: Guards,
    captured: &Captured,
    meter: &Meter,
) -> Result<TaskOutput, RuntimeError> {
    let cap = captured.stdout.capacity();
    if captured.overflowed() || guards.output_refused {
        return Err(RuntimeError::OutputLimit(cap));
    }
    if let Some(why) = guards.http {
        return Err(RuntimeError::HttpLimit(why));
    }
    let failure = match outcome {
        Ok(finished) => return finished_output(finished, captured, meter),
        Err(Failure::Failed(msg)) => Failure::Failed(within_budget(msg, cap)?),
        Err(Failure::Scratch(why)) => return Err(RuntimeError::Scratch(why)),
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
    Err(failed(failure, captured.output()))
}

/// The output of a run that finished: a command's stdout, or the text it returned.
fn finished_output(
    finished: Finished,
    captured: &Captured,
    meter: &Meter,
) -> Result<TaskOutput, RuntimeError> {
    let cap = captured.stdout.capacity();
    let (result, from_stdout) = match finished {
        Finished::Command => (captured.stdout.text(), true),
        Finished::Text(text) => {
            meter.output(text.len());
            (text, false)
        }
    };
    Ok(TaskOutput {
        result: within_budget(result, cap)?,
        stderr: captured.stderr.text(),
        from_stdout,
    })
}

/// The error of a failed run, with what the guest wrote before (`output`).
fn failed(failure: Failure, output: GuestOutput) -> RuntimeError {
    match failure {
        Failure::Invalid(msg) => RuntimeError::Invalid(msg),
        Failure::Instantiate(e) => RuntimeError::compile(e),
        Failure::CommandFailed => RuntimeError::Exit { code: 1, output },
        Failure::Failed(message) => RuntimeError::Failed { message, output },
        Failure::Scratch(why) => RuntimeError::Scratch(why),
        Failure::Call(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => RuntimeError::Exit {
                code: exit.0,
                output,
            },
            None => RuntimeError::Trap {
                message: trap_message(&e),
                output,
            },
        },
    }
}

/// The trap first, then the guest's backtrace (with function names when the binary kept
/// its name section).
fn trap_message(e: &wasmtime::Error) -> String {
    match (e.downcast_ref::<Trap>(), e.downcast_ref::<WasmBacktrace>()) {
        (Some(trap), Some(backtrace)) => format!("{trap}\n{backtrace}"),
        _ => format!("{e:#}"),
    }
}

/// `text` if it fits `cap` bytes once escaped as a JSON string, else `output_limit`.
fn within_budget(text: String, cap: usize) -> Result<String, RuntimeError> {
    if escaped_len(&text) > cap {
        return Err(RuntimeError::OutputLimit(cap));
    }
    Ok(text)
}

/// The length of `text` inside a JSON string (serde_json's escaping).
pub fn escaped_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// Whether a call error is a clean `exit(0)`, which ends a command successfully.
pub fn is_clean_exit(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0)
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Instantiate(e) | Failure::Call(e) => format!("{e:#}"),
        Failure::Invalid(e) | Failure::Failed(e) | Failure::Scratch(e) => e,
        Failure::CommandFailed => "the command failed".into(),
    }
}

/// The arguments of a call to `name`: each input parsed by `parse` as its parameter's type,
/// once the number of inputs matches the number of parameters.
pub fn arguments<T, V>(
    name: &str,
    params: &[T],
    inputs: &[String],
    parse: impl Fn(&str, &T) -> Result<V, String>,
) -> Result<Vec<V>, Failure> {
    let (expected, got) = (params.len(), inputs.len());
    if expected != got {
        return Err(Failure::Invalid(format!(
            "Argument count mismatch for function '{name}': expected {expected} arguments but got {got}"
        )));
    }
    let parsed = inputs.iter().zip(params).map(|(text, ty)| parse(text, ty));
    parsed.collect::<Result<_, _>>().map_err(Failure::Invalid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_length_matches_serde_json() {
        for text in [
            "plain",
            "quote \" and \\ slash",
            "lines\n\r\t",
            "\u{1}\u{1f}\u{8}\u{c}",
            "ünïcødé ✓",
            "",
        ] {
            let json = serde_json::to_string(text).expect("json");
            assert_eq!(escaped_len(text), json.len() - 2, "{text:?}");
        }
    }

    #[test]
    fn a_result_that_does_not_fit_once_escaped_is_output_limit() {
        assert_eq!(
            within_budget("a".repeat(100), 100).expect("fits").len(),
            100
        );
        assert!(matches!(
            within_budget("\u{1}".repeat(20), 100),
            Err(RuntimeError::OutputLimit(100))
        ));
        assert!(matches!(
            within_budget("\"".repeat(51), 100),
            Err(RuntimeError::OutputLimit(100))
        ));
    }
}
