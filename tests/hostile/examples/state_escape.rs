//! Attack: use state keys as paths. `init` stores values under keys that
//! would escape the store if the host used them as file names. They must
//! be just strings: /etc/passwd untouched, nothing written outside the
//! driver's state directory.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::state;

const KEYS: &[&str] = &[
    "../../etc/passwd",
    "../../../../../../../../etc/passwd",
    "/etc/passwd",
    "../kv-escape",
];

#[derive(Default)]
struct StateEscape;

impl Driver for StateEscape {
    fn init(&self) -> Result<Capabilities> {
        for key in KEYS {
            state::set(key, b"pwned::0:0:hostile:/:/bin/sh\n")?;
            // Reading back proves the key is a key, not a path.
            if state::get(key)?.as_deref() != Some(b"pwned::0:0:hostile:/:/bin/sh\n".as_slice()) {
                fail!("state key {key:?} did not read back");
            }
        }
        Ok(Capabilities::default())
    }
}

export_driver!(StateEscape);
