//! Connection failures, logged once per kind: while the broker is away the worker retries
//! every few seconds, and the log says what is wrong when it changes, not on every attempt.

use rumqttc::ConnectionError;
use tracing::{debug, info, warn};

/// The failures since the last successful connection.
#[derive(Debug, Default)]
pub(super) struct Failures {
    /// The text of the last failure logged as a warning.
    last: Option<String>,
    /// Attempts that failed since the last successful connection.
    attempts: u64,
}

impl Failures {
    /// Logs `e`: a warning when it differs from the failure before, else at debug level.
    pub(super) fn report(&mut self, e: &ConnectionError) {
        self.attempts += 1;
        let text = e.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            return debug!(attempt = self.attempts, error = %text, "MQTT connection failed again");
        }
        warn!(attempt = self.attempts, error = %text, "MQTT connection error; reconnecting (repeats of it are logged at debug level)");
        self.last = Some(text);
    }

    /// A connection succeeded: says after how many failed attempts, and forgets them.
    pub(super) fn connected(&mut self) {
        if self.attempts > 1 {
            info!(
                failed_attempts = self.attempts,
                "connected after repeated failures"
            );
        }
        *self = Failures::default();
    }
}
