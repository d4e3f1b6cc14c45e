//! Outbound HTTP (`wasi:http/outgoing-handler`) from a real component (`guest-examples/http`)
//! to a real server on loopback: granted as the start's request within
//! `PROPLET_HTTP_ALLOW`, denied outside it (directly, by redirect, by a name resolving to a
//! loopback address, to the cloud metadata address), bounded in requests, bytes and
//! requests in flight, counted in the receipt, and traced with `traceparent` handed on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::daemon::Daemon;
use common::otlp::Collector;
use common::*;
use serde_json::{Value, json};

/// What the test server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    uploaded: AtomicUsize,
}

/// A server on a loopback port; returns its base URL and what it sees. `/redirect` sends
/// the client to `elsewhere`.
async fn server(elsewhere: String) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the server" }))
        .route("/trace", get(echo_traceparent))
        .route("/big", get(|| async { vec![b'b'; 4 << 20] }))
        .route("/slow", get(slow))
        .route("/upload", post(upload))
        .route(
            "/hang",
            get(|| tokio::time::sleep(Duration::from_secs(3600))),
        )
        .route(
            "/redirect",
            get(move || async move { (StatusCode::FOUND, [(header::LOCATION, elsewhere)]) }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

async fn echo_traceparent(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> String {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let value = headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap_or("?"));
    value.unwrap_or("none").to_owned()
}

async fn slow(State(seen): State<Arc<Seen>>) -> impl IntoResponse {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    "slow"
}

async fn upload(State(seen): State<Arc<Seen>>, body: Bytes) -> String {
    seen.uploaded.fetch_add(body.len(), Ordering::SeqCst);
    format!("got {}", body.len())
}

/// A start running the `http` guest with `args`, asking for `origins`.
fn task(id: &str, origins: &[&str], args: &[&str]) -> Value {
    start(
        id,
        json!({
            "file": guests::component_base64("http"),
            "name": "_start",
            "inputs": [],
            "cli_args": args,
            "http": origins,
        }),
    )
}

/// Runs one task on a fresh worker with `env`; returns its result.
async fn run(env: &[(&str, &str)], task: Value) -> Value {
    let (_b, w, mut m) = setup(env).await;
    let id = task["id"].as_str().unwrap().to_owned();
    m.send_json("control/manager/start", &task).await;
    let r = m.result(&id).await;
    w.stop().await;
    r
}

fn results(r: &Value) -> &str {
    r["results"]
        .as_str()
        .unwrap_or_else(|| panic!("no results: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_origin_is_reached_and_counted_in_the_receipt() {
    let (base, _) = server(String::new()).await;
    let url = format!("{base}/hello");
    let r = run(
        &[("PROPLET_HTTP_ALLOW", &base)],
        task("ok", &[&base], &["get", &url]),
    )
    .await;
    assert_ok(&r, "status=200 body=hello from the server\n");
    assert_eq!(r["usage"]["http_requests"], 1, "{r}");
    assert_eq!(r["usage"]["http_bytes"], 21, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_grant_are_refused() {
    let (other, other_seen) = server(String::new()).await;
    let (base, _) = server(format!("{other}/hello")).await;
    let allow = format!("{base},{other}");
    let (_b, w, mut m) = setup(&[("PROPLET_HTTP_ALLOW", &allow)]).await;
    let cases = [
        // No `http` field: nothing granted, whatever the operator allows.
        (
            "none",
            vec![],
            vec!["get".to_owned(), format!("{base}/hello")],
        ),
        // Another origin than the one granted (the operator allows it, the task did not ask).
        (
            "origin",
            vec![base.clone()],
            vec!["get".into(), format!("{other}/hello")],
        ),
        // A redirect to it: the guest's second request is checked as any other.
        (
            "redirect",
            vec![base.clone()],
            vec!["follow".into(), format!("{base}/redirect")],
        ),
        // Another scheme and port of the same host.
        (
            "scheme",
            vec![base.clone()],
            vec!["get".into(), base.replace("http://", "https://")],
        ),
    ];
    for (id, origins, args) in &cases {
        let origins: Vec<&str> = origins.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        m.send_json("control/manager/start", &task(id, &origins, &args))
            .await;
        let r = m.result(id).await;
        assert_eq!(results(&r), "error=http-request-denied\n", "{id}: {r}");
    }
    assert_eq!(
        other_seen.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the other server"
    );

    // Asking for more than the operator allows is refused before anything runs.
    let wide = task("wide", &["http://*:*"], &["get", "http://example.com/"]);
    m.send_json("control/manager/start", &wide).await;
    assert_err(&m.result("wide").await, "denied", "PROPLET_HTTP_ALLOW");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_literals_of_special_addresses_are_refused_unless_named() {
    let (base, seen) = server(String::new()).await;
    let port = base.rsplit(':').next().unwrap();
    let by_name = format!("http://localhost:{port}");
    let url = format!("{by_name}/hello");
    // `localhost` is allowed as a name, but it resolves to loopback, which nobody named.
    let r = run(
        &[("PROPLET_HTTP_ALLOW", &by_name)],
        task("name", &[&by_name], &["get", &url]),
    )
    .await;
    assert_eq!(results(&r), "error=destination-ip-prohibited\n", "{r}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);

    // The operator names the range: the same request goes through.
    let r = run(
        &[
            ("PROPLET_HTTP_ALLOW", &by_name),
            ("PROPLET_HTTP_ALLOW_PRIVATE", "127.0.0.0/8,::1"),
        ],
        task("named", &[&by_name], &["get", &url]),
    )
    .await;
    assert_eq!(
        results(&r),
        "status=200 body=hello from the server\n",
        "{r}"
    );

    // Every host and port allowed, yet the cloud metadata address is not: a wildcard does
    // not name it. Nothing is sent (a connection would hang: nothing listens there).
    for (id, target) in [
        ("metadata", "http://169.254.169.254/latest/meta-data/"),
        (
            "mapped",
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
        ),
        ("zero", "http://0.0.0.0:1/"),
    ] {
        let r = run(
            &[("PROPLET_HTTP_ALLOW", "http://*:*")],
            task(id, &["http://*:*"], &["get", target]),
        )
        .await;
        assert_eq!(
            results(&r),
            "error=destination-ip-prohibited\n",
            "{id}: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_ends_the_task_with_http_limit() {
    let (base, seen) = server(String::new()).await;
    let env = [
        ("PROPLET_HTTP_ALLOW", base.as_str()),
        ("PROPLET_HTTP_BYTES", "1MiB"),
    ];
    let big = format!("{base}/big");
    let r = run(&env, task("down", &[&base], &["get", &big])).await;
    assert_err(&r, "http_limit", "bytes of HTTP bodies");
    assert_eq!(r["usage"]["limit"], "http_limit", "{r}");
    assert!(r["usage"]["http_bytes"].as_u64().unwrap() <= 1 << 20, "{r}");

    let upload = format!("{base}/upload");
    let r = run(&env, task("up", &[&base], &["post", &upload, "4194304"])).await;
    assert_err(&r, "http_limit", "bytes of HTTP bodies");
    assert!(
        seen.uploaded.load(Ordering::SeqCst) <= 1 << 20,
        "the server got no more than the budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_fails_and_the_task_goes_on() {
    let (base, _) = server(String::new()).await;
    let env = [
        ("PROPLET_HTTP_ALLOW", base.as_str()),
        ("PROPLET_HTTP_TIMEOUT", "300ms"),
    ];
    let hang = format!("{base}/hang");
    let r = run(&env, task("hang", &[&base], &["get", &hang])).await;
    assert_eq!(results(&r), "error=connection-timeout\n", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_waits_for_slots_and_the_request_budget_ends_it() {
    let (base, seen) = server(String::new()).await;
    let slow = format!("{base}/slow");
    let env = [
        ("PROPLET_HTTP_ALLOW", base.as_str()),
        ("PROPLET_HTTP_CONCURRENCY", "4"),
        ("PROPLET_HTTP_REQUESTS", "200"),
    ];
    let r = run(&env, task("flood", &[&base], &["flood", &slow, "60"])).await;
    assert_eq!(results(&r), "ok=60 failed=0 first=\n", "{r}");
    let most = seen.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "at most 4 requests in flight, saw {most}"
    );
    assert_eq!(r["usage"]["http_requests"], 60, "{r}");

    let env = [
        ("PROPLET_HTTP_ALLOW", base.as_str()),
        ("PROPLET_HTTP_REQUESTS", "10"),
    ];
    let r = run(&env, task("over", &[&base], &["flood", &slow, "500"])).await;
    assert_err(&r, "http_limit", "more than 10 HTTP requests");
    assert_eq!(r["usage"]["http_requests"], 10, "{r}");
    assert!(
        seen.requests.load(Ordering::SeqCst) <= 70,
        "no more than 10 more requests sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_span_of_the_task_and_hands_its_context_on() {
    let collector = Collector::http().await;
    let (base, _) = server(String::new()).await;
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_logged(
        &broker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("PROPLET_HTTP_ALLOW", &base),
        ],
        &dir.path().join("log"),
    );
    m.wait_ready().await;
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut t = task("traced", &[&base], &["get", &format!("{base}/trace")]);
    merge(&mut t, json!({"traceparent": caller}));
    m.send_json("control/manager/start", &t).await;
    let r = m.result("traced").await;
    let sent = results(&r)
        .strip_prefix("status=200 body=")
        .unwrap_or_else(|| panic!("{r}"))
        .trim()
        .to_owned();
    d.signal("-TERM");
    assert_eq!(d.wait(Duration::from_secs(30)).await, Some(0));

    let spans = collector
        .wait_for(Duration::from_secs(10), |s| s.name() == "http.request")
        .await;
    let request = spans.iter().find(|s| s.name() == "http.request").unwrap();
    let execute = spans
        .iter()
        .find(|s| s.name() == "execute")
        .expect("an execute span");
    assert_eq!(request.parent_id(), execute.span_id(), "a child of execute");
    assert_eq!(request.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        sent,
        format!("00-{}-{}-01", request.trace_id(), request.span_id()),
        "the server saw the request span's context"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_reports_what_it_fetched() {
    let (base, _) = server(String::new()).await;
    let url = format!("{base}/hello");
    let workload = start(
        "wl",
        json!({
            "file": guests::component_base64("workload"),
            "name": "run",
            "inputs": [url],
            "cli_args": ["fetch"],
            "http": [base],
        }),
    );
    let r = run(&[("PROPLET_HTTP_ALLOW", &base)], workload).await;
    assert_ok(&r, "200 hello from the server");
    assert_eq!(r["usage"]["http_requests"], 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_workload_fetches_within_its_grant_too() {
    let (base, _) = server(String::new()).await;
    let (elsewhere, other) = server(String::new()).await;
    // The componentize-py component is 18 MB; 24 MB as base64.
    let env = [
        ("PROPLET_MQTT_MAX_PACKET_SIZE", "64MiB"),
        ("PROPLET_HTTP_ALLOW", base.as_str()),
    ];
    let (_b, w, mut m) = setup(&env).await;
    let file = guests::python_workload_base64();
    let fetch = |id: &str, url: String| {
        start(
            id,
            json!({"file": file, "name": "python task", "inputs": [url],
                "cli_args": ["fetch"], "http": [base]}),
        )
    };
    m.send_json(
        "control/manager/start",
        &fetch("py-get", format!("{base}/hello")),
    )
    .await;
    let r = m
        .expect("control/proplet/results", Duration::from_secs(120), |v| {
            v["task_id"] == "py-get"
        })
        .await;
    assert_ok(&r, "200 hello from the server (python)");
    assert_eq!(r["usage"]["http_requests"], 1, "{r}");
    // Another origin (another port) is refused by the proplet, not reached.
    let outside = fetch("py-outside", format!("{elsewhere}/trace"));
    m.send_json("control/manager/start", &outside).await;
    let r = m.result("py-outside").await;
    assert_err(&r, "exit", "HttpRequestDenied");
    assert_eq!(other.requests.load(Ordering::SeqCst), 0, "never reached");
    w.stop().await;
}
