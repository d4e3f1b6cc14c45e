//! MQTT over TLS against a mosquitto TLS listener with certificates made at test time:
//! server verification (CA and name), the system roots when no CA is given, mutual TLS,
//! and clear errors for bad files.

mod common;

use std::process::Command;
use std::time::Duration;

use common::broker::TlsListener;
use common::daemon::Daemon;
use common::pki::Pki;
use common::*;
use serde_json::json;

/// A worker that never connects gives up flushing its offline notice quickly on stop.
const QUICK_GIVE_UP: (&str, &str) = ("PROPLET_MQTT_TIMEOUT", "1s");

fn tls_broker(pki: &Pki, require_client_cert: bool) -> Broker {
    Broker::start_tls(TlsListener {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        require_client_cert,
    })
}

fn tls_env(
    broker: &Broker,
    host: &str,
    extra: &[(&str, &str)],
) -> std::collections::HashMap<String, String> {
    let port = broker.tls_port.expect("TLS listener");
    let address = format!("mqtts://{host}:{port}");
    let mut vars = vec![("PROPLET_MQTT_ADDRESS", address.as_str())];
    vars.extend_from_slice(extra);
    env(broker, &vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_round_trips_over_a_verified_tls_session() {
    let pki = Pki::new(&["localhost"]);
    let broker = tls_broker(&pki, false);
    let mut m = Manager::connect(&broker).await;
    let ca = pki.ca.display().to_string();
    let w = Worker::start(tls_env(
        &broker,
        "localhost",
        &[("PROPLET_MQTT_TLS_CA_CERT", &ca)],
    ));
    m.wait_ready().await;
    m.send_json("control/manager/start", &start(T, json!({})))
        .await;
    assert_ok(&m.result(T).await, "30");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_or_misnamed_brokers_are_refused() {
    let pki = Pki::new(&["localhost"]);
    let stranger = Pki::new(&["localhost"]);
    let broker = tls_broker(&pki, false);
    let mut m = Manager::connect(&broker).await;
    let wrong_ca = stranger.ca.display().to_string();
    let untrusted = Worker::start(tls_env(
        &broker,
        "localhost",
        &[("PROPLET_MQTT_TLS_CA_CERT", &wrong_ca), QUICK_GIVE_UP],
    ));
    let ca = pki.ca.display().to_string();
    // The certificate names localhost, not 127.0.0.1.
    let misnamed = Worker::start(tls_env(
        &broker,
        "127.0.0.1",
        &[("PROPLET_MQTT_TLS_CA_CERT", &ca), QUICK_GIVE_UP],
    ));
    m.expect_none("control/proplet/create", Duration::from_secs(3), |_| true)
        .await;
    untrusted.stop().await;
    misnamed.stop().await;
}

/// With no CA configured the system roots are used: the broker's test-made CA is not among
/// them, so the real binary must log the verification failure and keep retrying — never
/// panic, never exit — until it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_file_the_system_roots_are_used_and_failures_are_retried() {
    let pki = Pki::new(&["localhost"]);
    let broker = tls_broker(&pki, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proplet.log");
    let port = broker.tls_port.expect("TLS listener").to_string();
    let address = format!("mqtts://localhost:{port}");
    let mut d = Daemon::start_logged(
        &broker,
        &[("PROPLET_MQTT_ADDRESS", &address), QUICK_GIVE_UP],
        &log,
    );
    // Three failed handshakes: the first attempt and two retries after backoff.
    let text = d
        .wait_for_log(&log, |text| {
            text.matches("invalid peer certificate").count() >= 3
        })
        .await;
    assert!(!text.contains("panicked"), "the proplet panicked: {text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    d.signal("-TERM");
    assert_eq!(d.wait(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let broker = tls_broker(&pki, true);
    let mut m = Manager::connect(&broker).await;
    let ca = pki.ca.display().to_string();
    let anonymous = Worker::start(tls_env(
        &broker,
        "127.0.0.1",
        &[("PROPLET_MQTT_TLS_CA_CERT", &ca), QUICK_GIVE_UP],
    ));
    m.expect_none("control/proplet/create", Duration::from_secs(2), |_| true)
        .await;
    anonymous.stop().await;
    let (cert, key) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let w = Worker::start(tls_env(
        &broker,
        "127.0.0.1",
        &[
            ("PROPLET_MQTT_TLS_CA_CERT", &ca),
            ("PROPLET_MQTT_TLS_CLIENT_CERT", &cert),
            ("PROPLET_MQTT_TLS_CLIENT_KEY", &key),
        ],
    ));
    m.wait_ready().await;
    m.send_json("control/manager/start", &start(T, json!({})))
        .await;
    assert_ok(&m.result(T).await, "30");
    w.stop().await;
}

#[test]
fn bad_tls_files_are_a_clear_startup_error() {
    let pki = Pki::new(&["localhost"]);
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN NONSENSE-----\n").expect("write");
    let cases = [
        (
            junk.display().to_string(),
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string(),
            "junk.pem",
        ),
        (
            pki.ca.display().to_string(),
            pki.client_cert.display().to_string(),
            junk.display().to_string(),
            "junk.pem",
        ),
        (
            pki.ca.display().to_string(),
            pki.client_key.display().to_string(),
            pki.client_key.display().to_string(),
            "client.key",
        ),
    ];
    let state = tempfile::tempdir().expect("state dir");
    for (ca, cert, key, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_proplet"))
            .env_clear()
            .env("PROPLET_DOMAIN_ID", A)
            .env("PROPLET_CHANNEL_ID", C)
            .env("PROPLET_CLIENT_ID", P)
            .env("PROPLET_MQTT_ADDRESS", "mqtts://localhost:1")
            .env("PROPLET_MQTT_TLS_CA_CERT", &ca)
            .env("PROPLET_MQTT_TLS_CLIENT_CERT", &cert)
            .env("PROPLET_MQTT_TLS_CLIENT_KEY", &key)
            .env("PROPLET_STATE_DIR", state.path())
            .output()
            .expect("run proplet");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("TLS") && stderr.contains(named),
            "{named}: {stderr}"
        );
    }
}
