//! A job that commits its own result: when its result comes alone, the job's thread makes
//! the commit the writer's thread would have made, so that a round trip wakes neither that
//! thread nor the job.
//!
//! It does so only while it pays: no other job is open (another's result could share the
//! commit), results come further apart than two commits take ([`Pace`]: in a burst the
//! writer's thread gathers several into one `fdatasync`), commits are quick
//! ([`LEAD_MOST`]: a runtime worker must not wait long for the disk), and the writer is
//! free this instant (it is never waited for). The job takes whatever is queued and held
//! before its result along, in order, and answers it as the writer's thread would.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::queue::Sender;
use super::super::record::Record;
use super::{Live, Op, Request, Writer};

/// The longest a commit may take, on average, for a job to commit its own result
/// ([`lead`]): a runtime worker then waits for the disk no longer than a guest holds it
/// between two epoch ticks, many times over. A slower disk (an SD card, eMMC) leaves every
/// commit to the writer's thread.
pub(in crate::state) const LEAD_MOST: Duration = Duration::from_micros(500);

/// Results this far apart count as apart however much further they are: after an idle
/// spell the pace follows the next burst within a few results.
const FAR_APART: Duration = Duration::from_millis(1);

/// How far apart results come, as they are stored (a moving average that gives the last
/// gap half the weight).
#[derive(Debug, Default)]
pub(in crate::state) struct Pace(Mutex<PaceState>);

#[derive(Debug, Default)]
struct PaceState {
    last: Option<Instant>,
    gap: Option<Duration>,
}

impl Pace {
    /// Notes a result stored now; returns the average gap between results so far (`None`
    /// for the first one).
    pub(super) fn note(&self) -> Option<Duration> {
        self.note_at(Instant::now())
    }

    /// Notes a result stored at `now` (see [`Pace::note`]).
    fn note_at(&self, now: Instant) -> Option<Duration> {
        let mut pace = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = pace.last {
            let gap = now.duration_since(last).min(FAR_APART);
            pace.gap = Some(pace.gap.map_or(gap, |average| (average + gap) / 2));
        }
        pace.last = Some(now);
        pace.gap
    }
}

/// Commits `own` (a job's result) on the calling thread, with whatever is queued and held
/// before it, if that job is the only one open, the writer is free this instant, commits
/// are quick ([`LEAD_MOST`]) and results come at least two commits' time apart (`pace`):
/// a round trip then wakes no writer thread to commit its result and no job to hear of
/// it. Otherwise returns `own`, for the writer's thread, which gathers results that
/// come close together into one commit: in a burst, one `fdatasync` for several.
pub(in crate::state) fn lead(
    writer: &Mutex<Writer>,
    tx: &Sender,
    pace: &Pace,
    own: Request,
) -> Option<Request> {
    let Op::Write(Record::Store(store)) = &own.op else {
        return Some(own);
    };
    let gap = pace.note();
    let Ok(mut writer) = writer.try_lock() else {
        return Some(own);
    };
    if !writer.may_lead(gap) {
        return Some(own);
    }
    let Some(mut open) = open_jobs(&writer.live, &writer.held) else {
        return Some(own);
    };
    let (task, invocation) = store.key();
    let key = (task.to_owned(), invocation.to_owned());
    let gathered = writer.held.len();
    let alone = tx.drain_if(&mut writer.held, |queued| {
        track(&mut open, queued.iter());
        open.remove(&key);
        open.is_empty()
    });
    if !alone {
        return Some(own);
    }
    writer.held.push(own);
    writer.close_turn(gathered, false);
    None
}

/// Whether commits that take `took` (unknown before the first) are quick enough for a job
/// to make its own, and results that come `gap` apart (unknown for the first) far enough
/// apart that it seldom would have had company.
fn quick_and_apart(took: Option<Duration>, gap: Option<Duration>) -> bool {
    let Some(took) = took else {
        return false;
    };
    took <= LEAD_MOST && gap.is_none_or(|gap| gap >= took * 2)
}

/// The jobs open once what is held is committed, if there are few enough to be worth
/// counting (one: the job that asks).
fn open_jobs(live: &Live, held: &[Request]) -> Option<HashSet<(String, String)>> {
    if live.jobs.len() > 1 {
        return None;
    }
    let mut open: HashSet<(String, String)> = live.jobs.keys().cloned().collect();
    track(&mut open, held.iter());
    Some(open)
}

/// Applies what `requests` accept and answer to the jobs `open`.
fn track<'a>(open: &mut HashSet<(String, String)>, requests: impl Iterator<Item = &'a Request>) {
    let owned = |(task, invocation): (&str, &str)| (task.to_owned(), invocation.to_owned());
    for request in requests {
        match &request.op {
            Op::Write(Record::Accept(e)) => {
                open.insert(owned(e.key()));
            }
            Op::Write(Record::Answered(e)) => {
                open.remove(&owned(e.key()));
            }
            Op::Write(Record::Store(s)) if s.closes => {
                open.remove(&owned(s.key()));
            }
            _ => {}
        }
    }
}

impl Writer {
    /// Whether a job may commit its own result: the log is sound and not due for
    /// compaction (which is left to the thread), commits are known to be quick, and
    /// results come at least two commits' time apart (`gap`, unknown for the first).
    pub(super) fn may_lead(&self, gap: Option<Duration>) -> bool {
        quick_and_apart(self.commit_time, gap) && !self.broken && !self.overgrown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_commits_its_own_result_only_on_a_quick_disk_between_results_far_apart() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert!(!quick_and_apart(None, None), "no commit timed yet");
        assert!(quick_and_apart(Some(us(100)), None), "the first result");
        assert!(quick_and_apart(Some(us(100)), Some(us(200))));
        assert!(quick_and_apart(Some(LEAD_MOST), Some(ms(5))));
        // A burst: results closer together than two commits take.
        assert!(!quick_and_apart(Some(us(100)), Some(us(199))));
        // An SD card: however far apart.
        assert!(!quick_and_apart(Some(LEAD_MOST + us(1)), Some(ms(1000))));
    }

    #[test]
    fn the_pace_of_results_follows_a_burst_and_an_idle_spell() {
        let pace = Pace::default();
        let mut at = Instant::now();
        assert_eq!(pace.note_at(at), None);
        at += Duration::from_millis(20);
        let idle = pace.note_at(at).expect("a gap");
        assert_eq!(
            idle, FAR_APART,
            "an idle spell counts as far apart, no more"
        );
        // A burst: results a few microseconds apart are seen as such within a few.
        let mut burst = idle;
        for _ in 0..6 {
            at += Duration::from_micros(5);
            burst = pace.note_at(at).expect("a gap");
        }
        assert!(burst < idle / 32, "{burst:?} against {idle:?}");
        // And one result after a pause brings the pace back up at once.
        at += Duration::from_secs(1);
        let after = pace.note_at(at).expect("a gap");
        assert!(after >= FAR_APART / 2, "{after:?}");
    }
}
