//! Values the operator configured for this driver: the `[config]` table of
//! the driver's grant policy (endpoint, region, credentials…).
//!
//! Values the operator marked secret are handed over like the others, but the
//! host keeps them out of its logs and messages; a driver must do the same
//! (never log a configured token or put it in an error message).
//!
//! ```no_run
//! use flexwasm_sdk::{Result, config};
//!
//! fn endpoint() -> Result<String> {
//!     // "the driver's configuration has no \"endpoint\": …" if it is missing.
//!     let endpoint = config::require("endpoint")?;
//!     Ok(endpoint.trim().trim_end_matches('/').to_owned())
//! }
//! ```
//!
//! Using this module makes the plugin import `flexwasm:driver/config`.

use crate::bindings::flexwasm::driver::config as host;
use crate::{Error, Result};

/// The value of `key`, `None` if the operator did not configure it.
pub fn get(key: &str) -> Option<String> {
    host::get(key)
}

/// The value of `key`; a [`Failure`](Error::Failure) naming the key and
/// telling the operator where to set it when it is absent or blank. The
/// value is returned as configured (not trimmed).
pub fn require(key: &str) -> Result<String> {
    match get(key) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(Error::Failure(format!(
            "the driver's configuration value {key:?} is empty: the operator sets it in the \
             [config] table of the driver's grant policy (policy.toml)"
        ))),
        None => Err(Error::Failure(format!(
            "the driver's configuration has no {key:?}: the operator sets it in the [config] \
             table of the driver's grant policy (policy.toml)"
        ))),
    }
}

/// Every configured key, sorted.
pub fn keys() -> Vec<String> {
    host::keys()
}
