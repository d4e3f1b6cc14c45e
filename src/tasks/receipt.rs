//! The usage receipt every result carries: wall time, the guest's meter readings, the
//! budgets it ran under, the binary's digest, and which budget (if any) ended it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::protocol::{Budget, ErrorKind, Outcome, Usage};
use crate::runtime::Digest;
use crate::sandbox::{Limits, Meter};
use crate::telemetry::{TraceHeaders, trace};

/// Collects what a task used from its arrival to its result. Shared with the runtime
/// through the [`Meter`]; the budgets and digest are set once they are known.
#[derive(Debug)]
pub(super) struct Receipt {
    started: Instant,
    meter: Arc<Meter>,
    limits: OnceLock<Limits>,
    digest: OnceLock<Digest>,
    /// The caller's trace context, from the message.
    incoming: TraceHeaders,
}

impl Receipt {
    /// A receipt whose clock starts now, for a message that carried `incoming`.
    pub(super) fn new(incoming: TraceHeaders) -> Self {
        Receipt {
            started: Instant::now(),
            meter: Arc::default(),
            limits: OnceLock::new(),
            digest: OnceLock::new(),
            incoming,
        }
    }

    /// The trace context to hand on from the current (task) span: its own when traces are
    /// exported, else the caller's.
    pub(super) fn outgoing_trace(&self) -> TraceHeaders {
        trace::outgoing(&tracing::Span::current(), &self.incoming)
    }

    /// When the message arrived.
    pub(super) fn arrived(&self) -> Instant {
        self.started
    }

    /// Time since the message arrived.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The meter the runtime writes to.
    pub(super) fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// Records the budgets granted (the first call wins).
    pub(super) fn limits(&self, limits: Limits) {
        // A second grant for the same task would be identical; ignoring it is correct.
        self.limits.set(limits).ok();
    }

    /// Records the binary's digest (the first call wins).
    pub(super) fn digest(&self, digest: &Digest) {
        // The binary of a task never changes; a second record is the same digest.
        self.digest.set(digest.clone()).ok();
    }

    /// Attaches the receipt to an outcome.
    pub(super) fn seal(&self, mut outcome: Outcome) -> Outcome {
        let reading = self.meter.read();
        let limit = outcome.error_kind.filter(|k| {
            matches!(
                k,
                ErrorKind::Timeout
                    | ErrorKind::Memory
                    | ErrorKind::Fuel
                    | ErrorKind::OutputLimit
                    | ErrorKind::HttpLimit
            )
        });
        outcome.digest = self.digest.get().map(ToString::to_string);
        outcome.traceparent = self.outgoing_trace().traceparent;
        outcome.usage = Some(Usage {
            wall_ms: millis(self.started.elapsed()),
            fuel: reading.fuel,
            memory_peak_bytes: reading.memory_peak_bytes,
            output_bytes: reading.output_bytes,
            http_requests: reading.http_requests,
            http_bytes: reading.http_bytes,
            config_reads: reading.config_reads,
            kv_reads: reading.kv_reads,
            kv_writes: reading.kv_writes,
            limit,
            limits: self.limits.get().map(budget),
        });
        outcome
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn budget(limits: &Limits) -> Budget {
    Budget {
        timeout_ms: limits.timeout.map(millis),
        memory_bytes: limits.memory_bytes,
        fuel: limits.fuel,
        output_bytes: u64::try_from(limits.output_bytes).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_names_the_budget_that_tripped() {
        let receipt = Receipt::new(TraceHeaders::default());
        receipt.limits(Limits::default());
        receipt.digest(&Digest::of(b"x"));
        receipt.meter().output(12);
        let out = receipt.seal(Outcome::failed(ErrorKind::Memory, "too big".into()));
        let usage = out.usage.expect("usage");
        assert_eq!(usage.limit, Some(ErrorKind::Memory));
        assert_eq!(usage.output_bytes, 12);
        assert_eq!(usage.memory_peak_bytes, None);
        assert_eq!(usage.limits.map(|b| b.memory_bytes), Some(256 << 20));
        assert!(out.digest.is_some_and(|d| d.starts_with("sha256:")));
        let ok = Receipt::new(TraceHeaders::default()).seal(Outcome::ok("3".into()));
        assert_eq!(ok.usage.map(|u| u.limit), Some(None));
        let trap = Receipt::new(TraceHeaders::default())
            .seal(Outcome::failed(ErrorKind::Trap, "x".into()));
        assert_eq!(trap.usage.map(|u| u.limit), Some(None));
    }
}
