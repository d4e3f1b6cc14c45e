//! Telemetry: logs (text or JSON lines with trace ids), OpenTelemetry traces exported over
//! OTLP, trace context across MQTT, and Prometheus metrics with health endpoints.
//!
//! Without an OTLP endpoint no OpenTelemetry layer is installed at all and nothing is
//! exported. Text log lines never show spans, so with text logs (and a filter that does not
//! pick lines by span) spans are then disabled where they are made and cost nothing; JSON
//! lines list the spans they were written in, so JSON logs keep them.

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
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

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
    if subscriber(log, provider.as_ref()).try_init().is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    Ok(Telemetry { provider })
}

/// The log layer and, with a provider, the OpenTelemetry layer. (No layer at all in place
/// of the absent one: even an absent `Option` layer would have every span recorded.)
fn subscriber(
    log: &LogSettings,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync + 'static {
    let mut layers = vec![log_layer(log, provider.is_some())];
    if let Some(p) = provider {
        let spans = Targets::new()
            .with_target("proplet", Level::INFO)
            .with_target("guest", Level::TRACE);
        let otel = tracing_opentelemetry::layer()
            .with_tracer(p.tracer("proplet"))
            .with_filter(spans);
        layers.push(otel.boxed());
    }
    tracing_subscriber::registry().with(layers)
}

/// JSON or concise text lines on stderr, in colour only for a person at a terminal (never
/// into a pipe or the journal). Text lines never show spans: unless spans are `exported`
/// (or the filter picks lines by span), nothing records them, so they are disabled where
/// they are made.
fn log_layer<S>(log: &LogSettings, exported: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if log.json {
        let json = tracing_subscriber::fmt::format().json();
        return fmt
            .event_format(json::WithTraceIds(json))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_filter(filter(log))
            .boxed();
    }
    let text = concise::EventsOnly(
        fmt.event_format(concise::Concise)
            .fmt_fields(escape::EscapedFields::default()),
    );
    if exported || selects_by_span(log) {
        text.with_filter(filter(log)).boxed()
    } else {
        // A hint, so that the filter's level still caps what is made at all (and what
        // `log` records the dependencies build): without one, the combined filter would
        // have none and everything down to TRACE would be made, then dropped.
        let no_spans = filter_fn(|meta| !meta.is_span()).with_max_level_hint(LevelFilter::TRACE);
        text.with_filter(filter(log).and(no_spans)).boxed()
    }
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

/// Whether the log filter picks lines by the span they are in (`target[span]=level`): its
/// spans must then be recorded even when nothing exports them.
fn selects_by_span(log: &LogSettings) -> bool {
    let from_env = std::env::var("RUST_LOG").unwrap_or_default();
    from_env.contains('[') || log.level.contains('[')
}

/// This machine's host name, when it has one.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(level: &str, json: bool) -> LogSettings {
        LogSettings {
            level: level.to_owned(),
            json,
        }
    }

    #[test]
    fn text_logs_alone_leave_spans_disabled_and_events_on() {
        let text = settings("info", false);
        tracing::subscriber::with_default(subscriber(&text, None), || {
            assert!(tracing::info_span!("nobody records this").is_disabled());
            assert!(tracing::enabled!(Level::ERROR));
        });
    }

    #[test]
    fn the_configured_level_caps_what_is_made_at_all() {
        let quiet = subscriber(&settings("info", false), None);
        let hint = quiet.max_level_hint();
        assert!(
            hint.is_some(),
            "no level hint: every TRACE event and log record is made"
        );
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(hint, Some(LevelFilter::INFO));
        }
    }

    #[test]
    fn spans_are_recorded_for_json_lines_a_span_filter_and_an_exporter() {
        let provider = SdkTracerProvider::builder().build();
        let cases = [
            (settings("info", true), None),
            (settings("info,[task]=debug", false), None),
            (settings("info", false), Some(&provider)),
        ];
        for (log, provider) in cases {
            tracing::subscriber::with_default(subscriber(&log, provider), || {
                assert!(!tracing::info_span!("recorded").is_disabled(), "{log:?}");
            });
        }
    }
}
