//! Property-based fuzzing of everything that parses untrusted bytes: message decoding (all
//! topics, arbitrary and JSON-shaped payloads) and chunk assembly. A short run is part of
//! the suite; `just fuzz` runs many more cases (PROPTEST_CASES).

use proplet::protocol::{Inbound, Topic, decode};
use proplet::tasks::{Assembler, ChunkError};
use proptest::prelude::*;

const TOPICS: [Topic; 4] = [
    Topic::Start,
    Topic::Stop,
    Topic::Invoke,
    Topic::RegistryChunk,
];

/// JSON-ish text built from the protocol's own keys, so the decoder's deeper paths run.
fn jsonish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "id",
        "name",
        "file",
        "image_url",
        "inputs",
        "cli_args",
        "env",
        "daemon",
        "latent",
        "limits",
        "digest",
        "signature",
        "mounts",
        "proplet_id",
        "broadcast",
        "invocation_id",
        "app_name",
        "chunk_idx",
        "total_chunks",
        "data",
        "timeout_ms",
        "memory_bytes",
    ]);
    let scalar = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
    ];
    let value = scalar.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(inner, 0..5).prop_map(|v| format!("{{\"k\":{}}}", v.join(","))),
        ]
    });
    prop::collection::vec((key, value), 0..8).prop_map(|members| {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), t in 0usize..4) {
        let _decoded = decode(TOPICS[t], &bytes);
    }

    #[test]
    fn decoding_json_shaped_payloads_never_panics_and_salvages_ids(text in jsonish(), t in 0usize..4) {
        match decode(TOPICS[t], text.as_bytes()) {
            Ok(Inbound::Start(s)) => { s.validate().ok(); }
            Ok(_) => {}
            Err(rejected) => {
                if let Some(id) = rejected.id {
                    prop_assert!(!id.is_empty());
                    prop_assert!(text.contains("\"id\""));
                }
            }
        }
    }

    #[test]
    fn deep_nesting_is_rejected_with_the_id_salvaged(depth in 1usize..200_000) {
        let text = format!(r#"{{"inputs":{}{},"id":"deep"}}"#, "[".repeat(depth), "]".repeat(depth));
        match decode(Topic::Start, text.as_bytes()) {
            Ok(_) => prop_assert!(depth < 128),
            Err(r) => prop_assert_eq!(r.id.as_deref(), Some("deep")),
        }
    }

    #[test]
    fn chunk_assembly_is_bounded_and_exact(
        chunks in prop::collection::vec((0u64..12, 0u64..12, prop::collection::vec(any::<u8>(), 0..64)), 0..64),
        absurd in prop::collection::vec((any::<u64>(), any::<u64>()), 0..16),
    ) {
        let mut asm = Assembler::new(1024, 2);
        asm.expect("app").expect("room for one");
        for (idx, total) in absurd {
            if let Err(e) = asm.accept("app", idx, total, Vec::new()) {
                let expected = matches!(e, ChunkError::OutOfRange { .. } | ChunkError::ConflictingTotal { .. });
                prop_assert!(expected, "unexpected error {:?}", e);
            }
            asm.forget("app");
            asm.expect("app").expect("room again");
        }
        let mut seen = std::collections::BTreeMap::new();
        let mut total_fixed = None;
        for (idx, total, data) in chunks {
            let result = asm.accept("app", idx, total, data.clone());
            match result {
                Ok(Some(binary)) => {
                    seen.entry(idx).or_insert(data);
                    let expected: Vec<u8> = seen.values().flatten().copied().collect();
                    prop_assert_eq!(binary, expected);
                    prop_assert!(!asm.is_expected("app"));
                    return Ok(());
                }
                Ok(None) => {
                    total_fixed.get_or_insert(total);
                    seen.entry(idx).or_insert(data);
                }
                Err(ChunkError::TooLarge { .. } | ChunkError::ConflictingData { .. }) => {
                    prop_assert!(!asm.is_expected("app"));
                    return Ok(());
                }
                Err(_) => {}
            }
            prop_assert!(seen.len() as u64 <= total_fixed.unwrap_or(u64::MAX));
        }
    }
}
