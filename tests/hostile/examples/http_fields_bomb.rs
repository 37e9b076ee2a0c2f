//! Attack: make the host allocate through `wasi:http` resources. The guest
//! keeps nothing but 32-bit handles in its own memory, while every
//! `fields` resource it creates holds a header value of 48 KiB on the host
//! side (just under the host's limit for one header map), outside the
//! guest's memory cap. `getvolumename` creates
//! fields until the host refuses (or option `mib`, default 8192, is
//! reached) and never drops one. The host must count what the plugin makes
//! it hold and stop the call, well before the node runs out of memory.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use wasip2::http::types::Fields;

#[derive(Default)]
struct HttpFieldsBomb;

impl Driver for HttpFieldsBomb {
    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let mib: u64 = options
            .get("mib")
            .and_then(|m| m.parse().ok())
            .unwrap_or(8192);
        let value = vec![b'x'; 48 << 10];
        let mut kept = Vec::new();
        let mut bytes = 0u64;
        while bytes < mib << 20 {
            let fields = Fields::new();
            if fields.append(&"x-a".to_string(), &value).is_ok() {
                bytes += value.len() as u64;
            }
            kept.push(fields);
        }
        Ok(format!("held {} fields, {} MiB", kept.len(), bytes >> 20))
    }
}

export_driver!(HttpFieldsBomb);
