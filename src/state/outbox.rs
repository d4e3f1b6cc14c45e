//! The durable outbox: every result (and invocation result) written to disk before it is
//! handed to the MQTT session, and removed once the broker has acknowledged it, so that a
//! result is never lost with the process — a crash, a power cut or a stop while the broker
//! is away leaves it here, and the next process publishes it first.
//!
//! Entries are numbered in the order they were stored; the next process replays them in
//! that order. The table lives in the journal's database and is written by its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable as _, Table, TableDefinition, WriteTransaction};

/// A row: (topic, task id, invocation id or "", payload).
type Row = (&'static str, &'static str, &'static str, &'static [u8]);

/// Results not yet acknowledged: sequence number → row.
pub(super) const OUTBOX: TableDefinition<u64, Row> = TableDefinition::new("outbox");

/// The outbox table, open in a write transaction.
pub(super) type OutboxTable<'txn> = Table<'txn, u64, Row>;

/// One result kept until the broker acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its place in the outbox: replayed in this order.
    pub seq: u64,
    /// The topic suffix it is published on (`results` or `invoke/results`).
    pub topic: String,
    /// The task it answers.
    pub task: String,
    /// The invocation it answers, for an invocation result.
    pub invocation: Option<String>,
    /// The encoded message.
    pub payload: Vec<u8>,
}

/// A result to store: everything but its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstored {
    /// The topic suffix it is published on.
    pub topic: String,
    /// The task it answers.
    pub task: String,
    /// The invocation it answers, if any.
    pub invocation: Option<String>,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// Whether it is the job's last answer: then the job is crossed out of the journal in
    /// the same commit that stores it, so that no crash can leave both an answer and a job
    /// to answer `interrupted`. A daemon's acknowledgement is not (the job stays until
    /// the daemon ends).
    pub closes: bool,
}

impl Stored {
    /// The key of the job it answers in the journal's jobs table.
    pub(super) fn key(&self) -> (&str, &str) {
        (&self.task, self.invocation.as_deref().unwrap_or(""))
    }
}

impl Unstored {
    /// The entry numbered `seq`.
    pub(super) fn numbered(self, seq: u64) -> Stored {
        Stored {
            seq,
            topic: self.topic,
            task: self.task,
            invocation: self.invocation,
            payload: self.payload,
        }
    }
}

/// How much the outbox holds, kept in memory beside the table (for admission and metrics).
#[derive(Debug, Default)]
pub(super) struct Depth {
    /// The next sequence number.
    pub(super) next: AtomicU64,
    /// Entries stored and not delivered.
    pub(super) messages: AtomicU64,
    /// Their payload bytes.
    pub(super) bytes: AtomicU64,
}

impl Depth {
    /// Counts `stored` in.
    pub(super) fn add(&self, payload: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload as u64, Ordering::Relaxed);
    }

    /// Counts `payload` bytes out.
    pub(super) fn remove(&self, payload: usize) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(payload as u64, Ordering::Relaxed);
    }
}

/// Shared between the journal's handles and its writer thread.
pub(super) type SharedDepth = Arc<Depth>;

/// Inserts `entry` in `table`.
pub(super) fn insert(table: &mut OutboxTable<'_>, entry: &Stored) -> Result<(), redb::Error> {
    let invocation = entry.invocation.as_deref().unwrap_or("");
    let value = (
        entry.topic.as_str(),
        entry.task.as_str(),
        invocation,
        entry.payload.as_slice(),
    );
    table.insert(entry.seq, value)?;
    Ok(())
}

/// Removes entry `seq` from `table`; returns its payload size if it was there.
pub(super) fn remove(table: &mut OutboxTable<'_>, seq: u64) -> Result<Option<usize>, redb::Error> {
    let removed = table.remove(seq)?;
    Ok(removed.map(|row| row.value().3.len()))
}

/// Everything in the outbox, in order (it stays there until delivered).
pub(super) fn read_all(txn: &WriteTransaction) -> Result<Vec<Stored>, redb::Error> {
    let table = txn.open_table(OUTBOX)?;
    let mut all = Vec::new();
    for row in table.iter()? {
        let (seq, value) = row?;
        let (topic, task, invocation, payload) = value.value();
        all.push(Stored {
            seq: seq.value(),
            topic: topic.to_owned(),
            task: task.to_owned(),
            invocation: (!invocation.is_empty()).then(|| invocation.to_owned()),
            payload: payload.to_vec(),
        });
    }
    Ok(all)
}
