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
//!
//! A job whose result comes alone — no other job open, results further apart than two
//! commits take, a disk that commits within [`LEAD_MOST`] — makes the commit itself, on its
//! own thread, when the writer is free ([`lead`]): a round trip then wakes neither the
//! writer's thread nor the job. The writer's state sits behind a mutex for that, and
//! requests leave the queue only in the hands of whoever holds it, so the log keeps the
//! order they were sent in.

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

mod lead;
pub(super) use lead::{Pace, lead};

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
    /// A continuation, run by whoever commits (the writer's thread, or a job that commits
    /// its own result) as soon as the commit is known.
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

/// What to do once a commit is known, run exactly once: by whoever made the commit, or
/// with an error if the request is dropped first (the writer stopped). It runs on the
/// writer's thread, or on a job's that commits its own result, with the writer held: it
/// must be quick and must not block or wait for the journal (handing a message to a
/// channel is what it is for).
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

/// The writer: the log, the state it adds up to, what is held for the next commit, and
/// the counters it keeps. Its thread and the jobs that commit their own results
/// ([`lead`]) share it behind a mutex; requests are taken from the queue only by whoever
/// holds it, so they are committed in the order they were sent.
pub(super) struct Writer {
    depth: SharedDepth,
    metrics: Metrics,
    log: Log,
    live: Live,
    /// The frames of the commit being written; its room is kept for the next one.
    frames: Vec<u8>,
    /// Changes not committed yet (nobody waits for them, or the batch being gathered).
    /// The vector keeps its room from one commit to the next.
    held: Vec<Request>,
    /// When what is held must be committed; after a commit, the end of the writer's
    /// lingering ([`LAZY`]).
    due: Option<Instant>,
    /// Whether a write failed: the log is then rewritten before the next one.
    broken: bool,
    /// How long a commit's write and `fdatasync` take (a moving average), once one is known.
    commit_time: Option<Duration>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("log", &self.log)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// The writer, locked (a poisoned lock still holds a consistent writer: a commit's
/// requests are answered only after the state is updated).
fn hold(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer, locked, for a test to change.
#[cfg(test)]
pub(super) fn hold_for_test(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    hold(writer)
}

#[cfg(test)]
impl Writer {
    /// Makes commits look slow, as on an SD card: no job commits its own result then.
    pub(super) fn slow_disk(&mut self) {
        self.commit_time = Some(Duration::from_secs(1));
    }

    /// Makes commits look quick, whatever the machine's load makes of them.
    pub(super) fn quick_disk(&mut self) {
        self.commit_time = Some(Duration::from_micros(1));
    }
}

/// The writer thread: commits queued requests in batches until every handle is gone;
/// whatever is still held is then committed.
pub(super) fn run(writer: &Mutex<Writer>, rx: &Receiver) {
    loop {
        let due = hold(writer).due;
        let next = next(rx, due);
        let mut writer = hold(writer);
        match next {
            Next::Ready { waited_enough } => writer.turn(rx, waited_enough),
            Next::Slice => {}
            Next::Due => writer.due_now(),
            Next::Closed => break,
        }
    }
    let mut writer = hold(writer);
    if !writer.held.is_empty() {
        writer.settle_held(true);
    }
}

impl Writer {
    /// A writer of `log`, whose records add up to `live`.
    pub(super) fn new(depth: SharedDepth, metrics: Metrics, log: Log, live: Live) -> Writer {
        Writer {
            depth,
            metrics,
            log,
            live,
            frames: Vec::new(),
            held: Vec::new(),
            due: None,
            broken: false,
            commit_time: None,
        }
    }

    /// Takes what is queued and commits it (gathering company first, as [`gather`] says)
    /// or holds it.
    fn turn(&mut self, rx: &Receiver, waited_enough: bool) {
        let gathered = self.held.len();
        rx.drain_into(&mut self.held);
        if self.held.len() == gathered {
            // A job committed it meanwhile.
            return;
        }
        let open = self.live.jobs.len();
        gather(rx, open, waited_enough, &mut self.held, gathered);
        self.close_turn(gathered, true);
    }

    /// Ends a turn whose batch is `held[gathered..]`: commits everything held if somebody
    /// waits for part of the batch (the writer then lingers), or holds it until
    /// [`LAZY`] from now; then answers the batch's recalls, which need no commit.
    fn close_turn(&mut self, gathered: usize, may_compact: bool) {
        let recalls = take_recalls(&mut self.held, gathered);
        if self.held[gathered..].iter().any(|r| r.done.is_some()) {
            self.settle_held(may_compact);
            // The writer lingers: what nobody waits for, sent within LAZY of this
            // commit (a delivery, the next job accepted), does not wake it.
            self.due = Some(Instant::now() + LAZY);
        } else if !self.held.is_empty() {
            self.due = self.due.or_else(|| Some(Instant::now() + LAZY));
        }
        self.recall(recalls);
    }

    /// Commits what is held if its time is up (a job may have committed it, and moved
    /// the time on, since the thread looked).
    fn due_now(&mut self) {
        if self.due.is_some_and(|due| due > Instant::now()) {
            return;
        }
        if !self.held.is_empty() {
            self.settle_held(true);
        }
        self.due = None;
    }

    /// Commits everything held (see [`Writer::settle`]), leaving `held` empty with its room.
    fn settle_held(&mut self, may_compact: bool) {
        let mut held = std::mem::take(&mut self.held);
        self.broken = self.settle(&mut held, self.broken, may_compact);
        self.held = held;
    }

    /// Commits `batch`, then tells whoever waits for part of it how that went, leaving it
    /// empty; returns whether the log must be rewritten before the next commit.
    /// A compaction it calls for is made only if `may_compact` (a job leaves it to the
    /// thread: a job does not commit once the log is overgrown).
    fn settle(&mut self, batch: &mut Vec<Request>, broken: bool, may_compact: bool) -> bool {
        let result = self.repair(broken).and_then(|()| self.commit(batch));
        if let Err(e) = &result {
            warn!(error = %e, "the task journal could not be written");
        }
        let broken = result.is_err();
        self.count();
        answer(batch, &result.map_err(|e| e.to_string()));
        if may_compact && !broken && self.overgrown() {
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
            false => Some(self.append(&frames)),
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

    /// Appends `frames` to the log, timing the write and its `fdatasync`.
    fn append(&mut self, frames: &[u8]) -> std::io::Result<u64> {
        let began = Instant::now();
        let appended = self.log.append(frames);
        let took = began.elapsed();
        self.commit_time = Some(match self.commit_time {
            None => took,
            Some(average) => (average * 7 + took) / 8,
        });
        appended
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
    /// Take what is queued, and commit it with whatever queues up behind it; if
    /// `waited_enough`, it was found when a slice of the wait ended (it did not wake the
    /// writer: an acknowledgement's flush, which has waited for company long enough).
    Ready { waited_enough: bool },
    /// A slice of the wait ended with nothing queued: look at the deadline again.
    Slice,
    /// Commit the changes held: their time is up.
    Due,
    /// Every handle is gone.
    Closed,
}

/// Waits until a request is queued, without taking it (only whoever holds the writer
/// does), or until `due`. A wait with a deadline is cut into slices of [`COALESCE`], so
/// that a flush before an acknowledgement, which does not wake the writer, waits no longer
/// than that, and a deadline a job moved on is seen.
fn next(rx: &Receiver, due: Option<Instant>) -> Next {
    let now = Instant::now();
    let slice = due.map(|until| until.min(now + COALESCE));
    match rx.wait(slice) {
        // Woken before the slice ended: by a request somebody waits for.
        Ok(()) if slice.is_none_or(|slice| Instant::now() < slice) => Next::Ready {
            waited_enough: false,
        },
        Ok(()) => Next::Ready {
            waited_enough: true,
        },
        Err(RecvTimeoutError::Timeout) if slice < due => Next::Slice,
        Err(RecvTimeoutError::Timeout) => Next::Due,
        Err(RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

/// Adds to the batch `held[from..]` (what `held` has before it is the changes held) what
/// queues up behind it, and then maybe more:
/// - if the batch holds a flush before an acknowledgement and nothing urgent, and there is
///   something to make durable (a change in it, or changes held), whatever arrives within
///   [`COALESCE`] until something urgent does (with nothing to make durable the
///   acknowledgement is answered at once), unless the batch has `waited_enough` already;
/// - if it holds fewer results than there are jobs running ([`running`], of which the log
///   holds `open`), whatever arrives within [`COMMIT_DELAY`] until it holds as many.
fn gather(rx: &Receiver, open: usize, waited_enough: bool, held: &mut Vec<Request>, from: usize) {
    if !waited_enough && waits_for_company(&held[from..], from == 0) {
        wait_for(held, rx, COALESCE, Request::urgent);
    }
    let is_result = |r: &Request| matches!(r.op, Op::Write(Record::Store(..)));
    let mut results = held[from..].iter().filter(|r| is_result(r)).count() as u64;
    let running = running(open, held, from);
    if results > 0 && results < running {
        wait_for(held, rx, COMMIT_DELAY, |r| {
            results += u64::from(is_result(r));
            results >= running
        });
    }
}

/// The jobs running while the batch `held[from..]` is gathered: the `open` ones the log
/// holds, and those accepted since (held, or in the batch), less those answered since. A
/// job whose result is in the batch still counts: its result is one of those at hand. In
/// a burst most jobs are accepted and answered between two commits, so the log alone
/// would count almost none of them, and a result would never wait for company.
fn running(open: usize, held: &[Request], from: usize) -> u64 {
    let mut running = open as u64;
    let mut gone = 0u64;
    for (at, request) in held.iter().enumerate() {
        match &request.op {
            Op::Write(Record::Accept(_)) => running += 1,
            Op::Write(Record::Answered(_)) => gone += 1,
            Op::Write(Record::Store(s)) if s.closes && at < from => gone += 1,
            _ => {}
        }
    }
    running.saturating_sub(gone)
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
    fn jobs_accepted_since_the_last_commit_count_as_running() {
        let request = |op| Request { op, done: None };
        let accept = |t| request(Op::Write(Record::Accept(job(t))));
        let answered = |t| request(Op::Write(Record::Answered(job(t))));
        let result = |t| request(store(t, true));
        // Nothing held: only the jobs the log holds open.
        assert_eq!(running(3, &[], 0), 3);
        // A burst: four accepted since the last commit, one result in the batch.
        let burst = [
            accept("a"),
            accept("b"),
            accept("c"),
            accept("d"),
            result("a"),
        ];
        assert_eq!(
            running(0, &burst, 4),
            4,
            "a's result is at hand, a still counts"
        );
        // A job answered, or whose result was held before the batch, no longer runs.
        let held = [
            accept("a"),
            answered("a"),
            accept("b"),
            result("b"),
            result("c"),
        ];
        assert_eq!(running(1, &held, 4), 1, "only c, whose result is the batch");
        // A lone round trip: one job, its result at hand, nothing to wait for.
        assert_eq!(running(0, &[accept("a"), result("a")], 1), 1);
        // More answers than jobs known (a log cut short): none, never fewer.
        assert_eq!(running(0, &[answered("x"), answered("y")], 2), 0);
    }

    #[test]
    fn a_flood_of_accepted_jobs_holds_a_result_no_longer_than_the_commit_delay() {
        // A manager's flood: far more jobs accepted since the last commit than results
        // will ever come. The result waits for company within the delay, then commits.
        let (_tx, rx) = super::super::queue::channel();
        let accept = |n: usize| Request {
            op: Op::Write(Record::Accept(job(&format!("t{n}")))),
            done: None,
        };
        let mut held: Vec<Request> = (0..200_000).map(accept).collect();
        held.push(Request {
            op: store("t0", true),
            done: None,
        });
        let from = held.len() - 1;
        // None open in the log: all of them accepted since.
        assert_eq!(running(0, &held, from), 200_000);
        let began = Instant::now();
        gather(&rx, 0, true, &mut held, from);
        let took = began.elapsed();
        // Nothing came: the batch is as it was, and it did not wait for 199,999 more.
        assert_eq!(held.len(), 200_001);
        assert!(took >= COMMIT_DELAY, "did not wait for company: {took:?}");
        assert!(took < Duration::from_secs(10), "held for {took:?}");
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
        let deadline = Some(began + Duration::from_secs(60));
        // As the writer's thread does: each slice that ends with nothing queued, again.
        let found = loop {
            match next(&rx, deadline) {
                Next::Slice => continue,
                other => break other,
            }
        };
        let took = began.elapsed();
        // Found when a slice ended; taken at the start of the next slice's wait if it
        // was sent just as one ended. Either way, not woken for, and long before the
        // deadline.
        assert!(matches!(found, Next::Ready { .. }), "no acknowledgement");
        let mut queued = Vec::new();
        rx.drain_into(&mut queued);
        assert!(matches!(queued[..], [Request { op: Op::Ack, .. }]));
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
