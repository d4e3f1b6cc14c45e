//! Binaries sent inline (base64 in a start's `file`) that were decoded lately, so that a
//! manager sending the same workload again and again does not have it decoded and hashed
//! each time (for a 50 KB component, a tenth of a task's CPU).
//!
//! An entry is found by comparing the whole text, byte for byte: a start gets the binary of
//! a remembered text only if its text is exactly that text. Nothing is trusted from a
//! shorter key, so no crafted text can be taken for another one. The memory held is
//! bounded ([`MAX_BYTES`], [`MAX_ENTRIES`]); the least recently used entry goes first.
//!
//! The texts are also what the MQTT session's decoder shares ([`KnownTexts`]): a start whose
//! text it found here carries the remembered text itself, which this cache then recognises
//! without comparing it again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::KnownTexts;
use crate::runtime::Binary;

/// Text and binary bytes held, at most.
pub const MAX_BYTES: usize = 4 << 20;
/// Entries held, at most.
pub const MAX_ENTRIES: usize = 16;

/// The remembered texts and their binaries, most recently used last.
#[derive(Debug, Default)]
pub struct Decoded {
    entries: Mutex<VecDeque<(Arc<[u8]>, Binary)>>,
}

impl Decoded {
    /// The binary decoded from exactly `text` before, if remembered: the remembered text
    /// itself (shared by the decoder) needs no comparison.
    pub fn get(&self, text: &Arc<[u8]>) -> Option<Binary> {
        let mut entries = self.lock();
        let at = entries
            .iter()
            .rposition(|(known, _)| Arc::ptr_eq(known, text))
            .or_else(|| entries.iter().rposition(|(known, _)| **known == **text))?;
        let entry = entries.remove(at)?;
        let binary = entry.1.clone();
        entries.push_back(entry);
        Some(binary)
    }

    /// Remembers that `text` decodes to `binary`, unless the pair alone is over the bound.
    pub fn remember(&self, text: &Arc<[u8]>, binary: &Binary) {
        let size = weight(text, binary);
        if size > MAX_BYTES {
            return;
        }
        let mut entries = self.lock();
        let mut held: usize = entries.iter().map(|(t, b)| weight(t, b)).sum();
        while !entries.is_empty() && (held + size > MAX_BYTES || entries.len() >= MAX_ENTRIES) {
            if let Some((t, b)) = entries.pop_front() {
                held -= weight(&t, &b);
            }
        }
        entries.push_back((text.clone(), binary.clone()));
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(Arc<[u8]>, Binary)>> {
        // Entries are pushed and popped whole: a poisoned queue is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KnownTexts for Decoded {
    fn find(&self, text: &[u8]) -> Option<Arc<[u8]>> {
        let entries = self.lock();
        let (known, _) = entries.iter().rev().find(|(known, _)| **known == *text)?;
        Some(known.clone())
    }
}

/// The bytes an entry holds.
fn weight(text: &[u8], binary: &Binary) -> usize {
    text.len() + binary.bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> Arc<[u8]> {
        bytes.into()
    }

    #[test]
    fn only_the_exact_text_finds_its_binary() {
        let decoded = Decoded::default();
        decoded.remember(&text(b"AAAA"), &Binary::new(vec![0, 0, 0]));
        let found = decoded.get(&text(b"AAAA")).expect("an equal copy");
        assert_eq!(found.bytes[..], [0, 0, 0]);
        assert!(
            decoded.get(&text(b"AAAB")).is_none(),
            "same length, another text"
        );
        assert!(
            decoded.get(&text(b"AAAAAAAA")).is_none(),
            "same start, longer"
        );
        assert!(decoded.get(&text(b"")).is_none());
    }

    #[test]
    fn the_decoder_shares_only_a_text_equal_to_the_last_byte() {
        let decoded = Decoded::default();
        let held = text(&[b'A'; 4096]);
        decoded.remember(&held, &Binary::new(vec![7]));
        let shared = decoded.find(&[b'A'; 4096]).expect("the same bytes");
        assert!(Arc::ptr_eq(&shared, &held), "the held text, not a copy");
        assert_eq!(decoded.get(&shared).expect("known").bytes[..], [7]);
        let mut last_differs = [b'A'; 4096];
        last_differs[4095] = b'B';
        assert!(decoded.find(&last_differs).is_none());
        assert!(decoded.find(&[b'A'; 4095]).is_none(), "a prefix");
        assert!(decoded.find(&[b'A'; 4097]).is_none(), "one byte longer");
    }

    #[test]
    fn the_bounds_hold_and_the_least_recently_used_goes_first() {
        let decoded = Decoded::default();
        for n in 0..MAX_ENTRIES {
            let t = text(format!("text{n}").as_bytes());
            decoded.remember(&t, &Binary::new(vec![n as u8]));
        }
        assert!(
            decoded.get(&text(b"text0")).is_some(),
            "text0 is now the most recent"
        );
        decoded.remember(&text(b"one more"), &Binary::new(vec![1]));
        assert!(
            decoded.get(&text(b"text1")).is_none(),
            "the least recent went"
        );
        assert!(decoded.find(b"text1").is_none(), "nor is it shared");
        assert!(decoded.get(&text(b"text0")).is_some());
        let big = text(&vec![b'x'; MAX_BYTES / 2]);
        decoded.remember(&big, &Binary::new(vec![0; 16]));
        assert!(decoded.get(&big).is_some());
        let held: usize = decoded.lock().iter().map(|(t, b)| weight(t, b)).sum();
        assert!(held <= MAX_BYTES);
        let too_big = text(&vec![b'y'; MAX_BYTES]);
        decoded.remember(&too_big, &Binary::new(vec![0]));
        assert!(decoded.get(&too_big).is_none(), "over the bound alone");
        assert!(decoded.get(&big).is_some(), "and it evicted nothing");
    }
}
