//! The journal as earlier versions kept it: tables in the redb database (`journal.redb`),
//! which now holds only the guests' key-value buckets. A worker that finds these tables
//! reads them once into its log (before anything the log says: they are older), and drops
//! them once the log holding them is on disk.

use std::collections::HashSet;

use redb::{
    Database, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    TableError, TableHandle as _,
};

use super::journal::{Entry, EntryKind};
use super::recent;
use super::record::{Record, StoreRecord};

/// Jobs accepted and not answered: (task id, invocation id or "") → kind.
const JOBS: TableDefinition<(&str, &str), &str> = TableDefinition::new("jobs");
/// Latent tasks deployed: task id → "".
const LATENT: TableDefinition<&str, &str> = TableDefinition::new("latent");
/// Results not yet acknowledged: sequence number → (topic, task id, invocation id or "",
/// payload).
const OUTBOX: TableDefinition<u64, (&str, &str, &str, &[u8])> = TableDefinition::new("outbox");
/// Answers given lately: sequence number → (topic, task id, invocation id or "", stored at
/// in Unix seconds, payload).
const RECENT: TableDefinition<u64, (&str, &str, &str, u64, &[u8])> = TableDefinition::new("recent");

const NAMES: [&str; 4] = ["jobs", "latent", "outbox", "recent"];

/// What the old tables held, as log frames; `None` if there are none.
pub(super) fn read(db: &Database) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    let found = txn
        .list_tables()?
        .any(|table| NAMES.contains(&table.name()));
    if !found {
        return Ok(None);
    }
    let mut records = Vec::new();
    jobs(&txn, &mut records)?;
    results(&txn, &mut records)?;
    let mut frames = Vec::new();
    records.iter().for_each(|r| r.frame_into(&mut frames));
    Ok(Some(frames))
}

/// Drops the old tables (their content is in the log).
pub(super) fn drop_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.delete_table(JOBS)?;
    txn.delete_table(LATENT)?;
    txn.delete_table(OUTBOX)?;
    txn.delete_table(RECENT)?;
    txn.commit()?;
    Ok(())
}

/// A table's rows; none if it does not exist.
fn absent_is_empty<T>(table: Result<T, TableError>) -> Result<Option<T>, redb::Error> {
    match table {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn jobs(txn: &ReadTransaction, records: &mut Vec<Record>) -> Result<(), redb::Error> {
    if let Some(jobs) = absent_is_empty(txn.open_table(JOBS))? {
        for row in jobs.iter()? {
            let (key, kind) = row?;
            let (task, invocation) = key.value();
            records.push(Record::Accept(Entry {
                task: task.to_owned(),
                invocation: (!invocation.is_empty()).then(|| invocation.to_owned()),
                kind: match kind.value() {
                    "deploy" => EntryKind::Deploy,
                    "invoke" => EntryKind::Invoke,
                    _ => EntryKind::Start,
                },
            }));
        }
    }
    if let Some(latent) = absent_is_empty(txn.open_table(LATENT))? {
        for row in latent.iter()? {
            records.push(Record::Deployed(row?.0.value().to_owned()));
        }
    }
    Ok(())
}

/// The outbox, then the answers remembered (delivered unless also in the outbox).
fn results(txn: &ReadTransaction, records: &mut Vec<Record>) -> Result<(), redb::Error> {
    let mut outbox = HashSet::new();
    if let Some(table) = absent_is_empty(txn.open_table(OUTBOX))? {
        let now = recent::now();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (topic, task, invocation, payload) = value.value();
            outbox.insert(seq.value());
            let row = (topic, task, invocation, now, payload);
            records.push(store(seq.value(), row, false));
        }
    }
    if let Some(table) = absent_is_empty(txn.open_table(RECENT))? {
        for row in table.iter()? {
            let (seq, value) = row?;
            records.push(store(seq.value(), value.value(), true));
            if !outbox.contains(&seq.value()) {
                records.push(Record::Delivered(seq.value()));
            }
        }
    }
    Ok(())
}

fn store(seq: u64, row: (&str, &str, &str, u64, &[u8]), remember: bool) -> Record {
    let (topic, task, invocation, at, payload) = row;
    Record::Store(StoreRecord {
        seq,
        at,
        closes: false,
        remember,
        topic: topic.to_owned(),
        task: task.to_owned(),
        invocation: invocation.to_owned(),
        payload: payload.to_vec(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Fills the old tables of `db` as an earlier version would have: one job, one latent
    /// task, one result in the outbox (seq 3) and two remembered answers (seq 2, delivered,
    /// and seq 3).
    pub(in crate::state) fn fill(db: &Database) {
        let txn = db.begin_write().expect("txn");
        {
            let mut jobs = txn.open_table(JOBS).expect("jobs");
            jobs.insert(("job", "inv"), "invoke").expect("insert");
            let mut latent = txn.open_table(LATENT).expect("latent");
            latent.insert("lat", "").expect("insert");
            let mut outbox = txn.open_table(OUTBOX).expect("outbox");
            outbox
                .insert(3, ("results", "t3", "", b"three".as_slice()))
                .expect("insert");
            let mut recent = txn.open_table(RECENT).expect("recent");
            let now = recent::now();
            recent
                .insert(2, ("results", "t2", "", now, b"two".as_slice()))
                .expect("insert");
            recent
                .insert(3, ("results", "t3", "", now, b"three".as_slice()))
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn no_old_tables_nothing_to_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("j.redb")).expect("db");
        assert_eq!(read(&db).expect("read"), None);
        fill(&db);
        assert!(read(&db).expect("read").is_some());
        drop_tables(&db).expect("drop");
        assert_eq!(read(&db).expect("read"), None, "dropped");
    }
}
