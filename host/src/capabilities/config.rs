//! `flexwasm:driver/config`: the values the operator put in the policy's
//! `[config]` (endpoint, region, credentials…), typed as written.
//!
//! A `file = "/path"` value is read by the host at call time (at most
//! 64 KiB), so credentials rotate without reinstalling; the plugin never
//! gets a path to open. Values marked `secret` are handed over with that
//! mark; [`secrets`] collects them so the host refuses them where they
//! would leave the host and scrubs them from the call log, from messages and
//! from captured guest output (see [`crate::secrets`]).

use std::collections::BTreeMap;

use crate::bindings::flexwasm::driver::config as wit;
use crate::policy::{ConfigData, ConfigSource, ConfigValue};
use crate::secrets::SecretSet;
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
            let cannot =
                |why: String| format!("config value {key:?}: the host cannot use its file: {why}");
            // Credentials decide what the plugin can reach: only root may be
            // able to change them. A FIFO or device is refused before it
            // could block the call (see `crate::trust`).
            let bytes = crate::trust::read(path, true, MAX_FILE_BYTES)
                .map_err(|e| cannot(e.to_string()))?;
            String::from_utf8(bytes)
                .map(ConfigData::Text)
                .map_err(|_| cannot(format!("{} is not UTF-8 text", path.display())))
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

/// Every secret config value (each item of a list; booleans are no
/// secret), and each longer line of a multi-line one, so that a plugin
/// logging a piece of a credentials file is caught too.
pub fn secrets(values: &BTreeMap<String, ConfigValue>) -> SecretSet {
    let mut out = SecretSet::new();
    let mut text = |text: &str| {
        for line in text.lines().map(str::trim).filter(|l| l.len() >= 8) {
            out.add_str(line);
        }
        out.add_str(text.trim());
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

/// Link `flexwasm:driver/config` for a store whose data holds a
/// [`ConfigView`] where `config` finds it.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    config: fn(&mut T) -> &mut ConfigView,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<ConfigView>>(linker, config)
}
