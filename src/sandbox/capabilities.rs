//! Filesystem capabilities: what the operator exposes (volumes), what a task asks for
//! (mounts), and the grant, which is the request intersected with the policy — asking for
//! more than the policy allows is refused, never silently downgraded.

use std::path::PathBuf;

/// A host directory the operator exposes under a name, with the most it may be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The name tasks ask for.
    pub name: String,
    /// The host directory.
    pub host: PathBuf,
    /// Whether tasks may be granted write access.
    pub writable: bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host directory.
    pub host: PathBuf,
    /// The guest path.
    pub guest: String,
    /// Read-write (else read-only).
    pub writable: bool,
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

/// Parses `name=/host/dir:ro,other=/dir:rw` (the mode defaults to `ro`).
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
        if !std::path::Path::new(dir).is_dir() {
            return Err(format!("volume {name:?}: {dir} is not a directory"));
        }
        volumes.push(Volume {
            name: name.to_owned(),
            host: PathBuf::from(dir),
            writable,
        });
    }
    Ok(volumes)
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
        let writable = match req.mode.as_deref() {
            None | Some("ro") => false,
            Some("rw") => true,
            Some(other) => {
                return Err(CapabilityError::Invalid(format!(
                    "mode {other:?} (use ro or rw)"
                )));
            }
        };
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
        let tmp = std::env::temp_dir();
        parse_volumes(&format!(
            "models={}:ro,data={}:rw",
            tmp.display(),
            tmp.display()
        ))
        .expect("parses")
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
        assert!(parse_volumes("x=/nonexistent/dir").is_err());
        assert!(parse_volumes("=/tmp").is_err());
        assert!(parse_volumes("a b=/tmp").is_err());
        assert!(parse_volumes("a=/tmp,a=/tmp").is_err());
        assert!(parse_volumes("nodir").is_err());
        assert_eq!(parse_volumes("").unwrap(), vec![]);
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
