//! Attack: fill the node with state entries that cost nothing by the
//! bytes. `init` stores empty and tiny values under new keys until the host
//! refuses. Each entry is a file — a block and an inode on disk — so the
//! host must charge what the files really take: `du` of the store stays
//! within the quota.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::state;

/// Far more entries than any quota allows; the deadline ends it otherwise.
const MAX_ENTRIES: u32 = 10_000_000;

#[derive(Default)]
struct StateInodeFlood;

impl Driver for StateInodeFlood {
    fn init(&self) -> Result<Capabilities> {
        let tiny = [0x5a_u8; 63];
        for n in 0..MAX_ENTRIES {
            // Alternate empty values and values of 1 to 63 bytes.
            let value = if n % 2 == 0 {
                &[][..]
            } else {
                &tiny[..(n % 64) as usize]
            };
            if let Err(e) = state::set(&format!("flood/{n:08}"), value) {
                fail!("stored {n} values, then: {e}");
            }
        }
        Ok(Capabilities::default())
    }
}

export_driver!(StateInodeFlood);
