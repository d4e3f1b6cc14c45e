//! The byte budget of waiting tasks (`PROPLET_TASK_QUEUE_BYTES`): a task counts its inline
//! base64 from admission, then its binary once fetched, until it gets an execution slot —
//! so that a burst of starts carrying large binaries is answered `overloaded` instead of
//! holding gigabytes. (A download or registry transfer still in progress is bounded by
//! `PROPLET_MAX_BINARY_SIZE` and the transfer limits, and counted here once complete.)

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes held by waiting tasks, and the most they may hold.
#[derive(Debug)]
pub(super) struct ByteBudget {
    used: AtomicU64,
    max: u64,
}

/// Bytes counted against a [`ByteBudget`] until dropped.
#[derive(Debug)]
pub(super) struct Held<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub(super) fn new(max: u64) -> Self {
        ByteBudget {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// Counts `bytes`, or `None` when they do not fit.
    pub(super) fn hold(&self, bytes: u64) -> Option<Held<'_>> {
        let fits = |used: u64| used.checked_add(bytes).filter(|total| *total <= self.max);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits)
            .ok()
            .map(|_| Held {
                budget: self,
                bytes,
            })
    }

    /// Bytes held now.
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub(super) fn max(&self) -> u64 {
        self.max
    }
}

impl Held<'_> {
    /// Holds `bytes` instead of what is held now (a binary replacing its base64, a download
    /// arriving), or gives everything back and returns `None` when they do not fit.
    pub(super) fn resize(self, bytes: u64) -> Option<Self> {
        let budget = self.budget;
        drop(self);
        budget.hold(bytes)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_within_the_budget_and_gives_back_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.hold(60).expect("fits");
        assert!(budget.hold(41).is_none(), "60 + 41 > 100");
        let b = budget.hold(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(a);
        let a = b.resize(90).expect("40 -> 90 fits once 60 is back");
        assert_eq!(budget.used(), 90);
        assert!(a.resize(101).is_none());
        assert_eq!(budget.used(), 0, "a failed resize gives everything back");
        assert!(budget.hold(u64::MAX).is_none());
    }
}
