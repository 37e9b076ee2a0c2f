//! `flexwasm:driver/config`: the values the operator put in the policy's
//! `[config]` (endpoint, region, credentials…).
//!
//! A `file = "/path"` value is read by the host at call time (at most
//! 64 KiB), so credentials rotate without reinstalling; the plugin never
//! gets a path to open. Values marked `secret` are handed over like the
//! others; [`secret_values`] lists them so the host scrubs them from the
//! call log, from messages and from captured guest output.

use std::collections::BTreeMap;

use crate::policy::{ConfigSource, ConfigValue};
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

/// The value of one config entry: inline, or the file's content (None when
/// the file cannot be read or is too large; the plugin then reports the key
/// as missing and the call log has the reason in the plugin's message).
pub fn resolve(value: &ConfigValue) -> Option<String> {
    match &value.source {
        ConfigSource::Value(v) => Some(v.clone()),
        ConfigSource::File(path) => {
            use std::io::Read;
            let file = std::fs::File::open(path).ok()?;
            let mut text = String::new();
            file.take(MAX_FILE_BYTES + 1)
                .read_to_string(&mut text)
                .ok()?;
            (text.len() as u64 <= MAX_FILE_BYTES).then_some(text)
        }
    }
}

/// Every secret config value, and each longer line of a multi-line one
/// (a plugin may log a piece of a credentials file).
pub fn secret_values(values: &BTreeMap<String, ConfigValue>) -> Vec<String> {
    let mut out = Vec::new();
    for v in values.values().filter(|v| v.secret) {
        if let Some(text) = resolve(v) {
            for line in text.lines().map(str::trim).filter(|l| l.len() >= 8) {
                out.push(line.to_string());
            }
            if !text.trim().is_empty() {
                out.push(text.trim().to_string());
            }
        }
    }
    out
}

impl wit::Host for ConfigView {
    fn get(&mut self, key: String) -> Option<String> {
        self.values.get(&key).and_then(resolve)
    }

    fn keys(&mut self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }
}

pub fn add_to_linker(linker: &mut Linker<PluginHost>) -> wasmtime::Result<()> {
    wit::add_to_linker::<PluginHost, HasSelf<ConfigView>>(linker, |h| &mut h.config)
}
