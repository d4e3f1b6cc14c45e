//! The journal's writer thread: it commits whatever has queued up in one transaction, in
//! order, and decides how soon each commit must reach the disk.
//!
//! Every commit is durable (fsynced) before anybody hears of it, and happens because
//! somebody waits for it — a result about to be published, the flush before the broker's
//! acknowledgement — or because changes nobody waits for (a job accepted or answered, a
//! result delivered, a latent task deployed) have been held for [`LAZY`]. Those are held in
//! the writer's memory, not committed on their own, and go to the disk with the next
//! commit: in a burst, one transaction instead of one per change. A crash can therefore
//! lose only those: after a restart the worker then publishes a delivered result once more,
//! which at-least-once delivery allows, and never loses a job or a result.
//!
//! Requests reach it through [`super::queue`], in order; one nobody waits for does not wake
//! the thread while a commit is coming anyway, nor within [`LAZY`] of the last commit (the
//! writer lingers that long before it sleeps without a deadline).
//!
//! The flush before an acknowledgement ([`Op::Ack`]) waits up to [`COALESCE`] for company:
//! a task that ends within it has its result stored in the same commit, so a round trip
//! pays for one fsync, not two. One that finds everything before it on disk already (the
//! jobs it covers went out with an earlier commit) is answered at once. Nor does it wake
//! a writer that has a commit coming: that one waits in slices of [`COALESCE`] and takes
//! it at the end of the slice, without waiting for company again.
//!
//! Whoever waits hears through a channel, or through a continuation the writer runs itself
//! once the commit is known ([`Then`]): a result is handed to the MQTT session, and the
//! session told what it may acknowledge, straight from this thread.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::live::{Change, Live};
use super::log::{COMPACT_FROM, Log};
use super::outbox::SharedDepth;
use super::queue::{Receiver, RecvTimeoutError};
use super::recent::{self, Recent};
use super::record::Record;
use crate::telemetry::Metrics;

/// How long a change nobody waits for may be held before it is committed.
pub(super) const LAZY: Duration = Duration::from_millis(10);
/// How long the flush before an acknowledgement waits for other writes to share its commit.
pub(super) const COALESCE: Duration = Duration::from_millis(1);
/// How long a result waits for the results of other running jobs to share its commit (as
/// PostgreSQL's `commit_delay`): only while more jobs run than results are at hand.
pub(super) const COMMIT_DELAY: Duration = Duration::from_micros(200);

/// The most room kept for the next commit's frames (a larger commit's is given back).
const KEPT_FRAMES: usize = 64 * 1024;
/// The most requests' room kept for the next batch.
pub(super) const KEPT_REQUESTS: usize = 1024;

/// One change to the journal, or a question for it.
pub(super) enum Op {
    /// Nothing to write: make everything before durable now.
    Flush,
    /// Nothing to write: make everything before durable soon (within [`COALESCE`]); the
    /// broker's acknowledgement of the messages just handled waits for it.
    Ack,
    /// A change, as it is written (an answer that closes its job crosses it out in the
    /// same commit).
    Write(Record),
    Recall(u64, oneshot::Sender<Option<Recalled>>),
}

/// An answer given lately, as it was stored: its topic suffix and payload.
pub type Recalled = (String, Vec<u8>);

/// An operation and, if somebody waits for it to be durable, whom to tell.
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) done: Option<Done>,
}

/// Whom to tell how a commit went.
pub(super) enum Done {
    /// A task waiting on a channel (dropped unanswered when the writer stops).
    Waiter(oneshot::Sender<Result<(), String>>),
    /// A continuation, run on the writer's thread as soon as the commit is known.
    Then(Then),
}

impl Done {
    fn tell(self, result: Result<(), String>) {
        match self {
            // The job may have been cancelled meanwhile; nobody to tell then.
            Done::Waiter(waiter) => {
                waiter.send(result).ok();
            }
            Done::Then(then) => then.call(result),
        }
    }
}

/// What to do once a commit is known, run exactly once: by the writer after the commit,
/// or with an error if the request is dropped first (the writer stopped). It runs on the
/// writer's thread: it must be quick and must not block or wait for the journal (handing
/// a message to a channel is what it is for).
pub(super) struct Then(Option<Continuation>);

type Continuation = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What whoever waits for a request hears when the writer stopped before answering it.
pub(super) const STOPPED: &str = "its writer has stopped";

impl Then {
    pub(super) fn new(then: impl FnOnce(Result<(), String>) + Send + 'static) -> Self {
        Then(Some(Box::new(then)))
    }

    fn call(mut self, result: Result<(), String>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for Then {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(STOPPED.into()));
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("journal request")
    }
}

impl Request {
    /// Whether the request must be durable before anything else happens.
    fn urgent(&self) -> bool {
        self.done.is_some() && !matches!(self.op, Op::Ack)
    }
}

/// The remembered answers, locked (a poisoned lock still holds a consistent index: it is
/// changed only after the write that matches it).
pub(super) fn lock(recent: &Mutex<Recent>) -> MutexGuard<'_, Recent> {
    recent.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer thread: the log, the state it adds up to, and the counters it keeps.
pub(super) struct Writer {
    pub(super) depth: SharedDepth,
    pub(super) metrics: Metrics,
    pub(super) log: Log,
    pub(super) live: Live,
    /// The frames of the commit being written; its room is kept for the next one.
    pub(super) frames: Vec<u8>,
}

impl Writer {
    /// Commits queued requests in batches until every handle is gone; whatever is still
    /// held is then committed.
    pub(super) fn run(mut self, rx: &Receiver) {
        // Changes not committed yet (nobody waits for them, or the batch being gathered),
        // and when they must be. The vector keeps its room from one commit to the next.
        let mut held: Vec<Request> = Vec::new();
        let mut due: Option<Instant> = None;
        // Whether a write failed: the log is then rewritten before the next one.
        let mut broken = false;
        loop {
            let (first, waited_enough) = match next(rx, due) {
                Next::Request(request) => (request, false),
                Next::Found(request) => (request, true),
                Next::Due => {
                    if !held.is_empty() {
                        broken = self.settle(&mut held, broken);
                    }
                    due = None;
                    continue;
                }
                Next::Closed => break,
            };
            let running = self.live.jobs.len() as u64;
            let gathered = held.len();
            gather(first, rx, running, waited_enough, &mut held);
            // A recall reads answers stored, and a store is always waited for: it needs
            // no commit of what is held.
            let recalls = take_recalls(&mut held, gathered);
            if held[gathered..].iter().any(|r| r.done.is_some()) {
                broken = self.settle(&mut held, broken);
                // The writer lingers: what nobody waits for, sent within LAZY of this
                // commit (a delivery, the next job accepted), does not wake it.
                due = Some(Instant::now() + LAZY);
            } else if !held.is_empty() {
                due = due.or_else(|| Some(Instant::now() + LAZY));
            }
            self.recall(recalls);
        }
        if !held.is_empty() {
            self.settle(&mut held, broken);
        }
    }

    /// Commits `batch`, then tells whoever waits for part of it how that went, leaving it
    /// empty; returns whether the log must be rewritten before the next commit.
    fn settle(&mut self, batch: &mut Vec<Request>, broken: bool) -> bool {
        let result = self.repair(broken).and_then(|()| self.commit(batch));
        if let Err(e) = &result {
            warn!(error = %e, "the task journal could not be written");
        }
        let broken = result.is_err();
        self.count();
        answer(batch, &result.map_err(|e| e.to_string()));
        if !broken && self.overgrown() {
            return self.repair(true).is_err();
        }
        broken
    }

    /// Rewrites the log from the state, if `broken` (or overgrown) says so.
    fn repair(&mut self, broken: bool) -> std::io::Result<()> {
        if !broken {
            return Ok(());
        }
        let before = self.log.len();
        let (log, live) = self.log.compact(&self.live)?;
        info!(
            before,
            after = log.len(),
            "the task journal's log is compacted"
        );
        (self.log, self.live) = (log, live);
        Ok(())
    }

    /// Whether the log has grown well past what it holds.
    fn overgrown(&self) -> bool {
        let len = self.log.len();
        len >= COMPACT_FROM && len >= 2 * self.live.size()
    }

    fn count(&self) {
        let latent = self.live.latent.len() as u64;
        self.metrics.journal(self.live.jobs.len() as u64, latent);
        self.metrics.outbox(
            self.depth.messages.load(Ordering::Relaxed),
            self.depth.bytes.load(Ordering::Relaxed),
        );
    }

    /// Answers each recall from the answers remembered.
    fn recall(&self, recalls: Vec<Request>) {
        for request in recalls {
            if let Op::Recall(seq, done) = request.op {
                let found = self.live.place(seq).and_then(|place| self.log.read(place));
                done.send(found.map(|s| (s.topic, s.payload))).ok();
            }
        }
    }

    /// Writes `batch` with one durable write, then applies it to the state (counting what
    /// enters and leaves the outbox).
    fn commit(&mut self, batch: &mut [Request]) -> std::io::Result<()> {
        let undone = answered_within(batch);
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let mut records = Vec::new();
        for (i, request) in batch.iter_mut().enumerate() {
            let record = match std::mem::replace(&mut request.op, Op::Flush) {
                Op::Write(Record::Accept(_)) if undone.contains(&i) => continue,
                Op::Write(record) => record,
                Op::Flush | Op::Ack | Op::Recall(..) => continue,
            };
            let start = frames.len();
            record.frame_into(&mut frames);
            records.push((record, start as u64, (frames.len() - start) as u64));
        }
        let appended = match frames.is_empty() {
            true => None,
            false => Some(self.log.append(&frames)),
        };
        if frames.capacity() <= KEPT_FRAMES {
            self.frames = frames;
        }
        let Some(base) = appended.transpose()? else {
            return Ok(());
        };
        let now = recent::now();
        for (record, start, len) in &records {
            match self.live.apply(record, base + start, *len, now) {
                Change::Stored(n) => self.depth.add(n),
                Change::Removed(n) => self.depth.remove(n),
                Change::None => {}
            }
        }
        Ok(())
    }
}

/// The places in `batch` of the jobs accepted and answered further on in the same batch:
/// their insert would be undone in the same commit, so it is left out (the removal stays,
/// which leaves the table as the insert and the removal together would).
fn answered_within(batch: &[Request]) -> HashSet<usize> {
    let mut answered_later = HashSet::new();
    let mut undone = HashSet::new();
    for (i, request) in batch.iter().enumerate().rev() {
        match &request.op {
            Op::Write(Record::Store(s)) if s.closes => {
                answered_later.insert(s.key());
            }
            Op::Write(Record::Answered(e)) => {
                answered_later.insert(e.key());
            }
            // Each answer undoes one accept: the latest before it.
            Op::Write(Record::Accept(e)) if answered_later.remove(&e.key()) => {
                undone.insert(i);
            }
            _ => {}
        }
    }
    undone
}

/// What the writer does next.
enum Next {
    /// Commit this, and whatever has queued up behind it.
    Request(Request),
    /// The same, found queued when a slice of the wait ended (it did not wake the writer:
    /// an acknowledgement's flush, which has waited for company long enough).
    Found(Request),
    /// Commit the changes held: their time is up.
    Due,
    /// Every handle is gone.
    Closed,
}

/// Waits for the next request, or until `due`. A wait with a deadline is cut into slices
/// of [`COALESCE`], so that a flush before an acknowledgement, which does not wake the
/// writer, waits no longer than that.
fn next(rx: &Receiver, due: Option<Instant>) -> Next {
    let Some(until) = due else {
        return rx.recv().map_or(Next::Closed, Next::Request);
    };
    loop {
        let now = Instant::now();
        let slice = until.min(now + COALESCE);
        match rx.recv_timeout(slice.saturating_duration_since(now)) {
            // Woken before the slice ended: by a request somebody waits for.
            Ok(request) if Instant::now() < slice => return Next::Request(request),
            Ok(request) => return Next::Found(request),
            Err(RecvTimeoutError::Timeout) if slice < until => continue,
            Err(RecvTimeoutError::Timeout) => return Next::Due,
            Err(RecvTimeoutError::Disconnected) => return Next::Closed,
        }
    }
}

/// Adds `first` and everything queued behind it to `held`, and then maybe more (what is
/// added is the batch; what `held` had before it is the changes held):
/// - if the batch holds a flush before an acknowledgement and nothing urgent, and there is
///   something to make durable (a change in it, or changes held), whatever arrives within
///   [`COALESCE`] until something urgent does (with nothing to make durable the
///   acknowledgement is answered at once), unless the batch has `waited_enough` already;
/// - if it holds fewer results than the `running` jobs, whatever arrives within
///   [`COMMIT_DELAY`] until it holds as many.
fn gather(
    first: Request,
    rx: &Receiver,
    running: u64,
    waited_enough: bool,
    held: &mut Vec<Request>,
) {
    let from = held.len();
    held.push(first);
    rx.drain_into(held);
    if !waited_enough && waits_for_company(&held[from..], from == 0) {
        wait_for(held, rx, COALESCE, Request::urgent);
    }
    let is_result = |r: &Request| matches!(r.op, Op::Write(Record::Store(..)));
    let mut results = held[from..].iter().filter(|r| is_result(r)).count() as u64;
    if results > 0 && results < running {
        wait_for(held, rx, COMMIT_DELAY, |r| {
            results += u64::from(is_result(r));
            results >= running
        });
    }
}

/// Takes the recalls out of `held[from..]`, keeping the order of the rest.
fn take_recalls(held: &mut Vec<Request>, from: usize) -> Vec<Request> {
    let is_recall = |r: &Request| matches!(r.op, Op::Recall(..));
    if !held[from..].iter().any(is_recall) {
        return Vec::new();
    }
    let (recalls, rest): (Vec<Request>, Vec<Request>) =
        held.drain(from..).partition(|r| is_recall(r));
    held.extend(rest);
    recalls
}

/// Whether `batch` holds an acknowledgement's flush that should wait for [`COALESCE`]:
/// nothing urgent is in it, and something is to be made durable (a change in it, or
/// changes held before, unless `nothing_held`).
fn waits_for_company(batch: &[Request], nothing_held: bool) -> bool {
    let acks = batch.iter().any(|r| matches!(r.op, Op::Ack));
    let writes = batch.iter().any(|r| matches!(r.op, Op::Write(_)));
    acks && (writes || !nothing_held) && !batch.iter().any(Request::urgent)
}

/// Adds to `batch` whatever arrives within `delay`, until `enough` says so of a request
/// added (it sees each one once, in order).
fn wait_for(
    batch: &mut Vec<Request>,
    rx: &Receiver,
    delay: Duration,
    mut enough: impl FnMut(&Request) -> bool,
) {
    let until = Instant::now() + delay;
    while let Ok(first) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        let from = batch.len();
        batch.push(first);
        rx.drain_into(batch);
        let mut done = false;
        for request in &batch[from..] {
            done |= enough(request);
        }
        if done {
            break;
        }
    }
}

/// Tells whoever waits for a request in `batch` how its commit went.
fn answer(batch: &mut Vec<Request>, result: &Result<(), String>) {
    for request in batch.drain(..) {
        if let Some(done) = request.done {
            done.tell(result.clone());
        }
    }
    batch.shrink_to(KEPT_REQUESTS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::Entry;
    use crate::state::record::StoreRecord;

    fn job(task: &str) -> Entry {
        Entry::start(task)
    }

    fn store(task: &str, closes: bool) -> Op {
        Op::Write(Record::Store(StoreRecord {
            seq: 0,
            at: 0,
            closes,
            remember: true,
            topic: "results".into(),
            task: task.into(),
            invocation: String::new(),
            payload: Vec::new(),
        }))
    }

    fn undone(ops: Vec<Op>) -> Vec<usize> {
        let batch: Vec<Request> = ops
            .into_iter()
            .map(|op| Request { op, done: None })
            .collect();
        let mut places: Vec<usize> = answered_within(&batch).into_iter().collect();
        places.sort_unstable();
        places
    }

    #[test]
    fn an_acknowledgement_waits_for_company_only_with_something_to_make_durable() {
        let request = |op, waited: bool| Request {
            op,
            done: waited.then(|| Done::Then(Then::new(|_| {}))),
        };
        let ack = || request(Op::Ack, true);
        let accept = || request(Op::Write(Record::Accept(job("a"))), false);
        // The accepts it covers are in the batch, or held: wait for a result to share it.
        assert!(waits_for_company(&[accept(), ack()], true));
        assert!(waits_for_company(&[ack()], false));
        // Everything before it is on disk already: answered at once.
        assert!(!waits_for_company(&[ack()], true));
        // Something urgent commits now anyway.
        let stored = request(store("a", true), true);
        assert!(!waits_for_company(&[accept(), ack(), stored], false));
        assert!(!waits_for_company(&[accept()], false), "no acknowledgement");
    }

    #[test]
    fn a_writer_with_a_deadline_finds_an_acknowledgement_within_a_slice_of_its_wait() {
        let (tx, rx) = super::super::queue::channel();
        let sender = std::thread::spawn(move || {
            tx.until_the_writer_waits();
            let ack = Request {
                op: Op::Ack,
                done: Some(Done::Then(Then::new(|_| {}))),
            };
            tx.send(ack).expect("sent");
            tx
        });
        let began = Instant::now();
        let found = next(&rx, Some(began + Duration::from_secs(60)));
        let took = began.elapsed();
        // Found when a slice ended; taken at the start of the next slice's wait if it
        // was sent just as one ended. Either way, not woken for, and long before the
        // deadline.
        let ack = match found {
            Next::Found(request) | Next::Request(request) => request,
            Next::Due | Next::Closed => panic!("no acknowledgement"),
        };
        assert!(matches!(ack.op, Op::Ack));
        assert!(took < Duration::from_secs(30), "found after {took:?}");
        drop(sender.join().expect("sender"));
    }

    #[test]
    fn a_batch_far_larger_than_usual_is_answered_and_not_kept() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut batch: Vec<Request> = (0..20_000)
            .map(|_| {
                let tx = tx.clone();
                Request {
                    op: Op::Flush,
                    done: Some(Done::Then(Then::new(move |r| tx.send(r).expect("heard")))),
                }
            })
            .collect();
        answer(&mut batch, &Ok(()));
        assert_eq!(rx.try_iter().filter(Result::is_ok).count(), 20_000);
        assert!(batch.is_empty());
        assert!(
            batch.capacity() <= KEPT_REQUESTS,
            "{} kept",
            batch.capacity()
        );
    }

    #[test]
    fn a_continuation_runs_once_and_one_never_run_hears_the_writer_stopped() {
        let (tx, rx) = std::sync::mpsc::channel();
        Then::new(move |r| tx.send(r).expect("heard")).call(Ok(()));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [Ok(())]);
        let (tx, rx) = std::sync::mpsc::channel();
        let request = Request {
            op: Op::Flush,
            done: Some(Done::Then(Then::new(move |r| tx.send(r).expect("heard")))),
        };
        drop(request);
        let heard: Vec<_> = rx.try_iter().collect();
        assert_eq!(heard, [Err(STOPPED.to_owned())]);
    }

    #[test]
    fn only_an_accept_answered_later_in_the_batch_is_left_out() {
        let accept = |t| Op::Write(Record::Accept(job(t)));
        let answered = |t| Op::Write(Record::Answered(job(t)));
        assert_eq!(undone(vec![accept("a"), store("a", true)]), [0]);
        assert_eq!(undone(vec![accept("a"), accept("b"), answered("b")]), [1]);
        // A daemon's acknowledgement does not close its job.
        assert!(undone(vec![accept("a"), store("a", false)]).is_empty());
        // Answered, then accepted again (a re-run): the new job must be written.
        assert!(undone(vec![store("a", true), accept("a")]).is_empty());
        // Accepted twice and answered once: only the later accept is undone.
        assert_eq!(
            undone(vec![accept("a"), accept("a"), store("a", true)]),
            [1]
        );
    }
}
