//! The network capability: no sockets unless `PROPLET_NET_ALLOW` allows the address.

mod common;

use common::*;
use serde_json::{Value, json};

fn connect_task(id: &str, targets: &[String]) -> Value {
    let ops: Vec<String> = targets.iter().map(|t| format!("connect={t}")).collect();
    let file = guests::component_base64("fs");
    start(
        id,
        json!({"file": file, "name": "_start", "inputs": [], "cli_args": ops}),
    )
}

async fn probe(extra: &[(&str, &str)], targets: &[String]) -> String {
    let (_b, w, mut m) = setup(extra).await;
    m.send_json("control/manager/start", &connect_task("net", targets))
        .await;
    let r = m.result("net").await;
    w.stop().await;
    r["results"]
        .as_str()
        .unwrap_or_else(|| panic!("no results: {r}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_denied_unless_allowed() {
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = allowed.local_addr().unwrap().to_string();
    let o = other.local_addr().unwrap().to_string();
    let targets = [
        a.clone(),
        o.clone(),
        format!("localhost:{}", allowed.local_addr().unwrap().port()),
    ];

    let denied = probe(&[], &targets).await;
    assert_eq!(
        denied.matches("refused").count(),
        3,
        "no network without a grant: {denied}"
    );

    let rule = format!("127.0.0.1:{}", allowed.local_addr().unwrap().port());
    let granted = probe(&[("PROPLET_NET_ALLOW", &rule)], &targets).await;
    assert!(
        granted.contains(&format!("connect={a}: ok {a}")),
        "{granted}"
    );
    assert!(
        granted.contains(&format!("connect={o}: refused")),
        "{granted}"
    );
    assert!(granted.contains("connect=localhost:"), "{granted}");
    assert!(
        granted.lines().nth(2).unwrap().contains("refused"),
        "name lookup stays denied: {granted}"
    );
}
