//! Log lines for the host's call log (JSON lines, per driver).
//!
//! Never print to stdout or stderr from a driver: kubelet parses both, and
//! the host discards what a plugin prints there. Log through here instead.
//!
//! Using this module makes the plugin import `flexwasm:driver/log`.

use crate::bindings::flexwasm::driver::log::Level;
use crate::imports::log::log;

/// Logs `message` at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}

/// Logs `message` at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}

/// Logs `message` at warning level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref());
}

/// Logs `message` at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
