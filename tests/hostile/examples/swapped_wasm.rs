//! Attack: replace `plugin.wasm` after install. The test installs a benign
//! plugin with its SHA-256 pinned in the grant, then overwrites its
//! `plugin.wasm` with this component. The host must refuse to run it.
//! If it ran, it would say so in the call log.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

/// Logged if this component ever runs.
pub const RAN: &str = "swapped_wasm: the swapped-in component ran";

#[derive(Default)]
struct SwappedWasm;

impl Driver for SwappedWasm {
    fn init(&self) -> Result<Capabilities> {
        flexwasm_sdk::log::error(RAN);
        Ok(Capabilities::node_only())
    }
}

export_driver!(SwappedWasm);
