//! Attack: get kubelet to do privileged work the host would refuse. The
//! plugin implements `attach` only — answering a device it does not own
//! when the volume's `victim` option names one, else its own loop image —
//! and answers "Not supported" to everything else. kubelet's defaults then
//! would: use the attach device as is (`waitforattach`), format and mount
//! it (`mountdevice`), bind-mount the pod dir without `nosuid,nodev`
//! (`mount`), grow a filesystem on a device path (`expandfs`), and record
//! a volume as grown (`expandvolume`). The host must never pass those
//! "Not supported" answers on: it does each default itself, checked, or
//! fails.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::loop_images;
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct NotSupportedFallbacks;

impl Driver for NotSupportedFallbacks {
    fn attach(&self, options: &Options, _node: &str) -> Result<String> {
        if let Some(victim) = options.get("victim") {
            return Ok(victim.to_string());
        }
        let image = format!("{}.img", options.volume_name);
        loop_images::create_image(&image, 320 << 20)?;
        Ok(loop_images::attach(&image)?)
    }
}

export_driver!(NotSupportedFallbacks);
