//! Binaries sent inline (base64 in a start's `file`) that were decoded lately, so that a
//! manager sending the same workload again and again does not have it decoded and hashed
//! each time (for a 50 KB component, a tenth of a task's CPU).
//!
//! An entry is found by comparing the whole text, byte for byte: a start gets the binary of
//! a remembered text only if its text is exactly that text. Nothing is trusted from a
//! shorter key, so no crafted text can be taken for another one. The memory held is
//! bounded ([`MAX_BYTES`], [`MAX_ENTRIES`]); the least recently used entry goes first.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::runtime::Binary;

/// Text and binary bytes held, at most.
pub const MAX_BYTES: usize = 4 << 20;
/// Entries held, at most.
pub const MAX_ENTRIES: usize = 16;

/// The remembered texts and their binaries, most recently used last.
#[derive(Debug, Default)]
pub struct Decoded {
    entries: Mutex<VecDeque<(Box<[u8]>, Binary)>>,
}

impl Decoded {
    /// The binary decoded from exactly `text` before, if remembered.
    pub fn get(&self, text: &[u8]) -> Option<Binary> {
        let mut entries = self.lock();
        let at = entries
            .iter()
            .rposition(|(known, _)| known.len() == text.len() && **known == *text)?;
        let entry = entries.remove(at)?;
        let binary = entry.1.clone();
        entries.push_back(entry);
        Some(binary)
    }

    /// Remembers that `text` decodes to `binary`, unless the pair alone is over the bound.
    pub fn remember(&self, text: &[u8], binary: &Binary) {
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
        entries.push_back((text.into(), binary.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Box<[u8]>, Binary)>> {
        // Entries are pushed and popped whole: a poisoned queue is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bytes an entry holds.
fn weight(text: &[u8], binary: &Binary) -> usize {
    text.len() + binary.bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_text_finds_its_binary() {
        let decoded = Decoded::default();
        decoded.remember(b"AAAA", &Binary::new(vec![0, 0, 0]));
        assert_eq!(decoded.get(b"AAAA").expect("found").bytes[..], [0, 0, 0]);
        assert!(decoded.get(b"AAAB").is_none(), "same length, another text");
        assert!(decoded.get(b"AAAAAAAA").is_none(), "same start, longer");
        assert!(decoded.get(b"").is_none());
    }

    #[test]
    fn the_bounds_hold_and_the_least_recently_used_goes_first() {
        let decoded = Decoded::default();
        for n in 0..MAX_ENTRIES {
            decoded.remember(format!("text{n}").as_bytes(), &Binary::new(vec![n as u8]));
        }
        assert!(
            decoded.get(b"text0").is_some(),
            "text0 is now the most recent"
        );
        decoded.remember(b"one more", &Binary::new(vec![1]));
        assert!(decoded.get(b"text1").is_none(), "the least recent went");
        assert!(decoded.get(b"text0").is_some());
        let big = vec![b'x'; MAX_BYTES / 2];
        decoded.remember(&big, &Binary::new(vec![0; 16]));
        assert!(decoded.get(&big).is_some());
        let held: usize = decoded.lock().iter().map(|(t, b)| weight(t, b)).sum();
        assert!(held <= MAX_BYTES);
        let too_big = vec![b'y'; MAX_BYTES];
        decoded.remember(&too_big, &Binary::new(vec![0]));
        assert!(decoded.get(&too_big).is_none(), "over the bound alone");
        assert!(decoded.get(&big).is_some(), "and it evicted nothing");
    }
}
