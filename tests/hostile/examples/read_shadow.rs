//! Attack: read a host file. `init` reads `/etc/shadow` with `std::fs`,
//! which makes the component import `wasi:filesystem`. No grant ever gives
//! that: the host must refuse the plugin. If the read ever worked, the
//! plugin leaks the file into its answer and log.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct ReadShadow;

impl Driver for ReadShadow {
    fn init(&self) -> Result<Capabilities> {
        match std::fs::read("/etc/shadow") {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                flexwasm_sdk::log::info(format!("read /etc/shadow: {text}"));
                fail!("read /etc/shadow ({} bytes): {text}", bytes.len())
            }
            Err(e) => fail!("read_shadow: could not read /etc/shadow: {e}"),
        }
    }
}

export_driver!(ReadShadow);
