//! The worker's working directory under the system temp directory: one per run, recorded in
//! the state directory so that the next run removes what a killed one left behind.
//!
//! A worker that ends normally removes its working directory itself. One that is killed, or
//! crashes, cannot: without the record, every such restart would leave a directory (with
//! whatever its tasks were writing) in a `/tmp` that is often a small RAM disk.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tracing::{info, warn};

use super::{StateDir, StateError};

/// The record's file name in the state directory.
const RECORD: &str = "workdir";

/// Names a working directory has, so that a damaged record can never name anything else.
const PREFIX: &str = "proplet-";

impl StateDir {
    /// A fresh private working directory (mode 0700) under the system temp directory, after
    /// removing the one the previous run recorded, if it is still there. The directory is
    /// removed when the returned value is dropped.
    pub fn workdir(&self) -> Result<TempDir, StateError> {
        let record = self.path().join(RECORD);
        if let Some(left) = recorded(&record) {
            remove_left(&left);
        }
        let fail = |reason: String| StateError::Dir {
            path: self.path().to_owned(),
            reason,
        };
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .map_err(|e| fail(format!("cannot create a working directory: {e}")))?;
        let mut line = dir.path().as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        fs::write(&record, line).map_err(|e| fail(format!("cannot record {RECORD}: {e}")))?;
        Ok(dir)
    }
}

/// The path the record names, if it names a working directory at all.
fn recorded(record: &Path) -> Option<PathBuf> {
    let bytes = match fs::read(record) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(error = %e, record = %record.display(), "cannot read the previous working directory's record");
            return None;
        }
    };
    let path = PathBuf::from(OsStr::from_bytes(bytes.strip_suffix(b"\n")?));
    let named = path.file_name()?.as_bytes().starts_with(PREFIX.as_bytes());
    (path.is_absolute() && named).then_some(path)
}

/// Removes a previous run's working directory (a symbolic link in its place is removed,
/// never followed).
fn remove_left(left: &Path) {
    if let Err(e) = fs::symlink_metadata(left)
        && e.kind() == io::ErrorKind::NotFound
    {
        return; // The previous run ended normally and removed it.
    }
    match crate::sandbox::remove_path(left) {
        Ok(()) => info!(dir = %left.display(), "removed the working directory a previous run left"),
        Err(e) => {
            warn!(error = %e, dir = %left.display(), "cannot remove the working directory a previous run left")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_removes_what_a_killed_one_left() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(root.path()).expect("state");
        // A killed worker never drops its directory.
        let left = state.workdir().expect("first").keep();
        fs::create_dir_all(left.join("scratch/task/a/b")).expect("mkdir");
        fs::write(left.join("scratch/task/a/b/file"), "x").expect("write");
        let next = state.workdir().expect("second");
        assert!(!left.exists(), "{} is left", left.display());
        assert!(next.path().exists());
        assert_eq!(
            recorded(&root.path().join(RECORD)),
            Some(next.path().to_owned())
        );
    }

    #[test]
    fn a_link_in_the_recorded_place_is_removed_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(root.path()).expect("state");
        let outside = tempfile::tempdir().expect("outside");
        fs::write(outside.path().join("keep"), "x").expect("write");
        let link = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .expect("dir")
            .keep();
        fs::remove_dir(&link).expect("rmdir");
        std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
        fs::write(root.path().join(RECORD), format!("{}\n", link.display())).expect("write");
        drop(state.workdir().expect("workdir"));
        assert!(fs::symlink_metadata(&link).is_err(), "the link is left");
        assert!(
            outside.path().join("keep").exists(),
            "the link was followed"
        );
    }

    #[test]
    fn a_path_that_is_not_utf8_is_recorded_and_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(root.path()).expect("state");
        let tmp = tempfile::tempdir().expect("tmp");
        let left = tmp.path().join(OsStr::from_bytes(b"proplet-\xff\xfe"));
        fs::create_dir_all(left.join("a")).expect("mkdir");
        let mut line = left.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        fs::write(root.path().join(RECORD), line).expect("write");
        assert_eq!(recorded(&root.path().join(RECORD)), Some(left.clone()));
        drop(state.workdir().expect("workdir"));
        assert!(!left.exists(), "{} is left", left.display());
    }

    #[test]
    fn a_record_naming_anything_else_is_ignored() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(root.path()).expect("state");
        let other = tempfile::Builder::new()
            .prefix("other-")
            .tempdir()
            .expect("dir");
        let record = root.path().join(RECORD);
        for text in [
            format!("{}\n", other.path().display()),
            "proplet-relative\n".to_owned(),
            "/\n".to_owned(),
            String::new(),
        ] {
            fs::write(&record, &text).expect("write");
            assert_eq!(recorded(&record), None, "{text:?}");
        }
        fs::write(&record, format!("{}\n", other.path().display())).expect("write");
        drop(state.workdir().expect("workdir"));
        assert!(other.path().exists());
    }
}
