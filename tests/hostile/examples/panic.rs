//! Attack: panic in `init`. The host must answer `Failure` naming the
//! crash, with the panic's message, and print nothing else.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct Panic;

impl Driver for Panic {
    fn init(&self) -> Result<Capabilities> {
        panic!("boom: hostile plugin panics in init");
    }
}

export_driver!(Panic);
