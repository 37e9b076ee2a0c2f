//! Attack: exhaust the node with many calls at once, each within its own
//! limits. `init` fills its guest memory (the volume-independent `init`
//! is what kubelet and the controller-manager call at every probe) and
//! holds it for 1.5 s. One call is harmless; a hundred at once are not.
//! The host must bound what concurrent calls hold node-wide: calls that do
//! not fit in the node's pool wait for it (up to their deadline).

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct MemoryHold;

impl Driver for MemoryHold {
    fn init(&self) -> Result<Capabilities> {
        // 56 MiB of a 64 MiB cap, every page touched.
        let mut held = vec![0u8; 56 << 20];
        for page in held.chunks_mut(4096) {
            page[0] = 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        std::hint::black_box(&held);
        Ok(Capabilities::default())
    }
}

export_driver!(MemoryHold);
