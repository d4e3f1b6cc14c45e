//! Lenient field decoders shared by the inbound message types.
//!
//! Both manager generations must be understood (docs/protocol.md §8.4): `null` means "absent",
//! `inputs` may be numbers (seed era) or strings (latest), and env values may be any scalar.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de::Error as _};
use serde_json::Value;

/// Decodes `null` or an absent key as `T::default()`.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Decodes `null` or an array of scalars into their text (numbers keep their literal text).
pub fn text_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
    items
        .into_iter()
        .map(|v| scalar_text(v).ok_or_else(|| D::Error::custom("expected a string or number")))
        .collect()
}

/// Like [`text_list`], but keeps "absent or null" apart from an empty list.
pub fn optional_text_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let Some(items) = Option::<Vec<Value>>::deserialize(d)? else {
        return Ok(None);
    };
    let texts: Result<Vec<String>, D::Error> = items
        .into_iter()
        .map(|v| scalar_text(v).ok_or_else(|| D::Error::custom("expected a string or number")))
        .collect();
    texts.map(Some)
}

/// Decodes `null` or an object of scalars into a string map; `null` values are dropped.
pub fn text_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        let text = scalar_text(v)
            .ok_or_else(|| D::Error::custom(format!("env value of {k:?} must be a scalar")))?;
        out.insert(k, text);
    }
    Ok(out)
}

/// The text of a JSON scalar: strings as they are, numbers and booleans as written.
fn scalar_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Decodes a field proplet reads only as a hint: a non-negative integer that fits, else
/// (absent, `null`, another type, out of range) `None` — it never fails the message.
pub fn hint_u8<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value
        .and_then(|v| v.as_u64())
        .and_then(|n| u8::try_from(n).ok()))
}
