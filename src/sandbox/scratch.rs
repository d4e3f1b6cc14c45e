//! Per-task scratch directories, created and removed through a capability handle on the
//! scratch root (cap-std), so no path outside that root can ever be touched.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tracing::warn;

/// A private, empty, writable directory that lives as long as this value.
#[derive(Debug)]
pub struct Scratch {
    root: Dir,
    name: String,
    path: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory under `root`.
    pub fn create(root: &Path) -> io::Result<Scratch> {
        let dir = Dir::open_ambient_dir(root, ambient_authority())?;
        let name = format!("task-{}", uuid::Uuid::new_v4());
        dir.create_dir(&name)?;
        Ok(Scratch {
            path: root.join(&name),
            root: dir,
            name,
        })
    }

    /// The host path of the directory (for preopening).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.root.remove_dir_all(&self.name) {
            warn!(error = %e, dir = %self.path.display(), "could not remove a scratch directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_created_and_removed() {
        let root = tempfile::tempdir().expect("tempdir");
        let scratch = Scratch::create(root.path()).expect("created");
        let path = scratch.path().to_path_buf();
        std::fs::write(path.join("file"), b"x").expect("writable");
        std::fs::create_dir(path.join("sub")).expect("subdir");
        drop(scratch);
        assert!(!path.exists(), "removed with its contents");
    }
}
