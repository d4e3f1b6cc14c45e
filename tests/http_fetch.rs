//! `image_url` over HTTP (PROTOCOL.md §5.9.3, vector V18): content type, status, size and
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
