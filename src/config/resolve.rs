//! Turns merged [`Layers`] into a typed, validated [`Config`].

use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::settings::{SETTINGS, Setting};
use super::values::{self, BrokerAddress};
use super::*;
use crate::sandbox::Limits;

/// Reads typed values out of the merged layers, naming the source on error.
pub(super) struct Reader<'a> {
    layers: &'a Layers,
}

impl Reader<'_> {
    pub(super) fn text(&self, key: &str) -> Option<String> {
        self.layers.get(key).map(|r| r.text.clone())
    }

    pub(super) fn opt<T>(
        &self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.layers.get(key) else {
            return Ok(None);
        };
        parse(raw.text.trim())
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                origin: raw.source.clone(),
                key,
                value: if setting(key).secret {
                    "<redacted>".into()
                } else {
                    raw.text.clone()
                },
                reason,
            })
    }

    pub(super) fn req<T>(
        &self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.opt(key, parse)?.ok_or_else(|| missing(key))
    }
}

fn setting(key: &str) -> &'static Setting {
    // Invariant: every key used in this file is in the table (checked by a unit test).
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .expect("key is in SETTINGS")
}

fn missing(key: &'static str) -> ConfigError {
    let s = setting(key);
    ConfigError::Missing {
        key,
        env: s.env.join(" or "),
        flag: s.flag,
    }
}

/// A topic segment: non-empty, no MQTT wildcards or separators.
fn topic_segment(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['/', '+', '#', '\0']) {
        return Err("must be non-empty and free of '/', '+', '#'".into());
    }
    Ok(text.to_owned())
}

fn text(t: &str) -> Result<String, String> {
    Ok(t.to_owned())
}

fn readable_file(t: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(t);
    std::fs::metadata(&path).map_err(|e| format!("cannot read {t}: {e}"))?;
    Ok(path)
}

fn usize_in(min: u64, max: u64) -> impl Fn(&str) -> Result<usize, String> {
    move |t| values::bounded(t, min, max).map(|n| n as usize)
}

/// Settings without which a proplet cannot start.
const REQUIRED: [&str; 3] = ["tenant_id", "channel_id", "entity_id"];

/// Every missing required setting at once, rather than one per attempt.
fn check_required(r: &Reader<'_>) -> Result<(), ConfigError> {
    let mut absent: Vec<ConfigError> = REQUIRED
        .into_iter()
        .filter(|key| r.text(key).is_none())
        .map(missing)
        .collect();
    match absent.len() {
        0 => Ok(()),
        1 => Err(absent.remove(0)),
        _ => Err(ConfigError::MissingSeveral(
            absent
                .iter()
                .map(|e| e.to_string().replace("missing required setting ", ""))
                .collect(),
        )),
    }
}

/// Builds the typed configuration.
pub fn from_layers(layers: Layers) -> Result<Config, ConfigError> {
    let r = Reader { layers: &layers };
    check_required(&r)?;
    let proplet_id = r.req("entity_id", topic_segment)?;
    let identity = Identity {
        tenant_id: r.req("tenant_id", topic_segment)?,
        channel_id: r.req("channel_id", topic_segment)?,
        client_id: r
            .opt("instance_id", text)?
            .unwrap_or_else(|| proplet_id.clone()),
        api_key: r.opt("api_key", text)?,
        namespace: r.req("namespace", text)?,
        proplet_id,
    };
    let config = Config {
        identity,
        mqtt: mqtt(&r)?,
        liveliness_interval: r.req("liveliness_interval", positive_duration)?,
        tasks: tasks(&r)?,
        fetch: fetch(&r)?,
        budgets: budgets(&r)?,
        admission: admission(&r)?,
        metadata: MetadataSettings {
            description: r.text("description"),
            tags: r.text("tags").map(|t| values::list(&t)).unwrap_or_default(),
            location: r.text("location"),
        },
        log: LogSettings {
            level: r.req("log_level", text)?,
            json: r.req("log_format", log_format)?,
        },
        otel: super::otel::settings(&r)?,
        metrics_addr: r.opt("metrics_addr", socket_addr)?,
        layers: layers.clone(),
    };
    Ok(config)
}

fn positive_duration(t: &str) -> Result<std::time::Duration, String> {
    values::duration(t).and_then(|d| {
        if d.is_zero() {
            Err("must be greater than zero".into())
        } else {
            Ok(d)
        }
    })
}

fn socket_addr(t: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    t.to_socket_addrs()
        .map_err(|e| format!("expected host:port: {e}"))?
        .next()
        .ok_or_else(|| "the name has no address".to_owned())
}

fn log_format(t: &str) -> Result<bool, String> {
    match t {
        "text" => Ok(false),
        "json" => Ok(true),
        _ => Err("expected text or json".into()),
    }
}

fn mqtt(r: &Reader<'_>) -> Result<MqttConfig, ConfigError> {
    let address: BrokerAddress = r.req("mqtt_address", values::broker_address)?;
    let cert = r.opt("mqtt_tls_client_cert", readable_file)?;
    let key = r.opt("mqtt_tls_client_key", readable_file)?;
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(missing("mqtt_tls_client_key")),
        (None, Some(_)) => return Err(missing("mqtt_tls_client_cert")),
    };
    Ok(MqttConfig {
        address,
        qos: r.req("mqtt_qos", values::qos)?,
        timeout: r.req("mqtt_timeout", positive_duration)?,
        keep_alive: r.req("mqtt_keep_alive", |t| {
            values::duration(t).and_then(|d| {
                if d.as_secs() >= 1 || d.is_zero() {
                    Ok(d)
                } else {
                    Err("must be 0 or at least 1s".into())
                }
            })
        })?,
        max_packet_size: r.req("mqtt_max_packet_size", |t| {
            values::bytes(t)
                .and_then(|b| values::bounded(&b.to_string(), 1024, 268_435_455))
                .map(|b| b as usize)
        })?,
        inflight: r.req("mqtt_inflight", |t| {
            values::bounded(t, 1, u16::MAX.into()).map(|n| n as u16)
        })?,
        request_channel_capacity: r.req("mqtt_request_channel_capacity", usize_in(1, 1 << 20))?,
        clean_session: r.req("mqtt_clean_session", values::boolean)?,
        tls: TlsFiles {
            ca_cert: r.opt("mqtt_tls_ca_cert", readable_file)?,
            client,
        },
    })
}

fn tasks(r: &Reader<'_>) -> Result<TaskSettings, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let max = r
        .opt("max_concurrent_tasks", usize_in(1, 65_536))?
        .unwrap_or(cores);
    Ok(TaskSettings {
        max_concurrent: NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN),
        queue_capacity: r.req("task_queue_capacity", usize_in(0, 1 << 20))?,
        queue_bytes: r.req("task_queue_bytes", |t| values::bytes(t).and_then(nonzero))?,
        scratch_bytes: r.req("scratch_limit", |t| values::bytes(t).and_then(nonzero))?,
        drain_timeout: r.req("drain_timeout", values::duration)?,
        module_cache_entries: r.req("module_cache_entries", usize_in(1, 1 << 16))?,
        latent_max_bytes: r.req("latent_max_bytes", |t| values::bytes(t).and_then(nonzero))?,
        module_cache_bytes: r.req("module_cache_bytes", |t| {
            values::bytes(t)
                .and_then(nonzero)
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
        })?,
        external_runtime: r.opt("external_wasm_runtime", |t| Ok(PathBuf::from(t)))?,
        volumes: r
            .opt("volumes", crate::sandbox::capabilities::parse_volumes)?
            .unwrap_or_default(),
        net_allow: r
            .opt("net_allow", crate::sandbox::network::parse_net_allow)?
            .unwrap_or_default(),
    })
}

fn fetch(r: &Reader<'_>) -> Result<FetchSettings, ConfigError> {
    Ok(FetchSettings {
        chunk_timeout: r.req("chunk_timeout", positive_duration)?,
        max_binary_bytes: r.req("max_binary_size", |t| values::bytes(t).and_then(nonzero))?,
        max_assemblies: r.req("max_chunk_assemblies", usize_in(1, 4096))?,
        http_timeout: r.req("http_fetch_timeout", positive_duration)?,
    })
}

fn nonzero(n: u64) -> Result<u64, String> {
    if n == 0 {
        Err("must be greater than zero".into())
    } else {
        Ok(n)
    }
}

fn budgets(r: &Reader<'_>) -> Result<Budgets, ConfigError> {
    let deadline = |key: &'static str| -> Result<Option<std::time::Duration>, ConfigError> {
        let t = r.req(key, values::duration)?;
        Ok((!t.is_zero()).then_some(t))
    };
    let memory = |key: &'static str| {
        r.req(key, |t| {
            values::bytes(t).and_then(|b| values::bounded(&b.to_string(), 65_536, 1 << 40))
        })
    };
    let output = |key: &'static str| {
        r.req(key, |t| {
            values::bytes(t).and_then(nonzero).map(|b| b as usize)
        })
    };
    let fuel = |key: &'static str| r.opt(key, |t| values::bounded(t, 1, u64::MAX));
    let budgets = Budgets {
        default: Limits {
            timeout: deadline("task_timeout")?,
            memory_bytes: memory("task_memory")?,
            output_bytes: output("output_limit")?,
            fuel: fuel("task_fuel")?,
        },
        max: Limits {
            timeout: deadline("task_timeout_max")?,
            memory_bytes: memory("task_memory_max")?,
            output_bytes: output("output_limit_max")?,
            fuel: fuel("task_fuel_max")?,
        },
    };
    budgets.validate().map_err(ConfigError::Inconsistent)?;
    Ok(budgets)
}

fn admission(r: &Reader<'_>) -> Result<Policy, ConfigError> {
    let sources = r.req("allowed_sources", |t| {
        Policy::new(t, false, Vec::new()).map(|_| t.to_owned())
    })?;
    let required = r.req("require_signature", values::boolean)?;
    let keys = r
        .opt(
            "trusted_keys",
            crate::sandbox::admission::parse_trusted_keys,
        )?
        .unwrap_or_default();
    Policy::new(&sources, required, keys).map_err(ConfigError::Inconsistent)
}
