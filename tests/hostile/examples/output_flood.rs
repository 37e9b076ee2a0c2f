//! Attack: drown the host in output. `init` writes 50 MiB to stdout and
//! 50 MiB to stderr and logs 100 000 lines, then answers normally. kubelet
//! must still get exactly one JSON object, and the call log a bounded line.
//! Then it prints with `println!`/`eprintln!`, which panic if a write
//! fails: the host must keep accepting output (dropping the middle of it),
//! so a chatty plugin is never turned into a crashed one.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use std::io::Write;

const FLOOD_BYTES: usize = 50 << 20;
const LOG_LINES: usize = 100_000;

#[derive(Default)]
struct OutputFlood;

fn flood(mut out: impl Write, fill: u8) {
    let chunk = [fill; 64 << 10];
    for _ in 0..FLOOD_BYTES / chunk.len() {
        // A full pipe is an error; ignore it and keep pushing, as an
        // attacker would.
        let _ = out.write_all(&chunk);
    }
    let _ = out.flush();
}

impl Driver for OutputFlood {
    fn init(&self) -> Result<Capabilities> {
        flood(std::io::stdout(), b'o');
        flood(std::io::stderr(), b'e');
        for i in 0..LOG_LINES {
            flexwasm_sdk::log::info(format!("flood line {i} {}", "x".repeat(100)));
        }
        println!("stdout: still here after the flood");
        eprintln!("stderr: still here after the flood");
        Ok(Capabilities::default())
    }
}

export_driver!(OutputFlood);
