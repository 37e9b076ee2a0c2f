//! Attack: unbounded recursion in `init`. The host must turn the exhausted
//! stack into a trap and answer `Failure`, not crash.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct DeepRecursion;

#[inline(never)]
#[allow(unconditional_recursion)] // the attack
fn descend(depth: u64) -> u64 {
    // black_box on both sides: no tail call, no folding into a loop.
    std::hint::black_box(descend(std::hint::black_box(depth + 1))) + 1
}

impl Driver for DeepRecursion {
    fn init(&self) -> Result<Capabilities> {
        let depth = descend(0);
        fail!("recursion returned at depth {depth}")
    }
}

export_driver!(DeepRecursion);
