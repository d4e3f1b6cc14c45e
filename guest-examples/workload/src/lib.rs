//! A workload written against the proplet's own WIT world (`wit/proplet.wit`): it reads
//! its task context, logs, and reports its result explicitly.
//!
//! It sums its inputs and reports `sum=<n>`. Arguments (the task's `cli_args`) change what
//! it does, for tests: `fail` returns an error, `twice` tries to report a second time,
//! `env` reports the environment it sees, `big` reports a result of 2 MiB, `chatty` logs
//! without end, `trace` reports its trace context, `panic` prints a line and panics.

wit_bindgen::generate!({ path: "../../wit", world: "workload" });

use exports::propeller::proplet::handler::Guest;
use propeller::proplet::log::{self, Level};
use propeller::proplet::{report, task};

struct Workload;

impl Guest for Workload {
    fn run() -> Result<(), String> {
        let args = task::args();
        let has = |a: &str| args.iter().any(|x| x == a);
        log::write(Level::Info, &format!("task {} ({}) started with {} inputs", task::id(), task::name(), task::inputs().len()));
        if has("fail") {
            return Err("asked to fail".into());
        }
        if has("panic") {
            println!("about to panic");
            panic!("asked to panic with {} inputs", task::inputs().len());
        }
        if has("env") {
            let env: Vec<String> = task::env().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            return report::text(&env.join(",")).map_err(|e| format!("{e:?}"));
        }
        if has("id") {
            let invocation = task::env().into_iter().find(|(k, _)| k == "PROPLET_INVOCATION_ID").map(|(_, v)| v);
            let text = format!("{} {}", task::id(), invocation.unwrap_or_default());
            return report::text(&text).map_err(|e| format!("{e:?}"));
        }
        if has("trace") {
            log::write(Level::Info, "reporting the trace context");
            return report::text(&task::traceparent().unwrap_or_default()).map_err(|e| format!("{e:?}"));
        }
        if has("chatty") {
            let line = "x".repeat(1024);
            loop {
                log::write(Level::Debug, &line);
            }
        }
        if has("big") {
            return report::bytes(&vec![7u8; 2 << 20]).map_err(|e| format!("report refused: {e:?}"));
        }
        let mut sum: i64 = 0;
        for input in task::inputs() {
            sum += input.trim().parse::<i64>().map_err(|e| format!("input {input:?} is not a number: {e}"))?;
        }
        report::text(&format!("sum={sum}")).map_err(|e| format!("{e:?}"))?;
        if has("twice") {
            match report::text("again") {
                Err(report::ReportError::AlreadyReported) => log::write(Level::Warn, "a second report was refused"),
                other => return Err(format!("a second report should be refused, got {other:?}")),
            }
        }
        Ok(())
    }
}

export!(Workload);
