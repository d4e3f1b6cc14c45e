//! Configuration values for components (`wasi:config/store`): the task's own values (start
//! field `config`), and operator values (`PROPLET_CONFIG_DIR`, one file per key, as systemd
//! credentials and Kubernetes secrets are mounted) that a task asks for (start field
//! `credentials`) and the operator's policy (`PROPLET_CONFIG_ALLOW`) lets it read.
//!
//! Deny by default: a task reads nothing it did not bring or ask for, and an operator value
//! nobody is allowed to read stays unread. Values never reach logs, spans or errors: they
//! are carried as [`Secret`]s, whose `Debug` is redacted, and read from the directory only
//! when a task is granted them (so a rotated file is picked up by the next task).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::CapabilityError;

/// Largest value, task or operator, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Most values one task may be given.
pub const MAX_KEYS: usize = 256;

/// A value only the guest may see: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who may read an operator value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    /// Tasks whose name matches this pattern (`*` matches any run of characters).
    Task(String),
    /// Tasks whose binary has this digest (`sha256:<hex>`).
    Digest(String),
}

/// The operator's configuration policy.
#[derive(Clone, Default)]
pub struct ConfigPolicy {
    /// The directory of operator values, opened once.
    dir: Option<(PathBuf, Arc<Dir>)>,
    /// Each operator key and who may read it; keys not listed are read by no task.
    allow: Vec<(String, Vec<Reader>)>,
}

impl fmt::Debug for ConfigPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigPolicy")
            .field("dir", &self.dir.as_ref().map(|(p, _)| p))
            .field("allow", &self.allow)
            .finish()
    }
}

impl PartialEq for ConfigPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.dir.as_ref().map(|(p, _)| p) == other.dir.as_ref().map(|(p, _)| p)
            && self.allow == other.allow
    }
}

impl Eq for ConfigPolicy {}

/// What a task brings and asks for.
#[derive(Clone, Copy)]
pub struct ConfigRequest<'a> {
    /// The task's name.
    pub task: &'a str,
    /// Its binary's digest, shown as `sha256:<hex>` (formatted only when a credential's
    /// readers name digests).
    pub digest: &'a dyn std::fmt::Display,
    /// Its own values (start field `config`).
    pub values: &'a BTreeMap<String, String>,
    /// Operator keys it asks for (start field `credentials`).
    pub credentials: &'a [String],
}

impl std::fmt::Debug for ConfigRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRequest")
            .field("task", &self.task)
            .field("digest", &format_args!("{}", self.digest))
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The values one task may read, sorted by key. `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigGrant {
    values: Vec<(String, Secret)>,
}

impl fmt::Debug for ConfigGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(k, _)| k))
            .finish()
    }
}

impl ConfigGrant {
    /// Whether the task may read nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each key and value.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.expose()))
    }
}

impl ConfigPolicy {
    /// The policy of `PROPLET_CONFIG_ALLOW`: `KEY=WHO[|WHO…],…`, where WHO is a task name
    /// pattern or a binary digest `sha256:<hex>`. No directory yet.
    pub fn from_allow(text: &str) -> Result<ConfigPolicy, String> {
        Ok(ConfigPolicy {
            dir: None,
            allow: parse_allow(text)?,
        })
    }

    /// The same policy reading values from `path` (`PROPLET_CONFIG_DIR`), opened now: it
    /// must be a directory.
    pub fn with_dir(&self, path: &Path) -> Result<ConfigPolicy, String> {
        let opened = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(ConfigPolicy {
            dir: Some((path.to_owned(), Arc::new(opened))),
            allow: self.allow.clone(),
        })
    }

    /// The same directory, with every key of `keys` readable by any task (`proplet run`,
    /// whose user is the operator).
    pub fn allowing(&self, keys: &[String]) -> ConfigPolicy {
        let any = || vec![Reader::Task("*".into())];
        ConfigPolicy {
            dir: self.dir.clone(),
            allow: keys.iter().map(|k| (k.clone(), any())).collect(),
        }
    }

    /// The grant of `req`: its own values and the operator values it asked for, each
    /// allowed for it. Asking for a value the policy does not let it read is `denied`; a
    /// malformed request is `invalid`.
    pub fn grant(&self, req: &ConfigRequest<'_>) -> Result<ConfigGrant, CapabilityError> {
        let invalid = |why: String| CapabilityError::Invalid(why);
        if req.values.len() + req.credentials.len() > MAX_KEYS {
            return Err(invalid(format!(
                "more than {MAX_KEYS} configuration values"
            )));
        }
        let mut values = BTreeMap::new();
        for (key, value) in req.values {
            check_key(key).map_err(invalid)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(invalid(format!(
                    "config value {key:?} is over {MAX_VALUE_BYTES} bytes"
                )));
            }
            values.insert(key.clone(), Secret(value.clone()));
        }
        for key in req.credentials {
            check_key(key).map_err(invalid)?;
            if values.contains_key(key) {
                return Err(invalid(format!(
                    "{key:?} is both in config and in credentials"
                )));
            }
            self.check_reader(key, req)?;
            values.insert(key.clone(), self.read(key)?);
        }
        Ok(ConfigGrant {
            values: values.into_iter().collect(),
        })
    }

    /// Whether the policy lets this task read the operator value `key`.
    fn check_reader(&self, key: &str, req: &ConfigRequest<'_>) -> Result<(), CapabilityError> {
        let readers = self.allow.iter().find(|(k, _)| k == key).map(|(_, r)| r);
        let mut digest = None;
        let allowed = readers.is_some_and(|readers| {
            readers.iter().any(|r| match r {
                Reader::Task(pattern) => glob(pattern, req.task),
                Reader::Digest(d) => *d == *digest.get_or_insert_with(|| req.digest.to_string()),
            })
        });
        if allowed {
            Ok(())
        } else {
            Err(CapabilityError::Denied(format!(
                "task {:?} may not read credential {key:?} (PROPLET_CONFIG_ALLOW)",
                req.task
            )))
        }
    }

    /// Reads the operator value `key` through the directory handle.
    fn read(&self, key: &str) -> Result<Secret, CapabilityError> {
        let denied = |why: &str| CapabilityError::Denied(format!("credential {key:?} {why}"));
        let (_, dir) = self
            .dir
            .as_ref()
            .ok_or_else(|| denied("cannot be read: PROPLET_CONFIG_DIR is not set"))?;
        let file = dir
            .open(key)
            .map_err(|_| denied("is not set on this proplet"))?;
        let meta = file.metadata().map_err(|_| denied("cannot be read"))?;
        if !meta.is_file() {
            return Err(denied("is not a file"));
        }
        let mut bytes = Vec::new();
        let cap = u64::try_from(MAX_VALUE_BYTES).unwrap_or(u64::MAX) + 1;
        file.take(cap)
            .read_to_end(&mut bytes)
            .map_err(|_| denied("cannot be read"))?;
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(denied(&format!("is over {MAX_VALUE_BYTES} bytes")));
        }
        String::from_utf8(bytes)
            .map(Secret)
            .map_err(|_| denied("is not UTF-8"))
    }
}

/// Keys are file names too: letters, digits, `_`, `-` and `.`, not starting with `.`, at
/// most 128 bytes.
fn check_key(key: &str) -> Result<(), String> {
    if super::plain_name(key, 128) && !key.starts_with('.') {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a configuration key (letters, digits, _ - . ; not starting with .)"
        ))
    }
}

fn parse_allow(text: &str) -> Result<Vec<(String, Vec<Reader>)>, String> {
    let mut rules = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, who) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected KEY=WHO[|WHO…]"))?;
        check_key(key.trim())?;
        let readers = who
            .split('|')
            .map(str::trim)
            .map(|w| match w.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Ok(Reader::Digest(w.to_ascii_lowercase()))
                }
                Some(_) => Err(format!("{w:?}: a digest is sha256: and 64 hex digits")),
                None if w.is_empty() => Err(format!("{item:?}: an empty reader")),
                None => Ok(Reader::Task(w.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.push((key.trim().to_owned(), readers));
    }
    Ok(rules)
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476";

    fn policy(dir: &Path, allow: &str) -> ConfigPolicy {
        ConfigPolicy::from_allow(allow)
            .unwrap()
            .with_dir(dir)
            .unwrap()
    }

    fn request<'a>(
        task: &'a str,
        values: &'a BTreeMap<String, String>,
        credentials: &'a [String],
    ) -> ConfigRequest<'a> {
        ConfigRequest {
            task,
            digest: &DIGEST,
            values,
            credentials,
        }
    }

    fn secrets() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db_password"), "hunter2").unwrap();
        std::fs::write(dir.path().join("token"), "t0k3n").unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; MAX_VALUE_BYTES + 1]).unwrap();
        std::fs::write(dir.path().join("binary"), [0xff, 0xfe]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        dir
    }

    #[test]
    fn a_task_reads_its_values_and_the_credentials_it_may_read() {
        let dir = secrets();
        let p = policy(
            dir.path(),
            &format!("db_password=ingest-*|{DIGEST},token=other"),
        );
        let values = BTreeMap::from([("mode".to_owned(), "fast".to_owned())]);
        let asked = ["db_password".to_owned()];
        let g = p.grant(&request("ingest-7", &values, &asked)).unwrap();
        let pairs: Vec<_> = g.pairs().collect();
        assert_eq!(pairs, [("db_password", "hunter2"), ("mode", "fast")]);
        // By digest, whatever its name.
        assert!(p.grant(&request("anything", &values, &asked)).is_ok());
        assert!(!format!("{g:?}").contains("hunter2"), "{g:?}");
    }

    #[test]
    fn credentials_beyond_the_policy_are_denied() {
        let dir = secrets();
        let p = policy(dir.path(), "db_password=ingest-*,token=other");
        let none = BTreeMap::new();
        for (task, key) in [
            ("report", "db_password"),
            ("ingest-1", "token"),
            ("ingest-1", "unlisted"),
        ] {
            let asked = [key.to_owned()];
            let err = p.grant(&request(task, &none, &asked)).unwrap_err();
            assert!(
                matches!(err, CapabilityError::Denied(_)),
                "{task} {key}: {err}"
            );
        }
        let open = policy(dir.path(), "big=*,binary=*,sub=*,missing=*");
        for key in ["big", "binary", "sub", "missing"] {
            let asked = [key.to_owned()];
            let err = open.grant(&request("t", &none, &asked)).unwrap_err();
            assert!(matches!(err, CapabilityError::Denied(_)), "{key}: {err}");
        }
        let no_dir = ConfigPolicy::from_allow("token=*").unwrap();
        let asked = ["token".to_owned()];
        assert!(matches!(
            no_dir.grant(&request("t", &none, &asked)),
            Err(CapabilityError::Denied(_))
        ));
    }

    #[test]
    fn malformed_requests_are_invalid_and_never_escape_the_directory() {
        let dir = secrets();
        let p = policy(dir.path(), "db_password=*");
        let none = BTreeMap::new();
        for key in ["../etc/passwd", "/etc/passwd", ".hidden", "", "a/b", "é"] {
            let asked = [key.to_owned()];
            let err = p.grant(&request("t", &none, &asked)).unwrap_err();
            assert!(matches!(err, CapabilityError::Invalid(_)), "{key:?}: {err}");
        }
        let both = BTreeMap::from([("db_password".to_owned(), "mine".to_owned())]);
        let asked = ["db_password".to_owned()];
        assert!(matches!(
            p.grant(&request("t", &both, &asked)),
            Err(CapabilityError::Invalid(_))
        ));
        let huge = BTreeMap::from([("k".to_owned(), "v".repeat(MAX_VALUE_BYTES + 1))]);
        assert!(matches!(
            p.grant(&request("t", &huge, &[])),
            Err(CapabilityError::Invalid(_))
        ));
        let many: BTreeMap<String, String> = (0..=MAX_KEYS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(matches!(
            p.grant(&request("t", &many, &[])),
            Err(CapabilityError::Invalid(_))
        ));
    }

    #[test]
    fn the_allow_list_parses_patterns_and_digests() {
        assert!(parse_allow("a=*,b=x-*|y").is_ok());
        assert!(parse_allow("a").is_err());
        assert!(parse_allow("a=").is_err());
        assert!(parse_allow("a=sha256:abc").is_err());
        assert!(parse_allow("../a=*").is_err());
        let missing = Path::new("/nonexistent/proplet");
        assert!(ConfigPolicy::default().with_dir(missing).is_err());
    }

    #[test]
    fn globs_match_runs_of_characters() {
        for (p, t) in [
            ("*", ""),
            ("*", "abc"),
            ("a*", "abc"),
            ("*c", "abc"),
            ("a*c", "abbbc"),
            ("a*b*c", "axbyc"),
            ("abc", "abc"),
        ] {
            assert!(glob(p, t), "{p} {t}");
        }
        for (p, t) in [
            ("a*", "bac"),
            ("*c", "abd"),
            ("abc", "abcd"),
            ("a*b*c", "acb"),
            ("", "a"),
        ] {
            assert!(!glob(p, t), "{p} {t}");
        }
    }
}
