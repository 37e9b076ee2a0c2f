//! Attack: mount a block device through a filesystem plan, which skips
//! every device check (what the device holds, whether this driver may
//! claim it). `mount` answers a filesystem plan whose source is the
//! volume's `source` option — a device node, a symlink to one, or a path
//! through `/proc/self/root` — and whose type is the `fs` option. The host
//! must refuse any source that is a block device, whatever the type.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct FilesystemPlanDevice;

impl Driver for FilesystemPlanDevice {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::node_only())
    }

    fn mount(&self, _dir: &str, options: &Options) -> Result<MountPlan> {
        let source = options.get("source").unwrap_or("none");
        let fs = options.get("fs").unwrap_or("tmpfs");
        Ok(FilesystemPlan::new(source, fs).into())
    }
}

export_driver!(FilesystemPlanDevice);
