//! The table of every setting: its key, environment names, default and help text.
//!
//! One table drives the environment layer, the TOML keys, the CLI flags, `proplet config`
//! and the README's configuration table, so they cannot drift apart.

/// One configurable value.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// TOML key and internal name (`mqtt_qos`).
    pub key: &'static str,
    /// CLI flag, without the leading dashes (`mqtt-qos`).
    pub flag: &'static str,
    /// Environment variables, preferred name first; later names are accepted aliases.
    pub env: &'static [&'static str],
    /// Default as text; `None` means unset.
    pub default: Option<&'static str>,
    /// Redacted in `proplet config`, logs and errors.
    pub secret: bool,
    /// One line for `--help` and the README.
    pub help: &'static str,
}

const fn s(
    key: &'static str,
    flag: &'static str,
    env: &'static [&'static str],
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        flag,
        env,
        default,
        secret: false,
        help,
    }
}

impl Setting {
    /// The same setting, its value redacted in `proplet config`, logs and errors.
    const fn secret(self) -> Setting {
        Setting {
            secret: true,
            ..self
        }
    }
}

/// Defines each setting as a constant documented by its help text (what the resolver
/// reads, so a misspelt name does not compile) and [`SETTINGS`], the table of all of them
/// in order (so no constant can be left out of it).
macro_rules! settings {
    ($($name:ident = s($key:literal, $flag:literal, $env:expr, $default:expr, $help:literal $(,)?) $(.$then:ident())?;)*) => {
        $(#[doc = $help] pub const $name: Setting = s($key, $flag, $env, $default, $help)$(.$then())?;)*

        /// Every setting, in display order.
        pub const SETTINGS: &[&Setting] = &[$(&$name),*];

        /// Each constant's name with its setting, for the test that they agree.
        #[cfg(test)]
        const NAMED: &[(&str, &Setting)] = &[$((stringify!($name), &$name)),*];
    };
}

settings! {
    TENANT_ID = s(
        "tenant_id",
        "tenant-id",
        &["PROPLET_TENANT_ID", "PROPLET_DOMAIN_ID"],
        None,
        "Tenant (seed era: domain) id: the {A} of the topic base m/{A}/c/{C}. Required.",
    );

    CHANNEL_ID = s(
        "channel_id",
        "channel-id",
        &["PROPLET_CHANNEL_ID"],
        None,
        "Channel id: the {C} of the topic base. Required.",
    );

    ENTITY_ID = s(
        "entity_id",
        "entity-id",
        &["PROPLET_ENTITY_ID", "PROPLET_CLIENT_ID"],
        None,
        "Entity (seed era: client) id: MQTT username and proplet_id in every message. Required.",
    );

    API_KEY = s(
        "api_key",
        "api-key",
        &["PROPLET_API_KEY", "PROPLET_CLIENT_KEY"],
        None,
        "API (seed era: client) key: the MQTT password.",
    )
    .secret();

    INSTANCE_ID = s(
        "instance_id",
        "instance-id",
        &["PROPLET_INSTANCE_ID"],
        None,
        "MQTT client id; defaults to the entity id.",
    );

    NAMESPACE = s(
        "namespace",
        "namespace",
        &["PROPLET_MANAGER_K8S_NAMESPACE"],
        Some("default"),
        "namespace field of discovery and heartbeats.",
    );

    MQTT_ADDRESS = s(
        "mqtt_address",
        "mqtt-address",
        &["PROPLET_MQTT_ADDRESS"],
        Some("tcp://localhost:1883"),
        "Broker: tcp://, mqtt://, ssl://, mqtts:// URL or host:port.",
    );

    MQTT_QOS = s(
        "mqtt_qos",
        "mqtt-qos",
        &["PROPLET_MQTT_QOS"],
        Some("2"),
        "QoS of every publish and subscription: 0, 1 or 2.",
    );

    MQTT_TIMEOUT = s(
        "mqtt_timeout",
        "mqtt-timeout",
        &["PROPLET_MQTT_TIMEOUT"],
        Some("30s"),
        "Connect timeout and the longest wait to hand a message to the client (10 or 10s).",
    );

    MQTT_KEEP_ALIVE = s(
        "mqtt_keep_alive",
        "mqtt-keep-alive",
        &["PROPLET_MQTT_KEEP_ALIVE"],
        Some("30s"),
        "MQTT keep-alive interval.",
    );

    MQTT_MAX_PACKET_SIZE = s(
        "mqtt_max_packet_size",
        "mqtt-max-packet-size",
        &["PROPLET_MQTT_MAX_PACKET_SIZE"],
        Some("10MiB"),
        "Largest MQTT packet accepted or sent.",
    );

    MQTT_INFLIGHT = s(
        "mqtt_inflight",
        "mqtt-inflight",
        &["PROPLET_MQTT_INFLIGHT"],
        Some("10"),
        "Most unacknowledged QoS 1/2 publishes at once (mosquitto allows 20).",
    );

    MQTT_REQUEST_CHANNEL_CAPACITY = s(
        "mqtt_request_channel_capacity",
        "mqtt-request-channel-capacity",
        &["PROPLET_MQTT_REQUEST_CHANNEL_CAPACITY"],
        Some("128"),
        "Capacity of the queue in front of the MQTT client.",
    );

    MQTT_CLEAN_SESSION = s(
        "mqtt_clean_session",
        "mqtt-clean-session",
        &["PROPLET_MQTT_CLEAN_SESSION"],
        Some("false"),
        "Start a clean MQTT session; false keeps starts queued by the broker while the link is down.",
    );

    MQTT_TLS_CA_CERT = s(
        "mqtt_tls_ca_cert",
        "mqtt-tls-ca-cert",
        &["PROPLET_MQTT_TLS_CA_CERT"],
        None,
        "PEM CA bundle for a TLS broker (default: the system roots).",
    );

    MQTT_TLS_CLIENT_CERT = s(
        "mqtt_tls_client_cert",
        "mqtt-tls-client-cert",
        &["PROPLET_MQTT_TLS_CLIENT_CERT"],
        None,
        "PEM client certificate for mutual TLS.",
    );

    MQTT_TLS_CLIENT_KEY = s(
        "mqtt_tls_client_key",
        "mqtt-tls-client-key",
        &["PROPLET_MQTT_TLS_CLIENT_KEY"],
        None,
        "PEM client key for mutual TLS.",
    );

    LIVELINESS_INTERVAL = s(
        "liveliness_interval",
        "liveliness-interval",
        &["PROPLET_LIVELINESS_INTERVAL"],
        Some("5s"),
        "Heartbeat period (10 or 10s); below the manager's 10 s alive window.",
    );

    EXTERNAL_WASM_RUNTIME = s(
        "external_wasm_runtime",
        "external-wasm-runtime",
        &["PROPLET_EXTERNAL_WASM_RUNTIME"],
        None,
        "Run every task with this runtime binary (e.g. wasmtime) instead of in-process.",
    );

    VOLUMES = s(
        "volumes",
        "volumes",
        &["PROPLET_VOLUMES"],
        None,
        "Host directories tasks may mount: name=/dir:ro,other=/dir:rw (default: none; every task still gets a private /tmp).",
    );

    NET_ALLOW = s(
        "net_allow",
        "net-allow",
        &["PROPLET_NET_ALLOW"],
        None,
        "Where guests may connect: host:port patterns (IP, *, localhost, or a name resolved at startup; default: no network).",
    );

    HTTP_ALLOW = s(
        "http_allow",
        "http-allow",
        &["PROPLET_HTTP_ALLOW"],
        None,
        "Origins components may be granted for outbound HTTP: scheme://host[:port], host may be * or *.domain, port may be * (default: no HTTP).",
    );

    HTTP_ALLOW_PRIVATE = s(
        "http_allow_private",
        "http-allow-private",
        &["PROPLET_HTTP_ALLOW_PRIVATE"],
        None,
        "Non-public address ranges (CIDR) that allowed HTTP host names may resolve to; loopback, private and link-local are refused otherwise.",
    );

    HTTP_REQUESTS = s(
        "http_requests",
        "http-requests",
        &["PROPLET_HTTP_REQUESTS"],
        Some("100"),
        "HTTP requests one task may send; one more ends it with http_limit.",
    );

    HTTP_CONCURRENCY = s(
        "http_concurrency",
        "http-concurrency",
        &["PROPLET_HTTP_CONCURRENCY"],
        Some("8"),
        "HTTP requests one task may have in flight; further requests wait for a slot.",
    );

    HTTP_BYTES = s(
        "http_bytes",
        "http-bytes",
        &["PROPLET_HTTP_BYTES"],
        Some("16MiB"),
        "Bytes of HTTP request and response bodies one task may move; past it the task ends with http_limit.",
    );

    HTTP_TIMEOUT = s(
        "http_timeout",
        "http-timeout",
        &["PROPLET_HTTP_TIMEOUT"],
        Some("30s"),
        "Longest one outbound HTTP request may take, response body included; the guest then gets connection-timeout.",
    );

    CONFIG_DIR = s(
        "config_dir",
        "config-dir",
        &["PROPLET_CONFIG_DIR"],
        None,
        "Directory of operator configuration values for wasi:config, one file per key (as systemd credentials or Kubernetes secrets); read per task, never logged.",
    );

    CONFIG_ALLOW = s(
        "config_allow",
        "config-allow",
        &["PROPLET_CONFIG_ALLOW"],
        None,
        "Which tasks may read which operator values: KEY=WHO[|WHO...],... where WHO is a task name pattern (* wildcard) or sha256:<hex> of the binary (default: none).",
    );

    KV_BUCKETS = s(
        "kv_buckets",
        "kv-buckets",
        &["PROPLET_KV_BUCKETS"],
        None,
        "Key-value buckets components may open (wasi:keyvalue), kept in the state directory: name=BYTES/KEYS,... (default: none).",
    );

    ENABLE_MONITORING = s(
        "enable_monitoring",
        "enable-monitoring",
        &["PROPLET_ENABLE_MONITORING"],
        Some("true"),
        "Publish control/proplet/metrics (the process) and control/proplet/task_metrics (each running task, as its monitoring_profile asks).",
    );

    METRICS_INTERVAL = s(
        "metrics_interval",
        "metrics-interval",
        &["PROPLET_METRICS_INTERVAL"],
        Some("10s"),
        "Period of control/proplet/metrics (0: none); task metrics follow each task's monitoring_profile.",
    );

    MAX_CONCURRENT_TASKS = s(
        "max_concurrent_tasks",
        "max-concurrent-tasks",
        &["PROPLET_MAX_CONCURRENT_TASKS"],
        None,
        "Tasks that run at once (default: the number of cores).",
    );

    TASK_QUEUE_CAPACITY = s(
        "task_queue_capacity",
        "task-queue-capacity",
        &["PROPLET_TASK_QUEUE_CAPACITY"],
        Some("1024"),
        "Tasks that may wait for a slot; beyond that a start is answered 'overloaded'.",
    );

    SCRATCH_LIMIT = s(
        "scratch_limit",
        "scratch-limit",
        &["PROPLET_SCRATCH_LIMIT"],
        Some("64MiB"),
        "Bytes a task's private /tmp may hold (at most 10,000 entries); past it the task ends with output_limit.",
    );

    TASK_QUEUE_BYTES = s(
        "task_queue_bytes",
        "task-queue-bytes",
        &["PROPLET_TASK_QUEUE_BYTES"],
        Some("256MiB"),
        "Bytes of binaries that tasks waiting for a slot may hold; beyond that a start is answered 'overloaded'.",
    );

    OUTBOX_MAX_BYTES = s(
        "outbox_max_bytes",
        "outbox-max-bytes",
        &["PROPLET_OUTBOX_MAX_BYTES"],
        Some("64MiB"),
        "Bytes of results the durable outbox may hold unacknowledged (the broker away); beyond that a start is answered 'overloaded'.",
    );

    DRAIN_TIMEOUT = s(
        "drain_timeout",
        "drain-timeout",
        &["PROPLET_DRAIN_TIMEOUT"],
        Some("30s"),
        "On SIGINT/SIGTERM, how long running tasks may finish before they are cancelled.",
    );

    TASK_TIMEOUT = s(
        "task_timeout",
        "task-timeout",
        &["PROPLET_TASK_TIMEOUT"],
        Some("10m"),
        "Wall-clock deadline of a non-daemon task (0 = none).",
    );

    TASK_MEMORY = s(
        "task_memory",
        "task-memory",
        &["PROPLET_TASK_MEMORY"],
        Some("256MiB"),
        "Linear memory a guest may allocate.",
    );

    TASK_TIMEOUT_MAX = s(
        "task_timeout_max",
        "task-timeout-max",
        &["PROPLET_TASK_TIMEOUT_MAX"],
        Some("1h"),
        "Longest deadline a task may ask for with limits.timeout_ms (0 = no cap).",
    );

    TASK_MEMORY_MAX = s(
        "task_memory_max",
        "task-memory-max",
        &["PROPLET_TASK_MEMORY_MAX"],
        Some("1GiB"),
        "Most linear memory a task may ask for with limits.memory_bytes.",
    );

    OUTPUT_LIMIT = s(
        "output_limit",
        "output-limit",
        &["PROPLET_OUTPUT_LIMIT"],
        Some("1MiB"),
        "Bytes of stdout, of stderr, and of log lines plus result kept per task; more is output_limit.",
    );

    OUTPUT_LIMIT_MAX = s(
        "output_limit_max",
        "output-limit-max",
        &["PROPLET_OUTPUT_LIMIT_MAX"],
        Some("8MiB"),
        "Largest output budget a task may ask for with limits.output_bytes.",
    );

    TASK_FUEL = s(
        "task_fuel",
        "task-fuel",
        &["PROPLET_TASK_FUEL"],
        None,
        "Fuel (Wasmtime instruction budget) of a task that asks for none (default: unmetered).",
    );

    TASK_FUEL_MAX = s(
        "task_fuel_max",
        "task-fuel-max",
        &["PROPLET_TASK_FUEL_MAX"],
        None,
        "Most fuel a task may ask for; setting it or PROPLET_TASK_FUEL turns metering on.",
    );

    ALLOWED_SOURCES = s(
        "allowed_sources",
        "allowed-sources",
        &["PROPLET_ALLOWED_SOURCES"],
        Some("inline,registry,http"),
        "Where binaries may come from: inline, registry, http (any URL), https, or host names (*.example.com).",
    );

    REQUIRE_SIGNATURE = s(
        "require_signature",
        "require-signature",
        &["PROPLET_REQUIRE_SIGNATURE"],
        Some("false"),
        "Refuse binaries without a valid ed25519 signature by a trusted key.",
    );

    TRUSTED_KEYS = s(
        "trusted_keys",
        "trusted-keys",
        &["PROPLET_TRUSTED_KEYS"],
        None,
        "Trusted ed25519 public keys: comma-separated ed25519:<base64>, or key files (one per line).",
    );

    STATE_DIR = s(
        "state_dir",
        "state-dir",
        &["PROPLET_STATE_DIR"],
        None,
        "Directory for the task journal, private (0700) and locked to one proplet; unset: $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/proplet, else ~/.local/state/proplet.",
    );

    MODULE_CACHE_ENTRIES = s(
        "module_cache_entries",
        "module-cache-entries",
        &["PROPLET_MODULE_CACHE_ENTRIES"],
        Some("64"),
        "Compiled modules kept in memory, keyed by content digest.",
    );

    MODULE_CACHE_BYTES = s(
        "module_cache_bytes",
        "module-cache-bytes",
        &["PROPLET_MODULE_CACHE_BYTES"],
        Some("512MiB"),
        "Bytes of compiled code kept in memory; the least recently used modules are dropped beyond it.",
    );

    INSTANCE_ALLOCATOR = s(
        "instance_allocator",
        "instance-allocator",
        &["PROPLET_INSTANCE_ALLOCATOR"],
        Some("auto"),
        "auto, pooling or on-demand: pooling reserves each task's memories and stacks once and reuses them (auto: where the address space allows).",
    );

    CACHE_DIR = s(
        "cache_dir",
        "cache-dir",
        &["PROPLET_CACHE_DIR"],
        None,
        "Directory of compiled code kept across restarts (private, 0700; shared with proplet run); off turns it off; unset: $CACHE_DIRECTORY (systemd), else $XDG_CACHE_HOME/proplet, else ~/.cache/proplet.",
    );

    CACHE_MAX_BYTES = s(
        "cache_max_bytes",
        "cache-max-bytes",
        &["PROPLET_CACHE_MAX_BYTES"],
        Some("1GiB"),
        "Bytes of compiled code the cache directory may hold; the least recently used entries go beyond it.",
    );

    LATENT_MAX_BYTES = s(
        "latent_max_bytes",
        "latent-max-bytes",
        &["PROPLET_LATENT_MAX_BYTES"],
        Some("256MiB"),
        "Bytes of binaries that deployed latent tasks may hold (at most PROPLET_MODULE_CACHE_ENTRIES tasks); beyond that a deploy is answered 'overloaded'.",
    );

    CHUNK_TIMEOUT = s(
        "chunk_timeout",
        "chunk-timeout",
        &["PROPLET_CHUNK_TIMEOUT"],
        Some("60s"),
        "How long a task waits for registry chunks.",
    );

    MAX_BINARY_SIZE = s(
        "max_binary_size",
        "max-binary-size",
        &["PROPLET_MAX_BINARY_SIZE"],
        Some("100MiB"),
        "Largest binary accepted from any source.",
    );

    MAX_CHUNK_ASSEMBLIES = s(
        "max_chunk_assemblies",
        "max-chunk-assemblies",
        &["PROPLET_MAX_CHUNK_ASSEMBLIES"],
        Some("16"),
        "Registry transfers assembled at once.",
    );

    HTTP_FETCH_TIMEOUT = s(
        "http_fetch_timeout",
        "http-fetch-timeout",
        &["PROPLET_HTTP_FETCH_TIMEOUT"],
        Some("30s"),
        "Timeout of an http(s):// image_url download.",
    );

    DESCRIPTION = s(
        "description",
        "description",
        &["PROPLET_DESCRIPTION"],
        None,
        "Discovery metadata: description.",
    );

    TAGS = s(
        "tags",
        "tags",
        &["PROPLET_TAGS"],
        None,
        "Discovery metadata: comma-separated tags.",
    );

    LOCATION = s(
        "location",
        "location",
        &["PROPLET_LOCATION"],
        None,
        "Discovery metadata: location.",
    );

    LOG_LEVEL = s(
        "log_level",
        "log-level",
        &["PROPLET_LOG_LEVEL"],
        Some("info"),
        "Log filter: error, warn, info, debug, trace or a tracing directive (RUST_LOG wins).",
    );

    LOG_FORMAT = s(
        "log_format",
        "log-format",
        &["PROPLET_LOG_FORMAT"],
        Some("text"),
        "Log format: text or json (JSON lines carry trace_id and span_id).",
    );

    OTEL_ENDPOINT = s(
        "otel_endpoint",
        "otel-endpoint",
        &["OTEL_EXPORTER_OTLP_ENDPOINT", "PROPLET_OTEL_URL"],
        None,
        "OTLP collector base URL (http/protobuf appends /v1/traces); unset = no trace export.",
    );

    OTEL_TRACES_ENDPOINT = s(
        "otel_traces_endpoint",
        "otel-traces-endpoint",
        &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        None,
        "Full OTLP traces URL; wins over OTEL_EXPORTER_OTLP_ENDPOINT.",
    );

    OTEL_PROTOCOL = s(
        "otel_protocol",
        "otel-protocol",
        &["OTEL_EXPORTER_OTLP_PROTOCOL"],
        Some("http/protobuf"),
        "OTLP transport: http/protobuf or grpc.",
    );

    OTEL_HEADERS = s(
        "otel_headers",
        "otel-headers",
        &["OTEL_EXPORTER_OTLP_HEADERS"],
        None,
        "Headers sent to the collector: key=value,key2=value2 (e.g. an API key).",
    )
    .secret();

    OTEL_SERVICE_NAME = s(
        "otel_service_name",
        "otel-service-name",
        &["OTEL_SERVICE_NAME"],
        Some("proplet"),
        "service.name of exported spans.",
    );

    OTEL_RESOURCE_ATTRIBUTES = s(
        "otel_resource_attributes",
        "otel-resource-attributes",
        &["OTEL_RESOURCE_ATTRIBUTES"],
        None,
        "Extra resource attributes: key=value,key2=value2.",
    );

    OTEL_TRACES_SAMPLER = s(
        "otel_traces_sampler",
        "otel-traces-sampler",
        &["OTEL_TRACES_SAMPLER"],
        Some("parentbased_always_on"),
        "always_on, always_off, traceidratio, or parentbased_ of any of them.",
    );

    OTEL_TRACES_SAMPLER_ARG = s(
        "otel_traces_sampler_arg",
        "otel-traces-sampler-arg",
        &["OTEL_TRACES_SAMPLER_ARG"],
        None,
        "The ratio for the traceidratio samplers (0 to 1; default 1).",
    );

    OTEL_SDK_DISABLED = s(
        "otel_sdk_disabled",
        "otel-sdk-disabled",
        &["OTEL_SDK_DISABLED"],
        Some("false"),
        "true turns trace export off whatever else is set.",
    );

    METRICS_ADDR = s(
        "metrics_addr",
        "metrics-addr",
        &["PROPLET_METRICS_ADDR"],
        None,
        "host:port of the HTTP endpoint with /healthz, /readyz and Prometheus /metrics (unset = off).",
    );

    CPU_LATENCY = s(
        "cpu_latency",
        "cpu-latency",
        &["PROPLET_CPU_LATENCY"],
        None,
        "Hold a CPU wake-up latency limit (Linux PM QoS, /dev/cpu_dma_latency, which needs root) for as long as the daemon runs, like 0 or 20us: idle cores stay out of deeper sleep (on a VM, out of the hypervisor's halt), so hand-offs wake faster, and idle cores burn power polling. Unset: none.",
    );
}

/// Seed-era TOML keys (`[proplet]` section written by upstream provisioning) → our keys.
pub const LEGACY_KEYS: &[(&str, &str)] = &[
    ("domain_id", "tenant_id"),
    ("client_id", "entity_id"),
    ("client_key", "api_key"),
];

/// The setting with TOML key `key` (legacy names included).
pub fn by_key(key: &str) -> Option<&'static Setting> {
    let key = LEGACY_KEYS
        .iter()
        .find(|(old, _)| *old == key)
        .map_or(key, |(_, new)| new);
    SETTINGS.iter().find(|s| s.key == key).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_flags_and_env_names_are_unique_and_consistent() {
        let mut seen = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(seen.insert(s.key), "duplicate key {}", s.key);
            assert_eq!(s.flag, s.key.replace('_', "-"));
            for e in s.env {
                let named = e.starts_with("PROPLET_") || e.starts_with("OTEL_");
                assert!(named && seen.insert(e), "bad env {e}");
            }
        }
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../README.md");
        for s in SETTINGS {
            for e in s.env {
                assert!(
                    readme.contains(&format!("`{e}`")),
                    "README does not document {e}"
                );
            }
            assert!(
                readme.contains(&format!("`--{}`", s.flag)),
                "README does not list --{}",
                s.flag
            );
            if let Some(d) = s.default {
                assert!(
                    readme.contains(&format!("| `{d}` |")),
                    "README lacks the default of {}",
                    s.key
                );
            }
        }
    }

    #[test]
    fn each_constant_is_named_after_its_key() {
        for (name, setting) in NAMED {
            assert_eq!(name.to_lowercase(), setting.key);
        }
        assert_eq!(NAMED.len(), SETTINGS.len());
    }

    #[test]
    fn legacy_keys_resolve() {
        assert_eq!(by_key("client_key").map(|s| s.key), Some("api_key"));
        assert_eq!(by_key("nope").map(|s| s.key), None);
    }
}
