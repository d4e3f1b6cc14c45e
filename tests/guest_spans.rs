//! A workload's own spans (the `trace` interface of `wit/proplet.wit`): nested under the
//! task's `execute` span in the caller's trace, with their attributes, events and errors,
//! exported over OTLP to a receiver inside the suite; a flood of spans is bounded and the
//! proplet goes on.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::otlp::{Collector, Received};
use common::*;
use serde_json::json;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const STATUS_ERROR: i32 = 2;

fn workload(id: &str, inputs: &[&str], mode: &str) -> serde_json::Value {
    start(
        id,
        json!({
            "file": guests::component_base64("workload"),
            "name": "run",
            "inputs": inputs,
            "cli_args": [mode],
            "traceparent": format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01"),
        }),
    )
}

/// A collector, a broker, a manager and the real binary exporting to the collector.
struct Traced {
    collector: Collector,
    _broker: Broker,
    m: Manager,
    d: Daemon,
    _logs: tempfile::TempDir,
}

impl Traced {
    /// Stops the daemon (its spans are flushed on SIGTERM) and returns what was exported
    /// once a `sum inputs` span has arrived.
    async fn stop_and_collect(&mut self) -> Vec<Received> {
        self.d.signal("-TERM");
        assert_eq!(self.d.wait(Duration::from_secs(30)).await, Some(0));
        let done = |s: &Received| s.name() == "sum inputs";
        self.collector.wait_for(Duration::from_secs(10), done).await
    }
}

async fn traced() -> Traced {
    let collector = Collector::http().await;
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let logs = tempfile::tempdir().unwrap();
    let d = Daemon::start_logged(
        &broker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
        &logs.path().join("log"),
    );
    m.wait_ready().await;
    Traced {
        collector,
        _broker: broker,
        m,
        d,
        _logs: logs,
    }
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.name() == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_spans_nest_under_its_execute_span() {
    let mut t = traced().await;
    t.m.send_json(
        "control/manager/start",
        &workload("s", &["1", "x", "2"], "spans"),
    )
    .await;
    assert_ok(&t.m.result("s").await, "sum=3");
    let spans = t.stop_and_collect().await;
    let execute = named(&spans, "execute");
    let outer = named(&spans, "sum inputs");
    assert_eq!(
        (execute.len(), outer.len()),
        (1, 1),
        "{:?}",
        spans.iter().map(Received::name).collect::<Vec<_>>()
    );
    let (execute, outer) = (execute[0], outer[0]);
    assert_eq!(outer.parent_id(), execute.span_id(), "a child of execute");
    assert_eq!(outer.trace_id(), CALLER_TRACE, "in the caller's trace");
    assert_eq!(outer.attr("inputs").as_deref(), Some("3"));
    assert_eq!(
        outer
            .span
            .events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["summed"]
    );
    let inner = named(&spans, "parse input");
    assert_eq!(inner.len(), 3);
    assert!(
        inner.iter().all(|s| s.parent_id() == outer.span_id()),
        "children of the outer span"
    );
    let failed: Vec<_> = inner
        .iter()
        .filter(|s| {
            s.span
                .status
                .as_ref()
                .is_some_and(|st| st.code == STATUS_ERROR)
        })
        .collect();
    assert_eq!(failed.len(), 1, "the input that did not parse");
    assert!(
        failed[0]
            .span
            .status
            .as_ref()
            .unwrap()
            .message
            .contains("\"x\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_flood_is_bounded_and_the_proplet_goes_on() {
    let mut t = traced().await;
    // Compiled first, so that the flood's 3 s are all spent flooding: a compile counts
    // towards its task's deadline, and a loaded runner can take that long to compile.
    t.m.send_json(
        "control/manager/start",
        &workload("before", &["1", "2"], "spans"),
    )
    .await;
    assert_ok(&t.m.result("before").await, "sum=3");
    let mut flood = workload("flood", &[], "span-flood");
    merge(&mut flood, json!({"limits": {"timeout_ms": 3000}}));
    t.m.send_json("control/manager/start", &flood).await;
    assert_err(&t.m.result("flood").await, "timeout", "");
    t.m.send_json(
        "control/manager/start",
        &workload("after", &["4", "5"], "spans"),
    )
    .await;
    assert_ok(&t.m.result("after").await, "sum=9");
    let spans = t.stop_and_collect().await;
    let flooded = spans.iter().filter(|s| s.name().starts_with("sss")).count();
    assert!(
        (1..=1000).contains(&flooded),
        "at most 1,000 spans of one task: {flooded}"
    );
    let long = spans.iter().find(|s| s.name().starts_with("sss")).unwrap();
    assert_eq!(long.name().len(), 256, "names are cut");
}
