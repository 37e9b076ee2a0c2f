//! Attack: flood kubelet and the call log through the answer itself.
//! `getvolumename` answers a 50 MiB volume name; `isattached` fails with a
//! 50 MiB message full of control characters and terminal escapes. The
//! answer must stay small, on one line, printable, and so must the log.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;

const HUGE: usize = 50 << 20;

#[derive(Default)]
struct HugeAnswer;

impl Driver for HugeAnswer {
    fn get_volume_name(&self, _options: &Options) -> Result<String> {
        Ok("v".repeat(HUGE))
    }

    fn is_attached(&self, _options: &Options, _node: &str) -> Result<bool> {
        let mut m = String::with_capacity(HUGE);
        while m.len() < HUGE {
            m.push_str("\u{1b}[2J\r\nfake log line\u{7}\u{202e}");
        }
        fail!("{m}")
    }
}

export_driver!(HugeAnswer);
