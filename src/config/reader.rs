//! Reading typed values out of merged [`Layers`], naming the source of a bad value.

use super::settings::Setting;
use super::{ConfigError, Layers};

/// Reads typed values out of the merged layers, naming the source on error.
pub(super) struct Reader<'a> {
    layers: &'a Layers,
}

impl<'a> Reader<'a> {
    /// A reader of `layers`.
    pub(super) fn new(layers: &'a Layers) -> Self {
        Reader { layers }
    }
}

impl Reader<'_> {
    pub(super) fn text(&self, setting: &Setting) -> Option<String> {
        self.layers.get(setting.key).map(|r| r.text.clone())
    }

    pub(super) fn opt<T>(
        &self,
        setting: &'static Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.layers.get(setting.key) else {
            return Ok(None);
        };
        parse(raw.text.trim())
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                origin: raw.source.clone(),
                key: setting.key,
                value: if setting.secret {
                    "<redacted>".into()
                } else {
                    raw.text.clone()
                },
                reason,
            })
    }

    pub(super) fn req<T>(
        &self,
        setting: &'static Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.opt(setting, parse)?.ok_or_else(|| missing(setting))
    }
}

/// The error for a required `setting` without a value.
pub(super) fn missing(setting: &'static Setting) -> ConfigError {
    ConfigError::Missing {
        key: setting.key,
        env: setting.env.join(" or "),
        flag: setting.flag,
    }
}
