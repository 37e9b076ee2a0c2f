//! Attack: a block plan whose device is `/` (a directory). The host must
//! refuse it; nothing mounted.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MountRootDev;

impl Driver for MountRootDev {
    fn mount_device(&self, _path: &str, _device: &str, _options: &Options) -> Result<BlockPlan> {
        Ok(BlockPlan::new("/", "ext4"))
    }
}

export_driver!(MountRootDev);
