//! A start's inline binary (`file`): its base64 text, kept as the bytes that came.
//!
//! The text is not checked as UTF-8, nor for control characters, nor copied through a
//! `String` while the message is decoded: the JSON decoder then only looks for the closing
//! quote or a backslash (a vectorized search, where a string is scanned eight bytes at a
//! time for all three), and the base64 decoder checks every byte anyway (anything outside
//! its alphabet is refused). For a 68 KB component start that was 4-7 µs of a task's CPU.
//!
//! A manager tends to send one workload again and again. A decode given the texts the
//! worker already holds ([`KnownTexts`], through [`sharing`]) shares the held text when the
//! new one is byte for byte the same, instead of copying it out of the message: no
//! allocation, no copy, and nothing for the job to free.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The base64 text of a binary sent inline in a start, as bytes (shared, never changed).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InlineFile(Arc<[u8]>);

/// Inline texts the worker holds already, for a decode to share instead of copying.
pub trait KnownTexts: Send + Sync {
    /// The held text equal to `text` byte for byte, if there is one. Nothing shorter than
    /// the whole text may decide it: a text that differs in its last byte is another text.
    fn find(&self, text: &[u8]) -> Option<Arc<[u8]>>;
}

thread_local! {
    /// The texts a decode running on this thread may share (see [`sharing`]).
    static KNOWN: RefCell<Option<Arc<dyn KnownTexts>>> = const { RefCell::new(None) };
}

/// Runs `decode` with `known` consulted for every inline text it reads on this thread.
pub(super) fn sharing<T>(known: &Arc<dyn KnownTexts>, decode: impl FnOnce() -> T) -> T {
    /// Puts back what the thread had before, however `decode` ends.
    struct Restore(Option<Arc<dyn KnownTexts>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            KNOWN.set(self.0.take());
        }
    }
    let _restore = Restore(KNOWN.replace(Some(known.clone())));
    decode()
}

/// `text` as an inline file: the held copy if [`sharing`] knows it, else a copy of it.
fn shared_or_copied(text: &[u8]) -> InlineFile {
    let found = KNOWN.with_borrow(|known| known.as_ref().and_then(|k| k.find(text)));
    InlineFile(found.unwrap_or_else(|| text.into()))
}

impl InlineFile {
    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text itself, as shared with whoever holds it too.
    pub fn shared(&self) -> &Arc<[u8]> {
        &self.0
    }

    /// Whether no binary was sent inline.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for InlineFile {
    fn from(text: String) -> Self {
        InlineFile(text.into_bytes().into())
    }
}

impl From<&str> for InlineFile {
    fn from(text: &str) -> Self {
        InlineFile(text.as_bytes().into())
    }
}

impl PartialEq<&str> for InlineFile {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

/// Its length only: a debug line never carries tens of kilobytes of base64.
impl fmt::Debug for InlineFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineFile({} bytes)", self.0.len())
    }
}

/// As a JSON string (bytes that are not UTF-8, which no base64 text has, are replaced).
impl Serialize for InlineFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

/// From a JSON string; anything else (a number, an array) is the usual type error.
impl<'de> Deserialize<'de> for InlineFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(TextBytes)
    }
}

struct TextBytes;

impl Visitor<'_> for TextBytes {
    type Value = InlineFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<InlineFile, E> {
        Ok(shared_or_copied(text.as_bytes()))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<InlineFile, E> {
        Ok(shared_or_copied(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Inbound, Topic, decode_sharing};

    fn decode(json: &str) -> Result<InlineFile, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_string_is_taken_as_its_bytes_and_written_back_as_a_string() {
        let file = decode(r#""AGFzbQEAAAA=""#).expect("a string");
        assert_eq!(file, "AGFzbQEAAAA=");
        assert_eq!(serde_json::to_string(&file).unwrap(), r#""AGFzbQEAAAA=""#);
        assert_eq!(format!("{file:?}"), "InlineFile(12 bytes)");
    }

    #[test]
    fn escapes_are_undone_and_other_types_refused() {
        assert_eq!(decode(r#""AG\/z\u0062""#).expect("escaped"), "AG/zb");
        for other in ["[65, 71]", "12", "true", "{}"] {
            let error = decode(other).expect_err(other).to_string();
            assert!(error.contains("expected a string"), "{other}: {error}");
        }
    }

    /// Holds one text, as the worker's cache of decoded binaries would.
    struct Holds(Arc<[u8]>);

    impl KnownTexts for Holds {
        fn find(&self, text: &[u8]) -> Option<Arc<[u8]>> {
            (*self.0 == *text).then(|| self.0.clone())
        }
    }

    fn holding(text: &[u8]) -> (Arc<[u8]>, Arc<dyn KnownTexts>) {
        let held: Arc<[u8]> = text.into();
        (held.clone(), Arc::new(Holds(held)))
    }

    #[test]
    fn a_start_shares_a_known_text_and_copies_any_other() {
        let (held, known) = holding(b"AGFzbQEAAAA=");
        let payload = br#"{"id":"t","file":"AGFzbQEAAAA="}"#;
        let Ok(Inbound::Start(start)) = decode_sharing(Topic::Start, payload, &known) else {
            panic!("a start");
        };
        assert!(
            Arc::ptr_eq(start.file.shared(), &held),
            "shared, not copied"
        );
        let escaped = sharing(&known, || decode(r#""AGFzbQEAAAA\u003d""#)).expect("escaped");
        assert!(
            Arc::ptr_eq(escaped.shared(), &held),
            "the same text once unescaped"
        );
        let other = sharing(&known, || decode(r#""AGFzbQEAAAB=""#)).expect("another");
        assert!(!Arc::ptr_eq(other.shared(), &held));
        assert_eq!(other, "AGFzbQEAAAB=");
        let plain = decode(r#""AGFzbQEAAAA=""#).expect("without sharing");
        assert!(
            !Arc::ptr_eq(plain.shared(), &held),
            "nothing is known outside sharing"
        );
        assert_eq!(plain, "AGFzbQEAAAA=");
    }

    #[test]
    fn the_known_texts_are_forgotten_when_a_decode_panics() {
        let (held, known) = holding(b"AAAA");
        let during = std::panic::AssertUnwindSafe(|| sharing(&known, || panic!("in the decoder")));
        let panicked = std::panic::catch_unwind(during);
        assert!(panicked.is_err());
        let after = decode(r#""AAAA""#).expect("a string");
        assert!(!Arc::ptr_eq(after.shared(), &held));
    }

    #[test]
    fn text_that_is_not_utf8_decodes_and_fails_later_in_base64() {
        let json = b"\"AG\xff\xfe\"";
        let file: InlineFile = serde_json::from_slice(json).expect("bytes are not checked");
        assert_eq!(file.as_bytes(), b"AG\xff\xfe");
        assert_eq!(
            serde_json::to_string(&file).unwrap(),
            "\"AG\u{fffd}\u{fffd}\""
        );
    }
}
