//! Attack: a block plan whose device is a regular file (`/etc/passwd`).
//! The host must refuse it: not a block device; nothing formatted or mounted.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MountNonDevice;

impl Driver for MountNonDevice {
    fn mount_device(&self, _path: &str, _device: &str, _options: &Options) -> Result<BlockPlan> {
        Ok(BlockPlan::new("/etc/passwd", "ext4"))
    }
}

export_driver!(MountNonDevice);
