//! Attack: a block plan whose device is a path under `/dev` that is a
//! symlink to a regular file (the test plants it in `/dev/shm`, which any
//! local user can write). The link is named by the volume option `link`.
//! The host must resolve the link and refuse: not a block device.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MountSymlinkToFile;

impl Driver for MountSymlinkToFile {
    fn mount_device(&self, _path: &str, _device: &str, options: &Options) -> Result<BlockPlan> {
        let Some(link) = options.get("link") else {
            fail!("option \"link\" is missing");
        };
        Ok(BlockPlan::new(link, "ext4"))
    }
}

export_driver!(MountSymlinkToFile);
