//! The state directory: created private, locked while the worker runs.

use std::fs::{self, File, TryLockError};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::StateError;

/// A locked state directory; the lock is released when this is dropped (or the process ends).
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Held open for its lock.
    _lock: File,
}

impl StateDir {
    /// Creates `path` (0700) if needed, makes it private if it is not, and locks it.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        let fail = |reason: String| StateError::Dir {
            path: path.to_owned(),
            reason,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| fail(format!("cannot create it: {e}")))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("cannot make it private: {e}")))?;
        let lock = File::create(path.join("lock"))
            .map_err(|e| fail(format!("cannot open its lock file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => Ok(StateDir {
                path: path.to_owned(),
                _lock: lock,
            }),
            Err(TryLockError::WouldBlock) => Err(StateError::Locked(path.to_owned())),
            Err(TryLockError::Error(e)) => Err(fail(format!("cannot lock it: {e}"))),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where state goes when `PROPLET_STATE_DIR` is not set: systemd's `$STATE_DIRECTORY` (the
/// unit's `StateDirectory=`), else `$XDG_STATE_HOME/proplet`, else
/// `$HOME/.local/state/proplet`; `None` when none of these is set.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is ours.
        let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        return first;
    }
    set("XDG_STATE_HOME")
        .map(|d| d.join("proplet"))
        .or_else(|| set("HOME").map(|h| h.join(".local/state/proplet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permission bits of `path`.
    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn created_private_and_locked_against_a_second_worker() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("a/b");
        let dir = StateDir::open(&path).expect("first");
        assert_eq!(mode(&path), 0o700);
        let second = StateDir::open(&path).expect_err("second");
        assert!(
            second.to_string().contains("in use by another proplet"),
            "{second}"
        );
        drop(dir);
        StateDir::open(&path).expect("free again once the first is gone");
    }

    #[test]
    fn a_loose_directory_is_made_private() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let _dir = StateDir::open(root.path()).expect("open");
        let mode = fs::metadata(root.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn the_default_follows_systemd_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let systemd = env(&[("STATE_DIRECTORY", "/var/lib/proplet:/x"), ("HOME", "/h")]);
        assert_eq!(default_path(&systemd), Some("/var/lib/proplet".into()));
        let xdg = env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]);
        assert_eq!(default_path(&xdg), Some("/s/proplet".into()));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(default_path(&home), Some("/h/.local/state/proplet".into()));
        assert_eq!(default_path(&env(&[])), None);
    }
}
