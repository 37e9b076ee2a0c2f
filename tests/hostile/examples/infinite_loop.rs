//! Attack: never return. `init` spins forever without calling the host.
//! The host must stop it at the grant's deadline and answer `Failure`.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct InfiniteLoop;

impl Driver for InfiniteLoop {
    fn init(&self) -> Result<Capabilities> {
        let mut spins = 0u64;
        loop {
            // black_box: the loop must really run, not be folded away.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

export_driver!(InfiniteLoop);
