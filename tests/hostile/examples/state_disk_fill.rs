//! Attack: fill the filesystem that holds the state store. `getvolumename`
//! stores values of the option `bytes` under new keys until the host
//! refuses, with a quota far larger than the filesystem. The host must stop
//! it while the filesystem still has its reserve, in bytes and in inodes.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::state;

/// Far more values than any filesystem here holds.
const MAX_VALUES: u32 = 1_000_000;

#[derive(Default)]
struct StateDiskFill;

impl Driver for StateDiskFill {
    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let bytes: usize = options
            .get("bytes")
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| Error::failure("option bytes (a number) is required"))?;
        let value = vec![0xa5_u8; bytes];
        for n in 0..MAX_VALUES {
            if let Err(e) = state::set(&format!("fill/{n:07}"), &value) {
                fail!("stored {n} values of {bytes} bytes, then: {e}");
            }
        }
        Ok(format!("stored {MAX_VALUES} values"))
    }
}

export_driver!(StateDiskFill);
