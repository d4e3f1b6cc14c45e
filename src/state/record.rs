//! The journal log's records and how they are framed on disk.
//!
//! A log is a header ([`MAGIC`]) and then frames, each `[body length: u32 LE][CRC-32 of the
//! body: u32 LE][body]`. A frame of length 0 ends the log: the file is grown in zeroed
//! chunks ahead of what is written, so the end of what was written reads as one. A frame
//! that does not fit the file or whose checksum does not match is damage: a write cut short
//! by a crash, or a damaged disk; nothing from it on is read.
//!
//! A body is a tag byte and the record's fields: integers little-endian, strings and bytes
//! as a `u32` length and the bytes.

use super::journal::{Entry, EntryKind};

/// The first bytes of every journal log (the last byte is the format's version).
pub(super) const MAGIC: &[u8; 8] = b"PROPLOG\x01";
/// The bytes in front of every body.
pub(super) const FRAME_HEAD: usize = 8;

/// One change to the journal, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    /// A job accepted.
    Accept(Entry),
    /// A job answered.
    Answered(Entry),
    /// A latent task deployed.
    Deployed(String),
    /// A latent task no longer deployed.
    Forgotten(String),
    /// A result stored in the outbox.
    Store(StoreRecord),
    /// A result the broker has acknowledged.
    Delivered(u64),
}

/// A result stored: where it goes, what it says, and what it does to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoreRecord {
    /// Its sequence number.
    pub(super) seq: u64,
    /// When it was stored (Unix seconds): how long it is remembered.
    pub(super) at: u64,
    /// Whether it crosses its job out.
    pub(super) closes: bool,
    /// Whether it is remembered as the job's last answer (a compacted log rewrites results
    /// only still in the outbox without it).
    pub(super) remember: bool,
    /// The topic suffix.
    pub(super) topic: String,
    /// The task it answers.
    pub(super) task: String,
    /// The invocation it answers, or "".
    pub(super) invocation: String,
    /// The encoded message.
    pub(super) payload: Vec<u8>,
}

impl StoreRecord {
    /// The job it answers: (task id, invocation id or "").
    pub(super) fn key(&self) -> (&str, &str) {
        (&self.task, &self.invocation)
    }
}

const ACCEPT: u8 = 1;
const ANSWERED: u8 = 2;
const DEPLOYED: u8 = 3;
const FORGOTTEN: u8 = 4;
const STORE: u8 = 5;
const DELIVERED: u8 = 6;

impl Record {
    /// Appends this record, framed, to `out`.
    pub(super) fn frame_into(&self, out: &mut Vec<u8>) {
        let head = out.len();
        out.extend_from_slice(&[0; FRAME_HEAD]);
        self.encode(out);
        let body = &out[head + FRAME_HEAD..];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(body);
        out[head..head + 4].copy_from_slice(&len.to_le_bytes());
        out[head + 4..head + FRAME_HEAD].copy_from_slice(&crc.to_le_bytes());
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Accept(e) => {
                out.push(ACCEPT);
                out.push(kind_byte(e.kind));
                put_entry(out, e);
            }
            Record::Answered(e) => {
                out.push(ANSWERED);
                put_entry(out, e);
            }
            Record::Deployed(id) => put_tagged(out, DEPLOYED, id),
            Record::Forgotten(id) => put_tagged(out, FORGOTTEN, id),
            Record::Store(s) => {
                out.push(STORE);
                out.extend_from_slice(&s.seq.to_le_bytes());
                out.extend_from_slice(&s.at.to_le_bytes());
                out.push(u8::from(s.closes) | u8::from(s.remember) << 1);
                for text in [&s.topic, &s.task, &s.invocation] {
                    put_bytes(out, text.as_bytes());
                }
                put_bytes(out, &s.payload);
            }
            Record::Delivered(seq) => {
                out.push(DELIVERED);
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
    }

    /// Reads a record from its body; `None` if it is not one.
    pub(super) fn decode(body: &[u8]) -> Option<Record> {
        let mut r = Reader(body);
        let record = match r.u8()? {
            ACCEPT => {
                let kind = kind_of(r.u8()?)?;
                Record::Accept(r.entry(kind)?)
            }
            ANSWERED => Record::Answered(r.entry(EntryKind::Start)?),
            DEPLOYED => Record::Deployed(r.text()?),
            FORGOTTEN => Record::Forgotten(r.text()?),
            STORE => Record::Store(r.store()?),
            DELIVERED => Record::Delivered(r.u64()?),
            _ => return None,
        };
        r.0.is_empty().then_some(record)
    }
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Start => 0,
        EntryKind::Deploy => 1,
        EntryKind::Invoke => 2,
    }
}

fn kind_of(byte: u8) -> Option<EntryKind> {
    match byte {
        0 => Some(EntryKind::Start),
        1 => Some(EntryKind::Deploy),
        2 => Some(EntryKind::Invoke),
        _ => None,
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_tagged(out: &mut Vec<u8>, tag: u8, text: &str) {
    out.push(tag);
    put_bytes(out, text.as_bytes());
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_bytes(out, e.task.as_bytes());
    put_bytes(out, e.invocation.as_deref().unwrap_or("").as_bytes());
}

/// A cursor over a body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u32()?).ok()?;
        Some(self.take(len)?.to_vec())
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }

    fn entry(&mut self, kind: EntryKind) -> Option<Entry> {
        let task = self.text()?;
        let invocation = self.text()?;
        Some(Entry {
            task,
            invocation: (!invocation.is_empty()).then_some(invocation),
            kind,
        })
    }

    fn store(&mut self) -> Option<StoreRecord> {
        let seq = self.u64()?;
        let at = self.u64()?;
        let flags = self.u8()?;
        Some(StoreRecord {
            seq,
            at,
            closes: flags & 1 != 0,
            remember: flags & 2 != 0,
            topic: self.text()?,
            task: self.text()?,
            invocation: self.text()?,
            payload: self.bytes()?,
        })
    }
}

/// One frame found in a log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// A record, and where its frame starts and how long it is (head included).
    Record(Record, u64, u64),
    /// Damage at this offset: nothing from here on can be read.
    Damaged(u64),
}

/// The frames of `bytes` from `offset` on, up to the end of the log (a zero length or the
/// end of `bytes`), or the first damage.
pub(super) fn frames(bytes: &[u8], offset: usize) -> impl Iterator<Item = Frame> + '_ {
    let mut at = Some(offset);
    std::iter::from_fn(move || {
        let here = at?;
        let (frame, next) = frame_at(bytes, here)?;
        at = next;
        Some(frame)
    })
}

/// The frame at `at`, and where the next one starts (`None` after damage).
fn frame_at(bytes: &[u8], at: usize) -> Option<(Frame, Option<usize>)> {
    let rest = bytes.get(at..)?;
    if rest.is_empty() {
        return None;
    }
    let damaged = Some((Frame::Damaged(at as u64), None));
    let Some(head) = rest.get(..FRAME_HEAD) else {
        // A short tail of zeros is the end of a log grown to an odd size; anything else is
        // a frame cut short.
        return if rest.iter().all(|b| *b == 0) {
            None
        } else {
            damaged
        };
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 {
        return if crc == 0 { None } else { damaged };
    }
    let Some(body) = rest.get(FRAME_HEAD..FRAME_HEAD + len) else {
        return damaged;
    };
    match (crc32fast::hash(body) == crc).then(|| Record::decode(body)) {
        Some(Some(record)) => {
            let size = FRAME_HEAD + len;
            Some((
                Frame::Record(record, at as u64, size as u64),
                Some(at + size),
            ))
        }
        _ => damaged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let job = Entry {
            task: "t1".into(),
            invocation: Some("i1".into()),
            kind: EntryKind::Invoke,
        };
        vec![
            Record::Accept(job.clone()),
            Record::Answered(Entry {
                kind: EntryKind::Start,
                ..job
            }),
            Record::Deployed("lat".into()),
            Record::Forgotten("lat".into()),
            Record::Store(StoreRecord {
                seq: 7,
                at: 1_700_000_000,
                closes: true,
                remember: false,
                topic: "results".into(),
                task: "t1".into(),
                invocation: String::new(),
                payload: b"{\"ok\":1}".to_vec(),
            }),
            Record::Delivered(u64::MAX),
        ]
    }

    fn log_of(records: &[Record]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        records.iter().for_each(|r| r.frame_into(&mut bytes));
        bytes
    }

    fn read(bytes: &[u8]) -> (Vec<Record>, Option<u64>) {
        let mut records = Vec::new();
        for frame in frames(bytes, MAGIC.len()) {
            match frame {
                Frame::Record(r, _, _) => records.push(r),
                Frame::Damaged(at) => return (records, Some(at)),
            }
        }
        (records, None)
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let records = samples();
        assert_eq!(read(&log_of(&records)), (records, None));
    }

    #[test]
    fn zeros_after_the_last_frame_end_the_log() {
        let records = samples();
        for pad in [0, 1, 7, 8, 4096] {
            let mut bytes = log_of(&records);
            bytes.resize(bytes.len() + pad, 0);
            assert_eq!(read(&bytes), (records.clone(), None), "{pad} zeros");
        }
    }

    #[test]
    fn a_log_cut_anywhere_keeps_every_whole_frame_before_the_cut() {
        let records = samples();
        let whole = log_of(&records);
        let ends: Vec<usize> = frames(&whole, MAGIC.len())
            .map(|f| match f {
                Frame::Record(_, at, len) => (at + len) as usize,
                Frame::Damaged(_) => panic!("damage in a whole log"),
            })
            .collect();
        for cut in MAGIC.len()..whole.len() {
            let (read_back, damage) = read(&whole[..cut]);
            let whole_frames = ends.iter().filter(|end| **end <= cut).count();
            assert_eq!(read_back, records[..whole_frames], "cut at {cut}");
            let at_boundary = cut == MAGIC.len() || ends.contains(&cut);
            assert_eq!(damage.is_some(), !at_boundary, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_damage_not_a_different_record() {
        let records = samples();
        let whole = log_of(&records);
        for byte in MAGIC.len()..whole.len() {
            for bit in 0..8 {
                let mut bytes = whole.clone();
                bytes[byte] ^= 1 << bit;
                let (read_back, _) = read(&bytes);
                assert!(
                    read_back.iter().zip(&records).all(|(a, b)| a == b),
                    "byte {byte} bit {bit} changed a record"
                );
                assert!(read_back.len() < records.len(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn a_length_bigger_than_the_file_is_damage() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(read(&bytes), (vec![], Some(MAGIC.len() as u64)));
    }
}
