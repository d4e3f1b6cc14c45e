//! The task journal: every job accepted and not yet answered, and every latent task
//! deployed, so that a worker restarted after a crash can answer what its predecessor left
//! (`interrupted`) instead of leaving the manager waiting forever.
//!
//! It is a log of records ([`super::record`]) in `journal.log`, appended by a thread of
//! its own ([`super::writer`]), which writes whatever has queued up with one `fdatasync`
//! (one for a whole burst), in order; a job whose result comes alone on a quick disk makes
//! that commit on its own thread instead. A result is on disk before it is published, and
//! a job before the broker hears it was received; what nobody waits for follows within
//! milliseconds. The guests' key-value buckets are in a redb database beside it
//! (`journal.redb`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use redb::{Database, DatabaseError, StorageError};
use tokio::sync::oneshot;
use tracing::warn;

use super::outbox::{SharedDepth, Stored, Unstored};
use super::recent::Recent;
use super::record::Record;
use super::writer::{self, Done, Op, Recalled, Request, STOPPED, Then, Writer, lock};
use super::{StateDir, StateError, legacy, log, queue};
use crate::telemetry::Metrics;

/// What kind of job an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A start: a task or a daemon.
    Start,
    /// A latent deploy.
    Deploy,
    /// An invocation of a latent task.
    Invoke,
}

/// One job accepted and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The task id.
    pub task: String,
    /// The invocation id, for an invocation.
    pub invocation: Option<String>,
    /// What it is.
    pub kind: EntryKind,
}

impl Entry {
    /// A start of task `task` (for tests).
    #[cfg(test)]
    pub(super) fn start(task: &str) -> Entry {
        Entry {
            task: task.into(),
            invocation: None,
            kind: EntryKind::Start,
        }
    }

    pub(super) fn key(&self) -> (&str, &str) {
        (&self.task, self.invocation.as_deref().unwrap_or(""))
    }
}

/// What a previous process left behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs it accepted and never answered.
    pub unanswered: Vec<Entry>,
    /// Latent tasks it had deployed (lost with its memory).
    pub latent: Vec<String>,
    /// Results it stored and the broker never acknowledged, in order: they stay in the
    /// outbox until this process has them delivered.
    pub outbox: Vec<Stored>,
}

/// A handle on the journal; cheap to clone. The writer thread ends with the last handle.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: queue::Sender,
    /// The writer, shared with its thread: a lone job commits its own result.
    writer: Arc<Mutex<Writer>>,
    pace: Arc<writer::Pace>,
    depth: SharedDepth,
    recent: Arc<Mutex<Recent>>,
    db: Arc<Database>,
}

impl Journal {
    /// Opens the journal in `dir` and takes what a previous process left in it. A log
    /// found damaged keeps what precedes the damage (the file is set aside, and said so); a
    /// key-value database that cannot be read is set aside and a new one started.
    pub fn open(dir: &StateDir, metrics: Metrics) -> Result<(Journal, Recovered), StateError> {
        let Loaded { db, legacy } = open_or_set_aside(&dir.path().join("journal.redb"))?;
        let recent = Arc::new(Mutex::new(Recent::default()));
        let fail = |e: std::io::Error| StateError::Journal(e.to_string());
        let path = dir.path().join("journal.log");
        let old = legacy.as_deref().unwrap_or_default();
        let (log, live, recovered) = log::recover(&path, old, recent.clone()).map_err(fail)?;
        if legacy.is_some() {
            legacy::drop_tables(&db).map_err(|e| StateError::Journal(e.to_string()))?;
        }
        let depth = SharedDepth::default();
        for stored in &recovered.outbox {
            depth.add(stored.payload.len());
        }
        depth.next.store(live.next_seq(), Ordering::Relaxed);
        let (tx, rx) = queue::channel();
        let writer = Arc::new(Mutex::new(Writer::new(depth.clone(), metrics, log, live)));
        let thread_writer = writer.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer::run(&thread_writer, &rx))
            .map_err(|e| StateError::Journal(format!("cannot start its writer: {e}")))?;
        let journal = Journal {
            tx,
            writer,
            pace: Arc::default(),
            depth,
            recent,
            db: Arc::new(db),
        };
        Ok((journal, recovered))
    }

    /// The guests' key-value buckets, kept in the same database.
    pub fn kv(&self) -> super::kv::KvStore {
        super::kv::KvStore::new(self.db.clone())
    }

    /// The last answer job `(task, invocation)` got, if it is still remembered (see
    /// [`super::recent`]): a redelivered start is answered with it again.
    pub fn answered_lately(&self, task: &str, invocation: Option<&str>) -> Option<u64> {
        lock(&self.recent).last(task, invocation)
    }

    /// The answer stored as `seq`, if still remembered.
    pub async fn recall(&self, seq: u64) -> Option<Recalled> {
        let (done, recalled) = oneshot::channel();
        self.send(Op::Recall(seq, done), None);
        recalled.await.ok().flatten()
    }

    /// Stores a result in the outbox and resolves with its sequence number once it is on
    /// disk (only then may it be handed to the MQTT session). A closing result crosses its
    /// job out in the same commit.
    pub async fn store(&self, result: Unstored) -> Result<u64, StateError> {
        let (told, stored) = oneshot::channel();
        self.store_then(result, move |committed| {
            // Whoever awaited may have gone: nobody to tell then.
            told.send(committed).ok();
        });
        stored.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Stores a result in the outbox as [`Journal::store`] does, then calls `then` with its
    /// sequence number as soon as it is on disk: on the journal's own thread, so that the
    /// result can be handed to the MQTT session from there without waking the task that
    /// made it first; or, when its job is the only one open and commits are quick, on the
    /// calling thread before this returns, the commit made there (no thread woken at
    /// all). `then` runs exactly once (with an error should the writer stop first); it
    /// must be quick and must not block or use the journal.
    pub fn store_then(
        &self,
        result: Unstored,
        then: impl FnOnce(Result<u64, StateError>) + Send + 'static,
    ) {
        let seq = self.depth.next.fetch_add(1, Ordering::Relaxed);
        let op = Op::Write(Record::Store(result.numbered(seq)));
        let then =
            Then::new(move |committed| then(committed.map(|()| seq).map_err(StateError::Journal)));
        let request = Request {
            op,
            done: Some(Done::Then(then)),
        };
        if let Some(request) = writer::lead(&self.writer, &self.tx, &self.pace, request) {
            self.queue(request);
        }
    }

    /// Removes result `seq` from the outbox: the broker has acknowledged it.
    pub fn delivered(&self, seq: u64) {
        self.send(Op::Write(Record::Delivered(seq)), None);
    }

    /// Payload bytes in the outbox (stored, not yet acknowledged).
    pub fn outbox_bytes(&self) -> u64 {
        self.depth.bytes.load(Ordering::Relaxed)
    }

    /// Records `entry` as accepted.
    pub fn accepted(&self, entry: Entry) {
        self.send(Op::Write(Record::Accept(entry)), None);
    }

    /// Resolves once everything recorded before is on disk.
    pub async fn flushed(&self) -> Result<(), StateError> {
        self.durable(Op::Flush).await
    }

    /// Resolves once everything recorded before is on disk, which may wait a millisecond
    /// for other writes to share the commit: what the broker's acknowledgement of the
    /// messages just handled waits for. The flush is asked for when this is called, not
    /// when the future is first polled.
    pub fn acknowledgeable(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StateError>> + Send + 'static {
        self.durable(Op::Ack)
    }

    /// Calls `then` once everything recorded before is on disk, as
    /// [`Journal::acknowledgeable`] resolves, on the journal's own thread (as
    /// [`Journal::store_then`] does): the session can be told the messages are handled
    /// without a task in between.
    pub fn acknowledgeable_then(&self, then: impl FnOnce(Result<(), StateError>) + Send + 'static) {
        let then = Then::new(move |committed| then(committed.map_err(StateError::Journal)));
        self.send(Op::Ack, Some(Done::Then(then)));
    }

    fn durable(
        &self,
        op: Op,
    ) -> impl std::future::Future<Output = Result<(), StateError>> + Send + 'static {
        let (done, committed) = oneshot::channel();
        self.send(op, Some(Done::Waiter(done)));
        committed_or_stopped(committed)
    }

    /// Records `entry` as answered (its result is queued for the broker).
    pub fn answered(&self, entry: Entry) {
        self.send(Op::Write(Record::Answered(entry)), None);
    }

    /// Records latent task `id` as deployed.
    pub fn deployed(&self, id: &str) {
        self.send(Op::Write(Record::Deployed(id.to_owned())), None);
    }

    /// Records latent task `id` as no longer deployed.
    pub fn forgotten(&self, id: &str) {
        self.send(Op::Write(Record::Forgotten(id.to_owned())), None);
    }

    fn send(&self, op: Op, done: Option<Done>) {
        self.queue(Request { op, done });
    }

    fn queue(&self, request: Request) {
        if self.tx.send(request).is_err() {
            warn!("the task journal's writer has stopped; this job is not journaled");
        }
    }
}

/// What the writer said of a commit somebody waits for.
async fn committed_or_stopped(
    committed: oneshot::Receiver<Result<(), String>>,
) -> Result<(), StateError> {
    match committed.await {
        Ok(result) => result.map_err(StateError::Journal),
        Err(_) => Err(stopped()),
    }
}

/// What a request the writer never answered comes to.
fn stopped() -> StateError {
    StateError::Journal(STOPPED.into())
}

/// The key-value database, and what an earlier version's journal tables in it held (as
/// log frames), if there are any.
struct Loaded {
    db: Database,
    legacy: Option<Vec<u8>>,
}

/// Why a journal file could not be loaded.
enum LoadError {
    /// What the file holds cannot be read (corrupt, truncated, another format): set it
    /// aside.
    Unreadable(String),
    /// Anything else (permissions, the disk): give up.
    Failed(StateError),
}

/// Opens (or creates) the database at `path` and reads it; one that is not readable
/// (corrupt, truncated, another format) is renamed aside and a new one started.
fn open_or_set_aside(path: &Path) -> Result<Loaded, StateError> {
    let why = match load(path) {
        Ok(loaded) => return Ok(loaded),
        Err(LoadError::Failed(e)) => return Err(e),
        Err(LoadError::Unreadable(why)) => why,
    };
    let aside = path.with_extension(format!("corrupt-{}", std::process::id()));
    warn!(error = %why, aside = %aside.display(), "the key-value database cannot be read: set aside, starting a new one (the guests' buckets it held are dropped; the file is kept for inspection)");
    std::fs::rename(path, &aside).map_err(|e| StateError::Journal(e.to_string()))?;
    load(path).map_err(|e| match e {
        LoadError::Unreadable(why) => StateError::Journal(why),
        LoadError::Failed(e) => e,
    })
}

/// Opens the database at `path` and reads what it holds. redb checks what it reads, but
/// some damage (a file cut short) trips an assertion inside it: a panic here counts as an
/// unreadable file, not as the end of the worker.
fn load(path: &Path) -> Result<Loaded, LoadError> {
    let read = || -> Result<Loaded, LoadError> {
        let db = Database::create(path).map_err(|e| match unreadable(&e) {
            true => LoadError::Unreadable(e.to_string()),
            false => LoadError::Failed(StateError::Journal(e.to_string())),
        })?;
        let legacy = legacy::read(&db).map_err(|e| LoadError::Unreadable(e.to_string()))?;
        Ok(Loaded { db, legacy })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database panicked".to_owned());
        Err(LoadError::Unreadable(what))
    })
}

/// Whether opening failed on what the file holds (not on who holds it, or on the disk).
fn unreadable(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::UpgradeRequired(_) | DatabaseError::Storage(StorageError::Corrupted(_)) => {
            true
        }
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the journal in `root`, waiting for the writer thread of an earlier handle in
    /// this process to let go of the file.
    async fn reopen(root: &Path) -> (StateDir, Journal, Recovered) {
        for _ in 0..200 {
            let dir = StateDir::open(root).expect("dir");
            match Journal::open(&dir, Metrics::default()) {
                Ok((journal, recovered)) => return (dir, journal, recovered),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        panic!("the journal stayed open");
    }

    fn entry(task: &str, invocation: Option<&str>, kind: EntryKind) -> Entry {
        Entry {
            task: task.into(),
            invocation: invocation.map(Into::into),
            kind,
        }
    }

    #[tokio::test]
    async fn what_was_accepted_and_not_answered_is_recovered_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let run = entry("t", None, EntryKind::Start);
        let call = entry("lat", Some("i1"), EntryKind::Invoke);
        let done = entry("done", None, EntryKind::Start);
        {
            let dir = StateDir::open(root.path()).expect("dir");
            let (journal, recovered) = Journal::open(&dir, Metrics::default()).expect("journal");
            assert_eq!(recovered, Recovered::default());
            for e in [&run, &call, &done] {
                journal.accepted(e.clone());
            }
            journal.deployed("lat");
            journal.deployed("gone");
            journal.answered(done.clone());
            journal.flushed().await.expect("on disk");
            journal.forgotten("gone");
            journal.accepted(entry("x", None, EntryKind::Deploy));
            journal.answered(entry("x", None, EntryKind::Deploy));
            journal.accepted(run.clone());
            journal.flushed().await.expect("on disk");
        }
        let (dir, journal, recovered) = reopen(root.path()).await;
        let mut unanswered = recovered.unanswered.clone();
        unanswered.sort_by(|a, b| a.task.cmp(&b.task));
        assert_eq!(unanswered, vec![call, run]);
        assert_eq!(recovered.latent, vec!["lat".to_owned()]);
        drop((dir, journal));
        let (_dir, _journal, again) = reopen(root.path()).await;
        assert_eq!(
            again,
            Recovered::default(),
            "recovered once, then forgotten"
        );
    }

    /// What a process that died this instant would find: the journal file as it is on
    /// disk now, opened by another journal.
    fn snapshot(root: &Path) -> Recovered {
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(root.join("journal.log"), copy.path().join("journal.log")).expect("copy");
        let dir = StateDir::open(copy.path()).expect("dir");
        Journal::open(&dir, Metrics::default()).expect("journal").1
    }

    /// A new journal in a directory of its own.
    fn fresh() -> (tempfile::TempDir, StateDir, Journal) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(root.path()).expect("dir");
        let (journal, _) = Journal::open(&dir, Metrics::default()).expect("journal");
        (root, dir, journal)
    }

    fn result(task: &str) -> Unstored {
        Unstored {
            topic: "control/proplet/results".into(),
            task: task.into(),
            invocation: None,
            payload: b"{}".to_vec(),
            closes: true,
        }
    }

    #[tokio::test]
    async fn what_is_waited_for_is_on_disk_when_the_wait_ends() {
        let (root, _dir, journal) = fresh();
        let job = entry("acked", None, EntryKind::Start);
        journal.accepted(job.clone());
        journal.acknowledgeable().await.expect("flushed");
        assert_eq!(snapshot(root.path()).unanswered, vec![job.clone()]);
        let seq = journal.store(result("acked")).await.expect("stored");
        let on_disk = snapshot(root.path());
        assert_eq!(on_disk.outbox.len(), 1);
        assert_eq!(on_disk.outbox[0].seq, seq);
        assert!(
            on_disk.unanswered.is_empty(),
            "a closing answer crosses its job out in the same commit"
        );
        journal.delivered(seq);
        journal.flushed().await.expect("flushed");
        assert_eq!(snapshot(root.path()), Recovered::default());
    }

    /// What a continuation saw when it ran: how the commit went, the jobs and results on
    /// disk by then, and the thread it ran on.
    type Seen = (Result<u64, String>, usize, Vec<u64>, Option<String>);

    fn seen(root: &Path, committed: Result<u64, StateError>) -> Seen {
        let on_disk = snapshot(root);
        let seqs = on_disk.outbox.iter().map(|s| s.seq).collect();
        let thread = std::thread::current().name().map(str::to_owned);
        let committed = committed.map_err(|e| e.to_string());
        (committed, on_disk.unanswered.len(), seqs, thread)
    }

    #[tokio::test]
    async fn continuations_run_on_the_writer_in_order_once_their_commit_is_on_disk() {
        let (root, _dir, journal) = fresh();
        journal.accepted(entry("then", None, EntryKind::Start));
        let (tx, rx) = std::sync::mpsc::channel();
        let (acked, path) = (tx.clone(), root.path().to_owned());
        journal.acknowledgeable_then(move |flushed| {
            acked.send(seen(&path, flushed.map(|()| 0))).expect("heard");
        });
        let path = root.path().to_owned();
        journal.store_then(result("then"), move |stored| {
            tx.send(seen(&path, stored)).expect("heard");
        });
        let ack = rx.recv().expect("the acknowledgement's continuation ran");
        let store = rx.recv().expect("the result's continuation ran");
        let writer = Some("journal".to_owned());
        assert_eq!(ack.0, Ok(0));
        assert!(
            ack.1 == 1 || ack.2.len() == 1,
            "the job is on disk: {ack:?}"
        );
        assert_eq!(ack.3, writer);
        let seq = store.0.clone().expect("stored");
        assert_eq!((store.1, store.2, store.3), (0, vec![seq], writer));
        assert!(rx.try_recv().is_err(), "each ran once");
    }

    #[tokio::test]
    async fn an_acknowledgement_that_does_not_close_leaves_the_job_to_answer() {
        let (root, _dir, journal) = fresh();
        let daemon = entry("daemon", None, EntryKind::Start);
        journal.accepted(daemon.clone());
        let running = Unstored {
            closes: false,
            ..result("daemon")
        };
        let seq = journal.store(running).await.expect("stored");
        journal.delivered(seq);
        journal.flushed().await.expect("flushed");
        assert_eq!(snapshot(root.path()).unanswered, vec![daemon.clone()]);
        journal.answered(daemon);
        journal.flushed().await.expect("flushed");
        assert_eq!(snapshot(root.path()), Recovered::default());
    }

    #[tokio::test]
    async fn what_nobody_waits_for_reaches_the_disk_soon_anyway() {
        let (root, _dir, journal) = fresh();
        let seq = journal.store(result("t")).await.expect("stored");
        let job = entry("lazy", None, EntryKind::Start);
        journal.accepted(job.clone());
        journal.deployed("latent");
        journal.delivered(seq);
        // On disk within LAZY; a busy machine may take longer, never for ever.
        let waited = std::time::Instant::now();
        let mut on_disk = snapshot(root.path());
        while !on_disk.outbox.is_empty() && waited.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(super::super::writer::LAZY).await;
            on_disk = snapshot(root.path());
        }
        assert_eq!(on_disk.unanswered, vec![job]);
        assert_eq!(on_disk.latent, vec!["latent".to_owned()]);
        assert!(on_disk.outbox.is_empty(), "the delivery is on disk too");
    }

    /// Stores a result for `task` with [`Journal::store_then`]; returns what its
    /// continuation saw, and whether it had run by the time `store_then` returned.
    fn store_and_see(journal: &Journal, root: &Path, task: &str) -> (Seen, bool) {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = root.to_owned();
        journal.store_then(result(task), move |stored| {
            tx.send(seen(&path, stored)).expect("heard");
        });
        let at_once = rx.try_recv().ok();
        let ran_at_once = at_once.is_some();
        let seen = at_once.unwrap_or_else(|| rx.recv().expect("the continuation ran"));
        (seen, ran_at_once)
    }

    /// A journal whose writer has timed a commit (a job leads only once one is known).
    async fn timed() -> (tempfile::TempDir, StateDir, Journal) {
        let (root, dir, journal) = fresh();
        journal.accepted(entry("first", None, EntryKind::Start));
        journal.flushed().await.expect("on disk");
        journal.answered(entry("first", None, EntryKind::Start));
        journal.flushed().await.expect("on disk");
        (root, dir, journal)
    }

    #[tokio::test]
    async fn a_lone_jobs_result_is_committed_on_its_own_thread_with_what_was_held() {
        let (root, _dir, journal) = timed().await;
        let mut seq = journal.store(result("earlier")).await.expect("stored");
        // A job never waits for the writer: if its thread holds it this instant (the end
        // of a slice of its wait, stretched on a busy machine), the result goes to that
        // thread. So a job may need more than one try to find it free.
        for attempt in 0..50 {
            // However loaded the machine, commits count as quick here.
            writer::hold_for_test(&journal.writer).quick_disk();
            // Changes nobody waits for, held or queued: they go with the job's commit.
            journal.delivered(seq);
            let latent = format!("latent{attempt}");
            journal.deployed(&latent);
            let task = format!("alone{attempt}");
            journal.accepted(entry(&task, None, EntryKind::Start));
            journal.tx.until_the_writer_waits();
            let ((stored, open, outbox, thread), at_once) =
                store_and_see(&journal, root.path(), &task);
            let stored = stored.expect("stored");
            assert_eq!((open, &outbox), (0, &vec![stored]), "the job crossed out");
            if at_once {
                assert_ne!(thread.as_deref(), Some("journal"), "on the caller's thread");
                assert!(snapshot(root.path()).latent.contains(&latent));
                return;
            }
            seq = stored;
        }
        panic!("no lone job committed its own result in 50 tries");
    }

    #[tokio::test]
    async fn a_result_while_other_jobs_are_open_is_left_to_the_writers_thread() {
        let (root, _dir, journal) = timed().await;
        writer::hold_for_test(&journal.writer).quick_disk();
        journal.accepted(entry("one", None, EntryKind::Start));
        journal.accepted(entry("other", None, EntryKind::Start));
        let ((stored, open, _, thread), _) = store_and_see(&journal, root.path(), "one");
        assert!(stored.is_ok());
        assert_eq!(thread.as_deref(), Some("journal"));
        assert_eq!(open, 1, "the other job is still open");
        // Open jobs committed earlier count as much as those still queued.
        writer::hold_for_test(&journal.writer).quick_disk();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let ((_, _, _, thread), _) = store_and_see(&journal, root.path(), "third");
        assert_eq!(thread.as_deref(), Some("journal"));
    }

    #[tokio::test]
    async fn a_slow_disk_leaves_every_commit_to_the_writers_thread() {
        let (root, _dir, journal) = timed().await;
        writer::hold_for_test(&journal.writer).slow_disk();
        for n in 0..5 {
            let task = format!("slow{n}");
            // Far apart, so that only the disk's speed keeps the job from its commit.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            journal.accepted(entry(&task, None, EntryKind::Start));
            let ((stored, ..), at_once) = store_and_see(&journal, root.path(), &task);
            assert!(stored.is_ok());
            assert!(!at_once, "a commit on the caller's thread");
        }
    }

    #[test]
    fn jobs_committing_beside_the_writer_keep_the_log_in_order() {
        let (root, _dir, journal) = fresh();
        let (threads, each) = (4, 300);
        let on_callers = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (journal, on_callers) = (journal.clone(), &on_callers);
                scope.spawn(move || {
                    for n in 0..each {
                        let task = format!("t{t}-{n}");
                        journal.accepted(entry(&task, None, EntryKind::Start));
                        let (tx, rx) = std::sync::mpsc::channel();
                        journal.store_then(result(&task), move |stored| {
                            let thread = std::thread::current().name().map(str::to_owned);
                            tx.send((stored.is_ok(), thread)).expect("heard");
                        });
                        let (stored, thread) = rx.recv().expect("answered");
                        assert!(stored, "{task} stored");
                        if thread.as_deref() != Some("journal") {
                            on_callers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let on_disk = snapshot(root.path());
        let led = on_callers.into_inner();
        assert!(
            on_disk.unanswered.is_empty(),
            "an accept was written after its job's result ({led} led): {:?}",
            on_disk.unanswered
        );
        assert_eq!(on_disk.outbox.len(), threads * each);
        drop(journal);
    }

    #[tokio::test]
    async fn a_flush_before_an_acknowledgement_waits_little_and_shares_its_commit() {
        let (root, _dir, journal) = fresh();
        for n in 0..200 {
            let id = format!("t{n}");
            journal.accepted(entry(&id, None, EntryKind::Start));
            let ack = journal.acknowledgeable();
            let started = std::time::Instant::now();
            let (acked, stored) = tokio::join!(ack, journal.store(result(&id)));
            acked.expect("acked");
            stored.expect("stored");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "an acknowledgement waited {:?}",
                started.elapsed()
            );
        }
        assert_eq!(snapshot(root.path()).outbox.len(), 200);
    }

    /// Stores `n` results of `size` bytes for jobs `t0`, `t1`…, none delivered.
    async fn store_many(journal: &Journal, n: usize, size: usize) {
        for i in 0..n {
            journal.accepted(entry(&format!("t{i}"), None, EntryKind::Start));
            let result = Unstored {
                payload: vec![b'x'; size],
                ..result(&format!("t{i}"))
            };
            journal.store(result).await.expect("stored");
        }
    }

    /// Where each frame of the log at `path` ends.
    fn frame_ends(path: &Path) -> Vec<usize> {
        let bytes = std::fs::read(path).expect("read");
        super::super::record::frames(&bytes, super::super::record::MAGIC.len())
            .map(|frame| match frame {
                super::super::record::Frame::Record(_, at, len) => (at + len) as usize,
                super::super::record::Frame::Damaged(at) => panic!("damaged at {at}"),
            })
            .collect()
    }

    /// How many files are set aside in `root`; they are removed if `clear`.
    fn set_aside(root: &Path, clear: bool) -> usize {
        let aside: Vec<_> = std::fs::read_dir(root)
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
            .collect();
        if clear {
            aside
                .iter()
                .for_each(|e| std::fs::remove_file(e.path()).expect("remove"));
        }
        aside.len()
    }

    #[tokio::test]
    async fn a_log_cut_short_anywhere_keeps_every_whole_record_before_the_cut() {
        let root = tempfile::tempdir().expect("tempdir");
        {
            let dir = StateDir::open(root.path()).expect("dir");
            let (journal, _) = Journal::open(&dir, Metrics::default()).expect("journal");
            store_many(&journal, 50, 2000).await;
        }
        // Reopened, the log holds the 50 results, one frame each.
        let (dir, journal, recovered) = reopen(root.path()).await;
        assert_eq!(recovered.outbox.len(), 50);
        drop((dir, journal));
        let path = root.path().join("journal.log");
        let whole = std::fs::read(&path).expect("read");
        let ends = frame_ends(&path);
        assert_eq!(ends.len(), 50);
        for cut in [
            ends[0] - 1,
            ends[9],
            ends[9] + 1,
            ends[24] + 700,
            ends[49] - 1,
        ] {
            std::fs::write(&path, &whole[..cut]).expect("cut");
            let (_dir, journal, recovered) = reopen(root.path()).await;
            let kept = ends.iter().filter(|end| **end <= cut).count();
            let tasks: Vec<String> = recovered.outbox.iter().map(|s| s.task.clone()).collect();
            let expected: Vec<String> = (0..kept).map(|i| format!("t{i}")).collect();
            assert_eq!(tasks, expected, "cut at {cut}");
            let damaged = !ends.contains(&cut);
            assert_eq!(
                set_aside(root.path(), true),
                usize::from(damaged),
                "cut at {cut}"
            );
            drop(journal);
        }
    }

    #[tokio::test]
    async fn a_log_that_is_not_one_is_set_aside_and_a_new_one_started() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("journal.log"), b"not a journal at all").expect("write");
        let (_dir, journal, recovered) = reopen(root.path()).await;
        assert_eq!(recovered, Recovered::default());
        assert_eq!(
            set_aside(root.path(), false),
            1,
            "the unreadable file is kept aside"
        );
        journal
            .store(result("after"))
            .await
            .expect("a new log works");
    }

    #[test]
    fn an_unreadable_key_value_database_is_set_aside() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("journal.redb"), b"not a database at all").expect("write");
        let dir = StateDir::open(root.path()).expect("dir");
        let (_journal, recovered) = Journal::open(&dir, Metrics::default()).expect("a new journal");
        assert_eq!(recovered, Recovered::default());
        assert_eq!(
            set_aside(root.path(), false),
            1,
            "the unreadable file is kept aside"
        );
    }

    #[tokio::test]
    async fn an_earlier_versions_tables_are_read_into_the_log_once() {
        let root = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(root.path().join("journal.redb")).expect("db");
            super::super::legacy::tests::fill(&db);
        }
        let (dir, journal, recovered) = reopen(root.path()).await;
        let job = entry("job", Some("inv"), EntryKind::Invoke);
        assert_eq!(recovered.unanswered, vec![job]);
        assert_eq!(recovered.latent, vec!["lat".to_owned()]);
        let outbox: Vec<(u64, &[u8])> = recovered
            .outbox
            .iter()
            .map(|s| (s.seq, s.payload.as_slice()))
            .collect();
        assert_eq!(outbox, vec![(3, b"three".as_slice())]);
        let recalled = |journal: Journal| async move {
            let seq = journal.answered_lately("t2", None).expect("remembered");
            journal.recall(seq).await
        };
        let two = Some(("results".to_owned(), b"two".to_vec()));
        assert_eq!(recalled(journal.clone()).await, two);
        assert_eq!(journal.store(result("next")).await.expect("stored"), 4);
        drop((dir, journal));
        let (_dir, journal, again) = reopen(root.path()).await;
        assert!(again.unanswered.is_empty() && again.latent.is_empty());
        let seqs: Vec<u64> = again.outbox.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![3, 4], "the old result is still in the outbox");
        assert_eq!(recalled(journal.clone()).await, two);
        let db = journal.db.clone();
        assert_eq!(
            super::super::legacy::read(&db).expect("read"),
            None,
            "dropped"
        );
    }
}
