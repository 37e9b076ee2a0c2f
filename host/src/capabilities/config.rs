//! `flexwasm:driver/config`: the values the operator put in the policy's
//! `[config]` (endpoint, region, credentials…), typed as written.
//!
//! A `file = "/path"` value is read by the host at call time (at most
//! 64 KiB), so credentials rotate without reinstalling; the plugin never
//! gets a path to open. Values marked `secret` are handed over with that
//! mark; [`secret_values`] lists them so the host scrubs them from the call
//! log, from messages and from captured guest output.

use std::collections::BTreeMap;

use crate::policy::{ConfigData, ConfigSource, ConfigValue};
use crate::runtime::PluginHost;
use crate::runtime::bindings::flexwasm::driver::config as wit;
use wasmtime::component::{HasSelf, Linker};

const MAX_FILE_BYTES: u64 = 64 * 1024;

pub struct ConfigView {
    values: BTreeMap<String, ConfigValue>,
}

impl ConfigView {
    pub fn new(values: BTreeMap<String, ConfigValue>) -> Self {
        ConfigView { values }
    }
}

/// The value of the entry `key`: inline, or the text of its file. The error
/// says why a file cannot be used (it names the file, never its content).
pub fn resolve(key: &str, value: &ConfigValue) -> Result<ConfigData, String> {
    match &value.source {
        ConfigSource::Value(v) => Ok(v.clone()),
        ConfigSource::Unreadable(why) => Err(why.clone()),
        ConfigSource::File(path) => {
            use std::io::Read;
            let cannot = |why: String| {
                format!(
                    "config value {key:?}: the host cannot read its file {}: {why}",
                    path.display()
                )
            };
            let file = std::fs::File::open(path).map_err(|e| cannot(e.to_string()))?;
            let mut bytes = Vec::new();
            file.take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| cannot(e.to_string()))?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(cannot(format!("it is over {} KiB", MAX_FILE_BYTES >> 10)));
            }
            String::from_utf8(bytes)
                .map(ConfigData::Text)
                .map_err(|_| cannot("it is not UTF-8 text".into()))
        }
    }
}

/// The config with every file read once, for one call: what the plugin
/// gets and what the log is scrubbed of are then the same bytes.
pub fn snapshot(values: &BTreeMap<String, ConfigValue>) -> BTreeMap<String, ConfigValue> {
    values
        .iter()
        .map(|(key, v)| {
            let source = match resolve(key, v) {
                Ok(data) => ConfigSource::Value(data),
                Err(why) => ConfigSource::Unreadable(why),
            };
            (
                key.clone(),
                ConfigValue {
                    source,
                    secret: v.secret,
                },
            )
        })
        .collect()
}

/// Every secret config value, and each longer line of a multi-line one
/// (a plugin may log a piece of a credentials file). Booleans and values
/// under 4 bytes are not scrubbed: "true" or "1" is no secret, and
/// scrubbing it would garble every log line.
pub fn secret_values(values: &BTreeMap<String, ConfigValue>) -> Vec<String> {
    let mut out = Vec::new();
    let mut text = |text: &str| {
        for line in text.lines().map(str::trim).filter(|l| l.len() >= 8) {
            out.push(line.to_string());
        }
        // A value this short would scrub every such digit or word.
        if text.trim().len() >= 4 {
            out.push(text.trim().to_string());
        }
    };
    for (key, v) in values.iter().filter(|(_, v)| v.secret) {
        match resolve(key, v) {
            Ok(ConfigData::Text(t)) => text(&t),
            Ok(ConfigData::Integer(i)) => text(&i.to_string()),
            Ok(ConfigData::List(items)) => items.iter().for_each(|t| text(t)),
            Ok(ConfigData::Boolean(_)) | Err(_) => {}
        }
    }
    out
}

impl wit::Host for ConfigView {
    fn get(&mut self, key: String) -> Result<Option<wit::ConfigEntry>, String> {
        let Some(entry) = self.values.get(&key) else {
            return Ok(None);
        };
        let value = match resolve(&key, entry)? {
            ConfigData::Text(t) => wit::ConfigValue::Text(t),
            ConfigData::Integer(i) => wit::ConfigValue::Integer(i),
            ConfigData::Boolean(b) => wit::ConfigValue::Boolean(b),
            ConfigData::List(l) => wit::ConfigValue::TextList(l),
        };
        Ok(Some(wit::ConfigEntry {
            value,
            secret: entry.secret,
        }))
    }

    fn keys(&mut self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }
}

pub fn add_to_linker(linker: &mut Linker<PluginHost>) -> wasmtime::Result<()> {
    wit::add_to_linker::<PluginHost, HasSelf<ConfigView>>(linker, |h| &mut h.config)
}
