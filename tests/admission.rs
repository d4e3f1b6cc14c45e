//! Admission: allowed sources, pinned digests and ed25519 signatures, checked before
//! anything is compiled; keys and signatures made with `proplet keygen` / `proplet sign`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn proplet(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_proplet"))
        .args(args)
        .env_clear()
        .output()
        .expect("run proplet");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A new key pair in `dir`: (secret key path, public key text).
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let secret = dir.join(name).display().to_string();
    let public = proplet(&["keygen", &secret]);
    assert!(public.starts_with("ed25519:"), "{public}");
    (secret, public)
}

/// `proplet sign` of `file`: the start's `digest` and `signature` fields.
fn sign(secret: &str, file: &Path) -> Value {
    let out = proplet(&["sign", "--key", secret, file.to_str().expect("path")]);
    serde_json::from_str(&out).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_digests_and_allowed_sources() {
    let add = guests::bytes("add");
    let routes = vec![("/add.wasm", "200 OK", "application/wasm", Some(add))];
    let base = http::serve(routes).await;
    let (_b, w, mut m) = setup(&[("PROPLET_ALLOWED_SOURCES", "inline,127.0.0.1")]).await;
    let file = guests::path("add");
    let add_digest = sign_free_digest(&file);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let starts = [
        ("pinned", json!({"digest": add_digest.clone()})),
        ("mismatch", json!({"digest": wrong})),
        (
            "junk",
            json!({"file": "bm90IHdhc20=", "digest": add_digest.clone()}),
        ),
        ("malformed", json!({"digest": "sha256:xyz"})),
        (
            "http",
            json!({"file": null, "image_url": format!("{base}/add.wasm")}),
        ),
        (
            "other-host",
            json!({"file": null, "image_url": base.replace("127.0.0.1", "localhost") + "/add.wasm"}),
        ),
        (
            "registry",
            json!({"file": null, "image_url": "docker.io/library/add:1"}),
        ),
    ];
    for (id, fields) in &starts {
        let mut fields = fields.clone();
        if fields.get("file").is_none() {
            fields["file"] = json!(guests::base64("add"));
            fields["name"] = json!("add");
        }
        m.send_json("control/manager/start", &start(id, fields))
            .await;
    }
    let pinned = m.result("pinned").await;
    assert_ok(&pinned, "30");
    assert_eq!(pinned["digest"], json!(add_digest));
    let mismatch = m.result("mismatch").await;
    assert_err(&mismatch, "denied", "does not match the pinned");
    assert_eq!(
        mismatch["digest"],
        json!(add_digest),
        "the real digest is reported"
    );
    assert_err(&m.result("junk").await, "denied", "does not match");
    assert_err(
        &m.result("malformed").await,
        "invalid",
        "not sha256:<64 hex digits>",
    );
    let http = m.result("http").await;
    assert_ok(&http, "30");
    assert_eq!(http["digest"], json!(add_digest), "downloads are hashed");
    assert_err(
        &m.result("other-host").await,
        "denied",
        "PROPLET_ALLOWED_SOURCES",
    );
    assert_err(
        &m.result("registry").await,
        "denied",
        "registry binaries are not allowed",
    );
    m.expect_none(
        "registry/proplet",
        std::time::Duration::from_millis(200),
        |_| true,
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signatures_by_trusted_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (trusted_secret, trusted) = keypair(dir.path(), "trusted.key");
    let (stranger_secret, _) = keypair(dir.path(), "stranger.key");
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, format!("# the fleet's signer\n{trusted}\n")).expect("keys");
    let (_b, w, mut m) = setup(&[
        ("PROPLET_REQUIRE_SIGNATURE", "true"),
        ("PROPLET_TRUSTED_KEYS", keys.to_str().expect("path")),
    ])
    .await;
    let file = guests::path("add");
    let good = sign(&trusted_secret, &file);
    let stranger = sign(&stranger_secret, &file);
    let other = sign(&trusted_secret, &guests::path("spin"));
    let add = |fields: Value| {
        let mut f = json!({"file": guests::base64("add"), "name": "add"});
        f.as_object_mut()
            .expect("obj")
            .extend(fields.as_object().expect("obj").clone());
        f
    };
    let starts = [
        (
            "signed",
            add(json!({"signature": good["signature"], "digest": good["digest"]})),
        ),
        (
            "signed-unpinned",
            add(json!({"signature": good["signature"]})),
        ),
        ("unsigned", add(json!({}))),
        ("stranger", add(json!({"signature": stranger["signature"]}))),
        (
            "other-binary",
            add(json!({"signature": other["signature"]})),
        ),
        ("garbage", add(json!({"signature": "not base64!"}))),
    ];
    for (id, fields) in &starts {
        m.send_json("control/manager/start", &start(id, fields.clone()))
            .await;
    }
    assert_ok(&m.result("signed").await, "30");
    assert_ok(&m.result("signed-unpinned").await, "30");
    assert_err(&m.result("unsigned").await, "denied", "requires signatures");
    assert_err(
        &m.result("stranger").await,
        "denied",
        "does not verify with any trusted key",
    );
    assert_err(&m.result("other-binary").await, "denied", "does not verify");
    assert_err(&m.result("garbage").await, "denied", "not base64");
    w.stop().await;
}

/// The digest of a file, as `proplet sign` prints it (with a throwaway key).
fn sign_free_digest(file: &Path) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, _) = keypair(dir.path(), "k");
    sign(&secret, file)["digest"]
        .as_str()
        .expect("digest")
        .to_owned()
}
