//! Golden-fixture tests: every message in both directions, both manager generations.

use std::collections::BTreeMap;

use super::*;

const T: &str = "8f14e45f-ceea-467f-a8e0-2c3b1f7d9a10";
const P: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";
const Q: &str = "d9e8f7a6-b5c4-4d3e-8f2a-1b0c9d8e7f6a";
const ADD_WASM: &str = "AGFzbQEAAAABBwFgAn9/AX8DAgEABwcBA2FkZAAACgkBBwAgACABags=";

macro_rules! fixture {
    ($dir:literal, $name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $dir,
            "/",
            $name,
            ".json"
        ))
    };
}

fn start(payload: &str) -> StartRequest {
    match decode(Topic::Start, payload.as_bytes()) {
        Ok(Inbound::Start(s)) => *s,
        other => panic!("not a start: {other:?}"),
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

#[test]
fn seed_start_numbers_become_text() {
    let s = start(fixture!("inbound", "start_seed"));
    assert_eq!(s.id, T);
    assert_eq!(s.name, "add");
    assert_eq!(s.file, ADD_WASM);
    assert_eq!(s.inputs, vec!["10", "20"]);
    assert!(s.cli_args.is_empty() && s.env.is_empty() && !s.daemon);
    assert_eq!(s.target, Target::default());
    assert!(s.target.includes(P) && s.target.includes(Q));
    s.validate().expect("valid");
}

#[test]
fn latest_start_is_targeted() {
    let s = start(fixture!("inbound", "start_latest"));
    assert_eq!(s.inputs, vec!["10", "20"]);
    assert_eq!(s.target.proplet_id.as_deref(), Some(P));
    assert!(s.target.includes(P));
    assert!(!s.target.includes(Q));
}

#[test]
fn broadcast_includes_everyone() {
    let t = Target {
        proplet_id: Some(Q.into()),
        broadcast: true,
    };
    assert!(t.includes(P));
    let empty = Target {
        proplet_id: Some(String::new()),
        broadcast: false,
    };
    assert!(empty.includes(P));
}

#[test]
fn unknown_and_ignored_fields_are_accepted() {
    let mut s = start(fixture!("inbound", "start_extra_fields"));
    // A re-run of a completed task: read, as a hint only.
    assert_eq!(s.state, Some(3));
    assert!(!s.may_be_a_copy());
    s.state = Some(0);
    // The monitoring profile is read (as sent), for the task's metrics.
    assert!(s.monitoring_profile.take().is_some_and(|p| p.is_object()));
    assert_eq!(s, start(fixture!("inbound", "start_latest")));
}

#[test]
fn state_is_a_hint_that_never_fails_a_start() {
    for (state, read) in [
        ("0", Some(0)),
        ("2", Some(2)),
        ("4", Some(4)),
        ("null", None),
        ("\"3\"", None),
        ("-1", None),
        ("300", None),
        ("1.5", None),
        ("[1]", None),
    ] {
        let s = start(&format!(
            r#"{{"id":"t","name":"add","file":"AA==","state":{state}}}"#
        ));
        assert_eq!(s.state, read, "{state}");
        assert_eq!(s.may_be_a_copy(), read.is_some_and(|n| n <= 2), "{state}");
    }
}

#[test]
fn extension_fields_decode() {
    let s = start(fixture!("inbound", "start_extensions"));
    assert_eq!(
        s.limits,
        LimitsSpec {
            timeout_ms: Some(5000),
            memory_bytes: Some(64 << 20),
            fuel: None,
            output_bytes: Some(1 << 20),
        }
    );
    assert!(
        s.digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:93a4"))
    );
    assert_eq!(s.signature.as_deref(), Some("c2lnbmF0dXJl"));
    assert_eq!(s.mounts.len(), 1);
    assert_eq!(s.validate(), Ok(()));
    let bad = start(r#"{"id":"t","file":"AA==","digest":"md5:abc"}"#);
    assert!(matches!(bad.validate(), Err(ProtocolError::Invalid(_))));
    let wrong_type = decode(
        Topic::Start,
        br#"{"id":"t","file":"AA==","limits":{"memory_bytes":"lots"}}"#,
    );
    assert!(wrong_type.is_err_and(|r| r.id.as_deref() == Some("t")));
}

#[test]
fn nulls_mean_absent() {
    let s = start(
        r#"{"id":"t","name":null,"file":"AA==","inputs":null,"env":{"A":"1","B":null,"C":2},"daemon":null,"proplet_id":null,"broadcast":null}"#,
    );
    assert_eq!(s.name, "");
    assert!(!s.daemon && !s.target.broadcast);
    assert_eq!(
        s.env,
        BTreeMap::from([("A".into(), "1".into()), ("C".into(), "2".into())])
    );
}

#[test]
fn validation_rejects_missing_binary_and_id() {
    let no_binary = start(r#"{"id":"t","name":"add"}"#);
    assert!(matches!(
        no_binary.validate(),
        Err(ProtocolError::Invalid(_))
    ));
    let no_id = start(&format!(r#"{{"id":"","name":"add","file":"{ADD_WASM}"}}"#));
    assert!(no_id.validate().is_err());
    let registry = start(fixture!("inbound", "start_registry"));
    registry.validate().expect("image_url alone is enough");
}

#[test]
fn wrong_types_are_rejected_with_salvaged_id_and_target() {
    let err = decode(
        Topic::Start,
        br#"{"id":"t1","name":"add","daemon":"yes","proplet_id":"Q"}"#,
    )
    .unwrap_err();
    assert_eq!(err.id.as_deref(), Some("t1"));
    assert_eq!(err.target.proplet_id.as_deref(), Some("Q"));
    assert!(matches!(err.error, ProtocolError::Json(_)));
    let nested = decode(Topic::Start, br#"{"id":"t2","inputs":[[1]]}"#).unwrap_err();
    assert_eq!(nested.id.as_deref(), Some("t2"));
}

#[test]
fn a_proplet_id_of_the_wrong_type_is_invalid_never_untargeted() {
    for target in [r#"42"#, r#"["Q"]"#, r#"{"id":"Q"}"#, r#"true"#] {
        let payload = format!(r#"{{"id":"t","name":"add","file":"AA==","proplet_id":{target}}}"#);
        let err = decode(Topic::Start, payload.as_bytes()).expect_err(target);
        assert_eq!(err.id.as_deref(), Some("t"), "{target}");
        assert!(matches!(err.error, ProtocolError::Json(_)), "{target}");
        let invoke = format!(r#"{{"id":"t","invocation_id":"i","proplet_id":{target}}}"#);
        assert!(
            decode(Topic::Invoke, invoke.as_bytes()).is_err(),
            "{target}"
        );
    }
}

#[test]
fn garbage_is_rejected_without_id() {
    for payload in [&b"not json"[..], b"", b"[]", b"{\"id\":5}", b"\xff\xfe"] {
        let err = decode(Topic::Start, payload).unwrap_err();
        assert_eq!(err.id, None, "{payload:?}");
    }
}

#[test]
fn stops_of_both_eras_read_only_the_id() {
    for payload in [
        fixture!("inbound", "stop_seed"),
        fixture!("inbound", "stop_latest"),
    ] {
        assert_eq!(
            decode(Topic::Stop, payload.as_bytes()),
            Ok(Inbound::Stop(StopRequest { id: T.into() }))
        );
    }
}

#[test]
fn invoke_decodes() {
    let Ok(Inbound::Invoke(i)) = decode(Topic::Invoke, fixture!("inbound", "invoke").as_bytes())
    else {
        panic!("not an invoke");
    };
    assert_eq!(i.invocation_id, "6c2f0e3a-7b1d-4e5f-9a8b-1c2d3e4f5a6b");
    assert_eq!(i.inputs, Some(vec!["\"world\"".to_string()]));
    assert_eq!(i.env.get("GREETING").map(String::as_str), Some("hi"));
    let Ok(Inbound::Invoke(none)) = decode(
        Topic::Invoke,
        br#"{"id":"x","invocation_id":"i","inputs":null}"#,
    ) else {
        panic!("not an invoke");
    };
    assert_eq!(none.inputs, None);
}

#[test]
fn chunk_decodes() {
    let Ok(Inbound::Chunk(c)) = decode(
        Topic::RegistryChunk,
        fixture!("inbound", "chunk").as_bytes(),
    ) else {
        panic!("not a chunk");
    };
    assert_eq!((c.chunk_idx, c.total_chunks), (1, 2));
    assert!(
        decode(
            Topic::RegistryChunk,
            br#"{"app_name":"a","chunk_idx":-1,"total_chunks":2,"data":""}"#
        )
        .is_err()
    );
}

#[test]
fn outbound_topics_are_fixed() {
    assert!(decode(Topic::Results, b"{}").is_err());
    let req = Outbound::BinaryRequest(BinaryRequest {
        app_name: "x".into(),
    });
    assert_eq!(req.topic(), Topic::RegistryRequest);
}

fn result(results: &str, error: Option<&str>, kind: Option<ErrorKind>) -> Outbound {
    Outbound::Result(TaskResult {
        task_id: T.into(),
        proplet_id: P.into(),
        outcome: Outcome {
            results: results.into(),
            error: error.map(str::to_owned),
            error_kind: kind,
            ..Outcome::default()
        },
    })
}

#[test]
fn results_match_golden_fixtures() {
    assert_eq!(
        json(&result("30", None, None).encode()),
        json(fixture!("outbound", "result_ok").as_bytes())
    );
    let err = result("", Some("boom"), Some(ErrorKind::Trap));
    assert_eq!(
        json(&err.encode()),
        json(fixture!("outbound", "result_error").as_bytes())
    );
    assert_eq!(err.topic(), Topic::Results);
}

#[test]
fn invoke_result_matches_golden_fixture() {
    let msg = Outbound::InvokeResult(InvokeResult {
        task_id: "3b9d2c1e-5f6a-4b7c-8d9e-0f1a2b3c4d5e".into(),
        invocation_id: "6c2f0e3a-7b1d-4e5f-9a8b-1c2d3e4f5a6b".into(),
        proplet_id: P.into(),
        outcome: Outcome::ok("\"Hello, world!\"".into()),
    });
    assert_eq!(
        json(&msg.encode()),
        json(fixture!("outbound", "invoke_result").as_bytes())
    );
    assert_eq!(msg.topic(), Topic::InvokeResults);
}

#[test]
fn liveliness_and_registry_match_golden_fixtures() {
    let live = |status| {
        Outbound::Liveliness(Liveliness {
            proplet_id: P.into(),
            status,
            namespace: "default".into(),
        })
    };
    assert_eq!(
        json(&live("alive").encode()),
        json(fixture!("outbound", "heartbeat").as_bytes())
    );
    assert_eq!(
        json(&live("offline").encode()),
        json(fixture!("outbound", "offline").as_bytes())
    );
    let req = Outbound::BinaryRequest(BinaryRequest {
        app_name: "docker.io/example/addition:latest".into(),
    });
    assert_eq!(
        json(&req.encode()),
        json(fixture!("outbound", "binary_request").as_bytes())
    );
}

#[test]
fn discovery_matches_golden_fixture() {
    let msg = Outbound::Discovery(Discovery {
        proplet_id: P.into(),
        namespace: "default".into(),
        metadata: Metadata {
            description: None,
            tags: vec!["edge".into(), "gpu".into()],
            location: Some("lab-1".into()),
            os: "linux".into(),
            cpu_arch: "x86_64".into(),
            hostname: Some("edge-01".into()),
            proplet_version: "0.1.0".into(),
            wasm_runtime: "wasmtime-internal".into(),
            instance_allocator: None,
        },
    });
    assert_eq!(
        json(&msg.encode()),
        json(fixture!("outbound", "discovery").as_bytes())
    );
    // Our extension: one more member, which managers that do not know it ignore.
    let Outbound::Discovery(mut d) = msg.clone() else {
        unreachable!()
    };
    d.metadata.instance_allocator = Some("pooling".into());
    let with = json(&Outbound::Discovery(d).encode());
    assert_eq!(with["metadata"]["instance_allocator"], "pooling");
    assert_eq!(msg.topic(), Topic::Create);
}

#[test]
fn usage_receipt_matches_its_golden_fixture() {
    let limits = Budget {
        timeout_ms: Some(5000),
        memory_bytes: 64 << 20,
        fuel: None,
        output_bytes: 1 << 20,
    };
    let msg = Outbound::Result(TaskResult {
        task_id: T.into(),
        proplet_id: P.into(),
        outcome: Outcome {
            digest: Some(
                "sha256:93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476".into(),
            ),
            usage: Some(Usage {
                wall_ms: 12,
                fuel: None,
                memory_peak_bytes: Some(65_536),
                output_bytes: 5,
                http_requests: None,
                http_bytes: None,
                config_reads: None,
                kv_reads: None,
                kv_writes: None,
                limit: Some(ErrorKind::Memory),
                limits: Some(limits),
            }),
            ..Outcome::failed(ErrorKind::Memory, "memory limit exceeded".into())
        },
    });
    assert_eq!(
        json(&msg.encode()),
        json(fixture!("outbound", "result_usage").as_bytes())
    );
}

#[test]
fn outcome_constructors() {
    assert_eq!(
        Outcome::ok("1".into()),
        Outcome {
            results: "1".into(),
            ..Outcome::default()
        }
    );
    let failed = Outcome::failed(ErrorKind::Trap, "boom".into());
    assert_eq!(
        (failed.results.as_str(), failed.error_kind),
        ("", Some(ErrorKind::Trap))
    );
}

#[test]
fn error_kind_names_match_serde() {
    for kind in [
        ErrorKind::Invalid,
        ErrorKind::OutputLimit,
        ErrorKind::Overloaded,
        ErrorKind::Internal,
    ] {
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            serde_json::Value::String(kind.as_str().into())
        );
    }
}

#[test]
fn an_encoded_start_decodes_to_itself_and_says_only_what_it_must() {
    let minimal = StartRequest {
        id: "t1".into(),
        file: "AGFzbQEAAAA=".into(),
        ..Default::default()
    };
    let json: serde_json::Value = serde_json::from_slice(&minimal.encode()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": "t1", "name": "", "file": "AGFzbQEAAAA=", "inputs": [], "cli_args": []})
    );
    let full = StartRequest {
        id: "t2".into(),
        name: "add".into(),
        image_url: "https://example.com/add.wasm".into(),
        inputs: vec!["1".into(), "2".into()],
        cli_args: vec!["--verbose".into()],
        env: [("K".to_string(), "v".to_string())].into(),
        mounts: vec![MountSpec {
            volume: "models".into(),
            path: "/models".into(),
            mode: Some("rw".into()),
        }],
        limits: LimitsSpec {
            timeout_ms: Some(5000),
            memory_bytes: None,
            fuel: Some(10),
            output_bytes: Some(100),
        },
        digest: Some(format!("sha256:{}", "a".repeat(64))),
        trace: TraceFields {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: None,
        },
        target: Target {
            proplet_id: Some("p1".into()),
            broadcast: false,
        },
        ..Default::default()
    };
    match decode(Topic::Start, &full.encode()) {
        Ok(Inbound::Start(back)) => assert_eq!(*back, full),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oversized_start_is_refused_by_its_id_with_the_way_out() {
    let payload = format!(
        r#"{{"id":"big","file":"{}","proplet_id":"{P}","inputs":[]}}"#,
        "A".repeat(4096)
    );
    let rejected = oversized(Topic::Start, payload.as_bytes(), 1024);
    assert_eq!(rejected.id.as_deref(), Some("big"));
    assert_eq!(rejected.target.proplet_id.as_deref(), Some(P));
    let why = rejected.error.to_string();
    assert!(
        why.contains("over PROPLET_MQTT_MAX_PACKET_SIZE (1024 bytes)"),
        "{why}"
    );
    assert!(why.contains("image_url"), "{why}");
    let nameless = oversized(Topic::Start, b"\"not an object", 4);
    assert_eq!(nameless.id, None);
}

#[test]
fn a_monitoring_profile_is_read_under_either_key_and_never_fails_a_start() {
    let both = r#"{"id":"t","name":"add","file":"AA==","monitoring_profile":{"interval":5},"monitoringProfile":{"interval":7}}"#;
    let s = start(both);
    assert_eq!(
        s.monitoring_profile,
        Some(serde_json::json!({"interval": 5}))
    );
    let camel =
        start(r#"{"id":"t","name":"add","file":"AA==","monitoringProfile":{"interval":7}}"#);
    assert_eq!(
        camel.monitoring_profile_camel,
        Some(serde_json::json!({"interval": 7}))
    );
    for bad in ["null", "3", "\"x\"", "[1]"] {
        let s = start(&format!(
            r#"{{"id":"t","name":"add","file":"AA==","monitoring_profile":{bad}}}"#
        ));
        assert_eq!(s.monitoring_profile, None, "{bad}");
    }
}
