//! The durable outbox: every result (and invocation result) written to disk before it is
//! handed to the MQTT session, and removed once the broker has acknowledged it, so that a
//! result is never lost with the process — a crash, a power cut or a stop while the broker
//! is away leaves it here, and the next process publishes it first.
//!
//! Entries are numbered in the order they were stored; the next process replays them in
//! that order. They are records of the journal's log, written by its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::record::StoreRecord;

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

impl Unstored {
    /// The record of this result, numbered `seq`, stored now and remembered.
    pub(super) fn numbered(self, seq: u64) -> StoreRecord {
        StoreRecord {
            seq,
            at: super::recent::now(),
            closes: self.closes,
            remember: true,
            topic: self.topic,
            task: self.task,
            invocation: self.invocation.unwrap_or_default(),
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
