//! Attack: take the image filesystem with loop images. `getvolumename`
//! creates up to `count` sparse images of `size` bytes (option `op =
//! create`), or grows the first one to `size` (`op = grow`). Images cost
//! nothing until written, so the host must bound their number and their
//! total size, and never promise more than the filesystem can hold above
//! its reserve.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::loop_images;
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct LoopImageFlood;

fn number(options: &Options, key: &str) -> Result<u64> {
    options
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::failure(format!("option {key} (a number) is required")))
}

impl Driver for LoopImageFlood {
    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let size = number(options, "size")?;
        if options.get("op") == Some("grow") {
            let grown = loop_images::grow_image("flood-0.img", size)?;
            return Ok(format!("grew flood-0.img to {grown} bytes"));
        }
        let count = number(options, "count")?;
        for n in 0..count {
            if let Err(e) = loop_images::create_image(&format!("flood-{n}.img"), size) {
                fail!("created {n} images of {size} bytes, then: {e}");
            }
        }
        Ok(format!("created {count} images"))
    }
}

export_driver!(LoopImageFlood);
