//! OpenTelemetry: every task is one trace (continuing the caller's `traceparent`), exported
//! over OTLP to a receiver inside the suite that decodes the real protobuf; JSON logs carry
//! the ids; spans are flushed on shutdown; metrics and health over real HTTP.

mod common;

use std::time::Duration;

use common::daemon::Daemon;
use common::otlp::{Collector, Received};
use common::probe::Probe;
use common::*;
use serde_json::{Value, json};

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const SPAN_KIND_CONSUMER: i32 = 5;
const STATUS_ERROR: i32 = 2;

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn find(spans: &[Received], pred: impl Fn(&Received) -> bool) -> &Received {
    let names: Vec<&str> = spans.iter().map(Received::name).collect();
    spans
        .iter()
        .find(|s| pred(s))
        .unwrap_or_else(|| panic!("no such span among {names:?}"))
}

fn children<'a>(spans: &'a [Received], parent: &Received) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.parent_id() == parent.span_id())
        .collect()
}

/// A daemon exporting to `collector` over `protocol`, logging JSON lines to `log`.
async fn traced_daemon(
    collector: &Collector,
    protocol: &str,
    m_and_broker: &Broker,
    log: &std::path::Path,
) -> Daemon {
    Daemon::start_logged(
        m_and_broker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "proplet-under-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            // Nothing is exported before shutdown unless the flush on shutdown works.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("PROPLET_LOG_FORMAT", "json"),
            ("PROPLET_LOG_LEVEL", "proplet=info,guest=info"),
        ],
        log,
    )
}

async fn stop(mut d: Daemon) {
    d.signal("-TERM");
    assert_eq!(d.wait(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_continuing_the_callers_context() {
    let collector = Collector::http().await;
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proplet.log");
    let d = traced_daemon(&collector, "http/protobuf", &broker, &log).await;
    m.wait_ready().await;
    let caller = traceparent(CALLER_TRACE, CALLER_SPAN);
    m.send_json(
        "control/manager/start",
        &start(T, json!({"traceparent": caller, "tracestate": "vendor=1"})),
    )
    .await;
    let workload = json!({"file": guests::component_base64("workload"), "name": "traced", "cli_args": ["trace"], "inputs": []});
    m.send_json("control/manager/start", &start("guest", workload))
        .await;
    let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": [], "limits": {"timeout_ms": 200}});
    m.send_json("control/manager/start", &start("slow", spin))
        .await;
    let result = m.result(T).await;
    assert_ok(&result, "30");
    let guest = m.result("guest").await;
    assert_err(&m.result("slow").await, "timeout", "timed out");
    assert!(
        collector.spans().is_empty(),
        "exported before shutdown: the flush is what is tested"
    );
    stop(d).await;

    let spans = collector
        .wait_for(Duration::from_secs(5), |s| s.name() == "task add")
        .await;
    let root = find(&spans, |s| s.name() == "task add");
    assert_eq!(
        root.trace_id(),
        CALLER_TRACE,
        "the caller's trace continues"
    );
    assert_eq!(root.parent_id(), CALLER_SPAN);
    assert_eq!(root.span.kind, SPAN_KIND_CONSUMER);
    assert_eq!(root.attr("task.id").as_deref(), Some(T));
    assert_eq!(root.attr("proplet.id").as_deref(), Some(P));
    assert_eq!(root.attr("manager.generation").as_deref(), Some("latest"));
    assert_eq!(root.attr("messaging.system").as_deref(), Some("mqtt"));
    assert_eq!(
        root.resource_attr("service.name").as_deref(),
        Some("proplet-under-test")
    );
    assert_eq!(root.resource_attr("proplet.id").as_deref(), Some(P));
    assert_eq!(
        root.resource_attr("deployment.environment").as_deref(),
        Some("test")
    );
    assert!(
        root.resource_attr("service.version").is_some()
            && root.resource_attr("host.name").is_some()
    );
    let mut kids: Vec<&str> = children(&spans, root).iter().map(|s| s.name()).collect();
    kids.sort();
    assert_eq!(
        kids,
        [
            "compile",
            "decode",
            "execute",
            "fetch",
            "instantiate",
            "publish"
        ]
    );
    let fetch = find(&spans, |s| {
        s.name() == "fetch" && s.parent_id() == root.span_id()
    });
    assert_eq!(fetch.attr("binary.source").as_deref(), Some("inline"));
    assert!(
        fetch
            .attr("binary.digest")
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let execute = find(&spans, |s| {
        s.name() == "execute" && s.parent_id() == root.span_id()
    });
    assert_eq!(execute.attr("code.function").as_deref(), Some("add"));
    assert_eq!(execute.attr("outcome").as_deref(), Some("ok"));
    assert!(execute.attr("usage.memory_peak_bytes").is_some());
    let compile = find(&spans, |s| {
        s.name() == "compile" && s.parent_id() == root.span_id()
    });
    assert_eq!(compile.attr("cache.hit").as_deref(), Some("false"));
    assert_eq!(
        result["traceparent"],
        json!(traceparent(CALLER_TRACE, &root.span_id())),
        "the result names the task's span"
    );

    // The guest reads its trace context and its log line is an event of its execute span.
    let guest_root = find(&spans, |s| s.name() == "task traced");
    assert_eq!(
        guest["results"],
        json!(traceparent(&guest_root.trace_id(), &guest_root.span_id()))
    );
    let guest_exec = find(&spans, |s| {
        s.name() == "execute" && s.parent_id() == guest_root.span_id()
    });
    assert!(
        guest_exec
            .span
            .events
            .iter()
            .any(|e| e.name.contains("reporting the trace context")),
        "guest log line as a span event: {:?}",
        guest_exec.span.events
    );

    // A failure sets the error status with its error_kind.
    let slow = find(&spans, |s| s.name() == "task spin");
    let status = slow.span.status.clone().expect("status");
    assert_eq!(status.code, STATUS_ERROR);
    assert_eq!(slow.attr("error.type").as_deref(), Some("timeout"));
    assert_ne!(slow.trace_id(), CALLER_TRACE, "no traceparent: a new trace");

    // JSON log lines carry the ids of the span they were written in.
    let text = std::fs::read_to_string(&log).expect("log");
    let done: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "task done" && v["fields"]["task_id"] == T)
        .expect("a JSON 'task done' line");
    assert_eq!(done["trace_id"], CALLER_TRACE);
    assert_eq!(done["span_id"], json!(root.span_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_and_invocations_linked_to_their_deploy() {
    let collector = Collector::grpc().await;
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = traced_daemon(&collector, "grpc", &broker, &dir.path().join("log")).await;
    m.wait_ready().await;
    let deploy = json!({"file": guests::component_base64("greet"), "name": "greet", "inputs": ["\"nobody\""], "latent": true, "proplet_id": P});
    m.send_json("control/manager/start", &start("lat", deploy))
        .await;
    // No wait: an invoke that arrives while its task compiles waits for the deploy.
    let caller = traceparent(CALLER_TRACE, CALLER_SPAN);
    let invoke = json!({"id": "lat", "invocation_id": "inv-1", "inputs": ["\"world\""], "proplet_id": P, "traceparent": caller});
    m.send_json("control/manager/invoke", &invoke).await;
    let r = m
        .expect(
            "control/proplet/invoke_results",
            Duration::from_secs(30),
            |v| v["invocation_id"] == "inv-1",
        )
        .await;
    assert_eq!(r["results"], "\"Hello, world!\"");
    stop(d).await;
    let spans = collector
        .wait_for(Duration::from_secs(5), |s| s.name() == "invoke greet")
        .await;
    let deploy = find(&spans, |s| s.name() == "task greet");
    assert_eq!(deploy.attr("manager.generation").as_deref(), Some("latest"));
    let invoke = find(&spans, |s| s.name() == "invoke greet");
    assert_eq!(invoke.trace_id(), CALLER_TRACE);
    assert!(
        invoke
            .span
            .links
            .iter()
            .any(|l| hex::encode(&l.span_id) == deploy.span_id()),
        "the invocation links to its deploy"
    );
    assert_eq!(
        r["traceparent"],
        json!(traceparent(CALLER_TRACE, &invoke.span_id()))
    );
    let kids: Vec<&str> = children(&spans, invoke).iter().map(|s| s.name()).collect();
    assert!(
        kids.contains(&"execute") && kids.contains(&"publish"),
        "{kids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_over_http() {
    let probe = Probe::new();
    let mut broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start(&broker, &[probe.env(), ("PROPLET_MQTT_TIMEOUT", "1s")]);
    m.wait_ready().await;
    let get = |path: &'static str| probe.get(path);
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    let caller = traceparent(CALLER_TRACE, CALLER_SPAN);
    m.send_json(
        "control/manager/start",
        &start("a", json!({"traceparent": caller})),
    )
    .await;
    let a = m.result("a").await;
    assert_eq!(
        a["traceparent"],
        json!(caller),
        "without an exporter the caller's context is handed on"
    );
    m.send_json("control/manager/start", &start("b", json!({})))
        .await;
    assert_eq!(m.result("b").await.get("traceparent"), None);
    m.send_json(
        "control/manager/start",
        &start("c", json!({"name": "nope"})),
    )
    .await;
    m.result("c").await;
    m.expect("control/proplet/alive", Duration::from_secs(5), |_| true)
        .await;
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"proplet_tasks_total{outcome="ok",error_kind=""} 2"#,
        r#"proplet_tasks_total{outcome="error",error_kind="invalid"} 1"#,
        r#"proplet_compile_cache_total{result="miss"} 1"#,
        r#"proplet_compile_cache_total{result="hit"} 2"#,
        "proplet_tasks_running 0",
        "proplet_tasks_queued 0",
        "proplet_mqtt_reconnects_total 0",
        "proplet_task_duration_seconds_count 3",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains(r#"proplet_fetched_bytes_total{source="inline"}"#),
        "{text}"
    );
    assert!(!text.contains("proplet_heartbeats_total 0\n"), "{text}");
    broker.kill();
    probe.wait_ready_status(503).await;
    broker.restart();
    m.wait_ready().await;
    probe.wait_ready_status(200).await;
    assert!(
        get("/metrics")
            .await
            .1
            .contains("proplet_mqtt_reconnects_total 1")
    );
    stop(d).await;
}
