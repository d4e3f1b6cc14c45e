//! The scratch quota: how much a task's private `/tmp` may hold. Neither WASI nor the host
//! filesystem can cap one directory, so the runtime measures the tree while the guest runs
//! ([`ScratchQuota::check`], every [`SAMPLE`]) and stops a guest that went past it. A
//! guest can write at most what it manages within one sample interval beyond its quota.
//!
//! The walk is breadth-first by relative path from the scratch handle (cap-std), so it
//! holds at most two directory handles and no recursion, whatever the guest built; it
//! stops as soon as a limit is passed, so its cost is bounded by the quota itself.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cap_std::fs::Dir;

/// How often a running task's scratch is measured.
pub const SAMPLE: Duration = Duration::from_millis(50);

/// Longest relative path inside a scratch tree (within Linux's `PATH_MAX`).
const MAX_PATH_BYTES: usize = 3072;

/// What a task's scratch directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchQuota {
    /// Bytes of file data (allocated blocks, so sparse files count what they use).
    pub bytes: u64,
    /// Files, directories and links.
    pub entries: u64,
}

impl Default for ScratchQuota {
    fn default() -> Self {
        ScratchQuota {
            bytes: 64 << 20,
            entries: 10_000,
        }
    }
}

/// What a scratch tree held when measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScratchUsage {
    /// Bytes allocated to files.
    pub bytes: u64,
    /// Entries seen.
    pub entries: u64,
}

impl ScratchQuota {
    /// Measures `dir`; `Err` with the reason as soon as the tree is past the quota.
    pub fn check(&self, dir: &Dir) -> Result<ScratchUsage, String> {
        let mut usage = ScratchUsage::default();
        let mut pending: VecDeque<PathBuf> = VecDeque::from([PathBuf::new()]);
        while let Some(rel) = pending.pop_front() {
            let sub;
            let here = if rel.as_os_str().is_empty() {
                dir
            } else {
                match dir.open_dir(&rel) {
                    Ok(d) => {
                        sub = d;
                        &sub
                    }
                    // Renamed or removed by the guest since it was listed.
                    Err(_) => continue,
                }
            };
            self.visit(here, &rel, &mut usage, &mut pending)
                .map_err(|e| format!("cannot measure the scratch directory: {e}"))??;
        }
        Ok(usage)
    }

    /// Counts the entries of one directory and queues its subdirectories.
    fn visit(
        &self,
        here: &Dir,
        rel: &std::path::Path,
        usage: &mut ScratchUsage,
        pending: &mut VecDeque<PathBuf>,
    ) -> io::Result<Result<(), String>> {
        for entry in here.entries()? {
            let Ok(entry) = entry else { continue };
            usage.entries += 1;
            if usage.entries > self.entries {
                return Ok(Err(format!("more than {} entries", self.entries)));
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let path = rel.join(entry.file_name());
                if path.as_os_str().len() > MAX_PATH_BYTES {
                    return Ok(Err("a directory tree deeper than paths can name".into()));
                }
                pending.push_back(path);
            } else {
                usage.bytes += allocated(&meta);
                if usage.bytes > self.bytes {
                    return Ok(Err(format!("more than {} bytes", self.bytes)));
                }
            }
        }
        Ok(Ok(()))
    }
}

/// Resolves, with the reason, once `dir` is past `quota`; measures every [`SAMPLE`] on
/// the blocking pool. Never resolves while the tree stays within the quota.
pub async fn watch(dir: Dir, quota: ScratchQuota) -> String {
    let dir = std::sync::Arc::new(dir);
    // The first measurement after one interval: a task that ends sooner costs nothing.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE, SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let measured = dir.clone();
        match tokio::task::spawn_blocking(move || quota.check(&measured)).await {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => return why,
            Err(e) => return format!("cannot measure the scratch directory: {e}"),
        }
    }
}

/// Bytes a file occupies on disk (its blocks), never less than what it claims to hold
/// when the filesystem does not report blocks.
fn allocated(meta: &cap_std::fs::Metadata) -> u64 {
    use cap_std::fs::MetadataExt as _;
    let blocks = meta.blocks().saturating_mul(512);
    if blocks == 0 {
        meta.len().min(1 << 20)
    } else {
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn dir() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("open");
        (tmp, dir)
    }

    #[test]
    fn counts_bytes_and_entries_and_stops_past_the_quota() {
        let (_tmp, d) = dir();
        d.create_dir_all("a/b").expect("dirs");
        d.write("a/b/file", vec![1u8; 100_000]).expect("file");
        let quota = ScratchQuota {
            bytes: 1 << 20,
            entries: 10,
        };
        let usage = quota.check(&d).expect("within");
        assert_eq!(usage.entries, 3);
        assert!(usage.bytes >= 100_000, "{usage:?}");
        let small = ScratchQuota {
            bytes: 50_000,
            entries: 10,
        };
        assert!(small.check(&d).expect_err("bytes").contains("bytes"));
        let few = ScratchQuota {
            bytes: 1 << 20,
            entries: 2,
        };
        assert!(few.check(&d).expect_err("entries").contains("entries"));
    }

    #[test]
    fn a_tree_deeper_than_a_path_is_past_the_quota() {
        let (_tmp, d) = dir();
        let mut here = d.try_clone().expect("clone");
        for _ in 0..2000 {
            here.create_dir("d").expect("mkdir");
            here = here.open_dir("d").expect("down");
        }
        let quota = ScratchQuota {
            bytes: 1 << 20,
            entries: 1_000_000,
        };
        assert!(quota.check(&d).expect_err("deep").contains("deeper"));
    }
}
