//! Logging setup: human-readable text or JSON lines, filtered by `RUST_LOG` or the
//! configured level.

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Targets that log guest output or message payloads at debug and trace level; they are
/// capped whatever the configured level, so logs never carry payloads.
const PAYLOAD_TARGETS: [&str; 1] = ["wasmtime_wasi=info"];

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(log: &LogSettings) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in PAYLOAD_TARGETS {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if log.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}
