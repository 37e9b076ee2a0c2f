//! Attack: name a loop image by a path. `init` asks the host to create
//! `../../escape.img`; image names are single file names, so the host must
//! refuse and create nothing.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::loop_images;
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct LoopEscapeName;

impl Driver for LoopEscapeName {
    fn init(&self) -> Result<Capabilities> {
        loop_images::create_image("../../escape.img", 1 << 20)?;
        Ok(Capabilities::default())
    }
}

export_driver!(LoopEscapeName);
