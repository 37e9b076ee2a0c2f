//! Attack: mount the (blank, real) device kubelet passed with `suid`, so a
//! volume could carry setuid binaries onto the node. The grant does not
//! list `suid`: the host must refuse before mkfs and mount.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct SuidOption;

impl Driver for SuidOption {
    fn mount_device(&self, _path: &str, device: &str, _options: &Options) -> Result<BlockPlan> {
        Ok(BlockPlan::new(device, "ext4")
            .mount_option("noatime")
            .mount_option("suid"))
    }
}

export_driver!(SuidOption);
