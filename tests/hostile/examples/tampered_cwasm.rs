//! Target of a tampering attack on the precompiled code: a benign plugin
//! with recognisable capabilities. The test corrupts (or chowns) its
//! `.plugin.cwasm` after install; the host must not run that native code
//! and must give this answer by recompiling `plugin.wasm`.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct TamperedCwasm;

impl Driver for TamperedCwasm {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            attach: false,
            supports_metrics: true,
            fs_group: false,
            ..Capabilities::default()
        })
    }
}

export_driver!(TamperedCwasm);
