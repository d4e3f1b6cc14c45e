//! A start's inline binary (`file`): its base64 text, kept as the bytes that came.
//!
//! The text is not checked as UTF-8, nor for control characters, nor copied through a
//! `String` while the message is decoded: the JSON decoder then only looks for the closing
//! quote or a backslash (a vectorized search, where a string is scanned eight bytes at a
//! time for all three), and the base64 decoder checks every byte anyway (anything outside
//! its alphabet is refused). For a 68 KB component start that was 4-7 µs of a task's CPU.
//!
//! Nor is it copied out of the message at all when the message is decoded from a shared
//! buffer ([`sharing`]) and the text has no escapes (base64 never needs one): the text is
//! then a slice of that buffer, which it keeps alive until the binary has been fetched.
//! The copy of a 68 KB text, with its allocation and release, was 3-4 % of a component
//! task's CPU.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The base64 text of a binary sent inline in a start, as bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InlineFile(Bytes);

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

    /// A text that `decoding` (the message being decoded on this thread, if any) holds is
    /// shared with it; any other is copied.
    fn from_borrowed(text: &[u8]) -> Self {
        let shared = DECODING.with(|decoding| {
            let decoding = decoding.borrow();
            let whole = decoding.as_ref()?;
            holds(whole, text).then(|| whole.slice_ref(text))
        });
        InlineFile(shared.unwrap_or_else(|| Bytes::copy_from_slice(text)))
    }
}

thread_local! {
    /// The message [`sharing`] decodes on this thread.
    static DECODING: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` on this thread with `message` as the buffer an inline text found in it is
/// shared with rather than copied from (the decoder must read `message` itself, as a
/// slice, for its text to be found in it).
pub fn sharing<T>(message: &Bytes, decode: impl FnOnce() -> T) -> T {
    /// Forgets the message however `decode` ends (a panic included).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODING.with(|decoding| decoding.borrow_mut().take());
        }
    }
    DECODING.with(|decoding| *decoding.borrow_mut() = Some(message.clone()));
    let _reset = Reset;
    decode()
}

/// Whether `part` lies within `whole`'s bytes (by address).
fn holds(whole: &[u8], part: &[u8]) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    !part.is_empty() && start <= at && at + part.len() <= start + whole.len()
}

impl From<String> for InlineFile {
    fn from(text: String) -> Self {
        InlineFile(Bytes::from(text.into_bytes()))
    }
}

impl From<&str> for InlineFile {
    fn from(text: &str) -> Self {
        InlineFile(Bytes::copy_from_slice(text.as_bytes()))
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

impl<'de> Visitor<'de> for TextBytes {
    type Value = InlineFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<InlineFile, E> {
        Ok(InlineFile::from(text))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<InlineFile, E> {
        Ok(InlineFile::from_borrowed(text.as_bytes()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<InlineFile, E> {
        Ok(InlineFile::from(text))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<InlineFile, E> {
        Ok(InlineFile(Bytes::copy_from_slice(bytes)))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<InlineFile, E> {
        Ok(InlineFile::from_borrowed(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<InlineFile, E> {
        Ok(InlineFile(Bytes::from(bytes)))
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

    #[test]
    fn a_text_in_the_shared_message_is_a_slice_of_it_and_an_escaped_one_a_copy() {
        let message = Bytes::from_static(br#"{"file":"AGFzbQEAAAA=","other":"AG\/z"}"#);
        #[derive(Deserialize)]
        struct Two {
            file: InlineFile,
            other: InlineFile,
        }
        let two: Two = sharing(&message, || serde_json::from_slice(&message)).expect("decoded");
        assert_eq!(two.file, "AGFzbQEAAAA=");
        let at = two.file.as_bytes().as_ptr() as usize - message.as_ptr() as usize;
        assert_eq!(at, 9, "shared: it points into the message");
        assert_eq!(two.other, "AG/z", "the escape undone");
        assert!(
            !holds(&message, two.other.as_bytes()),
            "an escaped text is copied"
        );
        // Outside `sharing`, and for another buffer than the one shared, a copy.
        let copied: InlineFile = serde_json::from_slice(br#""AGFz""#).expect("decoded");
        assert!(!holds(&message, copied.as_bytes()));
        let elsewhere = br#""AGFz""#.to_vec();
        let copied: InlineFile =
            sharing(&message, || serde_json::from_slice(&elsewhere)).expect("decoded");
        assert_eq!(copied, "AGFz");
        assert!(DECODING.with(|d| d.borrow().is_none()), "forgotten after");
    }

    #[test]
    fn the_shared_message_is_forgotten_even_when_decoding_panics() {
        let message = Bytes::from_static(b"\"AGFz\"");
        let panicked = std::panic::catch_unwind(|| sharing(&message, || panic!("decoder")));
        assert!(panicked.is_err());
        assert!(DECODING.with(|d| d.borrow().is_none()));
        assert!(holds(&message, &message[1..5]));
        assert!(
            !holds(&message, &message[..0]),
            "an empty text is never shared"
        );
    }
}
