//! What survives the process: the state directory (`PROPLET_STATE_DIR`) and, in it, the task
//! journal.
//!
//! The directory is created private (0700) and locked for as long as the worker runs, so two
//! workers never share it: a second one exits at start-up with a clear error. The journal is
//! a log of its own: checksummed records appended in place, one `fdatasync` per commit,
//! compacted into a new file when it has grown well past what it holds. A commit costs a
//! few microseconds of CPU and one data write, which matters because a result waits for
//! its commit before it is published. The guests' key-value buckets are kept in a
//! [redb](https://docs.rs/redb) database (copy-on-write B-trees, checksummed commits),
//! where earlier versions also kept the journal: its tables are read into the log once.

mod dir;
mod journal;
pub mod kv;
mod legacy;
mod live;
mod log;
mod outbox;
mod queue;
pub mod recent;
mod record;
mod workdir;
mod writer;

pub use dir::{StateDir, default_path};
pub use journal::{Entry, EntryKind, Journal, Recovered};
pub use outbox::{Stored, Unstored};
pub use writer::Recalled;

/// Why the state directory or the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory cannot be created, made private, or locked.
    #[error("state directory {path}: {reason}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another worker holds the directory.
    #[error(
        "state directory {0} is in use by another proplet (set PROPLET_STATE_DIR to give each its own)"
    )]
    Locked(std::path::PathBuf),
    /// The journal database cannot be opened or written.
    #[error("task journal: {0}")]
    Journal(String),
}
