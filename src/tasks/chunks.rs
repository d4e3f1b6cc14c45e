//! Reassembly of registry chunks (docs/protocol.md §4.9, §5.9.2). Pure and synchronous.
//!
//! Assemblies are keyed by `app_name`, and only names this proplet asked for are assembled
//! (another proplet's transfer is ignored). The first chunk fixes `total_chunks`; a chunk
//! that disagrees belongs to another transfer and is rejected. An identical duplicate is
//! ignored, but a duplicate index with other bytes means two streams are interleaving
//! under one name (another version of a tag, a stale transfer): the assembly is abandoned
//! rather than mixing their chunks into one binary. Chunks may arrive in any order. The
//! number of concurrent assemblies, the size of each and its number of chunks are capped
//! (so a flood of empty chunks cannot grow memory either).

use std::collections::{BTreeMap, HashMap};

/// Most chunks one transfer may have.
pub const MAX_CHUNKS: u64 = 1 << 16;

/// Why a chunk or an assembly was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// `total_chunks` differs from the first chunk's.
    #[error(
        "chunk {idx} of {app_name} says total_chunks={got}, the transfer started with {expected}"
    )]
    ConflictingTotal {
        /// Transfer key.
        app_name: String,
        /// Index of the offending chunk.
        idx: u64,
        /// The first chunk's total.
        expected: u64,
        /// This chunk's total.
        got: u64,
    },
    /// Index out of range, zero total, or more than `MAX_CHUNKS`.
    #[error("chunk {idx} of {total} for {app_name} is out of range (at most {MAX_CHUNKS} chunks)")]
    OutOfRange {
        /// Transfer key.
        app_name: String,
        /// Index.
        idx: u64,
        /// Total.
        total: u64,
    },
    /// The assembled binary would exceed the size cap.
    #[error("the binary {app_name} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Transfer key.
        app_name: String,
        /// The cap.
        limit: u64,
    },
    /// Two transfers with different bytes interleave under one name.
    #[error(
        "chunk {idx} of {app_name} arrived twice with different bytes: two transfers interleave; pin the digest or retry"
    )]
    ConflictingData {
        /// Transfer key.
        app_name: String,
        /// Index of the conflicting chunk.
        idx: u64,
    },
    /// Too many transfers at once.
    #[error("too many registry transfers in progress (limit {0})")]
    TooManyAssemblies(usize),
}

/// One transfer in progress.
#[derive(Debug, Default)]
struct Assembly {
    total: Option<u64>,
    parts: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

/// All transfers in progress.
#[derive(Debug)]
pub struct Assembler {
    assemblies: HashMap<String, Assembly>,
    max_bytes: u64,
    max_assemblies: usize,
}

impl Assembler {
    /// Caps each binary at `max_bytes` and the number of transfers at `max_assemblies`.
    pub fn new(max_bytes: u64, max_assemblies: usize) -> Self {
        Assembler {
            assemblies: HashMap::new(),
            max_bytes,
            max_assemblies,
        }
    }

    /// Opens an assembly for `app_name` (no-op if one is open).
    pub fn expect(&mut self, app_name: &str) -> Result<(), ChunkError> {
        if self.assemblies.contains_key(app_name) {
            return Ok(());
        }
        if self.assemblies.len() >= self.max_assemblies {
            return Err(ChunkError::TooManyAssemblies(self.max_assemblies));
        }
        self.assemblies
            .insert(app_name.to_owned(), Assembly::default());
        Ok(())
    }

    /// Whether an assembly for `app_name` is open.
    pub fn is_expected(&self, app_name: &str) -> bool {
        self.assemblies.contains_key(app_name)
    }

    /// Drops the assembly for `app_name`.
    pub fn forget(&mut self, app_name: &str) {
        self.assemblies.remove(app_name);
    }

    /// Adds a chunk to an open assembly. Returns the whole binary once complete (and closes
    /// the assembly); `Ok(None)` while incomplete, for duplicates and for unexpected names.
    /// [`ChunkError::TooLarge`] and [`ChunkError::ConflictingData`] close the assembly.
    pub fn accept(
        &mut self,
        app_name: &str,
        idx: u64,
        total: u64,
        data: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let max_bytes = self.max_bytes;
        let Some(asm) = self.assemblies.get_mut(app_name) else {
            return Ok(None);
        };
        if total == 0 || idx >= total || total > MAX_CHUNKS {
            return Err(ChunkError::OutOfRange {
                app_name: app_name.into(),
                idx,
                total,
            });
        }
        match asm.total {
            Some(expected) if expected != total => {
                return Err(ChunkError::ConflictingTotal {
                    app_name: app_name.into(),
                    idx,
                    expected,
                    got: total,
                });
            }
            _ => asm.total = Some(total),
        }
        if let Some(seen) = asm.parts.get(&idx) {
            if *seen == data {
                return Ok(None);
            }
            self.assemblies.remove(app_name);
            return Err(ChunkError::ConflictingData {
                app_name: app_name.into(),
                idx,
            });
        }
        asm.bytes += data.len() as u64;
        if asm.bytes > max_bytes {
            self.assemblies.remove(app_name);
            return Err(ChunkError::TooLarge {
                app_name: app_name.into(),
                limit: max_bytes,
            });
        }
        asm.parts.insert(idx, data);
        if asm.parts.len() as u64 == total {
            let done = self
                .assemblies
                .remove(app_name)
                .map(|a| a.parts.into_values().flatten().collect());
            return Ok(done);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "docker.io/example/addition:latest";

    /// An assembler of up to 1 MiB in 4 transfers, expecting [`APP`].
    fn expecting_app() -> Assembler {
        let mut a = Assembler::new(1 << 20, 4);
        a.expect(APP).unwrap();
        a
    }

    #[test]
    fn assembles_out_of_order_with_duplicates() {
        let mut a = expecting_app();
        assert_eq!(a.accept(APP, 1, 2, b"world".to_vec()), Ok(None));
        assert_eq!(a.accept(APP, 1, 2, b"world".to_vec()), Ok(None));
        assert_eq!(
            a.accept(APP, 0, 2, b"hello ".to_vec()),
            Ok(Some(b"hello world".to_vec()))
        );
        assert!(!a.is_expected(APP));
    }

    #[test]
    fn two_streams_under_one_name_are_never_mixed() {
        let mut a = expecting_app();
        assert_eq!(a.accept(APP, 0, 3, b"ours-0".to_vec()), Ok(None));
        assert_eq!(a.accept(APP, 1, 3, b"theirs-1".to_vec()), Ok(None));
        assert!(matches!(
            a.accept(APP, 1, 3, b"ours-1".to_vec()),
            Err(ChunkError::ConflictingData { idx: 1, .. })
        ));
        assert!(!a.is_expected(APP), "the mixed transfer is abandoned");
        assert_eq!(a.accept(APP, 2, 3, b"ours-2".to_vec()), Ok(None));
    }

    #[test]
    fn unexpected_names_are_ignored() {
        let mut a = Assembler::new(1 << 20, 4);
        assert_eq!(a.accept("other", 0, 1, b"x".to_vec()), Ok(None));
        assert!(!a.is_expected("other"));
    }

    #[test]
    fn conflicting_totals_and_bad_indices_are_rejected() {
        let mut a = expecting_app();
        assert_eq!(a.accept(APP, 0, 3, b"a".to_vec()), Ok(None));
        assert!(matches!(
            a.accept(APP, 1, 2, b"b".to_vec()),
            Err(ChunkError::ConflictingTotal {
                expected: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            a.accept(APP, 3, 3, b"b".to_vec()),
            Err(ChunkError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.accept(APP, 0, 0, b"b".to_vec()),
            Err(ChunkError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.accept(APP, u64::MAX, 3, vec![]),
            Err(ChunkError::OutOfRange { .. })
        ));
        assert!(a.is_expected(APP), "a bad chunk does not end the transfer");
    }

    #[test]
    fn caps_size_and_count() {
        let mut a = Assembler::new(4, 1);
        a.expect(APP).unwrap();
        assert_eq!(a.expect("second"), Err(ChunkError::TooManyAssemblies(1)));
        assert_eq!(a.accept(APP, 0, 2, b"abc".to_vec()), Ok(None));
        assert!(matches!(
            a.accept(APP, 1, 2, b"de".to_vec()),
            Err(ChunkError::TooLarge { .. })
        ));
        assert!(!a.is_expected(APP));
        a.expect("second").unwrap();
    }
}
