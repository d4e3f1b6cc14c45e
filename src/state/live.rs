//! What the journal's log adds up to, kept in memory by its writer: the jobs accepted and
//! not answered, the latent tasks deployed, the results in the outbox, the answers
//! remembered, and where in the log each result is (results are read back from the log, not
//! kept in memory).
//!
//! The same code applies a record just written and a record read back at start-up, and a
//! compacted log is written from this state and read back into it: what a log says is
//! what the worker does, whichever way it got there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::journal::{Entry, EntryKind};
use super::recent::Recent;
use super::record::{Frame, Record, StoreRecord, frames};
use super::writer::lock;

/// Where a result's frame is in the log, and what holds it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    /// The frame's offset.
    pub(super) offset: u64,
    /// The frame's length, head included.
    pub(super) len: u64,
    /// The payload's length.
    payload: u64,
    /// Still in the outbox (not acknowledged).
    outbox: bool,
    /// Still remembered as an answer.
    remembered: bool,
}

/// What a record changed in the outbox, for its counters.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing the outbox counts.
    None,
    /// A result of this many payload bytes entered it.
    Stored(usize),
    /// A result of this many payload bytes left it.
    Removed(usize),
}

/// The journal's state, as of the last record applied.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) jobs: HashMap<(String, String), EntryKind>,
    pub(super) latent: BTreeSet<String>,
    /// Results by sequence number: in the outbox, remembered, or both.
    places: BTreeMap<u64, Place>,
    recent: Arc<Mutex<Recent>>,
}

fn job_key(task: &str, invocation: &str) -> (String, String) {
    (task.to_owned(), invocation.to_owned())
}

impl Live {
    /// The state `log` (frames from `offset` on) adds up to, and where the log is damaged,
    /// if it is. Its remembered answers are its own until [`Live::share`].
    pub(super) fn replay(log: &[u8], offset: usize) -> (Live, Option<u64>) {
        let mut live = Live::default();
        for frame in frames(log, offset) {
            match frame {
                Frame::Record(record, at, len) => {
                    live.apply(&record, at, len, recent_now(&record));
                }
                Frame::Damaged(at) => return (live, Some(at)),
            }
        }
        (live, None)
    }

    /// Moves the remembered answers into `shared` (which the journal's handles look answers
    /// up in), replacing what it held in one step, and keeps them there from now on.
    pub(super) fn share(&mut self, shared: Arc<Mutex<Recent>>) {
        let built = std::mem::take(&mut *lock(&self.recent));
        *lock(&shared) = built;
        self.recent = shared;
    }

    /// Where the remembered answers are kept.
    pub(super) fn recent(&self) -> Arc<Mutex<Recent>> {
        self.recent.clone()
    }

    /// Applies `record`, whose frame is at `offset` and `len` bytes long, with the time
    /// now (for the bounds of what is remembered).
    pub(super) fn apply(&mut self, record: &Record, offset: u64, len: u64, now: u64) -> Change {
        match record {
            Record::Accept(e) => {
                let key = job_key(&e.task, e.invocation.as_deref().unwrap_or(""));
                self.jobs.insert(key, e.kind);
            }
            Record::Answered(e) => {
                let key = job_key(&e.task, e.invocation.as_deref().unwrap_or(""));
                self.jobs.remove(&key);
            }
            Record::Deployed(id) => drop(self.latent.insert(id.clone())),
            Record::Forgotten(id) => drop(self.latent.remove(id)),
            Record::Store(s) => return self.store(s, offset, len, now),
            Record::Delivered(seq) => return self.delivered(*seq),
        }
        Change::None
    }

    fn store(&mut self, s: &StoreRecord, offset: u64, len: u64, now: u64) -> Change {
        if s.closes {
            self.jobs.remove(&job_key(&s.task, &s.invocation));
        }
        let payload = s.payload.len() as u64;
        // A result read twice (a log migrated twice) is one result, at its latest place.
        let known = self.places.contains_key(&s.seq);
        let place = self.places.entry(s.seq).or_insert(Place {
            offset,
            len,
            payload,
            outbox: true,
            remembered: false,
        });
        (place.offset, place.len) = (offset, len);
        if s.remember && !place.remembered {
            place.remembered = true;
            let job = job_key(&s.task, &s.invocation);
            let forgotten = lock(&self.recent).remember(s.seq, job, payload, s.at, now);
            self.forget(forgotten);
        }
        if known {
            Change::None
        } else {
            Change::Stored(payload as usize)
        }
    }

    fn delivered(&mut self, seq: u64) -> Change {
        let Some(place) = self.places.get_mut(&seq).filter(|p| p.outbox) else {
            return Change::None;
        };
        place.outbox = false;
        let payload = place.payload as usize;
        if !place.remembered {
            self.places.remove(&seq);
        }
        Change::Removed(payload)
    }

    /// Drops answers no longer remembered (and their places, unless still in the outbox).
    fn forget(&mut self, forgotten: Vec<u64>) {
        for seq in forgotten {
            if let Some(place) = self.places.get_mut(&seq) {
                place.remembered = false;
                if !place.outbox {
                    self.places.remove(&seq);
                }
            }
        }
    }

    /// Forgets the answers older than the window as of `now`.
    pub(super) fn prune(&mut self, now: u64) {
        let forgotten = lock(&self.recent).prune(now);
        self.forget(forgotten);
    }

    /// Where result `seq` is, if it is still in the outbox or remembered.
    pub(super) fn place(&self, seq: u64) -> Option<Place> {
        self.places.get(&seq).copied()
    }

    /// The results in the outbox, in order.
    pub(super) fn outbox(&self) -> impl Iterator<Item = (u64, Place)> + '_ {
        self.places
            .iter()
            .filter(|(_, p)| p.outbox)
            .map(|(seq, p)| (*seq, *p))
    }

    /// The sequence number after the highest one in use.
    pub(super) fn next_seq(&self) -> u64 {
        self.places.last_key_value().map_or(0, |(seq, _)| seq + 1)
    }

    /// About how many bytes a log of this state takes: what compaction would keep.
    pub(super) fn size(&self) -> u64 {
        let results: u64 = self.places.values().map(|p| p.len).sum();
        results + 64 * (self.jobs.len() + self.latent.len()) as u64
    }

    /// Takes the jobs and latent tasks out (a new process answers them once).
    pub(super) fn take_jobs(&mut self) -> (Vec<Entry>, Vec<String>) {
        let jobs = self.jobs.drain().map(|((task, invocation), kind)| Entry {
            task,
            invocation: (!invocation.is_empty()).then_some(invocation),
            kind,
        });
        (
            jobs.collect(),
            std::mem::take(&mut self.latent).into_iter().collect(),
        )
    }

    /// The frames of a log that replays to this state, reading each result's frame with
    /// `read` (from wherever this state's places point).
    pub(super) fn snapshot(
        &self,
        mut read: impl FnMut(Place) -> Option<StoreRecord>,
    ) -> Result<Vec<u8>, u64> {
        let mut out = Vec::new();
        for ((task, invocation), kind) in &self.jobs {
            let entry = Entry {
                task: task.clone(),
                invocation: (!invocation.is_empty()).then(|| invocation.clone()),
                kind: *kind,
            };
            Record::Accept(entry).frame_into(&mut out);
        }
        for id in &self.latent {
            Record::Deployed(id.clone()).frame_into(&mut out);
        }
        // Results only in the outbox first, then the remembered ones oldest first, so
        // that the bounds forget the same ones again.
        let remembered: Vec<u64> = lock(&self.recent).answers().collect();
        let only_outbox = self.places.iter().filter(|(_, p)| !p.remembered);
        let order = only_outbox.map(|(seq, _)| *seq).chain(remembered);
        for seq in order {
            let place = self.places.get(&seq).copied().ok_or(seq)?;
            let mut s = read(place).filter(|s| s.seq == seq).ok_or(seq)?;
            (s.closes, s.remember) = (false, place.remembered);
            Record::Store(s).frame_into(&mut out);
            if !place.outbox {
                Record::Delivered(seq).frame_into(&mut out);
            }
        }
        Ok(out)
    }
}

/// The time a record read back is applied at: its own, for a result, so that the bounds
/// forget what they forgot when it was written (the window is applied to the present once
/// the whole log is read). Other records forget nothing.
fn recent_now(record: &Record) -> u64 {
    match record {
        Record::Store(s) => s.at,
        _ => 0,
    }
}
