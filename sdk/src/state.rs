//! The driver's durable key/value store, kept by the host across calls.
//!
//! This is where a driver remembers what it needs for the calls kubelet makes
//! without options (`detach`, `unmount-device`, `unmount`). Keys are opaque
//! UTF-8 strings of at most 256 bytes; errors name the key.
//!
//! Using this module makes the plugin import `flexwasm:driver/state`.

use crate::bindings::flexwasm::driver::state::StateError;
use crate::error::describe_state_error;
use crate::imports::state as store;
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

/// Atomically: if `key` currently holds `expected` (`None`: the key is
/// absent), store `new` (`None`: delete the key) and return `true`;
/// otherwise change nothing and return `false`.
///
/// This is the building block for read-modify-write: the driver runs
/// concurrently with itself (kubelet attaches many volumes at once), and a
/// plain [`get`] followed by [`set`] can overwrite another call's update.
/// Most drivers want [`update`], which retries for you.
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool> {
    store::compare_and_swap(key, expected, new)
        .map_err(|error| failure("compare-and-swap", key, &error))
}

/// How many times [`update`] re-reads a key that other calls keep changing
/// before it gives up.
pub const UPDATE_ATTEMPTS: usize = 1000;

/// Read-modify-write `key` without losing concurrent updates.
///
/// `change` gets the current value (`None`: absent) and returns the value to
/// store (`None`: delete the key). If another call changed the key in the
/// meantime, `change` runs again on the fresh value, so it must not have side
/// effects outside its return value. An error from `change` stops the update
/// and is returned as is. Returns what was stored.
///
/// ```no_run
/// use flexwasm_sdk::state;
/// // Count this node's attached volumes, safely under concurrency.
/// let stored = state::update("attached-count", |old| {
///     let n: u64 = old
///         .and_then(|v| std::str::from_utf8(v).ok())
///         .and_then(|t| t.parse().ok())
///         .unwrap_or(0);
///     Ok(Some((n + 1).to_string().into_bytes()))
/// })?;
/// # Ok::<(), flexwasm_sdk::Error>(())
/// ```
pub fn update<F>(key: &str, mut change: F) -> Result<Option<Vec<u8>>>
where
    F: FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>>,
{
    let mut current = get(key)?;
    for _ in 0..UPDATE_ATTEMPTS {
        let new = change(current.as_deref())?;
        if compare_and_swap(key, current.as_deref(), new.as_deref())? {
            return Ok(new);
        }
        current = get(key)?;
    }
    Err(Error::Failure(format!(
        "state store: key {key:?} kept changing under concurrent calls; \
         gave up after {UPDATE_ATTEMPTS} attempts"
    )))
}

fn failure(operation: &str, key: &str, error: &StateError) -> Error {
    Error::Failure(format!(
        "state store: cannot {operation} {key:?}: {}",
        describe_state_error(error)
    ))
}
