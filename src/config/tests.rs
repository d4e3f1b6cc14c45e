use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const SEED: &[(&str, &str)] = &[
    ("PROPLET_DOMAIN_ID", "dom"),
    ("PROPLET_CHANNEL_ID", "chan"),
    ("PROPLET_CLIENT_ID", "cli"),
    ("PROPLET_CLIENT_KEY", "s3cret"),
];

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(None, &env(pairs), vec![])
}

#[test]
fn seed_names_are_accepted_with_defaults() {
    let c = load(SEED).expect("loads");
    assert_eq!(c.identity.tenant_id, "dom");
    assert_eq!(c.identity.proplet_id, "cli");
    assert_eq!(c.identity.client_id, "cli");
    assert_eq!(c.identity.api_key.as_deref(), Some("s3cret"));
    assert_eq!(c.mqtt.qos, 2);
    assert_eq!(c.mqtt.address.to_string(), "tcp://localhost:1883");
    assert_eq!(c.liveliness_interval, Duration::from_secs(5));
    assert_eq!(c.budgets.default.output_bytes, 1 << 20);
}

#[test]
fn latest_names_and_instance_id() {
    let c = load(&[
        ("PROPLET_TENANT_ID", "ten"),
        ("PROPLET_CHANNEL_ID", "chan"),
        ("PROPLET_ENTITY_ID", "ent"),
        ("PROPLET_API_KEY", "k"),
        ("PROPLET_INSTANCE_ID", "inst-1"),
        ("PROPLET_LIVELINESS_INTERVAL", "10"),
        ("PROPLET_MQTT_TIMEOUT", "10s"),
    ])
    .expect("loads");
    assert_eq!(c.identity.tenant_id, "ten");
    assert_eq!(c.identity.client_id, "inst-1");
    assert_eq!(c.liveliness_interval, Duration::from_secs(10));
    assert_eq!(c.mqtt.timeout, Duration::from_secs(10));
}

#[test]
fn bad_values_name_the_variable() {
    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_MQTT_QOS", "3"));
    let err = load(&pairs).unwrap_err().to_string();
    assert!(
        err.contains("PROPLET_MQTT_QOS") && err.contains("0, 1 or 2"),
        "{err}"
    );

    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_LIVELINESS_INTERVAL", "often"));
    let err = load(&pairs).unwrap_err().to_string();
    assert!(err.contains("PROPLET_LIVELINESS_INTERVAL"), "{err}");

    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_MQTT_ADDRESS", "ws://x"));
    assert!(
        load(&pairs)
            .unwrap_err()
            .to_string()
            .contains("PROPLET_MQTT_ADDRESS")
    );
}

#[test]
fn missing_required_settings_are_named() {
    let err = load(&[("PROPLET_CHANNEL_ID", "c"), ("PROPLET_ENTITY_ID", "e")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenant_id") && err.contains("PROPLET_TENANT_ID or PROPLET_DOMAIN_ID"),
        "{err}"
    );
}

#[test]
fn every_missing_required_setting_is_named_at_once() {
    let err = load(&[]).unwrap_err().to_string();
    for name in [
        "PROPLET_TENANT_ID",
        "PROPLET_CHANNEL_ID",
        "PROPLET_ENTITY_ID",
    ] {
        assert!(err.contains(name), "{name} in {err}");
    }
}

#[test]
fn conflicting_aliases_are_an_error() {
    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_TENANT_ID", "other"));
    let err = load(&pairs).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Conflict {
                first: "PROPLET_TENANT_ID",
                second: "PROPLET_DOMAIN_ID"
            }
        ),
        "{err}"
    );
}

#[test]
fn wildcards_in_topic_parts_are_rejected() {
    let err = load(&[
        ("PROPLET_TENANT_ID", "a/b"),
        ("PROPLET_CHANNEL_ID", "c"),
        ("PROPLET_ENTITY_ID", "e"),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("PROPLET_TENANT_ID"));
}

#[test]
fn secrets_are_redacted() {
    let c = load(SEED).expect("loads");
    let shown = c.render();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("api_key = \"<redacted>\""));
    assert!(shown.contains("mqtt_qos = \"2\"  # default"));
    assert!(shown.contains("tenant_id = \"dom\"  # env PROPLET_DOMAIN_ID"));
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn file_then_env_then_cli() {
    let f = toml_file(
        "mqtt_qos = 1\ntags = [\"a\", \"b\"]\n[manager]\nx = 1\n[proplet]\ndomain_id = \"d\"\nchannel_id = \"c\"\nclient_id = \"file-id\"\n",
    );
    let e = env(&[("PROPLET_MQTT_QOS", "0")]);
    let qos = SETTINGS
        .iter()
        .find(|s| s.key == "entity_id")
        .expect("setting");
    let c = Config::load(Some(f.path()), &e, vec![(qos, "flag-id".into())]).expect("loads");
    assert_eq!(c.mqtt.qos, 0, "env beats file");
    assert_eq!(c.identity.proplet_id, "flag-id", "flag beats file");
    assert_eq!(c.identity.tenant_id, "d");
    assert_eq!(c.metadata.tags, vec!["a", "b"]);
}

#[test]
fn file_errors_are_reported() {
    let f = toml_file("mqtt_qoss = 1\n");
    let err = Config::load(Some(f.path()), &env(SEED), vec![]).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "mqtt_qoss"),
        "{err}"
    );
    let bad = toml_file("mqtt_qos = \n");
    assert!(matches!(
        Config::load(Some(bad.path()), &env(SEED), vec![]),
        Err(ConfigError::File { .. })
    ));
    let missing = Config::load(
        Some(std::path::Path::new("/nonexistent/p.toml")),
        &env(SEED),
        vec![],
    );
    assert!(matches!(missing, Err(ConfigError::File { .. })));
    let f = toml_file("mqtt_qos = 7\n");
    let err = Config::load(Some(f.path()), &env(SEED), vec![])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("file ") && err.contains("mqtt_qos"),
        "{err}"
    );
}

#[test]
fn tls_client_cert_needs_key() {
    let f = toml_file("");
    let mut pairs = SEED.to_vec();
    let path = f.path().to_string_lossy().to_string();
    pairs.push(("PROPLET_MQTT_TLS_CLIENT_CERT", &path));
    let err = load(&pairs).unwrap_err().to_string();
    assert!(err.contains("mqtt_tls_client_key"), "{err}");
    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_MQTT_TLS_CA_CERT", "/nonexistent/ca.pem"));
    assert!(
        load(&pairs)
            .unwrap_err()
            .to_string()
            .contains("PROPLET_MQTT_TLS_CA_CERT")
    );
}

#[test]
fn zero_task_timeout_means_none() {
    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_TASK_TIMEOUT", "0"));
    assert!(
        load(&pairs).is_err_and(|e| e.to_string().contains("exceeds its maximum")),
        "no deadline by default is more than the 1 h cap"
    );
    pairs.push(("PROPLET_TASK_TIMEOUT_MAX", "0"));
    assert_eq!(load(&pairs).expect("loads").budgets.default.timeout, None);
}

#[test]
fn budgets_and_admission_settings() {
    let c = load(SEED).expect("loads");
    assert!(!c.budgets.metering());
    assert_eq!(c.budgets.max.memory_bytes, 1 << 30);
    assert!(!c.admission.require_signature);
    let mut pairs = SEED.to_vec();
    pairs.push(("PROPLET_TASK_FUEL_MAX", "1000000"));
    pairs.push(("PROPLET_ALLOWED_SOURCES", "registry,*.example.com"));
    let c = load(&pairs).expect("loads");
    assert!(c.budgets.metering());
    assert_eq!(c.budgets.max.fuel, Some(1_000_000));
    pairs.push(("PROPLET_REQUIRE_SIGNATURE", "true"));
    let err = load(&pairs).expect_err("no keys").to_string();
    assert!(err.contains("no trusted key"), "{err}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    let key = crate::sandbox::admission::encode_public_key(&key);
    pairs.push(("PROPLET_TRUSTED_KEYS", &key));
    assert!(load(&pairs).expect("loads").admission.require_signature);
    let bad = [SEED, &[("PROPLET_ALLOWED_SOURCES", "ftp://x")]].concat();
    assert!(
        load(&bad).is_err_and(|e| e.to_string().contains("PROPLET_ALLOWED_SOURCES")
            || e.to_string().contains("allowed_sources"))
    );
}

#[test]
fn a_cpu_latency_limit_is_off_unless_set_and_within_what_pm_qos_takes() {
    assert_eq!(load(SEED).expect("loads").cpu_latency, None);
    let with = |value: &'static str| {
        let mut pairs = SEED.to_vec();
        pairs.push(("PROPLET_CPU_LATENCY", value));
        load(&pairs)
    };
    assert_eq!(with("0").expect("loads").cpu_latency, Some(Duration::ZERO));
    assert_eq!(
        with("20us").expect("loads").cpu_latency,
        Some(Duration::from_micros(20))
    );
    for bad in ["soon", "-5us", "2148s"] {
        let err = with(bad).expect_err(bad).to_string();
        assert!(err.contains("PROPLET_CPU_LATENCY"), "{bad}: {err}");
    }
}
