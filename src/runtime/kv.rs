//! The host side of `wasi:keyvalue` (store, atomics, batch) for components: buckets the task
//! was granted, kept in the proplet's state directory ([`KvStore`]), within their quotas.
//!
//! Every operation runs on the blocking pool (the store is a redb database), so a guest's
//! storage never holds up an async worker. Keys, values and batches are bounded before
//! anything is read or written, and a page of keys is at most [`PAGE`] long, so no call can
//! make the proplet hold much on a guest's behalf.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::workload::wasi::keyvalue::store::{Error, KeyResponse};
use super::workload::wasi::keyvalue::{atomics, batch, store};
use crate::sandbox::Meter;
use crate::sandbox::kv::{KvGrant, MAX_BATCH, MAX_KEY, MAX_VALUE, Quota};
use crate::state::kv::{Change, KvError, KvStore, PAGE};

/// Most buckets one task may hold open at once.
const MAX_OPEN: usize = 64;

/// The resource type behind a guest's `bucket` handle (its index among the open buckets).
pub struct KvBucket;

/// What a component may reach of the key-value store.
#[derive(Debug, Clone)]
pub struct KvAccess {
    /// The buckets granted.
    pub grant: KvGrant,
    /// Where they are kept.
    pub store: KvStore,
}

/// A task's key-value state: its access, and the buckets it opened.
#[derive(Default)]
pub struct KvHost {
    access: Option<KvAccess>,
    open: Vec<Option<(String, Quota)>>,
    meter: Arc<Meter>,
}

impl KvHost {
    /// The state of a task with `access` (none: every bucket is refused), counted in `meter`.
    pub fn new(access: Option<KvAccess>, meter: Arc<Meter>) -> Self {
        if access.is_some() {
            meter.kv_granted();
        }
        KvHost {
            access,
            open: Vec::new(),
            meter,
        }
    }

    fn bucket(&self, handle: &Resource<KvBucket>) -> Result<(String, Quota, KvStore), Error> {
        let index = usize::try_from(handle.rep()).map_err(|_| closed())?;
        let (name, quota) = self
            .open
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(closed)?;
        let store = self
            .access
            .as_ref()
            .ok_or(Error::AccessDenied)?
            .store
            .clone();
        Ok((name.clone(), *quota, store))
    }

    /// Runs `op` on the blocking pool, counted as a read or a write.
    async fn run<T: Send + 'static>(
        &self,
        write: bool,
        op: impl FnOnce() -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, Error> {
        self.meter.kv(write);
        match tokio::task::spawn_blocking(op).await {
            Ok(result) => result.map_err(|e| Error::Other(e.to_string())),
            Err(_) => Err(Error::Other("the key-value operation was cut short".into())),
        }
    }
}

fn closed() -> Error {
    Error::Other("the bucket handle is not open".into())
}

fn check_key(key: &str) -> Result<(), Error> {
    match key.len() {
        0 => Err(Error::Other("a key may not be empty".into())),
        n if n > MAX_KEY => Err(Error::Other(format!("a key is at most {MAX_KEY} bytes"))),
        _ => Ok(()),
    }
}

fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE {
        return Err(Error::Other(format!(
            "a value is at most {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

fn check_batch(n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(Error::Other(format!("a batch is at most {MAX_BATCH} keys")));
    }
    Ok(())
}

impl store::Host for KvHost {
    async fn open(&mut self, identifier: String) -> Result<Resource<KvBucket>, Error> {
        let access = self.access.as_ref().ok_or(Error::AccessDenied)?;
        let quota = access.grant.quota(&identifier).ok_or(Error::AccessDenied)?;
        let slot = self
            .open
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.open.len());
        if slot >= MAX_OPEN {
            return Err(Error::Other(format!(
                "at most {MAX_OPEN} buckets may be open at once"
            )));
        }
        let entry = Some((identifier, quota));
        match self.open.get_mut(slot) {
            Some(free) => *free = entry,
            None => self.open.push(entry),
        }
        Ok(Resource::new_own(
            u32::try_from(slot).map_err(|_| closed())?,
        ))
    }
}

impl store::HostBucket for KvHost {
    async fn get(&mut self, b: Resource<KvBucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        check_key(&key)?;
        let (name, _, store) = self.bucket(&b)?;
        let mut found = self
            .run(false, move || store.get_many(&name, &[key]))
            .await?;
        Ok(found.pop().flatten())
    }

    async fn set(
        &mut self,
        b: Resource<KvBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        check_key(&key)?;
        check_value(&value)?;
        let (name, quota, store) = self.bucket(&b)?;
        let op = move || store.write(&name, quota, &[Change::Set(&key, &value)]);
        self.run(true, op).await
    }

    async fn delete(&mut self, b: Resource<KvBucket>, key: String) -> Result<(), Error> {
        check_key(&key)?;
        let (name, quota, store) = self.bucket(&b)?;
        self.run(true, move || {
            store.write(&name, quota, &[Change::Delete(&key)])
        })
        .await
    }

    async fn exists(&mut self, b: Resource<KvBucket>, key: String) -> Result<bool, Error> {
        Ok(self.get(b, key).await?.is_some())
    }

    async fn list_keys(
        &mut self,
        b: Resource<KvBucket>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        let (name, _, store) = self.bucket(&b)?;
        let (keys, cursor) = self
            .run(false, move || store.list(&name, cursor.unwrap_or(0)))
            .await?;
        debug_assert!(keys.len() <= PAGE);
        Ok(KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, b: Resource<KvBucket>) -> wasmtime::Result<()> {
        if let Some(slot) = usize::try_from(b.rep())
            .ok()
            .and_then(|i| self.open.get_mut(i))
        {
            *slot = None;
        }
        Ok(())
    }
}

impl atomics::Host for KvHost {
    async fn increment(
        &mut self,
        b: Resource<KvBucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        check_key(&key)?;
        let (name, quota, store) = self.bucket(&b)?;
        self.run(true, move || store.increment(&name, quota, &key, delta))
            .await
    }
}

impl batch::Host for KvHost {
    async fn get_many(
        &mut self,
        b: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let (name, _, store) = self.bucket(&b)?;
        let asked = keys.clone();
        let values = self
            .run(false, move || store.get_many(&name, &asked))
            .await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    async fn set_many(
        &mut self,
        b: Resource<KvBucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        check_batch(pairs.len())?;
        for (k, v) in &pairs {
            check_key(k)?;
            check_value(v)?;
        }
        let (name, quota, store) = self.bucket(&b)?;
        self.run(true, move || {
            let changes: Vec<Change<'_>> = pairs.iter().map(|(k, v)| Change::Set(k, v)).collect();
            store.write(&name, quota, &changes)
        })
        .await
    }

    async fn delete_many(&mut self, b: Resource<KvBucket>, keys: Vec<String>) -> Result<(), Error> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let (name, quota, store) = self.bucket(&b)?;
        self.run(true, move || {
            let changes: Vec<Change<'_>> = keys.iter().map(|k| Change::Delete(k)).collect();
            store.write(&name, quota, &changes)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::store::{Host as _, HostBucket as _};
    use super::*;

    fn host() -> (tempfile::TempDir, KvHost) {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let quota = Quota {
            bytes: 64 << 20,
            keys: 100_000,
        };
        let grant = KvGrant {
            buckets: vec![("b".into(), quota)],
        };
        let access = KvAccess { grant, store };
        (dir, KvHost::new(Some(access), Arc::default()))
    }

    fn refused<T: std::fmt::Debug>(r: Result<T, Error>, why: &str) {
        match r {
            Err(Error::Other(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("expected a refusal with {why:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_keys_values_and_batches_are_refused_before_any_io() {
        let (_d, mut kv) = host();
        let b = || Resource::new_own(0);
        kv.open("b".into()).await.unwrap();
        refused(
            kv.set(b(), "k".into(), vec![0; MAX_VALUE + 1]).await,
            "a value is at most",
        );
        refused(
            kv.set(b(), "k".repeat(MAX_KEY + 1), vec![1]).await,
            "a key is at most",
        );
        refused(kv.get(b(), String::new()).await, "may not be empty");
        let many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("k{i}")).collect();
        refused(
            batch::Host::get_many(&mut kv, b(), many.clone()).await,
            "a batch is at most",
        );
        refused(
            batch::Host::delete_many(&mut kv, b(), many).await,
            "a batch is at most",
        );
        let pairs = (0..=MAX_BATCH)
            .map(|i| (format!("k{i}"), vec![1]))
            .collect();
        refused(
            batch::Host::set_many(&mut kv, b(), pairs).await,
            "a batch is at most",
        );
        // Nothing of it was written.
        let listed = kv.list_keys(b(), None).await.unwrap();
        assert!(listed.keys.is_empty(), "{:?}", listed.keys);
    }

    #[tokio::test]
    async fn open_handles_are_bounded_and_ungranted_buckets_denied() {
        let (_d, mut kv) = host();
        for _ in 1..MAX_OPEN {
            kv.open("b".into()).await.unwrap();
        }
        let last = kv.open("b".into()).await.unwrap();
        refused(kv.open("b".into()).await, "at most 64 buckets");
        store::HostBucket::drop(&mut kv, last).await.unwrap();
        assert!(
            kv.open("b".into()).await.is_ok(),
            "a dropped handle frees its place"
        );
        assert!(matches!(
            kv.open("other".into()).await,
            Err(Error::AccessDenied)
        ));
        let mut none = KvHost::new(None, Arc::default());
        assert!(matches!(
            none.open("b".into()).await,
            Err(Error::AccessDenied)
        ));
        refused(kv.get(Resource::new_own(999), "k".into()).await, "not open");
    }
}
