//! Capped exponential backoff with jitter for reconnecting (rumqttc does not sleep between
//! attempts). The jitter spreads a fleet's reconnects after a broker restart, so that
//! thousands of proplets do not come back in lockstep.

use std::time::Duration;

/// Delays around `initial`, doubling up to `max`, until [`Backoff::reset`]: each is drawn
/// between half and all of its step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling to at most `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// Back to the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        for step in [100, 200, 350, 350] {
            let delay = b.next_delay().as_millis();
            assert!(
                (step / 2..=step).contains(&delay),
                "{delay} ms for a {step} ms step"
            );
        }
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }

    #[test]
    fn a_fleet_does_not_reconnect_in_lockstep() {
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).next_delay())
            .collect();
        assert!(
            delays.len() > 40,
            "50 proplets, {} distinct delays",
            delays.len()
        );
    }
}
