//! Messages the proplet receives, decoded once into typed values.
//!
//! [`decode`] is the single place where a (topic, payload) pair becomes an [`Inbound`]. A
//! payload that cannot be decoded yields a [`Rejected`] that still carries whatever could be
//! salvaged (the task `id` and its targeting), so that the caller can answer with an error
//! result instead of leaving the manager waiting.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient::{hint_u8, optional_text_list, or_default, text_list, text_map};
use super::{InlineFile, KnownTexts};
use super::{ProtocolError, Topic};

/// A decoded message from the manager or the registry proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// `control/manager/start` (boxed: it is much larger than the other messages).
    Start(Box<StartRequest>),
    /// `control/manager/stop`.
    Stop(StopRequest),
    /// `control/manager/invoke`.
    Invoke(InvokeRequest),
    /// `registry/server`.
    Chunk(Chunk),
}

/// Who a start or invoke is meant for (docs/protocol.md §5.2 step 2, §8.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Target {
    /// The proplet the latest manager picked; absent in seed-era starts.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub proplet_id: Option<String>,
    /// `true`: every proplet must run it.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "is_false"
    )]
    pub broadcast: bool,
}

impl Target {
    /// Whether a proplet with id `ours` must handle the message.
    pub fn includes(&self, ours: &str) -> bool {
        match self.proplet_id.as_deref() {
            _ if self.broadcast => true,
            None | Some("") => true,
            Some(id) => id == ours,
        }
    }
}

/// A start request (docs/protocol.md §4.3), seed-era or latest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StartRequest {
    /// Task id, echoed as `task_id` in the result.
    #[serde(default, deserialize_with = "or_default")]
    pub id: String,
    /// Export to call; empty or `_start` runs the module as a command.
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
    /// Registry reference, or an `http(s)://` URL, used when `file` is empty.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub image_url: String,
    /// The binary inline, base64 (standard alphabet, padded).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "InlineFile::is_empty"
    )]
    pub file: InlineFile,
    /// Positional arguments as text (numbers from seed managers are converted).
    #[serde(default, deserialize_with = "text_list")]
    pub inputs: Vec<String>,
    /// Extra arguments: guest argv after the program name, or runtime arguments.
    #[serde(default, deserialize_with = "text_list")]
    pub cli_args: Vec<String>,
    /// Environment of the workload.
    #[serde(
        default,
        deserialize_with = "text_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Long-running task (docs/protocol.md §5.5).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "is_false"
    )]
    pub daemon: bool,
    /// Precompile only; run on invoke (docs/protocol.md §5.7).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "is_false"
    )]
    pub latent: bool,
    /// Encrypted OCI workload (TEE only).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "is_false"
    )]
    pub encrypted: bool,
    /// Volumes the task asks to mount (an extension; upstream managers never send it).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<MountSpec>,
    /// Origins the task asks to send HTTP requests to (an extension):
    /// `scheme://host[:port]`, each within the proplet's `PROPLET_HTTP_ALLOW`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub http: Vec<String>,
    /// Configuration values of the task (an extension), read through `wasi:config/store`.
    #[serde(
        default,
        deserialize_with = "text_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub config: BTreeMap<String, String>,
    /// Operator values (`PROPLET_CONFIG_DIR`) the task asks to read through
    /// `wasi:config/store` (an extension), each within `PROPLET_CONFIG_ALLOW`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub credentials: Vec<String>,
    /// Key-value buckets the task asks to open through `wasi:keyvalue` (an extension), each
    /// declared in `PROPLET_KV_BUCKETS`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kv: Vec<String>,
    /// What the manager asks to be sampled (§4.3.3), as sent; read by
    /// [`crate::protocol::metrics::MonitoringProfile::read`].
    #[serde(
        default,
        deserialize_with = "super::metrics::raw_profile",
        skip_serializing_if = "Option::is_none"
    )]
    pub monitoring_profile: Option<serde_json::Value>,
    /// The same under the key a short-lived manager used (`monitoringProfile`); read when
    /// `monitoring_profile` is absent. A message may carry both.
    #[serde(
        default,
        rename = "monitoringProfile",
        deserialize_with = "super::metrics::raw_profile",
        skip_serializing_if = "Option::is_none"
    )]
    pub monitoring_profile_camel: Option<serde_json::Value>,
    /// Budgets the task asks for (an extension), capped by the node maximums.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "LimitsSpec::is_default"
    )]
    pub limits: LimitsSpec,
    /// The binary's expected digest, `sha256:<hex>` (an extension): anything else is refused.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub digest: Option<String>,
    /// Base64 ed25519 signature over the binary's digest text `sha256:<hex>` (an extension).
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub signature: Option<String>,
    /// W3C trace context of the caller (an extension).
    #[serde(flatten)]
    pub trace: TraceFields,
    /// Targeting.
    #[serde(flatten)]
    pub target: Target,
    /// The manager's state of the task (latest manager): 0–2 while it waits for an
    /// answer, 3 or 4 (completed, failed) when it re-runs a finished task on purpose. Read
    /// only as a hint (see docs/protocol.md §5.10); anything but a small integer is `None`.
    #[serde(
        default,
        deserialize_with = "hint_u8",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<u8>,
    /// Whether the broker redelivered this message (the MQTT DUP flag): not part of the
    /// payload, set by the transport.
    #[serde(skip)]
    pub redelivered: bool,
}

/// One requested mount: `{"volume":"models","path":"/models","mode":"ro"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MountSpec {
    /// A volume the operator offers.
    pub volume: String,
    /// Where the guest sees it.
    pub path: String,
    /// `ro` (default) or `rw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// W3C trace context carried as top-level message fields (an extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TraceFields {
    /// `00-<trace id>-<parent span id>-<flags>`.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub traceparent: Option<String>,
    /// Vendor trace state.
    #[serde(
        default,
        deserialize_with = "or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub tracestate: Option<String>,
}

/// Requested budgets: `{"timeout_ms":5000,"memory_bytes":67108864,"fuel":null,
/// "output_bytes":1048576}`; absent or `null` members take the node default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct LimitsSpec {
    /// Wall-clock deadline in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Linear memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Fuel (instruction budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Output budget, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl LimitsSpec {
    /// Whether nothing is asked for (every budget takes the node default).
    pub fn is_default(&self) -> bool {
        *self == LimitsSpec::default()
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

impl StartRequest {
    /// The start as the latest manager sends it (what `proplet submit` publishes): fields
    /// with nothing to say are left out, and [`decode`] reads it back unchanged.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, lists, maps, numbers and booleans always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether this start may be a copy of one already taken rather than a new run: the
    /// broker redelivered it (DUP), or the manager still waits for its answer (`state` 0–2:
    /// it sends the start again when an answer was lost). A start with `state` 3 or 4 (or
    /// another, or none, as from the seed-era manager) is a deliberate run.
    pub fn may_be_a_copy(&self) -> bool {
        self.redelivered || self.state.is_some_and(|s| s <= 2)
    }

    /// Checks the fields every start needs (docs/protocol.md §4.3.4).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.id.is_empty() {
            return Err(ProtocolError::Invalid("start has no id".into()));
        }
        if self.file.is_empty() && self.image_url.is_empty() {
            return Err(ProtocolError::Invalid(
                "either file or image_url must be provided".into(),
            ));
        }
        if let Some(digest) = &self.digest
            && !is_sha256_digest(digest)
        {
            return Err(ProtocolError::Invalid(format!(
                "digest {digest:?} is not sha256:<64 hex digits>"
            )));
        }
        if self.encrypted {
            return Err(ProtocolError::Invalid(
                "encrypted workloads need a TEE runtime, which this proplet does not have".into(),
            ));
        }
        Ok(())
    }
}

/// Whether `text` is `sha256:` followed by 64 lowercase or uppercase hex digits.
fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A stop request (docs/protocol.md §4.4); only `id` matters, whatever the era.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StopRequest {
    /// The task to stop.
    #[serde(default, deserialize_with = "or_default")]
    pub id: String,
}

/// An invocation of a latent task (docs/protocol.md §4.5).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct InvokeRequest {
    /// The latent task id.
    #[serde(default, deserialize_with = "or_default")]
    pub id: String,
    /// Correlation id, echoed in the invoke result.
    #[serde(default, deserialize_with = "or_default")]
    pub invocation_id: String,
    /// Replacement inputs; `None` or empty keeps the deploy-time inputs.
    #[serde(default, deserialize_with = "optional_text_list")]
    pub inputs: Option<Vec<String>>,
    /// Environment merged over the deploy-time env.
    #[serde(default, deserialize_with = "text_map")]
    pub env: BTreeMap<String, String>,
    /// W3C trace context of the caller (an extension).
    #[serde(flatten)]
    pub trace: TraceFields,
    /// Targeting.
    #[serde(flatten)]
    pub target: Target,
}

/// One chunk of a binary sent by the registry proxy (docs/protocol.md §4.9).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chunk {
    /// The requested reference; the reassembly key.
    pub app_name: String,
    /// 0-based index.
    pub chunk_idx: u64,
    /// Number of chunks in the transfer.
    pub total_chunks: u64,
    /// Chunk bytes, base64.
    pub data: String,
}

/// A message that could not be decoded, with what could be salvaged from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Where it arrived.
    pub topic: Topic,
    /// The task id, when the payload had a string `id`.
    pub id: Option<String>,
    /// The invocation id of an invoke, when present.
    pub invocation_id: Option<String>,
    /// Targeting, when it could be read (default: untargeted).
    pub target: Target,
    /// Why it was rejected.
    pub error: ProtocolError,
}

/// Decodes a payload received on `topic`.
pub fn decode(topic: Topic, payload: &[u8]) -> Result<Inbound, Rejected> {
    let decoded = match topic {
        Topic::Start => from_json(payload).map(|s| Inbound::Start(Box::new(s))),
        Topic::Stop => from_json(payload).map(Inbound::Stop),
        Topic::Invoke => from_json(payload).map(Inbound::Invoke),
        Topic::RegistryChunk => from_json(payload).map(Inbound::Chunk),
        other => Err(ProtocolError::Invalid(format!(
            "the proplet does not consume {}",
            other.suffix()
        ))),
    };
    decoded.map_err(|error| salvage(topic, payload, error))
}

/// Decodes a payload received on `topic` as [`decode`] does, sharing an inline binary's
/// text that `known` holds already (byte for byte the same) instead of copying it.
pub fn decode_sharing(
    topic: Topic,
    payload: &[u8],
    known: &Arc<dyn KnownTexts>,
) -> Result<Inbound, Rejected> {
    super::inline_file::sharing(known, || decode(topic, payload))
}

/// The refusal of a message larger than `limit` (`PROPLET_MQTT_MAX_PACKET_SIZE`), with the
/// `id`, `invocation_id` and `proplet_id` a shallow scan finds, so that the manager gets an
/// answer instead of silence. Nothing else of the payload is decoded.
pub fn oversized(topic: Topic, payload: &[u8], limit: usize) -> Rejected {
    let text = |key: &str| super::salvage::top_level_string(payload, key).filter(|s| !s.is_empty());
    let error = ProtocolError::Invalid(format!(
        "the message is {} bytes, over PROPLET_MQTT_MAX_PACKET_SIZE ({limit} bytes): \
         send a large binary by image_url (an http(s) URL or a registry reference) instead \
         of inline in file",
        payload.len()
    ));
    Rejected {
        topic,
        id: text("id"),
        invocation_id: text("invocation_id"),
        target: Target {
            proplet_id: text("proplet_id"),
            broadcast: false,
        },
        error,
    }
}

fn from_json<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::Json(e.to_string()))
}

/// Reads `id`, `invocation_id` and targeting from a payload whose typed decode failed;
/// when it is not even JSON a serde value can hold (too deep, truncated), a shallow scan
/// still finds the top-level strings.
fn salvage(topic: Topic, payload: &[u8], error: ProtocolError) -> Rejected {
    let value: Option<Value> = serde_json::from_slice(payload).ok();
    let text = |key: &str| {
        let found = match &value {
            Some(v) => v.get(key).and_then(Value::as_str).map(str::to_owned),
            None => super::salvage::top_level_string(payload, key),
        };
        found.filter(|s| !s.is_empty())
    };
    let target = Target {
        proplet_id: text("proplet_id"),
        broadcast: value
            .as_ref()
            .and_then(|v| v.get("broadcast"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Rejected {
        topic,
        id: text("id"),
        invocation_id: text("invocation_id"),
        target,
        error,
    }
}
