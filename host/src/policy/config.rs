//! `[config]`: the values handed to the plugin (grants
//! `flexwasm:driver/config`), typed as written, inline or read from a file
//! at call time.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::one_line;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigValue {
    value: Option<toml::Value>,
    file: Option<String>,
    #[serde(default)]
    secret: bool,
}

/// A `[config]` value as the operator typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigData {
    Text(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<String>),
}

/// A `[config]` value: given inline or read (as text) from a file at call
/// time.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    Value(ConfigData),
    File(PathBuf),
    /// In a call's snapshot ([`crate::capabilities::config::snapshot`]): a
    /// file that could not be read, and why.
    Unreadable(String),
}

/// The typed value of `config.<key>`.
fn config_data(key: &str, value: toml::Value) -> Result<ConfigData, String> {
    Ok(match value {
        toml::Value::String(s) => ConfigData::Text(s),
        toml::Value::Integer(i) => ConfigData::Integer(i),
        toml::Value::Boolean(b) => ConfigData::Boolean(b),
        toml::Value::Array(items) => ConfigData::List(
            items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(format!(
                        "config.{key}: a list must hold strings only, not {}",
                        other.type_str()
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "config.{key} must be a string, a whole number, true/false, a list of strings, \
                 {{ value = …, secret = true }} or {{ file = \"/path\", secret = true }}, not {}",
                other.type_str()
            ));
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigValue {
    pub source: ConfigSource,
    pub secret: bool,
}

/// `[config]`, checked: each value typed, inline or a file.
pub(super) fn validate(
    config: BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, ConfigValue>, String> {
    let mut values = BTreeMap::new();
    for (k, v) in config {
        let value = match v {
            toml::Value::Table(t) => {
                let raw: RawConfigValue =
                    toml::Value::Table(t)
                        .try_into()
                        .map_err(|e: toml::de::Error| {
                            format!("config.{k}: {}", one_line(&e.to_string()))
                        })?;
                let source = match (raw.value, raw.file) {
                    (Some(toml::Value::Table(_)), None) => {
                        return Err(format!("config.{k}.value cannot be a table"));
                    }
                    (Some(v), None) => ConfigSource::Value(config_data(&k, v)?),
                    (None, Some(f)) if Path::new(&f).is_absolute() => {
                        ConfigSource::File(PathBuf::from(f))
                    }
                    (None, Some(f)) => {
                        return Err(format!("config.{k}.file '{f}' must be an absolute path"));
                    }
                    _ => {
                        return Err(format!(
                            "config.{k} needs exactly one of value = … or file = \"/path\""
                        ));
                    }
                };
                ConfigValue {
                    source,
                    secret: raw.secret,
                }
            }
            other => ConfigValue {
                source: ConfigSource::Value(config_data(&k, other)?),
                secret: false,
            },
        };
        values.insert(k, value);
    }
    Ok(values)
}
