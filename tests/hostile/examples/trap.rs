//! Attack: execute a wasm `unreachable` instruction in `init`. The host
//! must answer `Failure` ("plugin crashed"), not crash itself.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct Trap;

impl Driver for Trap {
    fn init(&self) -> Result<Capabilities> {
        core::arch::wasm32::unreachable()
    }
}

export_driver!(Trap);
