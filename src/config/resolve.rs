//! Turns merged [`Layers`] into a typed, validated [`Config`].

use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::reader::{Reader, missing};
use super::settings::*;
use super::values::{self, BrokerAddress};
use super::*;
use crate::sandbox::Limits;

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
const REQUIRED: [&Setting; 3] = [&TENANT_ID, &CHANNEL_ID, &ENTITY_ID];

/// Every missing required setting at once, rather than one per attempt.
fn check_required(r: &Reader<'_>) -> Result<(), ConfigError> {
    let mut absent: Vec<ConfigError> = REQUIRED
        .into_iter()
        .filter(|setting| r.text(setting).is_none())
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
    let r = Reader::new(&layers);
    check_required(&r)?;
    let proplet_id = r.req(&ENTITY_ID, topic_segment)?;
    let identity = Identity {
        tenant_id: r.req(&TENANT_ID, topic_segment)?,
        channel_id: r.req(&CHANNEL_ID, topic_segment)?,
        client_id: r
            .opt(&INSTANCE_ID, text)?
            .unwrap_or_else(|| proplet_id.clone()),
        api_key: r.opt(&API_KEY, text)?,
        namespace: r.req(&NAMESPACE, text)?,
        proplet_id,
    };
    let config = Config {
        identity,
        mqtt: mqtt(&r)?,
        liveliness_interval: r.req(&LIVELINESS_INTERVAL, positive_duration)?,
        tasks: tasks(&r)?,
        fetch: fetch(&r)?,
        budgets: budgets(&r)?,
        admission: admission(&r)?,
        metadata: MetadataSettings {
            description: r.text(&DESCRIPTION),
            tags: r.text(&TAGS).map(|t| values::list(&t)).unwrap_or_default(),
            location: r.text(&LOCATION),
        },
        log: LogSettings {
            level: r.req(&LOG_LEVEL, text)?,
            json: r.req(&LOG_FORMAT, log_format)?,
        },
        otel: super::otel::settings(&r)?,
        metrics_addr: r.opt(&METRICS_ADDR, socket_addr)?,
        state_dir: r.opt(&STATE_DIR, |t| Ok(PathBuf::from(t)))?,
        cache_dir: r.opt(&CACHE_DIR, |t| Ok(PathBuf::from(t)))?,
        cache_max_bytes: r.req(&CACHE_MAX_BYTES, |t| values::bytes(t).and_then(nonzero))?,
        cpu_latency: r.opt(&CPU_LATENCY, values::cpu_latency)?,
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
    let address: BrokerAddress = r.req(&MQTT_ADDRESS, values::broker_address)?;
    let cert = r.opt(&MQTT_TLS_CLIENT_CERT, readable_file)?;
    let key = r.opt(&MQTT_TLS_CLIENT_KEY, readable_file)?;
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(missing(&MQTT_TLS_CLIENT_KEY)),
        (None, Some(_)) => return Err(missing(&MQTT_TLS_CLIENT_CERT)),
    };
    Ok(MqttConfig {
        address,
        qos: r.req(&MQTT_QOS, values::qos)?,
        timeout: r.req(&MQTT_TIMEOUT, positive_duration)?,
        keep_alive: r.req(&MQTT_KEEP_ALIVE, |t| {
            values::duration(t).and_then(|d| {
                if d.as_secs() >= 1 || d.is_zero() {
                    Ok(d)
                } else {
                    Err("must be 0 or at least 1s".into())
                }
            })
        })?,
        max_packet_size: r.req(&MQTT_MAX_PACKET_SIZE, |t| {
            values::bytes(t)
                .and_then(|b| values::bounded(&b.to_string(), 1024, 268_435_455))
                .map(|b| b as usize)
        })?,
        inflight: r.req(&MQTT_INFLIGHT, |t| {
            values::bounded(t, 1, u16::MAX.into()).map(|n| n as u16)
        })?,
        request_channel_capacity: r.req(&MQTT_REQUEST_CHANNEL_CAPACITY, usize_in(1, 1 << 20))?,
        clean_session: r.req(&MQTT_CLEAN_SESSION, values::boolean)?,
        tls: TlsFiles {
            ca_cert: r.opt(&MQTT_TLS_CA_CERT, readable_file)?,
            client,
        },
    })
}

fn tasks(r: &Reader<'_>) -> Result<TaskSettings, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let max = r
        .opt(&MAX_CONCURRENT_TASKS, usize_in(1, 65_536))?
        .unwrap_or(cores);
    Ok(TaskSettings {
        max_concurrent: NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN),
        queue_capacity: r.req(&TASK_QUEUE_CAPACITY, usize_in(0, 1 << 20))?,
        queue_bytes: r.req(&TASK_QUEUE_BYTES, |t| values::bytes(t).and_then(nonzero))?,
        outbox_max_bytes: r.req(&OUTBOX_MAX_BYTES, |t| values::bytes(t).and_then(nonzero))?,
        scratch_bytes: r.req(&SCRATCH_LIMIT, |t| values::bytes(t).and_then(nonzero))?,
        drain_timeout: r.req(&DRAIN_TIMEOUT, values::duration)?,
        module_cache_entries: r.req(&MODULE_CACHE_ENTRIES, usize_in(1, 1 << 16))?,
        latent_max_bytes: r.req(&LATENT_MAX_BYTES, |t| values::bytes(t).and_then(nonzero))?,
        module_cache_bytes: r.req(&MODULE_CACHE_BYTES, |t| {
            values::bytes(t)
                .and_then(nonzero)
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
        })?,
        instance_allocator: r.req(&INSTANCE_ALLOCATOR, |t| t.parse())?,
        external_runtime: r.opt(&EXTERNAL_WASM_RUNTIME, |t| Ok(PathBuf::from(t)))?,
        volumes: r
            .opt(&VOLUMES, crate::sandbox::capabilities::parse_volumes)?
            .unwrap_or_default(),
        net_allow: r
            .opt(&NET_ALLOW, crate::sandbox::network::parse_net_allow)?
            .unwrap_or_default(),
        apis: host_apis(r)?,
        monitoring: r.req(&ENABLE_MONITORING, values::boolean)?,
        metrics_interval: r.req(&METRICS_INTERVAL, values::duration)?,
    })
}

pub(super) fn host_apis(r: &Reader<'_>) -> Result<super::HostApis, ConfigError> {
    Ok(super::HostApis {
        http: http_policy(r)?,
        config: config_policy(r)?,
        kv: kv_policy(r)?,
    })
}

fn kv_policy(r: &Reader<'_>) -> Result<crate::sandbox::kv::KvPolicy, ConfigError> {
    let parse = |t: &str| crate::sandbox::kv::KvPolicy::parse(t, values::bytes);
    Ok(r.opt(&KV_BUCKETS, parse)?.unwrap_or_default())
}

fn config_policy(r: &Reader<'_>) -> Result<crate::sandbox::ConfigPolicy, ConfigError> {
    use crate::sandbox::ConfigPolicy;
    let policy = r
        .opt(&CONFIG_ALLOW, ConfigPolicy::from_allow)?
        .unwrap_or_default();
    let with_dir = r.opt(&CONFIG_DIR, |t| policy.with_dir(std::path::Path::new(t)))?;
    Ok(with_dir.unwrap_or(policy))
}

fn http_policy(r: &Reader<'_>) -> Result<crate::sandbox::HttpPolicy, ConfigError> {
    use crate::sandbox::http::{parse_origins, parse_ranges};
    Ok(crate::sandbox::HttpPolicy {
        allow: r.opt(&HTTP_ALLOW, parse_origins)?.unwrap_or_default(),
        private: r
            .opt(&HTTP_ALLOW_PRIVATE, parse_ranges)?
            .unwrap_or_default(),
        limits: crate::sandbox::HttpLimits {
            requests: r.req(&HTTP_REQUESTS, |t| values::bounded(t, 0, u64::MAX))?,
            concurrency: r.req(&HTTP_CONCURRENCY, usize_in(1, 1024))?,
            bytes: r.req(&HTTP_BYTES, values::bytes)?,
            timeout: r.req(&HTTP_TIMEOUT, positive_duration)?,
        },
    })
}

fn fetch(r: &Reader<'_>) -> Result<FetchSettings, ConfigError> {
    Ok(FetchSettings {
        chunk_timeout: r.req(&CHUNK_TIMEOUT, positive_duration)?,
        max_binary_bytes: r.req(&MAX_BINARY_SIZE, |t| values::bytes(t).and_then(nonzero))?,
        max_assemblies: r.req(&MAX_CHUNK_ASSEMBLIES, usize_in(1, 4096))?,
        http_timeout: r.req(&HTTP_FETCH_TIMEOUT, positive_duration)?,
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
    let deadline = |key: &'static Setting| -> Result<Option<std::time::Duration>, ConfigError> {
        let t = r.req(key, values::duration)?;
        Ok((!t.is_zero()).then_some(t))
    };
    let memory = |key: &'static Setting| {
        r.req(key, |t| {
            values::bytes(t).and_then(|b| values::bounded(&b.to_string(), 65_536, 1 << 40))
        })
    };
    let output = |key: &'static Setting| {
        r.req(key, |t| {
            values::bytes(t).and_then(nonzero).map(|b| b as usize)
        })
    };
    let fuel = |key: &'static Setting| r.opt(key, |t| values::bounded(t, 1, u64::MAX));
    let budgets = Budgets {
        default: Limits {
            timeout: deadline(&TASK_TIMEOUT)?,
            memory_bytes: memory(&TASK_MEMORY)?,
            output_bytes: output(&OUTPUT_LIMIT)?,
            fuel: fuel(&TASK_FUEL)?,
        },
        max: Limits {
            timeout: deadline(&TASK_TIMEOUT_MAX)?,
            memory_bytes: memory(&TASK_MEMORY_MAX)?,
            output_bytes: output(&OUTPUT_LIMIT_MAX)?,
            fuel: fuel(&TASK_FUEL_MAX)?,
        },
    };
    budgets.validate().map_err(ConfigError::Inconsistent)?;
    Ok(budgets)
}

fn admission(r: &Reader<'_>) -> Result<Policy, ConfigError> {
    let sources = r.req(&ALLOWED_SOURCES, |t| {
        Policy::new(t, false, Vec::new()).map(|_| t.to_owned())
    })?;
    let required = r.req(&REQUIRE_SIGNATURE, values::boolean)?;
    let keys = r
        .opt(&TRUSTED_KEYS, crate::sandbox::admission::parse_trusted_keys)?
        .unwrap_or_default();
    Policy::new(&sources, required, keys).map_err(ConfigError::Inconsistent)
}
