//! The answers given lately, kept after delivery so that a start the broker *redelivers*
//! (the MQTT DUP flag: an acknowledgement was lost, or a session resumed) is answered
//! again with what it got, instead of running a second time.
//!
//! Bounded three ways (the oldest go first): [`MAX_ANSWERS`] answers, [`MAX_BYTES`] bytes
//! of them, and none older than [`WINDOW`]. The answers themselves stay in the journal's
//! log, so the window survives a restart; this is the index kept in memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most answers remembered.
pub const MAX_ANSWERS: usize = 1000;
/// Most bytes of answers remembered.
pub const MAX_BYTES: u64 = 16 << 20;
/// How long an answer is remembered.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Who an answer is for: (task id, invocation id or "").
pub(super) type Key = (String, String);

/// What is remembered, in memory: which answer each job got last, and the order to forget.
#[derive(Debug, Default)]
pub(super) struct Recent {
    last: HashMap<Key, u64>,
    /// (sequence number, job, bytes, stored at), oldest first.
    order: VecDeque<(u64, Key, u64, u64)>,
    bytes: u64,
}

/// Now, in Unix seconds.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key(task: &str, invocation: Option<&str>) -> Key {
    (task.to_owned(), invocation.unwrap_or("").to_owned())
}

impl Recent {
    /// The last answer job `(task, invocation)` got within the window, if remembered.
    pub(super) fn last(&self, task: &str, invocation: Option<&str>) -> Option<u64> {
        self.last.get(&key(task, invocation)).copied()
    }

    /// Remembers answer `seq` (`bytes` long, stored at `at`) as the last `job` got, then
    /// forgets what falls outside the bounds as of `now`; returns the answers forgotten.
    /// The answer `job` got before, if any, is forgotten at once: an answer given again
    /// takes its place and never pushes out another job's.
    pub(super) fn remember(
        &mut self,
        seq: u64,
        job: Key,
        bytes: u64,
        at: u64,
        now: u64,
    ) -> Vec<u64> {
        let replaced = self.last.insert(job.clone(), seq);
        let mut forgotten: Vec<u64> = replaced
            .and_then(|old| self.drop_entry(old))
            .into_iter()
            .collect();
        self.order.push_back((seq, job, bytes, at));
        self.bytes += bytes;
        forgotten.extend(self.prune(now));
        forgotten
    }

    /// Takes answer `seq` out of the order to forget (it is no job's last answer any more);
    /// returns it if it was there.
    fn drop_entry(&mut self, seq: u64) -> Option<u64> {
        let at = self.order.iter().position(|(s, ..)| *s == seq)?;
        let (_, _, bytes, _) = self.order.remove(at)?;
        self.bytes -= bytes;
        Some(seq)
    }

    /// Forgets what falls outside the bounds as of `now`; returns the answers forgotten.
    pub(super) fn prune(&mut self, now: u64) -> Vec<u64> {
        let oldest = now.saturating_sub(WINDOW.as_secs());
        let mut forgotten = Vec::new();
        while let Some((seq, job, bytes, at)) = self.order.front() {
            let over = self.order.len() > MAX_ANSWERS || self.bytes > MAX_BYTES || *at < oldest;
            if !over {
                break;
            }
            if self.last.get(job) == Some(seq) {
                self.last.remove(job);
            }
            self.bytes -= bytes;
            forgotten.push(*seq);
            self.order.pop_front();
        }
        forgotten
    }

    /// The answers remembered, oldest first.
    pub(super) fn answers(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().map(|(seq, ..)| *seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(recent: &mut Recent, seq: u64, task: &str, bytes: u64) -> Vec<u64> {
        recent.remember(seq, key(task, None), bytes, 100, 100)
    }

    #[test]
    fn more_answers_than_the_bound_keep_only_the_newest() {
        let mut recent = Recent::default();
        let n = MAX_ANSWERS as u64 + 500;
        let mut forgotten = Vec::new();
        for seq in 0..n {
            forgotten.extend(answer(&mut recent, seq, &format!("t{seq}"), 10));
        }
        assert_eq!(recent.order.len(), MAX_ANSWERS);
        assert_eq!(
            forgotten,
            (0..500).collect::<Vec<_>>(),
            "the oldest go first"
        );
        assert_eq!(recent.last("t0", None), None, "the oldest are forgotten");
        assert_eq!(recent.last(&format!("t{}", n - 1), None), Some(n - 1));
        // Answered again: the newest answer is the one remembered.
        answer(&mut recent, n, &format!("t{}", n - 1), 10);
        assert_eq!(recent.last(&format!("t{}", n - 1), None), Some(n));
    }

    #[test]
    fn answers_given_again_push_out_no_other_job() {
        let mut recent = Recent::default();
        let n = MAX_ANSWERS as u64;
        for seq in 0..n {
            assert!(answer(&mut recent, seq, &format!("t{seq}"), 10).is_empty());
        }
        // One job answered again and again (redelivered starts): only its own answer
        // before each is forgotten.
        for again in 0..500 {
            let forgotten = answer(&mut recent, n + again, "t7", 10);
            let before = if again == 0 { 7 } else { n + again - 1 };
            assert_eq!(forgotten, vec![before]);
        }
        assert_eq!(recent.order.len(), MAX_ANSWERS);
        assert_eq!(recent.bytes, 10 * n);
        assert_eq!(
            recent.last("t0", None),
            Some(0),
            "the oldest is still remembered"
        );
        assert_eq!(recent.last("t7", None), Some(n + 499));
    }

    #[test]
    fn big_answers_are_bounded_by_bytes() {
        let mut recent = Recent::default();
        // Each a quarter of the bound: never more than four kept.
        let size = MAX_BYTES / 4;
        for seq in 0..20 {
            answer(&mut recent, seq, &format!("b{seq}"), size);
            assert!(recent.bytes <= MAX_BYTES, "{} bytes", recent.bytes);
        }
        assert_eq!(recent.order.len(), 4);
        assert_eq!(recent.last("b19", None), Some(19));
        assert_eq!(recent.last("b15", None), None);
    }

    #[test]
    fn answers_older_than_the_window_are_forgotten() {
        let mut recent = Recent::default();
        let hour = WINDOW.as_secs();
        recent.remember(1, key("old", None), 1, 1000, 1000);
        recent.remember(2, key("new", None), 1, 1000 + hour, 1000 + hour);
        assert_eq!(recent.prune(1001 + hour), vec![1]);
        assert_eq!(recent.last("old", None), None);
        assert_eq!(recent.answers().collect::<Vec<_>>(), vec![2]);
    }
}
