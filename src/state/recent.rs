//! The answers given lately, kept after delivery so that a start the broker *redelivers*
//! (the MQTT DUP flag: an acknowledgement was lost, or a session resumed) is answered
//! again with what it got, instead of running a second time.
//!
//! Bounded three ways (the oldest go first): [`MAX_ANSWERS`] answers, [`MAX_BYTES`] bytes
//! of them, and none older than [`WINDOW`]. Kept in the journal's database, so the window
//! survives a restart.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable as _, Table, TableDefinition, WriteTransaction};

use super::outbox::Stored;

/// Most answers remembered.
pub const MAX_ANSWERS: usize = 1000;
/// Most bytes of answers remembered.
pub const MAX_BYTES: u64 = 16 << 20;
/// How long an answer is remembered.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// A row: (topic, task id, invocation id or "", stored at (Unix seconds), payload).
type Row = (&'static str, &'static str, &'static str, u64, &'static [u8]);

/// Answers given lately: sequence number (as in the outbox) → row.
const RECENT: TableDefinition<u64, Row> = TableDefinition::new("recent");

/// Who an answer is for: (task id, invocation id or "").
pub(super) type Key = (String, String);

/// The table, open in a write transaction.
pub(super) type RecentTable<'txn> = Table<'txn, u64, Row>;

/// What is remembered, in memory: which answer each job got last, and the order to forget.
#[derive(Debug, Default)]
pub(super) struct Recent {
    last: HashMap<Key, u64>,
    /// (sequence number, job, bytes, stored at), oldest first.
    order: VecDeque<(u64, Key, u64, u64)>,
    bytes: u64,
}

fn now() -> u64 {
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

    /// Opens the table in `txn` and reads what it remembers.
    pub(super) fn load(txn: &WriteTransaction) -> Result<Recent, redb::Error> {
        let table = txn.open_table(RECENT)?;
        let mut recent = Recent::default();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (_, task, invocation, at, payload) = value.value();
            recent.remember(
                seq.value(),
                (task.to_owned(), invocation.to_owned()),
                payload.len() as u64,
                at,
            );
        }
        Ok(recent)
    }

    fn remember(&mut self, seq: u64, job: Key, bytes: u64, at: u64) {
        self.last.insert(job.clone(), seq);
        self.order.push_back((seq, job, bytes, at));
        self.bytes += bytes;
    }

    /// Remembers `entry` in `table`, then forgets what falls outside the bounds.
    pub(super) fn insert(
        &mut self,
        table: &mut RecentTable<'_>,
        entry: &Stored,
    ) -> Result<(), redb::Error> {
        let at = now();
        let invocation = entry.invocation.as_deref().unwrap_or("");
        let row = (
            entry.topic.as_str(),
            entry.task.as_str(),
            invocation,
            at,
            entry.payload.as_slice(),
        );
        table.insert(entry.seq, row)?;
        let job = key(&entry.task, entry.invocation.as_deref());
        self.remember(entry.seq, job, entry.payload.len() as u64, at);
        self.prune(table, at)
    }

    fn prune(&mut self, table: &mut RecentTable<'_>, now: u64) -> Result<(), redb::Error> {
        let oldest = now.saturating_sub(WINDOW.as_secs());
        while let Some((seq, job, bytes, at)) = self.order.front().cloned() {
            let over = self.order.len() > MAX_ANSWERS || self.bytes > MAX_BYTES || at < oldest;
            if !over {
                break;
            }
            self.order.pop_front();
            self.bytes -= bytes;
            if self.last.get(&job) == Some(&seq) {
                self.last.remove(&job);
            }
            table.remove(seq)?;
        }
        Ok(())
    }

    /// Opens the table in `txn`.
    pub(super) fn open(txn: &WriteTransaction) -> Result<RecentTable<'_>, redb::Error> {
        Ok(txn.open_table(RECENT)?)
    }
}

/// Answer `seq` as it was stored: its topic and payload.
pub(super) fn recall(
    table: &RecentTable<'_>,
    seq: u64,
) -> Result<Option<(String, Vec<u8>)>, redb::Error> {
    Ok(table.get(seq)?.map(|row| {
        let (topic, _, _, _, payload) = row.value();
        (topic.to_owned(), payload.to_vec())
    }))
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata as _;

    use super::*;

    fn answer(seq: u64, task: &str, bytes: usize) -> Stored {
        Stored {
            seq,
            topic: "control/proplet/results".into(),
            task: task.into(),
            invocation: None,
            payload: vec![b'x'; bytes],
        }
    }

    /// Opens a fresh database in `dir` and runs `f` on the table in one transaction.
    fn with_table(dir: &std::path::Path, f: impl FnOnce(&mut Recent, &mut RecentTable<'_>)) {
        let db = redb::Database::create(dir.join("recent.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut recent = Recent::load(&txn).expect("load");
            let mut table = Recent::open(&txn).expect("table");
            f(&mut recent, &mut table);
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn more_answers_than_the_bound_keep_only_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        with_table(dir.path(), |recent, table| {
            let n = MAX_ANSWERS as u64 + 500;
            for seq in 0..n {
                recent
                    .insert(table, &answer(seq, &format!("t{seq}"), 10))
                    .expect("insert");
            }
            assert_eq!(recent.order.len(), MAX_ANSWERS);
            assert_eq!(table.len().expect("len"), MAX_ANSWERS as u64);
            assert_eq!(recent.last("t0", None), None, "the oldest are forgotten");
            assert_eq!(recent.last(&format!("t{}", n - 1), None), Some(n - 1));
            // Answered again: the newest answer is the one remembered.
            recent
                .insert(table, &answer(n, &format!("t{}", n - 1), 10))
                .expect("insert");
            assert_eq!(recent.last(&format!("t{}", n - 1), None), Some(n));
        });
    }

    #[test]
    fn big_answers_are_bounded_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        with_table(dir.path(), |recent, table| {
            // Each a quarter of the bound: never more than four kept.
            let size = (MAX_BYTES / 4) as usize;
            for seq in 0..20 {
                recent
                    .insert(table, &answer(seq, &format!("b{seq}"), size))
                    .expect("insert");
                assert!(recent.bytes <= MAX_BYTES, "{} bytes", recent.bytes);
            }
            assert_eq!(recent.order.len(), 4);
            assert_eq!(recent.last("b19", None), Some(19));
            assert_eq!(recent.last("b15", None), None);
        });
    }
}
