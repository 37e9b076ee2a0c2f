//! `flexwasm:driver/state`: the durable key/value store ([`crate::state`]).

use crate::bindings::flexwasm::driver::state::{self as wit, StateError as WitError};
use crate::state::{StateError, StateStore};
use std::path::PathBuf;
use wasmtime::component::{HasSelf, Linker};

/// Opened on first use, so calls that never touch state never touch disk.
pub struct StateCapability {
    dir: PathBuf,
    quota: u64,
    store: Option<StateStore>,
}

impl StateCapability {
    /// Only linked when the grant has `[state]`; `quota` is its quota in
    /// bytes of disk use.
    pub fn new(dir: PathBuf, quota: u64) -> Self {
        StateCapability {
            dir,
            quota,
            store: None,
        }
    }

    fn store(&mut self) -> Result<&StateStore, WitError> {
        if self.store.is_none() {
            self.store = Some(StateStore::open(&self.dir, self.quota).map_err(to_wit)?);
        }
        // Just set above.
        self.store
            .as_ref()
            .ok_or_else(|| WitError::Io("state store unavailable".into()))
    }
}

/// A write the store refused for space — over the quota, or one that would
/// take the filesystem below its reserve — is `quota-exceeded`: either way
/// the plugin cannot store more, and the message says which.
fn to_wit(e: StateError) -> WitError {
    match e {
        StateError::InvalidKey(_) => WitError::InvalidKey(e.to_string()),
        StateError::Quota { .. } | StateError::LowSpace(_) => {
            WitError::QuotaExceeded(e.to_string())
        }
        StateError::Io { .. } | StateError::Damaged(_) => WitError::Io(e.to_string()),
    }
}

impl wit::Host for StateCapability {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        self.store()?.get(&key).map_err(to_wit)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.store()?.set(&key, &value).map_err(to_wit)
    }

    fn delete(&mut self, key: String) -> Result<(), WitError> {
        self.store()?.delete(&key).map_err(to_wit)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, WitError> {
        self.store()?.list_keys(&prefix).map_err(to_wit)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, WitError> {
        self.store()?
            .compare_and_swap(&key, expected.as_deref(), new.as_deref())
            .map_err(to_wit)
    }
}

/// Link `flexwasm:driver/state` for a store whose data holds a
/// [`StateCapability`] where `state` finds it.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    state: fn(&mut T) -> &mut StateCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<StateCapability>>(linker, state)
}
