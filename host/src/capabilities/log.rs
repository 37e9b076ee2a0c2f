//! `flexwasm:driver/log`: plugin log lines go to the call log, bounded.

use crate::bindings::flexwasm::driver::log::{self as wit, Level};
use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

/// One line a plugin logged, as the call log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginLogLine {
    pub level: &'static str,
    pub message: String,
}

/// Lines a plugin logged during this call; at most `cap` bytes are kept
/// (each line also costs a fixed overhead, so a flood of empty lines is
/// bounded too), the rest is counted.
pub struct PluginLog {
    pub lines: Vec<PluginLogLine>,
    bytes: usize,
    cap: usize,
    pub dropped: usize,
}

impl PluginLog {
    pub fn new(cap: usize) -> Self {
        PluginLog {
            lines: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
        }
    }
}

impl wit::Host for PluginLog {
    fn log(&mut self, level: Level, message: String) {
        const LINE_OVERHEAD: usize = 64;
        let cost = message.len() + LINE_OVERHEAD;
        if self.bytes + cost > self.cap {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.bytes += cost;
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.lines.push(PluginLogLine { level, message });
    }
}

/// Link `flexwasm:driver/log` for a store whose data holds a [`PluginLog`]
/// where `log` finds it.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    log: fn(&mut T) -> &mut PluginLog,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<PluginLog>>(linker, log)
}
