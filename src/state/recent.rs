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
