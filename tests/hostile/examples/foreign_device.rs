//! Attack: mount a device that is not the volume's. The plan names a device
//! from the volume's `victim` option instead of the one kubelet passed: a
//! disk of the node that is in use, or a device mounted elsewhere. The host
//! must refuse both, neither formatting nor mounting.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct ForeignDevice;

impl Driver for ForeignDevice {
    fn mount_device(&self, _path: &str, device: &str, options: &Options) -> Result<BlockPlan> {
        let victim = options.get("victim").unwrap_or(device);
        Ok(BlockPlan::new(victim, "ext4"))
    }
}

export_driver!(ForeignDevice);
