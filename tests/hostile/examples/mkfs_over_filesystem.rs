//! Attack: format a device that holds data. The device kubelet passed holds
//! an ext4 filesystem with files; the plan asks for xfs, with `-f` (force)
//! for good measure. The host must not format it, nor mount it.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MkfsOverFilesystem;

impl Driver for MkfsOverFilesystem {
    fn mount_device(&self, _path: &str, device: &str, _options: &Options) -> Result<BlockPlan> {
        Ok(BlockPlan::new(device, "xfs").mkfs_option("-f"))
    }
}

export_driver!(MkfsOverFilesystem);
