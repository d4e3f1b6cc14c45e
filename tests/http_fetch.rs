//! `image_url` over HTTP (docs/protocol.md §5.9.3, vector V18): content type, status, size and
//! time limits; no registry request is ever sent for an http(s) URL.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_image_urls_are_fetched_within_limits() {
    let add = base64::engine::general_purpose::STANDARD
        .decode(ADD_WASM)
        .unwrap();
    let base = http::serve(vec![
        ("/add.wasm", "200 OK", "application/wasm", Some(add.clone())),
        (
            "/add.bin",
            "200 OK",
            "application/octet-stream; charset=binary",
            Some(add),
        ),
        (
            "/page",
            "200 OK",
            "text/html",
            Some(b"<html></html>".to_vec()),
        ),
        (
            "/big",
            "200 OK",
            "application/wasm",
            Some(vec![0u8; 2 << 20]),
        ),
        ("/slow", "200 OK", "application/wasm", None),
    ])
    .await;
    let (_broker, w, mut m) = setup(&[
        ("PROPLET_MAX_BINARY_SIZE", "1MiB"),
        ("PROPLET_HTTP_FETCH_TIMEOUT", "1s"),
    ])
    .await;
    for (id, path) in [
        ("ok", "/add.wasm"),
        ("bin", "/add.bin"),
        ("html", "/page"),
        ("404", "/missing"),
        ("big", "/big"),
        ("slow", "/slow"),
    ] {
        m.send_json(
            "control/manager/start",
            &start(
                id,
                json!({"file": null, "image_url": format!("{base}{path}")}),
            ),
        )
        .await;
    }
    assert_ok(&m.result("ok").await, "30");
    assert_ok(&m.result("bin").await, "30");
    assert_err(&m.result("html").await, "fetch", "unexpected content type");
    assert_err(&m.result("404").await, "fetch", "404");
    assert_err(&m.result("big").await, "denied", "larger than the limit");
    assert_err(&m.result("slow").await, "fetch", "HTTP fetch");
    m.expect_none("registry/proplet", Duration::from_millis(200), |_| true)
        .await;
    w.stop().await;
}

/// Every redirect hop is an allowed source: a download allowed from one host cannot be
/// bounced to another (a cloud metadata address, an internal service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_checked_against_the_allowed_sources() {
    let add = base64::engine::general_purpose::STANDARD
        .decode(ADD_WASM)
        .unwrap();
    let other = http::serve(vec![(
        "/add.wasm",
        "200 OK",
        "application/wasm",
        Some(add.clone()),
    )])
    .await;
    // Same server, another name: `localhost` is not an allowed host.
    let elsewhere = format!("{}/add.wasm", other.replace("127.0.0.1", "localhost"));
    let elsewhere: &'static str = Box::leak(elsewhere.into_boxed_str());
    let base = http::serve(vec![
        ("/add.wasm", "200 OK", "application/wasm", Some(add)),
        ("/hop", "302 Found", "/add.wasm", Some(Vec::new())),
        ("/away", "302 Found", elsewhere, Some(Vec::new())),
    ])
    .await;
    let (_broker, w, mut m) = setup(&[("PROPLET_ALLOWED_SOURCES", "inline,127.0.0.1")]).await;
    for (id, path) in [("hop", "/hop"), ("away", "/away")] {
        let task = start(
            id,
            json!({"file": null, "image_url": format!("{base}{path}")}),
        );
        m.send_json("control/manager/start", &task).await;
    }
    assert_ok(&m.result("hop").await, "30");
    assert_err(&m.result("away").await, "fetch", "refused a redirect");
    w.stop().await;
}
