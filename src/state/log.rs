//! The journal's log file: records appended in place and made durable with one
//! `fdatasync` per commit.
//!
//! The file is grown in zeroed chunks of [`CHUNK`] ahead of what is written, so a commit
//! overwrites blocks the file already has: its `fdatasync` writes the data and nothing of
//! the inode (no new size, no new blocks). The zeros after the last frame mark the end.
//!
//! The log is compacted — the state it adds up to written to a new file, which is renamed
//! over it once on disk — when a process starts (what it recovers is taken out), when it
//! has grown well past that state, and after a failed write (so that nothing half-written
//! can ever be read back after newer records).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::journal::Recovered;
use super::live::{Live, Place};
use super::outbox::Stored;
use super::recent::{self, Recent};
use super::record::{FRAME_HEAD, MAGIC, Record, StoreRecord};

/// The file is grown in zeros to the next multiple of this when a commit would pass its
/// end (about 1,500 small results; a new log writes one chunk of zeros).
pub(super) const CHUNK: u64 = 256 << 10;
/// The log is compacted once it is this long and twice what compaction would keep (so
/// compaction, which costs what it keeps, is paid for by as many bytes appended).
pub(super) const COMPACT_FROM: u64 = 8 << 20;

/// How far a file `end` bytes long is zeroed: to the chunk boundary after `end`.
fn grown_to(end: u64) -> u64 {
    (end / CHUNK + 1) * CHUNK
}

/// The log file, open for appending.
#[derive(Debug)]
pub(super) struct Log {
    path: PathBuf,
    file: File,
    /// Where the next frame goes.
    end: u64,
    /// How far the file is zeroed.
    allocated: u64,
}

impl Log {
    /// Writes a new log of `content` (the header and frames) to `path`, through a file
    /// beside it that is renamed over it once on disk, and opens it.
    pub(super) fn create(path: &Path, content: &[u8]) -> io::Result<Log> {
        let new = path.with_extension("log.new");
        let end = content.len() as u64;
        let allocated = grown_to(end);
        {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&new)?;
            file.write_all_at(content, 0)?;
            zero(&file, end, allocated)?;
            file.sync_all()?;
        }
        std::fs::rename(&new, path)?;
        sync_dir(path)?;
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Log {
            path: path.to_owned(),
            file,
            end,
            allocated,
        })
    }

    /// Writes `frames` after the last frame and makes them durable; returns where they
    /// start. On failure nothing is counted as written, and the log must be compacted
    /// before anything else is appended.
    pub(super) fn append(&mut self, frames: &[u8]) -> io::Result<u64> {
        let at = self.end;
        let end = at + frames.len() as u64;
        if end > self.allocated {
            let grown = grown_to(end);
            zero(&self.file, self.allocated, grown)?;
            self.allocated = grown;
        }
        self.file.write_all_at(frames, at)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(at)
    }

    /// The result whose frame is at `place`.
    pub(super) fn read(&self, place: Place) -> Option<StoreRecord> {
        let mut frame = vec![0; usize::try_from(place.len).ok()?];
        match self.file.read_exact_at(&mut frame, place.offset) {
            Ok(()) => store_in(&frame),
            Err(e) => {
                warn!(error = %e, "the task journal's log cannot be read");
                None
            }
        }
    }

    /// How long the log is (up to its last frame).
    pub(super) fn len(&self) -> u64 {
        self.end
    }

    /// A new log of `live` (read from this one), replacing this one; and the state it
    /// replays to, with its places in the new file.
    pub(super) fn compact(&self, live: &Live) -> io::Result<(Log, Live)> {
        let frames = live
            .snapshot(|place| self.read(place))
            .map_err(|seq| io::Error::other(format!("result {seq} cannot be read back")))?;
        rewrite(&self.path, live.recent(), &frames)
    }
}

/// Writes a log of `frames` to `path` and reads it back into a state kept in `recent`.
fn rewrite(path: &Path, recent: Arc<Mutex<Recent>>, frames: &[u8]) -> io::Result<(Log, Live)> {
    let mut content = MAGIC.to_vec();
    content.extend_from_slice(frames);
    let log = Log::create(path, &content)?;
    let (mut live, damage) = Live::replay(&content, MAGIC.len());
    live.share(recent);
    match damage {
        None => Ok((log, live)),
        Some(at) => Err(io::Error::other(format!(
            "a new log reads back damaged at byte {at}"
        ))),
    }
}

/// The result in a whole frame, if it holds one.
fn store_in(frame: &[u8]) -> Option<StoreRecord> {
    match Record::decode(frame.get(FRAME_HEAD..)?)? {
        Record::Store(s) => Some(s),
        _ => None,
    }
}

/// Writes zeros over `from..to` of `file`.
fn zero(file: &File, from: u64, to: u64) -> io::Result<()> {
    const BLOCK: u64 = 64 << 10;
    let zeros = vec![0; BLOCK as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(BLOCK);
        file.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// Makes a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Opens the log at `path`, after `legacy` (frames of what an older journal held, applied
/// first): what a previous process left is taken out as [`Recovered`], and the rest written
/// to a new log. A damaged log keeps what precedes the damage; the file is set aside.
pub(super) fn recover(
    path: &Path,
    legacy: &[u8],
    recent: Arc<Mutex<Recent>>,
) -> io::Result<(Log, Live, Recovered)> {
    remove_if_there(&path.with_extension("log.new"))?;
    let old = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let readable = old.is_empty() || old.starts_with(MAGIC);
    let mut bytes = legacy.to_vec();
    if readable && !old.is_empty() {
        bytes.extend_from_slice(&old[MAGIC.len()..]);
    }
    let (mut live, damage) = Live::replay(&bytes, 0);
    let damage = match readable {
        true => damage.map(|at| (at + MAGIC.len() as u64).saturating_sub(legacy.len() as u64)),
        false => Some(0),
    };
    if let Some(at) = damage {
        set_aside(path, at)?;
    }
    live.prune(recent::now());
    let recovered = take(&mut live, &bytes);
    let frames = live
        .snapshot(|place| frame_at(&bytes, place).and_then(store_in))
        .map_err(|seq| io::Error::other(format!("result {seq} cannot be read back")))?;
    let (log, live) = rewrite(path, recent, &frames)?;
    Ok((log, live, recovered))
}

/// Takes out of `live` (read from `bytes`) what a new process must answer or publish.
fn take(live: &mut Live, bytes: &[u8]) -> Recovered {
    let (unanswered, latent) = live.take_jobs();
    let outbox = live
        .outbox()
        .filter_map(|(_, place)| frame_at(bytes, place).and_then(store_in))
        .map(|s| Stored {
            seq: s.seq,
            topic: s.topic,
            task: s.task,
            invocation: (!s.invocation.is_empty()).then_some(s.invocation),
            payload: s.payload,
        })
        .collect();
    let recovered = Recovered {
        unanswered,
        latent,
        outbox,
    };
    if recovered != Recovered::default() {
        info!(
            unanswered = recovered.unanswered.len(),
            latent = recovered.latent.len(),
            results = recovered.outbox.len(),
            "the task journal holds what a previous process left"
        );
    }
    recovered
}

fn frame_at(bytes: &[u8], place: Place) -> Option<&[u8]> {
    let from = usize::try_from(place.offset).ok()?;
    bytes.get(from..from + usize::try_from(place.len).ok()?)
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Keeps a damaged log for inspection, beside the new one.
fn set_aside(path: &Path, at: u64) -> io::Result<()> {
    let aside = path.with_extension(format!("corrupt-{}", std::process::id()));
    warn!(byte = at, aside = %aside.display(), "the task journal is damaged (a write cut short by a crash, or a damaged disk): what precedes the damage is kept, what follows is lost; the damaged file is set aside for inspection");
    std::fs::rename(path, &aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::Entry;
    use crate::state::writer::lock;

    fn job(task: &str) -> Entry {
        Entry::start(task)
    }

    fn result(seq: u64) -> Record {
        Record::Store(StoreRecord {
            seq,
            at: recent::now(),
            closes: true,
            remember: true,
            topic: "results".into(),
            task: format!("t{seq}"),
            invocation: String::new(),
            payload: format!("{{\"result\":{seq}}}").into_bytes(),
        })
    }

    /// Appends `records` in one commit and applies them, as the writer does.
    fn commit(log: &mut Log, live: &mut Live, records: &[Record]) {
        let mut frames = Vec::new();
        let mut at = Vec::new();
        for record in records {
            let start = frames.len() as u64;
            record.frame_into(&mut frames);
            at.push((start, frames.len() as u64 - start));
        }
        let base = log.append(&frames).expect("append");
        for (record, (start, len)) in records.iter().zip(at) {
            live.apply(record, base + start, len, recent::now());
        }
    }

    /// The outbox: each result's number, task and payload, as read back from the log.
    fn results(log: &Log, live: &Live) -> Vec<(u64, String, Vec<u8>)> {
        live.outbox()
            .map(|(_, place)| {
                let s = log.read(place).expect("readable");
                (s.seq, s.task, s.payload)
            })
            .collect()
    }

    #[test]
    fn a_compacted_log_holds_the_same_state_in_far_fewer_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let shared = Arc::new(Mutex::new(Recent::default()));
        let (mut log, mut live, _) = recover(&path, &[], shared.clone()).expect("new");
        commit(&mut log, &mut live, &[Record::Accept(job("open"))]);
        for seq in 0..3000 {
            let mut records = vec![Record::Accept(job(&format!("t{seq}"))), result(seq)];
            if seq % 3 != 0 {
                records.push(Record::Delivered(seq));
            }
            if seq % 100 == 0 {
                records.push(Record::Deployed(format!("l{seq}")));
            }
            if seq % 200 == 0 {
                records.push(Record::Forgotten(format!("l{seq}")));
            }
            commit(&mut log, &mut live, &records);
        }
        let before = (results(&log, &live), live.jobs.clone(), live.latent.clone());
        let remembered: Vec<u64> = lock(&shared).answers().collect();
        assert_eq!(remembered, (2000..3000).collect::<Vec<_>>());
        let (compacted, live) = log.compact(&live).expect("compact");
        assert!(
            compacted.len() * 2 < log.len(),
            "{} bytes, from {}",
            compacted.len(),
            log.len()
        );
        let after = (
            results(&compacted, &live),
            live.jobs.clone(),
            live.latent.clone(),
        );
        assert!(after == before, "the compacted state differs");
        assert!(
            after
                .0
                .iter()
                .all(|(seq, task, _)| *task == format!("t{seq}"))
        );
        assert_eq!(after.0.len(), 1000, "every third result is undelivered");
        assert_eq!(after.1.len(), 1, "only the open job");
        assert_eq!(after.2.len(), 15);
        assert_eq!(lock(&shared).answers().collect::<Vec<_>>(), remembered);
        let last = lock(&shared).last("t2999", None).expect("remembered");
        let place = live.place(last).expect("a place");
        assert_eq!(
            compacted.read(place).map(|s| s.payload),
            Some(b"{\"result\":2999}".to_vec())
        );
        drop((compacted, live));
        let (_, _, recovered) = recover(&path, &[], shared).expect("reopen");
        assert_eq!(recovered.outbox.len(), 1000);
        assert_eq!(recovered.unanswered, vec![job("open")]);
    }
}
