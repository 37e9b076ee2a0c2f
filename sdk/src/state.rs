//! The driver's durable key/value store, kept by the host across calls.
//!
//! This is where a driver remembers what it needs for the calls kubelet makes
//! without options (`detach`, `unmount-device`, `unmount`). Keys are opaque
//! UTF-8 strings of at most 256 bytes; errors name the key.
//!
//! Using this module makes the plugin import `flexwasm:driver/state`.

use crate::bindings::flexwasm::driver::state as store;
use crate::bindings::flexwasm::driver::state::StateError;
use crate::error::describe_state_error;
use crate::{Error, Result};

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
    store::get(key).map_err(|error| failure("read", key, &error))
}

/// The value stored under `key` as text, if any; an error if it is not UTF-8.
pub fn get_string(key: &str) -> Result<Option<String>> {
    get(key)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                Error::Failure(format!(
                    "state store: value of key {key:?} is not UTF-8 text"
                ))
            })
        })
        .transpose()
}

/// Stores `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<()> {
    store::set(key, value.as_ref()).map_err(|error| failure("write", key, &error))
}

/// Removes `key`; removing an absent key is fine.
pub fn delete(key: &str) -> Result<()> {
    store::delete(key).map_err(|error| failure("delete", key, &error))
}

/// The keys starting with `prefix`, sorted.
pub fn list_keys(prefix: &str) -> Result<Vec<String>> {
    store::list_keys(prefix).map_err(|error| failure("list keys with prefix", prefix, &error))
}

fn failure(operation: &str, key: &str, error: &StateError) -> Error {
    Error::Failure(format!(
        "state store: cannot {operation} {key:?}: {}",
        describe_state_error(error)
    ))
}
