//! Compiled code kept on disk across restarts, so that a binary already seen is not
//! compiled again (seconds for a large module, on every reboot of every device).
//!
//! Entries live in `<dir>/<engine fingerprint>/<digest>.<kind>`: the fingerprint covers the
//! Wasmtime version, the target and the engine configuration, so an upgraded proplet never
//! reads what another build wrote. Each file is a header (a magic, then the sha256 of the
//! artifact) and the artifact from Wasmtime's `serialize`. An entry is loaded only if that
//! checksum matches and Wasmtime's own checks accept it; a corrupt, truncated or
//! incompatible entry is logged, removed and compiled again. Files are written to a
//! temporary name and renamed, so a reader never sees half an entry; the directory is
//! private (0700), since whoever can write compiled code there runs it as the proplet.
//! Beyond `max_bytes` the least recently used entries go (a hit refreshes the file's
//! modification time).
//!
//! Only digests of binaries that passed admission reach this cache: the engine looks up
//! what it was asked to run, after the digest and signature checks.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

use super::Digest;

/// First bytes of every entry (format version 1).
const MAGIC: &[u8; 8] = b"PRPLCC01";
/// Magic and checksum.
const HEADER: usize = 8 + 32;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A core module.
    Module,
    /// A component.
    Component,
}

impl Kind {
    fn extension(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// Where the cache lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheConfig {
    /// The cache directory (`PROPLET_CACHE_DIR`).
    pub dir: PathBuf,
    /// Bytes of entries kept (`PROPLET_CACHE_MAX_BYTES`).
    pub max_bytes: u64,
}

/// The cache directory: `setting` (`PROPLET_CACHE_DIR`; `off` turns the cache off), else
/// `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`), else `$XDG_CACHE_HOME/proplet`, else
/// `~/.cache/proplet`; `None` when off or when there is nowhere to default to.
pub fn resolve_dir(
    setting: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    match setting {
        Some(dir) if dir == Path::new("off") => return None,
        Some(dir) => return Some(dir.to_owned()),
        None => {}
    }
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dirs) = set("CACHE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is ours.
        return dirs.to_string_lossy().split(':').next().map(PathBuf::from);
    }
    set("XDG_CACHE_HOME")
        .map(|d| d.join("proplet"))
        .or_else(|| set("HOME").map(|h| h.join(".cache/proplet")))
}

/// An open cache for one engine fingerprint.
#[derive(Debug)]
pub struct DiskCache {
    root: PathBuf,
    dir: PathBuf,
    max_bytes: u64,
}

impl DiskCache {
    /// Opens (creating, private) the part of `config.dir` for engines with `fingerprint`.
    pub fn open(config: &DiskCacheConfig, fingerprint: &str) -> io::Result<Self> {
        let dir = config.dir.join(fingerprint);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(DiskCache {
            root: config.dir.clone(),
            dir,
            max_bytes: config.max_bytes,
        })
    }

    fn path(&self, digest: &Digest, kind: Kind) -> PathBuf {
        self.dir
            .join(format!("{}.{}", digest.hex(), kind.extension()))
    }

    /// The artifact stored for `digest`, if there is one and its checksum holds (a bad
    /// entry is removed).
    pub fn load(&self, digest: &Digest, kind: Kind) -> Option<Vec<u8>> {
        let path = self.path(digest, kind);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            // Never followed, never read whole: a link, or a file larger than the cache.
            Ok(meta) if !meta.is_file() || meta.len() > self.max_bytes => {
                self.reject(
                    digest,
                    kind,
                    "it is not a file within PROPLET_CACHE_MAX_BYTES",
                );
                return None;
            }
            _ => {}
        }
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read a compile cache entry");
                return None;
            }
        };
        if !intact(&bytes) {
            self.reject(
                digest,
                kind,
                "its checksum does not match (corrupt or cut short)",
            );
            return None;
        }
        touch(&path);
        Some(bytes.split_off(HEADER))
    }

    /// Removes the entry for `digest`, saying why.
    pub fn reject(&self, digest: &Digest, kind: Kind, why: &str) {
        let path = self.path(digest, kind);
        warn!(path = %path.display(), "compiling again: the compile cache entry is unusable: {why}");
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %e, "cannot remove a compile cache entry");
        }
    }

    /// Stores `artifact` for `digest` (atomically), then keeps the cache within its size.
    pub fn store(&self, digest: &Digest, kind: Kind, artifact: &[u8]) {
        let path = self.path(digest, kind);
        let temp = self
            .dir
            .join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = write_entry(&temp, artifact).and_then(|()| fs::rename(&temp, &path));
        match written {
            Ok(()) => {
                debug!(path = %path.display(), bytes = artifact.len(), "compiled code cached on disk")
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot write a compile cache entry");
                fs::remove_file(&temp).ok();
            }
        }
        self.evict();
    }

    /// Removes the least recently used entries (of any engine fingerprint) until the
    /// cache is within `max_bytes`.
    fn evict(&self) {
        let mut entries = entries(&self.root);
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (path, bytes, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => total = total.saturating_sub(bytes),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot evict a compile cache entry")
                }
            }
        }
    }
}

/// Whether `bytes` is a whole entry: the magic, then a checksum that matches the rest.
fn intact(bytes: &[u8]) -> bool {
    bytes.len() > HEADER
        && bytes.starts_with(MAGIC)
        && bytes[8..HEADER] == Sha256::digest(&bytes[HEADER..])[..]
}

fn write_entry(path: &Path, artifact: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(MAGIC)?;
    file.write_all(&Sha256::digest(artifact))?;
    file.write_all(artifact)?;
    file.sync_data()
}

/// Marks `path` as just used (its modification time orders eviction).
fn touch(path: &Path) {
    let touched = fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        debug!(path = %path.display(), error = %e, "cannot refresh a compile cache entry");
    }
}

/// Every entry under `root` (one level of fingerprint directories): path, size, mtime.
fn entries(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let dirs = fs::read_dir(root).into_iter().flatten().flatten();
    let files = dirs.flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten());
    files
        .filter_map(|f| {
            let meta = f.metadata().ok().filter(|m| m.is_file())?;
            Some((f.path(), meta.len(), meta.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(root: &Path, max_bytes: u64) -> DiskCache {
        let config = DiskCacheConfig {
            dir: root.to_owned(),
            max_bytes,
        };
        DiskCache::open(&config, "engine-1").expect("open")
    }

    #[test]
    fn an_entry_comes_back_only_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = cache(root.path(), 1 << 20);
        let digest = Digest::of(b"binary");
        assert_eq!(cache.load(&digest, Kind::Module), None);
        cache.store(&digest, Kind::Module, b"compiled code");
        assert_eq!(
            cache.load(&digest, Kind::Module).as_deref(),
            Some(&b"compiled code"[..])
        );
        assert_eq!(
            cache.load(&digest, Kind::Component),
            None,
            "kinds are apart"
        );
        let path = cache.path(&digest, Kind::Module);
        let mode = fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // A flipped bit, a cut, and garbage are all refused and removed.
        let whole = fs::read(&path).expect("read");
        let mut flipped = whole.clone();
        *flipped.last_mut().expect("bytes") ^= 1;
        for bad in [
            flipped,
            whole[..whole.len() - 3].to_vec(),
            b"junk".to_vec(),
            Vec::new(),
        ] {
            fs::write(&path, &bad).expect("write");
            assert_eq!(cache.load(&digest, Kind::Module), None);
            assert!(!path.exists(), "a bad entry is removed");
        }
        // A link is not followed, and a file larger than the cache is not read.
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        assert_eq!(cache.load(&digest, Kind::Module), None);
        assert!(fs::symlink_metadata(&path).is_err(), "the link is removed");
        let huge = fs::File::create(&path).expect("create");
        huge.set_len(2 << 20)
            .expect("sparse file past the 1 MiB cache");
        assert_eq!(cache.load(&digest, Kind::Module), None);
        assert!(!path.exists(), "the oversized entry is removed");
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = cache(root.path(), 3 * (HEADER as u64 + 100));
        let digests: Vec<Digest> = (0..4u8).map(|n| Digest::of(&[n])).collect();
        for (n, digest) in digests.iter().enumerate().take(3) {
            cache.store(digest, Kind::Module, &[n as u8; 100]);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            cache.load(&digests[0], Kind::Module).is_some(),
            "used again"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.store(&digests[3], Kind::Module, &[3; 100]);
        let kept: Vec<bool> = digests
            .iter()
            .map(|d| cache.path(d, Kind::Module).exists())
            .collect();
        assert_eq!(kept, [true, false, true, true]);
    }

    #[test]
    fn the_directory_defaults_like_a_systemd_or_xdg_cache() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            resolve_dir(None, &home),
            Some(PathBuf::from("/home/u/.cache/proplet"))
        );
        let xdg = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(resolve_dir(None, &xdg), Some(PathBuf::from("/x/proplet")));
        let unit = env(&[("CACHE_DIRECTORY", "/var/cache/proplet:/other")]);
        assert_eq!(
            resolve_dir(None, &unit),
            Some(PathBuf::from("/var/cache/proplet"))
        );
        assert_eq!(resolve_dir(Some(Path::new("off")), &home), None);
        assert_eq!(
            resolve_dir(Some(Path::new("/c")), &home),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(resolve_dir(None, &env(&[])), None);
    }
}
