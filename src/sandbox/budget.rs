//! Per-task budgets: node defaults, node maximums, and what a task may ask for in between.

use std::time::Duration;

use super::{CapabilityError, Limits};

/// The budgets a task asks for (start field `limits`, an extension); `None` takes the node
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    /// Wall-clock deadline in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Linear memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Fuel (Wasmtime instruction budget).
    pub fuel: Option<u64>,
    /// Output budget, in bytes.
    pub output_bytes: Option<u64>,
}

/// What the node gives a task that asks for nothing, and the most it gives any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Budgets of a task that asks for nothing.
    pub default: Limits,
    /// Caps on what a task may ask for (`timeout`/`fuel` `None`: no cap).
    pub max: Limits,
}

impl Default for Budgets {
    fn default() -> Self {
        let default = Limits::default();
        Budgets {
            default,
            max: default,
        }
    }
}

impl Budgets {
    /// Whether guests run with fuel metering (a default or a maximum fuel is configured).
    pub fn metering(&self) -> bool {
        self.default.fuel.is_some() || self.max.fuel.is_some()
    }

    /// Checks that every default is within its maximum.
    pub fn validate(&self) -> Result<(), String> {
        let (d, m) = (&self.default, &self.max);
        let within = |v: Option<u64>, cap: Option<u64>| match (v, cap) {
            (None, Some(_)) => false,
            (Some(v), Some(cap)) => v <= cap,
            (_, None) => true,
        };
        let ms = |t: Option<Duration>| t.map(|t| t.as_millis().min(u64::MAX.into()) as u64);
        let checks = [
            ("timeout", within(ms(d.timeout), ms(m.timeout))),
            ("memory", d.memory_bytes <= m.memory_bytes),
            ("output", d.output_bytes <= m.output_bytes),
            ("fuel", d.fuel.is_none() || within(d.fuel, m.fuel)),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(format!("the default {name} budget exceeds its maximum")),
            None => Ok(()),
        }
    }

    /// The budgets of one task: its request where given, else the node default. A request
    /// above a node maximum is refused (`denied`): the grant is the request intersected with
    /// the policy, never a silent downgrade. A daemon has no deadline unless it asks for one.
    pub fn grant(&self, req: &LimitRequest, daemon: bool) -> Result<Limits, CapabilityError> {
        if req.timeout_ms == Some(0) {
            return Err(invalid("timeout_ms must be greater than 0"));
        }
        if req.fuel == Some(0) {
            return Err(invalid("fuel must be greater than 0"));
        }
        if req.fuel.is_some() && !self.metering() {
            return Err(CapabilityError::Denied(
                "fuel metering is off on this proplet (PROPLET_TASK_FUEL / PROPLET_TASK_FUEL_MAX)"
                    .into(),
            ));
        }
        let max_ms = self.max.timeout.map(duration_ms);
        let timeout = match req.timeout_ms {
            Some(ms) => Some(Duration::from_millis(within("timeout_ms", ms, max_ms)?)),
            // A daemon runs until stopped; the maximum only bounds what tasks ask for.
            None if daemon => None,
            None => self.default.timeout,
        };
        let memory_bytes = match req.memory_bytes {
            Some(b) => within("memory_bytes", b, Some(self.max.memory_bytes))?,
            None => self.default.memory_bytes,
        };
        let max_output = u64::try_from(self.max.output_bytes).unwrap_or(u64::MAX);
        let output_bytes = match req.output_bytes {
            // Within the maximum, which is itself a usize.
            Some(b) => usize::try_from(within("output_bytes", b, Some(max_output))?)
                .unwrap_or(self.max.output_bytes),
            None => self.default.output_bytes,
        };
        let fuel = match req.fuel {
            Some(f) => Some(within("fuel", f, self.max.fuel)?),
            None => self.default.fuel.or(self.max.fuel),
        };
        Ok(Limits {
            timeout,
            memory_bytes,
            output_bytes,
            fuel,
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `asked` when it is within `max` (no maximum: anything), else `denied`.
fn within(name: &str, asked: u64, max: Option<u64>) -> Result<u64, CapabilityError> {
    match max {
        Some(max) if asked > max => Err(CapabilityError::Denied(format!(
            "limits: {name} {asked} is above this proplet's maximum of {max}"
        ))),
        _ => Ok(asked),
    }
}

fn invalid(why: &str) -> CapabilityError {
    CapabilityError::Invalid(format!("limits: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets {
            default: Limits {
                timeout: Some(Duration::from_secs(10)),
                memory_bytes: 1 << 20,
                output_bytes: 100,
                fuel: None,
            },
            max: Limits {
                timeout: Some(Duration::from_secs(60)),
                memory_bytes: 4 << 20,
                output_bytes: 1000,
                fuel: None,
            },
        }
    }

    #[test]
    fn a_task_gets_its_request_within_the_maximum() {
        let b = budgets();
        let asked = LimitRequest {
            timeout_ms: Some(500),
            memory_bytes: Some(64 << 20),
            fuel: None,
            output_bytes: Some(10),
        };
        assert!(
            matches!(b.grant(&asked, false), Err(CapabilityError::Denied(e)) if e.contains("memory_bytes")),
            "above the maximum is denied, not capped"
        );
        let asked = LimitRequest {
            memory_bytes: Some(4 << 20),
            ..asked
        };
        let got = b.grant(&asked, false).expect("granted");
        assert_eq!(got.timeout, Some(Duration::from_millis(500)));
        assert_eq!(got.memory_bytes, 4 << 20, "the maximum itself is granted");
        assert_eq!(got.output_bytes, 10);
        for over in [
            LimitRequest {
                timeout_ms: Some(60_001),
                ..LimitRequest::default()
            },
            LimitRequest {
                output_bytes: Some(1001),
                ..LimitRequest::default()
            },
            LimitRequest {
                output_bytes: Some(u64::MAX),
                ..LimitRequest::default()
            },
        ] {
            assert!(
                matches!(b.grant(&over, false), Err(CapabilityError::Denied(_))),
                "{over:?}"
            );
        }
        assert_eq!(b.grant(&LimitRequest::default(), false), Ok(b.default));
    }

    #[test]
    fn daemons_have_no_deadline_unless_they_ask_within_the_cap() {
        let mut b = budgets();
        assert_eq!(
            b.grant(&LimitRequest::default(), true).map(|l| l.timeout),
            Ok(None)
        );
        let asked = LimitRequest {
            timeout_ms: Some(3_600_000),
            ..LimitRequest::default()
        };
        assert!(matches!(
            b.grant(&asked, true),
            Err(CapabilityError::Denied(_))
        ));
        b.max.timeout = None;
        assert_eq!(
            b.grant(&asked, true).map(|l| l.timeout),
            Ok(Some(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn fuel_needs_metering_and_bad_requests_are_refused() {
        let mut b = budgets();
        let fuel = LimitRequest {
            fuel: Some(1000),
            ..LimitRequest::default()
        };
        assert!(matches!(
            b.grant(&fuel, false),
            Err(CapabilityError::Denied(_))
        ));
        b.max.fuel = Some(500);
        assert!(b.metering());
        assert!(matches!(
            b.grant(&fuel, false),
            Err(CapabilityError::Denied(_))
        ));
        b.max.fuel = Some(1000);
        assert_eq!(b.grant(&fuel, false).map(|l| l.fuel), Ok(Some(1000)));
        assert_eq!(
            b.grant(&LimitRequest::default(), false).map(|l| l.fuel),
            Ok(Some(1000)),
            "metered nodes meter every task"
        );
        let zero = LimitRequest {
            timeout_ms: Some(0),
            ..LimitRequest::default()
        };
        assert!(matches!(
            b.grant(&zero, false),
            Err(CapabilityError::Invalid(_))
        ));
    }

    #[test]
    fn defaults_must_fit_under_the_maximums() {
        let mut b = budgets();
        assert_eq!(b.validate(), Ok(()));
        b.default.memory_bytes = 8 << 20;
        assert!(b.validate().is_err());
        let mut b = budgets();
        b.default.timeout = None;
        assert!(b.validate().is_err(), "no deadline is more than a 60 s cap");
    }
}
