//! Attack: hang in `waitforattach` (the one call kubelet kills: SIGTERM at
//! 10 minutes, SIGKILL 10 s later). The guest never yields; on SIGTERM the
//! host must stop it, answer `Failure` and exit within a second.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct SigtermIgnored;

impl Driver for SigtermIgnored {
    fn wait_for_attach(&self, _device: &str, _options: &Options) -> Result<DeviceLocator> {
        let mut spins = 0u64;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

export_driver!(SigtermIgnored);
