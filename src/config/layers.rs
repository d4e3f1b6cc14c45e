//! The configuration layers: defaults, a TOML file, the environment and CLI flags.
//!
//! Each layer yields raw text per setting together with where it came from, so that a bad
//! value can be reported by the exact name the operator used.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::settings::{SETTINGS, Setting, by_key};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A key of the TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Cli(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Cli(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// A raw value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// The text as given.
    pub text: String,
    /// Where it came from.
    pub source: Source,
}

/// The merged view: for each setting key, the value of the highest layer that set it.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, Raw>,
}

impl Layers {
    /// Starts from the built-in defaults.
    pub fn defaults() -> Self {
        let mut layers = Layers::default();
        for s in SETTINGS {
            if let Some(d) = s.default {
                layers.set(s, d.to_owned(), Source::Default);
            }
        }
        layers
    }

    /// Sets (overrides) one value.
    pub fn set(&mut self, setting: &'static Setting, text: String, source: Source) {
        self.values.insert(setting.key, Raw { text, source });
    }

    /// The value of `key`, if any layer set it.
    pub fn get(&self, key: &str) -> Option<&Raw> {
        self.values.get(key)
    }

    /// Applies a TOML file: top-level keys, plus the keys of table `section` (upstream
    /// provisioning writes `[proplet]`). Other tables belong to other components and are
    /// skipped; an unknown scalar key is an error.
    pub fn apply_file(&mut self, path: &Path, section: &str) -> Result<(), ConfigError> {
        let read_err = |e: String| ConfigError::File {
            path: path.to_owned(),
            reason: e,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| read_err(e.to_string()))?;
        for (key, value) in &table {
            match value {
                toml::Value::Table(inner) if key == section => self.apply_table(path, inner)?,
                toml::Value::Table(_) => {}
                other => self.apply_toml_value(path, key, other)?,
            }
        }
        Ok(())
    }

    fn apply_table(&mut self, path: &Path, table: &toml::Table) -> Result<(), ConfigError> {
        table
            .iter()
            .try_for_each(|(k, v)| self.apply_toml_value(path, k, v))
    }

    fn apply_toml_value(
        &mut self,
        path: &Path,
        key: &str,
        value: &toml::Value,
    ) -> Result<(), ConfigError> {
        let setting = by_key(key).ok_or_else(|| ConfigError::UnknownKey {
            path: path.to_owned(),
            key: key.to_owned(),
        })?;
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) => {
                items.iter().map(toml_scalar).collect::<Vec<_>>().join(",")
            }
            other => toml_scalar(other),
        };
        self.set(setting, text, Source::File(path.to_owned()));
        Ok(())
    }

    /// Applies the environment, read through `lookup`. Empty variables count as unset.
    /// Two aliases of one setting set to different values is an error.
    pub fn apply_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            let mut found: Option<(&'static str, String)> = None;
            for name in setting.env {
                let Some(value) = lookup(name).filter(|v| !v.is_empty()) else {
                    continue;
                };
                match &found {
                    Some((first, prev)) if *prev != value => {
                        return Err(ConfigError::Conflict {
                            first,
                            second: name,
                        });
                    }
                    Some(_) => {}
                    None => found = Some((name, value)),
                }
            }
            if let Some((name, value)) = found {
                self.set(setting, value, Source::Env(name));
            }
        }
        Ok(())
    }

    /// Applies CLI flags: `(setting, value)` pairs from the parsed command line.
    pub fn apply_cli(&mut self, flags: impl IntoIterator<Item = (&'static Setting, String)>) {
        for (setting, value) in flags {
            self.set(setting, value, Source::Cli(setting.flag));
        }
    }
}

fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
