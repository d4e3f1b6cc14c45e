//! Filesystem capabilities: what the operator exposes (volumes), what a task asks for
//! (mounts), and the grant, which is the request intersected with the policy — asking for
//! more than the policy allows is refused, never silently downgraded.
//!
//! A volume is opened once, when it is configured, as a directory handle; every mount is
//! granted from that handle and preopened through it (`/proc/self/fd/N`), never by looking
//! the host path up again. Whatever happens to the path later (a task with write access to
//! a parent swapping in a symlink, an operator renaming it), tasks see the directory that
//! was configured. Operator volumes must be canonical paths and must not nest or overlap,
//! nor contain the temp directory where task scratch directories live.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// A host directory the operator exposes under a name, with the most it may be granted.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The name tasks ask for.
    pub name: String,
    /// The host directory, as configured.
    pub host: PathBuf,
    /// Whether tasks may be granted write access.
    pub writable: bool,
    /// The directory, opened once.
    dir: Arc<Dir>,
}

impl PartialEq for Volume {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.host, self.writable) == (&other.name, &other.host, other.writable)
    }
}

impl Eq for Volume {}

impl Volume {
    /// Opens `host` as the volume `name`.
    pub fn open(name: &str, host: &Path, writable: bool) -> Result<Volume, String> {
        let dir = Dir::open_ambient_dir(host, ambient_authority())
            .map_err(|e| format!("volume {name:?}: cannot open {}: {e}", host.display()))?;
        Ok(Volume {
            name: name.to_owned(),
            host: host.to_owned(),
            writable,
            dir: Arc::new(dir),
        })
    }
}

/// A mount a task asks for (start field `mounts`, an extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// A volume name.
    pub volume: String,
    /// Where the guest sees it (an absolute path).
    pub path: String,
    /// `ro` (default) or `rw`.
    pub mode: Option<String>,
}

/// A granted mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The host directory, as configured (for messages; never opened again).
    pub host: PathBuf,
    /// The guest path.
    pub guest: String,
    /// Read-write (else read-only).
    pub writable: bool,
    /// The volume's directory handle.
    dir: Arc<Dir>,
}

impl PartialEq for Mount {
    fn eq(&self, other: &Self) -> bool {
        (&self.host, &self.guest, self.writable) == (&other.host, &other.guest, other.writable)
    }
}

impl Eq for Mount {}

impl Mount {
    /// A path that opens the very directory the volume's handle refers to, whatever has
    /// become of its host path since (Linux `/proc/self/fd`). Valid while this mount lives.
    pub fn handle_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }
}

/// Guest path of every task's private scratch directory.
pub const SCRATCH_PATH: &str = "/tmp";

/// Why a capability was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The policy does not allow it.
    #[error("denied: {0}")]
    Denied(String),
    /// The request itself is malformed (a mount or a budget).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Parses `name=/host/dir:ro,other=/dir:rw` (the mode defaults to `ro`) and opens each
/// directory. Paths must be canonical (absolute, no symlinks, `.` or `..`), volumes must
/// not nest or overlap, and none may contain the temp directory.
pub fn parse_volumes(text: &str) -> Result<Vec<Volume>, String> {
    let mut volumes: Vec<Volume> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected name=/dir[:ro|:rw]"))?;
        let (dir, writable) = match rest.rsplit_once(':') {
            Some((dir, "ro")) => (dir, false),
            Some((dir, "rw")) => (dir, true),
            _ => (rest, false),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "{name:?}: a volume name is letters, digits, '-', '_' or '.'"
            ));
        }
        if volumes.iter().any(|v| v.name == name) {
            return Err(format!("volume {name:?} is defined twice"));
        }
        let host = canonical(name, Path::new(dir))?;
        check_disjoint(name, &host, &volumes)?;
        volumes.push(Volume::open(name, &host, writable)?);
    }
    Ok(volumes)
}

/// `dir` if it is an existing directory named by its canonical path.
fn canonical(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(dir)
        .map_err(|e| format!("volume {name:?}: {}: {e}", dir.display()))?;
    if !real.is_dir() {
        return Err(format!(
            "volume {name:?}: {} is not a directory",
            dir.display()
        ));
    }
    if real != dir {
        return Err(format!(
            "volume {name:?}: {} is not a canonical path (use {})",
            dir.display(),
            real.display()
        ));
    }
    Ok(real)
}

/// Refuses a volume that nests in, contains or equals another one, or contains the temp
/// directory (where every task's private scratch lives).
fn check_disjoint(name: &str, host: &Path, volumes: &[Volume]) -> Result<(), String> {
    for v in volumes {
        if host.starts_with(&v.host) || v.host.starts_with(host) {
            return Err(format!(
                "volumes {:?} ({}) and {name:?} ({}) overlap; volumes must not nest",
                v.name,
                v.host.display(),
                host.display()
            ));
        }
    }
    let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap_or_else(|_| std::env::temp_dir());
    if tmp.starts_with(host) {
        return Err(format!(
            "volume {name:?} ({}) contains the temp directory {}, where task scratch directories live",
            host.display(),
            tmp.display()
        ));
    }
    Ok(())
}

/// Whether a mount `mode` asks for writes: `ro` (or none) is read-only, `rw` writable,
/// anything else an error.
pub fn writable(mode: Option<&str>) -> Result<bool, String> {
    match mode {
        None | Some("ro") => Ok(false),
        Some("rw") => Ok(true),
        Some(other) => Err(format!("mode {other:?} (use ro or rw)")),
    }
}

/// Grants `requests` under `volumes`, or refuses the whole set.
pub fn grant(volumes: &[Volume], requests: &[MountRequest]) -> Result<Vec<Mount>, CapabilityError> {
    let mut mounts: Vec<Mount> = Vec::new();
    for req in requests {
        let guest = guest_path(&req.path)?;
        if guest == SCRATCH_PATH || mounts.iter().any(|m| m.guest == guest) {
            return Err(CapabilityError::Invalid(format!(
                "{guest} is already mounted"
            )));
        }
        let writable = writable(req.mode.as_deref()).map_err(CapabilityError::Invalid)?;
        let volume = volumes
            .iter()
            .find(|v| v.name == req.volume)
            .ok_or_else(|| {
                CapabilityError::Denied(format!(
                    "volume {:?} is not offered by this proplet",
                    req.volume
                ))
            })?;
        if writable && !volume.writable {
            return Err(CapabilityError::Denied(format!(
                "volume {:?} is read-only on this proplet",
                req.volume
            )));
        }
        mounts.push(Mount {
            host: volume.host.clone(),
            guest,
            writable,
            dir: volume.dir.clone(),
        });
    }
    Ok(mounts)
}

/// An absolute guest path without `.`/`..` components or empty segments.
fn guest_path(path: &str) -> Result<String, CapabilityError> {
    let bad = || CapabilityError::Invalid(format!("{path:?} is not a plain absolute path"));
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad());
    }
    Ok(format!("/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes() -> Vec<Volume> {
        let (a, b) = (tempdir(), tempdir());
        parse_volumes(&format!("models={a}:ro,data={b}:rw")).expect("parses")
    }

    /// A directory that lives for the test run, by its canonical path.
    fn tempdir() -> String {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        std::fs::canonicalize(dir)
            .expect("canonical")
            .display()
            .to_string()
    }

    fn req(volume: &str, path: &str, mode: Option<&str>) -> MountRequest {
        MountRequest {
            volume: volume.into(),
            path: path.into(),
            mode: mode.map(str::to_owned),
        }
    }

    #[test]
    fn parses_volumes_and_rejects_bad_ones() {
        let v = volumes();
        assert_eq!(
            (v[0].name.as_str(), v[0].writable, v[1].writable),
            ("models", false, true)
        );
        let d = tempdir();
        assert!(parse_volumes("x=/nonexistent/dir").is_err());
        assert!(parse_volumes(&format!("={d}")).is_err());
        assert!(parse_volumes(&format!("a b={d}")).is_err());
        assert!(parse_volumes(&format!("a={d},a={d}")).is_err());
        assert!(parse_volumes("nodir").is_err());
        assert_eq!(parse_volumes("").unwrap(), vec![]);
    }

    #[test]
    fn volumes_are_canonical_disjoint_and_keep_out_of_the_temp_dir() {
        let d = tempdir();
        std::fs::create_dir(format!("{d}/inner")).expect("inner");
        std::os::unix::fs::symlink(format!("{d}/inner"), format!("{d}/link")).expect("link");
        for (text, why) in [
            (format!("a={d},b={d}/inner"), "overlap"),
            (format!("b={d}/inner,a={d}"), "overlap"),
            (format!("a={d},b={d}"), "overlap"),
            (format!("a={d}/link"), "not a canonical path"),
            (format!("a={d}/inner/.."), "not a canonical path"),
            ("root=/".to_owned(), "temp directory"),
        ] {
            let err = parse_volumes(&text).expect_err(&text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn a_mount_sees_the_directory_that_was_configured_not_what_the_path_became() {
        let d = tempdir();
        std::fs::create_dir(format!("{d}/vol")).expect("vol");
        std::fs::write(format!("{d}/vol/marker"), "original").expect("marker");
        let v = parse_volumes(&format!("v={d}/vol")).expect("parses");
        std::fs::rename(format!("{d}/vol"), format!("{d}/moved")).expect("rename");
        std::os::unix::fs::symlink("/", format!("{d}/vol")).expect("swap in a symlink");
        let m = grant(&v, &[req("v", "/v", None)]).expect("granted");
        let seen = std::fs::read_to_string(m[0].handle_path().join("marker")).expect("marker");
        assert_eq!(seen, "original");
    }

    #[test]
    fn grants_the_request_within_policy() {
        let got = grant(
            &volumes(),
            &[
                req("models", "/models/", None),
                req("data", "/data", Some("rw")),
            ],
        )
        .expect("granted");
        assert_eq!(got[0].guest, "/models");
        assert!(!got[0].writable && got[1].writable);
        assert_eq!(grant(&volumes(), &[]).unwrap(), vec![]);
    }

    #[test]
    fn refuses_more_than_policy_allows() {
        assert!(matches!(
            grant(&volumes(), &[req("models", "/m", Some("rw"))]),
            Err(CapabilityError::Denied(_))
        ));
        assert!(matches!(
            grant(&volumes(), &[req("secrets", "/s", None)]),
            Err(CapabilityError::Denied(_))
        ));
    }

    #[test]
    fn refuses_malformed_paths_and_modes() {
        for path in ["relative", "/", "/a/../b", "/a//b", "/./a", "", "/tmp"] {
            assert!(
                matches!(
                    grant(&volumes(), &[req("models", path, None)]),
                    Err(CapabilityError::Invalid(_))
                ),
                "{path}"
            );
        }
        assert!(grant(&volumes(), &[req("models", "/m", Some("wx"))]).is_err());
        assert!(
            grant(
                &volumes(),
                &[req("models", "/m", None), req("data", "/m", None)]
            )
            .is_err()
        );
    }
}
