//! Attack: use up the node's loop devices. `attach` creates and attaches
//! `count` small images named after the volume, all in one call. The host
//! must hold one call to its per-call attaches and the driver to its
//! attached devices in all.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::loop_images;
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct LoopDeviceFlood;

impl Driver for LoopDeviceFlood {
    fn attach(&self, options: &Options, _node_name: &str) -> Result<String> {
        let count: u32 = options
            .get("count")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::failure("option count (a number) is required"))?;
        let mut last = String::new();
        for n in 0..count {
            let image = format!("{}-{n}.img", options.volume_name);
            let attached = loop_images::create_image(&image, 1 << 20)
                .and_then(|_| loop_images::attach(&image));
            match attached {
                Ok(device) => last = device,
                Err(e) => fail!("attached {n} loop devices, then: {e}"),
            }
        }
        Ok(last)
    }
}

export_driver!(LoopDeviceFlood);
