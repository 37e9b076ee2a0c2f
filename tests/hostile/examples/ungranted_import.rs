//! Attack: use an interface the grant does not give. `init` lists the
//! node's block devices (`flexwasm:driver/devices`) under a policy without
//! `[devices]`. The host must refuse the plugin at load.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct UngrantedImport;

impl Driver for UngrantedImport {
    fn init(&self) -> Result<Capabilities> {
        let devices = flexwasm_sdk::devices::list();
        flexwasm_sdk::log::warn(format!(
            "ungranted_import ran: listed {} block devices",
            devices.len()
        ));
        Ok(Capabilities::default())
    }
}

export_driver!(UngrantedImport);
