//! A start's inline binary (`file`): its base64 text, kept as the bytes that came.
//!
//! The text is not checked as UTF-8, nor for control characters, nor copied through a
//! `String` while the message is decoded: the JSON decoder then only looks for the closing
//! quote or a backslash (a vectorized search, where a string is scanned eight bytes at a
//! time for all three), and the base64 decoder checks every byte anyway (anything outside
//! its alphabet is refused). For a 68 KB component start that was 4-7 µs of a task's CPU.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The base64 text of a binary sent inline in a start, as bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InlineFile(Vec<u8>);

impl InlineFile {
    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
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
        InlineFile(text.into_bytes())
    }
}

impl From<&str> for InlineFile {
    fn from(text: &str) -> Self {
        InlineFile(text.as_bytes().to_vec())
    }
}

impl PartialEq<&str> for InlineFile {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
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
        Ok(InlineFile::from(text))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<InlineFile, E> {
        Ok(InlineFile::from(text))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<InlineFile, E> {
        Ok(InlineFile(bytes.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<InlineFile, E> {
        Ok(InlineFile(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
