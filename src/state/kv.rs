//! Key-value buckets for guests (`wasi:keyvalue`), kept in the journal's database in the
//! state directory, so that they outlive restarts like the outbox does.
//!
//! Every write is one durable transaction that also keeps each bucket's totals (bytes of
//! keys and values, and keys), checked against its quotas before anything changes: a write
//! past a quota is refused and changes nothing. Reads and writes are blocking (redb); the
//! runtime calls them off the async workers.

use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::sandbox::kv::Quota;

/// Keys and values: `(bucket, key) → value`.
const VALUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Each bucket's totals: `bucket → (bytes, keys)`.
const TOTALS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("kv_totals");

/// Keys one `list-keys` page holds.
pub const PAGE: usize = 100;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The write would take the bucket past a quota; nothing changed.
    #[error("bucket {bucket:?} is full: {what}")]
    Quota {
        /// The bucket.
        bucket: String,
        /// Which quota, and by how much.
        what: String,
    },
    /// A counter does not hold 8 bytes, or would overflow.
    #[error("{0}")]
    Counter(String),
    /// The database failed.
    #[error("the key-value store failed: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

/// The key-value store; cheap to clone.
#[derive(Debug, Clone)]
pub struct KvStore {
    db: Arc<Database>,
}

/// One change of a write.
pub enum Change<'a> {
    /// Set a key.
    Set(&'a str, &'a [u8]),
    /// Remove a key.
    Delete(&'a str),
}

impl KvStore {
    /// The store in `db`.
    pub(super) fn new(db: Arc<Database>) -> Self {
        KvStore { db }
    }

    /// A store of its own in the file `path` (created if absent), for `proplet run`.
    pub fn open(path: &std::path::Path) -> Result<Self, KvError> {
        let db = Database::create(path).map_err(storage)?;
        Ok(KvStore::new(Arc::new(db)))
    }

    /// The values of `keys` in `bucket`.
    pub fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = match tx.open_table(VALUES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(storage(e)),
        };
        keys.iter()
            .map(|k| {
                let v = table.get((bucket, k.as_str())).map_err(storage)?;
                Ok(v.map(|v| v.value().to_vec()))
            })
            .collect()
    }

    /// A page of keys of `bucket` from position `cursor`, and where the next page starts.
    pub fn list(&self, bucket: &str, cursor: u64) -> Result<(Vec<String>, Option<u64>), KvError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = match tx.open_table(VALUES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(storage(e)),
        };
        let skip = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut keys = Vec::with_capacity(PAGE);
        let range = table.range((bucket, "")..).map_err(storage)?;
        let mut more = false;
        for entry in range.skip(skip) {
            let (k, _) = entry.map_err(storage)?;
            let (b, key) = k.value();
            if b != bucket {
                break;
            }
            if keys.len() == PAGE {
                more = true;
                break;
            }
            keys.push(key.to_owned());
        }
        let next = more.then(|| cursor + PAGE as u64);
        Ok((keys, next))
    }

    /// Applies `changes` to `bucket` in one durable transaction, all or none, within
    /// `quota`.
    pub fn write(&self, bucket: &str, quota: Quota, changes: &[Change<'_>]) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut values = tx.open_table(VALUES).map_err(storage)?;
            let mut totals = tx.open_table(TOTALS).map_err(storage)?;
            apply(&mut values, &mut totals, bucket, quota, changes)?;
        }
        tx.commit().map_err(storage)
    }

    /// Adds `delta` to the counter at `key` (8 bytes, little-endian; absent is 0) and
    /// returns the new value, read and written in one durable transaction.
    pub fn increment(
        &self,
        bucket: &str,
        quota: Quota,
        key: &str,
        delta: u64,
    ) -> Result<u64, KvError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let next = {
            let mut values = tx.open_table(VALUES).map_err(storage)?;
            let mut totals = tx.open_table(TOTALS).map_err(storage)?;
            let current =
                match values.get((bucket, key)).map_err(storage)? {
                    None => 0,
                    Some(v) => u64::from_le_bytes(v.value().try_into().map_err(|_| {
                        KvError::Counter(format!("{key:?} does not hold a counter"))
                    })?),
                };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Counter(format!("{key:?} would overflow")))?;
            let bytes = next.to_le_bytes();
            apply(
                &mut values,
                &mut totals,
                bucket,
                quota,
                &[Change::Set(key, &bytes)],
            )?;
            next
        };
        tx.commit().map_err(storage)?;
        Ok(next)
    }
}

type Values<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;
type Totals<'t> = redb::Table<'t, &'static str, (u64, u64)>;

/// Applies `changes` to `bucket` and its totals, refusing (before the transaction is
/// committed) totals past `quota`.
fn apply(
    values: &mut Values<'_>,
    totals: &mut Totals<'_>,
    bucket: &str,
    quota: Quota,
    changes: &[Change<'_>],
) -> Result<(), KvError> {
    let (mut bytes, mut keys) = totals
        .get(bucket)
        .map_err(storage)?
        .map_or((0, 0), |v| v.value());
    for change in changes {
        let (key, new) = match change {
            Change::Set(k, v) => (*k, Some(*v)),
            Change::Delete(k) => (*k, None),
        };
        let old = values
            .get((bucket, key))
            .map_err(storage)?
            .map(|v| v.value().len());
        let size = |len: usize| (key.len() + len) as u64;
        bytes = bytes.saturating_sub(old.map_or(0, size)) + new.map_or(0, |v| size(v.len()));
        keys = keys.saturating_sub(u64::from(old.is_some())) + u64::from(new.is_some());
        match new {
            Some(v) => values.insert((bucket, key), v).map_err(storage)?,
            None => values.remove((bucket, key)).map_err(storage)?,
        };
    }
    check(bucket, quota, bytes, keys)?;
    totals.insert(bucket, (bytes, keys)).map_err(storage)?;
    Ok(())
}

/// Refuses totals past `quota`.
fn check(bucket: &str, quota: Quota, bytes: u64, keys: u64) -> Result<(), KvError> {
    let over = |what: String| KvError::Quota {
        bucket: bucket.to_owned(),
        what,
    };
    if bytes > quota.bytes {
        return Err(over(format!("{bytes} bytes of {}", quota.bytes)));
    }
    if keys > quota.keys {
        return Err(over(format!("{keys} keys of {}", quota.keys)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("kv.redb")).unwrap();
        (dir, KvStore::new(Arc::new(db)))
    }

    const ROOMY: Quota = Quota {
        bytes: 1 << 20,
        keys: 1000,
    };

    #[test]
    fn writes_are_all_or_nothing_within_the_quota() {
        let (_d, kv) = store();
        let tight = Quota { bytes: 10, keys: 2 };
        kv.write("b", tight, &[Change::Set("k", b"12345")]).unwrap();
        // The whole batch is refused, its first change included.
        let err = kv
            .write(
                "b",
                tight,
                &[Change::Set("a", b"1"), Change::Set("c", b"2")],
            )
            .unwrap_err();
        assert!(matches!(err, KvError::Quota { .. }), "{err}");
        assert_eq!(kv.get_many("b", &["a".into()]).unwrap(), [None]);
        // Replacing a value only counts the difference; deleting gives room back.
        kv.write("b", tight, &[Change::Set("k", b"123456789")])
            .unwrap();
        assert!(
            kv.write("b", tight, &[Change::Set("k", b"1234567890")])
                .is_err()
        );
        kv.write("b", tight, &[Change::Delete("k"), Change::Set("x", b"y")])
            .unwrap();
        assert_eq!(
            kv.get_many("b", &["k".into(), "x".into()]).unwrap(),
            [None, Some(b"y".to_vec())]
        );
    }

    #[test]
    fn buckets_are_apart_and_listed_in_pages() {
        let (_d, kv) = store();
        for i in 0..250 {
            kv.write("big", ROOMY, &[Change::Set(&format!("k{i:03}"), b"v")])
                .unwrap();
        }
        kv.write("other", ROOMY, &[Change::Set("k000", b"w")])
            .unwrap();
        let (first, next) = kv.list("big", 0).unwrap();
        assert_eq!((first.len(), next), (PAGE, Some(100)));
        assert_eq!(first[0], "k000");
        let (_, next) = kv.list("big", 100).unwrap();
        let (last, end) = kv.list("big", next.unwrap()).unwrap();
        assert_eq!((last.len(), end), (50, None));
        assert_eq!(
            kv.list("other", 0).unwrap(),
            (vec!["k000".to_owned()], None)
        );
        assert_eq!(kv.list("empty", 0).unwrap(), (Vec::new(), None));
    }

    #[test]
    fn counters_add_up_and_refuse_what_is_not_a_counter() {
        let (_d, kv) = store();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        kv.increment("c", ROOMY, "n", 1).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            kv.increment("c", ROOMY, "n", 0).unwrap(),
            200,
            "no increment lost"
        );
        kv.write("c", ROOMY, &[Change::Set("text", b"abc")])
            .unwrap();
        assert!(matches!(
            kv.increment("c", ROOMY, "text", 1),
            Err(KvError::Counter(_))
        ));
        kv.increment("c", ROOMY, "max", u64::MAX).unwrap();
        assert!(matches!(
            kv.increment("c", ROOMY, "max", 1),
            Err(KvError::Counter(_))
        ));
    }
}
