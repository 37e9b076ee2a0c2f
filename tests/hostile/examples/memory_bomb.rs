//! Attack: eat all memory. `init` keeps allocating 1 MiB blocks and writes
//! to every page so they are really committed. The host must cap the
//! guest's linear memory (the failed allocation aborts the guest) and stay
//! small itself.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MemoryBomb;

impl Driver for MemoryBomb {
    fn init(&self) -> Result<Capabilities> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            for page in block.chunks_mut(4096) {
                page[0] = 0xa5;
            }
            hoard.push(std::hint::black_box(block));
            if hoard.len() > 1 << 16 {
                // 64 GiB: cannot happen in wasm32; keeps the loop finite.
                return Ok(Capabilities::default());
            }
        }
    }
}

export_driver!(MemoryBomb);
