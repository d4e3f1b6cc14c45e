//! Configuration: defaults → TOML file → `PROPLET_*` environment → CLI flags.
//!
//! Every value is validated into a typed field at startup; a bad value is an error that
//! names the setting and where it came from, never a silent default. This module owns no
//! I/O beyond reading the TOML file and the files it names.

mod layers;
mod settings;
mod values;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use layers::{Layers, Raw, Source};
pub use settings::{SETTINGS, Setting};
pub use values::BrokerAddress;
pub use values::{bytes as parse_bytes, duration as parse_duration};

use crate::sandbox::{Budgets, Policy};

/// A configuration problem found at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value did not parse or is out of range.
    #[error("{origin}: invalid {key} {value:?}: {reason}")]
    Invalid {
        /// Where the bad value came from.
        origin: Source,
        /// The setting.
        key: &'static str,
        /// The value (redacted for secrets).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required setting has no value.
    #[error("missing required setting {key}: set {env} (or --{flag}, or {key} in the config file)")]
    Missing {
        /// The setting.
        key: &'static str,
        /// Its environment names.
        env: String,
        /// Its CLI flag.
        flag: &'static str,
    },
    /// Several required settings have no value (each as [`ConfigError::Missing`] says).
    #[error("missing required settings: {}", .0.join("; "))]
    MissingSeveral(Vec<String>),
    /// Two aliases of one setting disagree.
    #[error("{first} and {second} are both set, to different values; set only one")]
    Conflict {
        /// The preferred name.
        first: &'static str,
        /// The alias.
        second: &'static str,
    },
    /// Settings that are fine one by one but not together.
    #[error("inconsistent settings: {0}")]
    Inconsistent(String),
    /// The TOML file could not be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The TOML file has a key that is not a setting.
    #[error("config file {}: unknown key {key:?}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// Who we are on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `{A}` of the topic base.
    pub tenant_id: String,
    /// `{C}` of the topic base.
    pub channel_id: String,
    /// MQTT username and `proplet_id`.
    pub proplet_id: String,
    /// MQTT password.
    pub api_key: Option<String>,
    /// MQTT client id.
    pub client_id: String,
    /// `namespace` of discovery and heartbeats.
    pub namespace: String,
}

/// TLS files for the broker connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA bundle; `None` uses the system roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// MQTT session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker address.
    pub address: BrokerAddress,
    /// QoS of every publish and subscription.
    pub qos: u8,
    /// Connect timeout; also the longest wait to queue a message.
    pub timeout: Duration,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest packet in either direction.
    pub max_packet_size: usize,
    /// Most unacknowledged QoS>0 publishes.
    pub inflight: u16,
    /// Queue in front of the client.
    pub request_channel_capacity: usize,
    /// Start a clean session.
    pub clean_session: bool,
    /// TLS files, used when the address selects TLS.
    pub tls: TlsFiles,
}

/// Task admission and lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSettings {
    /// Tasks that run at once.
    pub max_concurrent: NonZeroUsize,
    /// Tasks that may wait for a slot.
    pub queue_capacity: usize,
    /// Bytes of binaries that waiting tasks may hold.
    pub queue_bytes: u64,
    /// Bytes of unacknowledged results the durable outbox may hold before starts are
    /// refused.
    pub outbox_max_bytes: u64,
    /// Bytes a task's scratch directory may hold.
    pub scratch_bytes: u64,
    /// Grace period for running tasks at shutdown.
    pub drain_timeout: Duration,
    /// Compiled modules kept in memory.
    pub module_cache_entries: usize,
    /// Bytes of compiled code kept in memory.
    pub module_cache_bytes: usize,
    /// Which instance allocator Wasmtime uses.
    pub instance_allocator: crate::runtime::AllocatorChoice,
    /// Bytes of binaries deployed latent tasks may hold.
    pub latent_max_bytes: u64,
    /// External runtime binary, when tasks run out of process.
    pub external_runtime: Option<PathBuf>,
    /// Host directories tasks may mount (`PROPLET_VOLUMES`).
    pub volumes: Vec<crate::sandbox::Volume>,
    /// Where guests may connect (`PROPLET_NET_ALLOW`); empty means no network.
    pub net_allow: Vec<crate::sandbox::NetRule>,
    /// Outbound HTTP, configuration values and key-value buckets.
    pub apis: HostApis,
    /// Whether the metrics topics are published (`PROPLET_ENABLE_MONITORING`).
    pub monitoring: bool,
    /// Period of the proplet's process metrics; zero: none.
    pub metrics_interval: Duration,
}

/// What components may be granted of the host APIs beyond WASI preview 2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostApis {
    /// Where components may send HTTP requests, and each task's HTTP budget.
    pub http: crate::sandbox::HttpPolicy,
    /// Operator configuration values and who may read them.
    pub config: crate::sandbox::ConfigPolicy,
    /// The key-value buckets tasks may open.
    pub kv: crate::sandbox::kv::KvPolicy,
}

/// How binaries are obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Wait for registry chunks.
    pub chunk_timeout: Duration,
    /// Largest binary from any source.
    pub max_binary_bytes: u64,
    /// Registry transfers assembled at once.
    pub max_assemblies: usize,
    /// HTTP download timeout.
    pub http_timeout: Duration,
}

/// Discovery metadata given by the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSettings {
    /// Free text.
    pub description: Option<String>,
    /// Placement tags.
    pub tags: Vec<String>,
    /// Location.
    pub location: Option<String>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// tracing filter directive.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}

/// OTLP transport of trace export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (port 4318).
    HttpProtobuf,
    /// `grpc` (port 4317).
    Grpc,
}

/// The sampler of root spans (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    /// Sample everything.
    AlwaysOn,
    /// Sample nothing.
    AlwaysOff,
    /// Sample this fraction of trace ids.
    Ratio(f64),
}

/// Trace export settings (the standard `OTEL_*` variables).
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// The full traces URL; `None` means no export at all.
    pub traces_endpoint: Option<String>,
    /// How to talk to the collector.
    pub protocol: OtlpProtocol,
    /// Extra request headers (or gRPC metadata).
    pub headers: Vec<(String, String)>,
    /// `service.name`.
    pub service_name: String,
    /// Extra resource attributes.
    pub resource: Vec<(String, String)>,
    /// Sampler for spans without a sampled parent decision.
    pub sampler: RootSampler,
    /// Whether a remote parent's sampling decision is followed (`parentbased_*`).
    pub parent_based: bool,
}

impl Default for OtelSettings {
    /// No export.
    fn default() -> Self {
        OtelSettings {
            traces_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "proplet".into(),
            resource: Vec::new(),
            sampler: RootSampler::AlwaysOn,
            parent_based: true,
        }
    }
}

/// The validated configuration of one proplet.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identity and topic base.
    pub identity: Identity,
    /// Broker session.
    pub mqtt: MqttConfig,
    /// Heartbeat period.
    pub liveliness_interval: Duration,
    /// Admission, concurrency, shutdown.
    pub tasks: TaskSettings,
    /// Binary sources.
    pub fetch: FetchSettings,
    /// Node default and maximum budgets of every task.
    pub budgets: Budgets,
    /// Which binaries are accepted.
    pub admission: Policy,
    /// Discovery metadata.
    pub metadata: MetadataSettings,
    /// Logging.
    pub log: LogSettings,
    /// Trace export.
    pub otel: OtelSettings,
    /// Where the health and metrics endpoint listens; `None` = off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The state directory (`PROPLET_STATE_DIR` or its default); `None` when neither the
    /// setting nor any default location is available.
    pub state_dir: Option<PathBuf>,
    /// The compile cache directory (`PROPLET_CACHE_DIR` or its default); `None` when off
    /// or when there is nowhere to default to.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the compile cache directory may hold.
    pub cache_max_bytes: u64,
    /// The CPU wake-up latency limit the daemon holds while it runs (`PROPLET_CPU_LATENCY`);
    /// `None`: none.
    pub cpu_latency: Option<Duration>,
    layers: Layers,
}

mod otel;
mod reader;
mod resolve;

impl Config {
    /// Loads from an optional TOML file, the environment (through `env`) and CLI flags.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        cli: Vec<(&'static Setting, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = resolve::from_layers(Config::layers(file, env, cli)?)?;
        if config.state_dir.is_none() {
            config.state_dir = crate::state::default_path(env);
        }
        config.cache_dir = crate::runtime::resolve_cache_dir(config.cache_dir.as_deref(), env);
        Ok(config)
    }

    /// Only the host-API policies, from the same sources as [`Config::load`] (for
    /// `proplet run`, which needs no identity).
    pub fn host_apis(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        cli: Vec<(&'static Setting, String)>,
    ) -> Result<HostApis, ConfigError> {
        resolve::host_apis(&reader::Reader::new(&Config::layers(file, env, cli)?))
    }

    /// Defaults, then the file, the environment and the flags.
    fn layers(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        cli: Vec<(&'static Setting, String)>,
    ) -> Result<Layers, ConfigError> {
        let mut layers = Layers::defaults();
        let file = file.map(Path::to_path_buf).or_else(|| {
            env("PROPLET_CONFIG_FILE")
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = file {
            let section = env("PROPLET_CONFIG_SECTION")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "proplet".into());
            layers.apply_file(&path, &section)?;
        }
        layers.apply_env(env)?;
        layers.apply_cli(cli);
        Ok(layers)
    }

    /// The compile cache on disk, unless it is off.
    pub fn compile_cache(&self) -> Option<crate::runtime::DiskCacheConfig> {
        let dir = self.cache_dir.clone()?;
        Some(crate::runtime::DiskCacheConfig {
            dir,
            max_bytes: self.cache_max_bytes,
        })
    }

    /// How in-process tasks get their instances: the configured allocator, with a pool
    /// sized for the concurrency limit and the largest memory budget.
    pub fn allocation(&self) -> crate::runtime::Allocation {
        let tasks = u32::try_from(self.tasks.max_concurrent.get()).unwrap_or(u32::MAX);
        crate::runtime::Allocation {
            choice: self.tasks.instance_allocator,
            tasks,
            max_memory: self.budgets.max.memory_bytes,
        }
    }

    /// Loads from the process environment and the given file and flags.
    pub fn from_process_env(
        file: Option<&Path>,
        cli: Vec<(&'static Setting, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load(file, &|name| std::env::var(name).ok(), cli)
    }

    /// The effective configuration, one `key = value  # source` line per setting, with
    /// secrets redacted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in SETTINGS {
            match self.layers.get(s.key) {
                Some(raw) => {
                    let value = if s.secret {
                        "\"<redacted>\"".to_owned()
                    } else {
                        format!("{:?}", raw.text)
                    };
                    out.push_str(&format!("{} = {value}  # {}\n", s.key, raw.source));
                }
                None => out.push_str(&format!("# {} is unset\n", s.key)),
            }
        }
        if self.tasks.external_runtime.is_none() {
            let allocator = self.allocation().preferred();
            out.push_str(&format!("# instance allocator in effect: {allocator}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests;
