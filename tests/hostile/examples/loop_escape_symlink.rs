//! Attack: follow a symlink out of the image directory. The test plants
//! `<image_dir>/evil.img -> <outside file>`; `init` grows and attaches
//! `evil.img`. The host must neither grow nor attach the outside file.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::loop_images;
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct LoopEscapeSymlink;

impl Driver for LoopEscapeSymlink {
    fn init(&self) -> Result<Capabilities> {
        // Try both, so one refusal does not hide the other.
        let grown = loop_images::grow_image("evil.img", 64 << 20);
        let attached = loop_images::attach("evil.img");
        match (grown, attached) {
            (Err(g), Err(a)) => fail!("{g}; {a}"),
            (grown, attached) => {
                flexwasm_sdk::log::warn(format!("escaped: grow {grown:?}, attach {attached:?}"));
                Ok(Capabilities::default())
            }
        }
    }
}

export_driver!(LoopEscapeSymlink);
