//! Attack: format and mount the (blank, real) device kubelet passed with a
//! filesystem the grant does not list (`btrfs`, or the volume's option
//! `planFsType` when it has one, e.g. `ntfs`, which no grant can list). The host must refuse
//! before mkfs: the device stays blank.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct FsTypeNotGranted;

impl Driver for FsTypeNotGranted {
    fn mount_device(&self, _path: &str, device: &str, options: &Options) -> Result<BlockPlan> {
        Ok(BlockPlan::new(
            device,
            options.get("planFsType").unwrap_or("btrfs"),
        ))
    }
}

export_driver!(FsTypeNotGranted);
