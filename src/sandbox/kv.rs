//! Key-value capability (`wasi:keyvalue`): the buckets the operator declares
//! (`PROPLET_KV_BUCKETS`, each with a byte and a key quota), what a task asks for (start
//! field `kv`), and the grant — every bucket asked for, when each is declared. Deny by
//! default: no declared bucket, no key-value store; a task that asks for none opens none.

use super::CapabilityError;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest single value, in bytes (a bucket's byte quota may be smaller).
pub const MAX_VALUE: usize = 1 << 20;
/// Most keys in one batch call.
pub const MAX_BATCH: usize = 100;

/// What a bucket may hold, shared by every task granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
}

/// The operator's buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPolicy {
    /// Each bucket and its quota.
    pub buckets: Vec<(String, Quota)>,
}

/// The buckets one task may open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvGrant {
    /// Each bucket and its quota.
    pub buckets: Vec<(String, Quota)>,
}

impl KvGrant {
    /// The quota of `bucket`, if granted.
    pub fn quota(&self, bucket: &str) -> Option<Quota> {
        self.buckets
            .iter()
            .find(|(b, _)| b == bucket)
            .map(|(_, q)| *q)
    }
}

impl KvPolicy {
    /// Parses `name=BYTES/KEYS,…` (`cache=1MiB/1000`); `bytes` parses a size.
    pub fn parse(
        text: &str,
        bytes: impl Fn(&str) -> Result<u64, String>,
    ) -> Result<KvPolicy, String> {
        let mut buckets: Vec<(String, Quota)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = |why: &str| format!("{item:?}: {why}");
            let (name, quota) = item
                .split_once('=')
                .ok_or_else(|| bad("expected name=BYTES/KEYS"))?;
            let (size, keys) = quota
                .split_once('/')
                .ok_or_else(|| bad("expected BYTES/KEYS"))?;
            let name = name.trim();
            check_name(name).map_err(|e| bad(&e))?;
            if buckets.iter().any(|(b, _)| b == name) {
                return Err(bad("declared twice"));
            }
            let quota = Quota {
                bytes: bytes(size.trim()).map_err(|e| bad(&e))?,
                keys: keys.trim().parse().map_err(|_| bad("bad key count"))?,
            };
            buckets.push((name.to_owned(), quota));
        }
        Ok(KvPolicy { buckets })
    }

    /// The grant of a task asking for `requested` buckets; `None` when it asks for none.
    /// An undeclared bucket is `denied`.
    pub fn grant(&self, requested: &[String]) -> Result<Option<KvGrant>, CapabilityError> {
        if requested.is_empty() {
            return Ok(None);
        }
        let mut buckets = Vec::with_capacity(requested.len());
        for name in requested {
            check_name(name).map_err(CapabilityError::Invalid)?;
            let Some(found) = self.buckets.iter().find(|(b, _)| b == name) else {
                return Err(CapabilityError::Denied(format!(
                    "bucket {name:?} is not declared on this proplet (PROPLET_KV_BUCKETS)"
                )));
            };
            if !buckets.contains(found) {
                buckets.push(found.clone());
            }
        }
        Ok(Some(KvGrant { buckets }))
    }
}

/// Bucket names: letters, digits, `_`, `-`, `.`, at most 64 bytes.
fn check_name(name: &str) -> Result<(), String> {
    if super::plain_name(name, 64) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a bucket name (letters, digits, _ - .)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(t: &str) -> Result<u64, String> {
        t.parse().map_err(|_| "bad size".to_owned())
    }

    #[test]
    fn buckets_parse_with_their_quotas() {
        let p = KvPolicy::parse("cache=1000/10, state=64/2", number).unwrap();
        assert_eq!(p.buckets[1], ("state".into(), Quota { bytes: 64, keys: 2 }));
        for bad in [
            "cache",
            "cache=10",
            "cache=x/1",
            "cache=1/x",
            "=1/1",
            "a b=1/1",
            "a=1/1,a=2/2",
        ] {
            assert!(KvPolicy::parse(bad, number).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_task_gets_declared_buckets_only() {
        let p = KvPolicy::parse("cache=1000/10,state=64/2", number).unwrap();
        assert_eq!(p.grant(&[]), Ok(None));
        let g = p.grant(&["state".into(), "state".into()]).unwrap().unwrap();
        assert_eq!(g.buckets.len(), 1);
        assert_eq!(g.quota("state"), Some(Quota { bytes: 64, keys: 2 }));
        assert_eq!(g.quota("cache"), None);
        assert!(matches!(
            p.grant(&["other".into()]),
            Err(CapabilityError::Denied(_))
        ));
        assert!(matches!(
            p.grant(&["../x".into()]),
            Err(CapabilityError::Invalid(_))
        ));
    }
}
