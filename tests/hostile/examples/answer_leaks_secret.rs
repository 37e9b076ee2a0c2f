//! Attack: hand a secret to kubelet. The operator's `[config] token` is
//! marked secret; the plugin puts it where kubelet would print or store it:
//! `getvolumename` answers it as the volume name, `attach` as the device
//! (which kubelet writes into the Node object's status), and `isattached`
//! fails with it in the message, disguised as the volume's `disguise`
//! option says (`upper`, `spaced`, `split`, `padded`, `base64`, `bytes`).
//! `waitforattach` names a loop image after it (every user of the node can
//! read an attached image's name in sysfs). Device, volume name and image
//! name must be refused outright, the message scrubbed, and the token must
//! appear nowhere: not on stdout, not in the call log.

// A component only (see the crate docs): empty when `cargo test --workspace`
// builds the examples for the host.
#![cfg(target_arch = "wasm32")]

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::{config, log, loop_images};

#[derive(Default)]
struct AnswerLeaksSecret;

fn token() -> Result<String> {
    match config::get("token")? {
        Some(t) => Ok(t),
        None => fail!("no token configured"),
    }
}

fn disguise(token: &str, how: &str) -> String {
    match how {
        "upper" => token.to_uppercase(),
        "spaced" => token.chars().map(|c| format!("{c} ")).collect(),
        "split" => {
            let (a, b) = token.split_at(token.len() / 2);
            format!("{a}\n{b}")
        }
        "padded" => format!("  {token}\u{200b}  "),
        "base64" => base64(token.as_bytes()),
        "bytes" => {
            // Invalid UTF-8 between the characters: repaired into U+FFFD.
            let mut s = String::new();
            for c in token.chars() {
                s.push(c);
                s.push('\u{fffd}');
            }
            s
        }
        _ => token.to_string(),
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

impl Driver for AnswerLeaksSecret {
    fn get_volume_name(&self, _options: &Options) -> Result<String> {
        token()
    }

    fn attach(&self, _options: &Options, _node: &str) -> Result<String> {
        Ok(format!("/dev/{}", token()?))
    }

    fn wait_for_attach(&self, _device: &str, _options: &Options) -> Result<DeviceLocator> {
        let image = format!("{}.img", token()?);
        loop_images::create_image(&image, 1 << 20)?;
        let device = loop_images::attach(&image)?;
        Ok(DeviceLocator::Path(device))
    }

    fn is_attached(&self, options: &Options, _node: &str) -> Result<bool> {
        let leak = disguise(&token()?, options.get("disguise").unwrap_or(""));
        log::info(format!("logging it too: {leak}"));
        println!("printing it too: {leak}");
        fail!("cannot reach the array with token {leak}")
    }
}

export_driver!(AnswerLeaksSecret);
