//! `proplet submit`: send one task to a broker as the manager would, and wait for its
//! result. Authors and operators try a proplet (or a fleet) without writing start JSON.
//!
//! The start is the latest manager's (docs/protocol.md §4.3), targeted at one proplet: by
//! default the configured `PROPLET_ENTITY_ID`, so the same settings that run a proplet
//! also reach it. The binary goes inline (base64 `file`) or as an `image_url`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::Config;
use crate::config::{parse_bytes, parse_duration};
use crate::protocol::{LimitsSpec, MountSpec, StartRequest, Target, Topic, Topics, TraceFields};
use crate::transport::client::{self, ClientError, Request};

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The binary: a file (sent inline, base64) or a URL or registry reference (sent as
    /// `image_url`, fetched by the proplet).
    pub binary: String,
    /// What to call and with what (the start's `name`, `inputs` and `cli_args`).
    #[command(flatten)]
    pub call: crate::cli::CallArgs,
    /// Environment variable for the guest (repeatable), the start's `env`.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,
    /// Mount a volume the proplet offers (PROPLET_VOLUMES): VOLUME:PATH[:ro|rw].
    #[arg(long = "mount", value_name = "VOLUME:PATH[:MODE]", value_parser = parse_mount)]
    pub mounts: Vec<MountSpec>,
    /// Deadline of the task (`limits.timeout_ms`), like 5s or 500ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Linear memory the task may use (`limits.memory_bytes`), like 64MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// Fuel the task may burn (`limits.fuel`).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Output budget of the task (`limits.output_bytes`), like 64KiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub output_bytes: Option<u64>,
    /// Sign the inline binary with this key (from `proplet keygen`): sends `digest` and
    /// `signature`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// W3C trace context the task's trace continues (`traceparent`).
    #[arg(long, value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// Task id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// The proplet that runs it (default: PROPLET_ENTITY_ID).
    #[arg(long, value_name = "ID")]
    pub proplet: Option<String>,
    /// How long to wait for the result.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Print the whole result message as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Inputs (with --invoke), or the guest's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Why a task could not be submitted or got no result.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The binary could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A `.wasm` name that is not a file here.
    #[error("{0}: no such file (a URL or registry reference is sent as image_url)")]
    NoSuchFile(String),
    /// The binary could not be signed.
    #[error(transparent)]
    Sign(#[from] crate::keys::KeyError),
    /// The start would not fit one MQTT packet.
    #[error(
        "the start would be a {size}-byte MQTT packet, over PROPLET_MQTT_MAX_PACKET_SIZE \
         ({limit} bytes): serve the binary over HTTP(S) or a registry and submit its URL \
         (image_url), or raise the limit on the broker, the proplet and here"
    )]
    TooLarge {
        /// The packet's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The broker exchange failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A result message, as received.
#[derive(Debug, Clone)]
pub struct Answer(pub Value);

impl Answer {
    /// Whether the task failed (`error` is set).
    pub fn failed(&self) -> bool {
        !self.0["error"].is_null()
    }

    /// The result text (or its JSON, when it is not a string).
    pub fn results(&self) -> String {
        match &self.0["results"] {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// `error_kind: error`.
    pub fn error(&self) -> String {
        let kind = self.0["error_kind"].as_str().unwrap_or("error");
        let text = match &self.0["error"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        format!("{kind}: {text}")
    }
}

/// Sends the task and waits for its result.
pub async fn run(args: SubmitArgs, config: &Config) -> Result<Answer, SubmitError> {
    let wait = args.wait;
    let start = start(args, &config.identity.proplet_id)?;
    let topics = Topics::new(&config.identity.tenant_id, &config.identity.channel_id);
    let request = Request {
        topic: topics.render(Topic::Start),
        payload: start.encode(),
        reply_topic: topics.render(Topic::Results),
    };
    // Payload, topic, and at most 9 bytes of MQTT header.
    let size = request.payload.len() + request.topic.len() + 9;
    if size > config.mqtt.max_packet_size {
        let limit = config.mqtt.max_packet_size;
        return Err(SubmitError::TooLarge { size, limit });
    }
    let id = start.id.clone();
    let answers = move |payload: &[u8]| {
        serde_json::from_slice::<Value>(payload).is_ok_and(|v| v["task_id"] == id.as_str())
    };
    let reply = client::request(&config.mqtt, &config.identity, request, answers, wait).await?;
    Ok(Answer(
        serde_json::from_slice(&reply).unwrap_or(Value::Null),
    ))
}

/// The start message `args` describe, for the proplet `default_target` unless told.
fn start(args: SubmitArgs, default_target: &str) -> Result<StartRequest, SubmitError> {
    let (name, inputs, cli_args) = args.call.split(args.args);
    let mut start = StartRequest {
        id: args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        name,
        inputs,
        cli_args,
        env: args.envs.into_iter().collect::<BTreeMap<_, _>>(),
        mounts: args.mounts,
        limits: LimitsSpec {
            timeout_ms: args
                .timeout
                .map(|t| t.as_millis().try_into().unwrap_or(u64::MAX)),
            memory_bytes: args.memory,
            fuel: args.fuel,
            output_bytes: args.output_bytes,
        },
        trace: TraceFields {
            traceparent: args.traceparent,
            tracestate: None,
        },
        target: Target {
            proplet_id: Some(args.proplet.unwrap_or_else(|| default_target.to_owned())),
            broadcast: false,
        },
        ..Default::default()
    };
    let path = Path::new(&args.binary);
    if path.is_file() {
        inline(&mut start, path, args.key.as_deref())?;
    } else if args.binary.ends_with(".wasm") && !args.binary.contains("://") {
        return Err(SubmitError::NoSuchFile(args.binary));
    } else {
        start.image_url = args.binary;
    }
    Ok(start)
}

/// Puts the binary at `path` in `start`, signed with `key` if given.
fn inline(start: &mut StartRequest, path: &Path, key: Option<&Path>) -> Result<(), SubmitError> {
    let bytes = std::fs::read(path).map_err(|source| SubmitError::Read {
        path: path.to_owned(),
        source,
    })?;
    start.file = base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into();
    if let Some(key) = key {
        let signed = crate::keys::sign(key, path)?;
        start.digest = Some(signed.digest);
        start.signature = Some(signed.signature);
    }
    Ok(())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {text:?}")),
    }
}

/// `VOLUME:PATH[:ro|rw]`; the mode is checked here, the rest by the proplet.
fn parse_mount(text: &str) -> Result<MountSpec, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(volume), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!("expected VOLUME:PATH[:ro|rw], got {text:?}"));
    };
    let mode = parts.next();
    crate::sandbox::capabilities::writable(mode)?;
    Ok(MountSpec {
        volume: volume.to_owned(),
        path: path.to_owned(),
        mode: mode.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn parse(argv: &[&str]) -> SubmitArgs {
        let argv = std::iter::once("submit").chain(argv.iter().copied());
        Cli::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn flags_become_the_start_a_manager_would_send() {
        let args = parse(&[
            "--invoke",
            "add",
            "--env",
            "K=v=w",
            "--mount",
            "models:/models:rw",
            "--timeout",
            "1.5s",
            "--memory",
            "1MiB",
            "--fuel",
            "9",
            "--output-bytes",
            "2KiB",
            "--id",
            "t",
            "https://example.com/add.wasm",
            "1",
            "2",
        ]);
        let start = start(args, "me").expect("start");
        assert_eq!(
            (start.id.as_str(), start.name.as_str(), start.inputs.clone()),
            ("t", "add", vec!["1".to_owned(), "2".to_owned()])
        );
        assert_eq!(start.image_url, "https://example.com/add.wasm");
        assert_eq!(start.env["K"], "v=w");
        assert_eq!(start.mounts[0].mode.as_deref(), Some("rw"));
        let limits = (start.limits.timeout_ms, start.limits.memory_bytes);
        assert_eq!(limits, (Some(1500), Some(1 << 20)));
        assert_eq!(
            (start.limits.fuel, start.limits.output_bytes),
            (Some(9), Some(2048))
        );
        assert_eq!(start.target.proplet_id.as_deref(), Some("me"));
    }

    #[test]
    fn without_invoke_trailing_words_are_arguments_and_files_go_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.wasm");
        std::fs::write(&file, b"\0asm\x01\0\0\0").expect("write");
        let args = parse(&[
            "--proplet",
            "p2",
            file.to_str().expect("utf-8"),
            "exit",
            "3",
        ]);
        let start = start(args, "me").expect("start");
        assert_eq!(start.cli_args, ["exit", "3"]);
        assert_eq!(start.file, "AGFzbQEAAAA=");
        assert_eq!(start.target.proplet_id.as_deref(), Some("p2"));
        assert!(start.image_url.is_empty() && start.inputs.is_empty());
    }

    #[test]
    fn typos_are_refused_before_anything_is_sent() {
        assert!(Cli::try_parse_from(["submit", "--mount", "v:/d:wr", "x.wasm"]).is_err());
        assert!(Cli::try_parse_from(["submit", "--env", "=1", "x.wasm"]).is_err());
        let missing = start(parse(&["missing/add.wasm"]), "me");
        assert!(matches!(missing, Err(SubmitError::NoSuchFile(_))));
    }
}
