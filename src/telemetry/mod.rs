//! Telemetry: logs (text or JSON lines with trace ids), OpenTelemetry traces exported over
//! OTLP, trace context across MQTT, and Prometheus metrics with health endpoints.
//!
//! Without an OTLP endpoint no OpenTelemetry layer is installed at all: spans then cost what
//! a disabled `tracing` span costs, and nothing is exported.

mod concise;
mod escape;
pub mod http;
mod json;
mod metrics;
mod otel;
pub mod process;
pub mod trace;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use metrics::Metrics;
pub use trace::TraceHeaders;

use crate::config::{LogSettings, OtelSettings};

/// Targets that log guest output or message payloads at debug and trace level; they are
/// capped whatever the configured level, so logs never carry payloads.
const PAYLOAD_TARGETS: [&str; 1] = ["wasmtime_wasi=info"];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
}

/// The installed pipeline; [`Telemetry::shutdown`] flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter (off the async threads: the batch
    /// processor blocks while it flushes).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("proplet: flushing traces failed: {e}"),
            Err(e) => eprintln!("proplet: flushing traces failed: {e}"),
        }
    }
}

/// Installs the global subscriber: the log layer (`RUST_LOG` wins over the configured
/// level) and, with an endpoint configured, the OpenTelemetry layer (which records the
/// proplet's spans and guest log events whatever the log level). Must run inside the Tokio
/// runtime (the gRPC exporter needs it). A second call keeps the first subscriber.
pub fn init(
    log: &LogSettings,
    otel: &OtelSettings,
    proplet_id: &str,
) -> Result<Telemetry, TelemetryError> {
    let provider = otel::provider(otel, proplet_id)?;
    let otel_layer = provider.as_ref().map(|p| {
        let spans = Targets::new()
            .with_target("proplet", Level::INFO)
            .with_target("guest", Level::TRACE);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("proplet"))
            .with_filter(spans)
    });
    // Colour only for a person at a terminal, never into a pipe or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = if log.json {
        let json = tracing_subscriber::fmt::format().json();
        fmt.event_format(json::WithTraceIds(json))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_filter(filter(log))
            .boxed()
    } else {
        fmt.event_format(concise::Concise)
            .fmt_fields(escape::EscapedFields::default())
            .with_filter(filter(log))
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    Ok(Telemetry { provider })
}

fn filter(log: &LogSettings) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in PAYLOAD_TARGETS {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// This machine's host name, when it has one.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
