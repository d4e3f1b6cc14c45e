//! Per-task scratch directories, created and removed through a capability handle on the
//! scratch root (cap-std), so no path outside that root can ever be touched.
//!
//! A guest controls the shape of its scratch tree: it can nest directories tens of
//! thousands deep (walking down through directory handles) or fill one with many entries.
//! Removal therefore never recurses and never holds more than three directory handles: it
//! takes the tree apart level by level ([`remove_tree`]). It runs on the blocking pool,
//! never on an async worker.
//!
//! Most tasks never write a file. Their directory is left empty, and the next task gets it
//! again instead of a new one: making and removing a directory per task costs the
//! filesystem more than everything else a small task does.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tracing::warn;

/// The parent of every task's scratch directory: a fresh private directory, removed (with
/// anything left in it) when dropped.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
    dir: Dir,
    /// Held (shared) by every scratch removal in progress; taken (exclusive) before the
    /// root itself is removed, so the two never work on one tree at once.
    removals: Arc<RwLock<()>>,
    /// Empty directories left by finished tasks, for the next ones.
    spares: Spares,
}

/// Names of empty scratch directories ready for another task.
type Spares = Arc<Mutex<Vec<String>>>;

/// Empty directories kept for reuse at most.
const MAX_SPARES: usize = 64;

impl ScratchRoot {
    /// Creates a fresh `proplet-scratch-*` directory (mode 0700) under the temp directory.
    pub fn create() -> io::Result<ScratchRoot> {
        ScratchRoot::create_in(&std::env::temp_dir())
    }

    /// Creates a fresh `proplet-scratch-*` directory (mode 0700) under `parent`.
    pub fn create_in(parent: &Path) -> io::Result<ScratchRoot> {
        let path = tempfile::Builder::new()
            .prefix("proplet-scratch-")
            .tempdir_in(parent)?
            .keep();
        let dir = Dir::open_ambient_dir(&path, ambient_authority())?;
        let removals = Arc::new(RwLock::new(()));
        Ok(ScratchRoot {
            path,
            dir,
            removals,
            spares: Spares::default(),
        })
    }

    /// The host path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A private, empty, writable directory for one task: one a finished task left empty,
    /// or a new one.
    pub fn scratch(&self) -> io::Result<Scratch> {
        let root = self.dir.try_clone()?;
        let spare = self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let name = match spare {
            Some(name) => name,
            None => {
                let name = format!("task-{}", uuid::Uuid::new_v4());
                root.create_dir(&name)?;
                name
            }
        };
        Ok(Scratch {
            path: self.path.join(&name),
            root: Some(root),
            name,
            removals: self.removals.clone(),
            spares: self.spares.clone(),
        })
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        // Waits for scratch removals in progress (a poisoned lock guards nothing broken).
        let _alone = self.removals.write().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = remove_path(&self.path) {
            warn!(error = %e, dir = %self.path.display(), "could not remove the scratch root");
        }
    }
}

/// A private, empty, writable directory, kept for the next task when dropped empty, and
/// otherwise removed (off the async workers).
#[derive(Debug)]
pub struct Scratch {
    root: Option<Dir>,
    name: String,
    path: PathBuf,
    removals: Arc<RwLock<()>>,
    spares: Spares,
}

impl Scratch {
    /// The host path of the directory (for preopening).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle on the directory (to measure it).
    pub fn open(&self) -> io::Result<Dir> {
        match &self.root {
            Some(root) => root.open_dir(&self.name),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(root) = self.root.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        // Most tasks write nothing: an empty directory goes back to the spares here (an
        // open and one read of a directory the task can no longer touch), without a trip
        // to the blocking pool, which costs more than the check.
        let Some(name) = keep_if_empty(&root, name, &self.spares) else {
            return;
        };
        let path = std::mem::take(&mut self.path);
        let removals = self.removals.clone();
        let remove = move || {
            let _removing = removals.read().unwrap_or_else(|e| e.into_inner());
            let removed = remove_tree(&root, OsStr::new(&name));
            // Already gone: the scratch root was removed with the engine first.
            if let Err(e) = removed
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(error = %e, dir = %path.display(), "could not remove a scratch directory");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Puts `name` back among the spares if it is empty and there is room; otherwise gives the
/// name back, to be removed.
fn keep_if_empty(root: &Dir, name: String, spares: &Spares) -> Option<String> {
    let empty = root
        .open_dir(&name)
        .and_then(|dir| dir.entries().map(|mut e| e.next().is_none()))
        .unwrap_or(false);
    let mut spares = spares.lock().unwrap_or_else(|e| e.into_inner());
    if empty && spares.len() < MAX_SPARES {
        spares.push(name);
        return None;
    }
    Some(name)
}

/// Removes the directory at `path` and everything in it, as [`remove_tree`] does.
pub(crate) fn remove_path(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory below another",
        ));
    };
    remove_tree(&Dir::open_ambient_dir(parent, ambient_authority())?, name)
}

/// Removes `name` under `parent` and everything in it, without recursion and with at most
/// three directory handles open, whatever the depth or width of the tree. Symbolic links are
/// removed, never followed. An entry that disappears meanwhile is fine.
///
/// It works level by level with two directories: the files of the top one are removed and
/// the children of each of its subdirectories are moved into the other, which then becomes
/// the top. Every entry is read and moved once, and neither directory grows beyond the
/// widest level of the tree.
pub(crate) fn remove_tree(parent: &Dir, name: &OsStr) -> io::Result<()> {
    let mut top = match parent.symlink_metadata(name) {
        Ok(meta) if !meta.is_dir() => return gone_ok(parent.remove_file(name)),
        Ok(_) => match parent.open_dir(name) {
            Ok(top) => top,
            Err(e) => return gone_ok(Err(e)),
        },
        Err(e) => return gone_ok(Err(e)),
    };
    // The parent itself may be going away under another remover.
    let spare = match fresh_sibling(parent, name) {
        Ok(spare) => spare,
        Err(e) => return gone_ok(Err(e)),
    };
    let mut next = parent.open_dir(&spare)?;
    while hoist_level(&top, &next)? {
        std::mem::swap(&mut top, &mut next);
    }
    drop((top, next));
    gone_ok(parent.remove_dir(name))?;
    gone_ok(parent.remove_dir(&spare))
}

/// Empties `top`: removes its files and moves the children of its subdirectories into the
/// empty `next`, removing each emptied subdirectory. Returns whether `top` held anything.
fn hoist_level(top: &Dir, next: &Dir) -> io::Result<bool> {
    let mut moved = 0u64;
    let mut any = false;
    for entry in top.entries()? {
        let entry = entry?;
        any = true;
        let name = entry.file_name();
        if !entry.file_type()?.is_dir() {
            gone_ok(top.remove_file(&name))?;
            continue;
        }
        let sub = match entry.open_dir() {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for child in sub.entries()? {
            moved += 1;
            gone_ok(sub.rename(child?.file_name(), next, moved.to_string()))?;
        }
        drop(sub);
        gone_ok(top.remove_dir(&name))?;
    }
    Ok(any)
}

/// `Ok` for a result that failed only because the entry is already gone.
fn gone_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates a new, empty directory next to `name`, for taking it apart.
fn fresh_sibling(parent: &Dir, name: &OsStr) -> io::Result<OsString> {
    for attempt in 0u32..100 {
        let mut sibling = name.to_owned();
        sibling.push(format!(".removing-{attempt}"));
        match parent.create_dir(&sibling) {
            Ok(()) => return Ok(sibling),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from(io::ErrorKind::AlreadyExists))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_gone(path: &Path) {
        for _ in 0..500 {
            if !path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} was not removed", path.display());
    }

    #[test]
    fn scratch_is_created_and_removed() {
        let root = ScratchRoot::create().expect("root");
        let scratch = root.scratch().expect("created");
        let path = scratch.path().to_path_buf();
        std::fs::write(path.join("file"), b"x").expect("writable");
        std::fs::create_dir(path.join("sub")).expect("subdir");
        std::os::unix::fs::symlink("/etc", path.join("sub/etc")).expect("symlink");
        drop(scratch);
        assert!(!path.exists(), "removed with its contents");
        assert!(
            Path::new("/etc/passwd").exists(),
            "a symlink is not followed"
        );
        let root_path = root.path().to_path_buf();
        drop(root);
        assert!(!root_path.exists());
    }

    /// Deeper than any recursive removal survives on a small thread stack, and deeper than
    /// a path can name (`PATH_MAX`): built through directory handles, as a guest would.
    #[test]
    fn very_deep_trees_are_removed_on_a_small_stack() {
        let root = ScratchRoot::create().expect("root");
        let scratch = root.scratch().expect("created");
        let path = scratch.path().to_path_buf();
        let mut dir = Dir::open_ambient_dir(&path, ambient_authority()).expect("open");
        for n in 0..3_000 {
            dir.create_dir("d").expect("mkdir");
            dir.write(format!("f{}", n % 3), b"x").expect("file");
            dir = dir.open_dir("d").expect("down");
        }
        drop(dir);
        let remover = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || drop(scratch))
            .expect("thread");
        remover.join().expect("no stack overflow");
        wait_gone(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_root_waits_for_scratch_removals_in_progress() {
        for _ in 0..10 {
            let root = ScratchRoot::create().expect("root");
            let scratch = root.scratch().expect("scratch");
            let mut dir = Dir::open_ambient_dir(scratch.path(), ambient_authority());
            for n in 0..300 {
                let here = dir.expect("dir");
                here.write(format!("f{n}"), b"x").expect("file");
                here.create_dir("d").expect("mkdir");
                dir = here.open_dir("d");
            }
            let root_path = root.path().to_path_buf();
            drop(scratch);
            tokio::task::spawn_blocking(move || drop(root))
                .await
                .expect("root removed");
            assert!(
                !root_path.exists(),
                "nothing left of {}",
                root_path.display()
            );
            let parent = root_path.parent().expect("parent");
            let name = root_path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let leftovers = std::fs::read_dir(parent)
                .expect("temp dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
                .count();
            assert_eq!(leftovers, 0);
        }
    }

    #[test]
    fn an_empty_directory_is_given_again_and_a_used_one_never() {
        let root = ScratchRoot::create().expect("root");
        let first = root.scratch().expect("created");
        let empty = first.path().to_path_buf();
        drop(first);
        let again = root.scratch().expect("reused");
        assert_eq!(again.path(), empty, "the empty directory is given again");
        std::fs::write(again.path().join("secret"), b"x").expect("writable");
        drop(again);
        assert!(
            !empty.exists(),
            "a directory that was written to is removed"
        );
        let next = root.scratch().expect("created");
        assert_ne!(next.path(), empty);
        assert_eq!(std::fs::read_dir(next.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn removal_runs_on_the_blocking_pool() {
        let root = ScratchRoot::create().expect("root");
        let scratch = root.scratch().expect("created");
        let path = scratch.path().to_path_buf();
        std::fs::create_dir_all(path.join("a/b/c")).expect("tree");
        drop(scratch);
        tokio::task::spawn_blocking(move || wait_gone(&path))
            .await
            .expect("removed");
    }
}
