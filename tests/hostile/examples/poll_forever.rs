//! Attack: wait inside the host instead of spinning in wasm. `init` sleeps
//! for an hour, which Rust's std turns into a `wasi:clocks` pollable and a
//! blocking `wasi:io/poll` call: the guest runs no wasm instructions while
//! it waits, so epoch interruption alone never fires. The host must end the
//! call at its deadline all the same. `mount` waits the same way (so a
//! test can look at the running host from outside).

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct PollForever;

impl Driver for PollForever {
    fn init(&self) -> Result<Capabilities> {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Ok(Capabilities::default())
    }

    fn mount(&self, _dir: &str, _options: &Options) -> Result<MountPlan> {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        fail!("woke up")
    }
}

export_driver!(PollForever);
