//! A real local storage array for flexwasm tests.
//!
//! The `flexwasm-array-server` binary serves a small REST API shaped like the
//! ones cloud and array volume drivers talk to (OCI block volumes, Pure
//! FlashArray, Longhorn): create / list / get / resize / attach / detach /
//! delete volumes, bearer-token auth, JSON in and out. A volume is a sparse
//! image file; attaching it loop-attaches the image, so a real block device
//! appears on this node and a plugin has to find it by its loop backing file.
//!
//! This library is the client side for tests:
//!
//! * [`ArrayServer`] starts the binary on an ephemeral port in a data
//!   directory, stops it with SIGTERM and, on drop, detaches every loop device
//!   backed by an image under that directory, so a failing test leaves nothing
//!   behind;
//! * [`request`] is a minimal std-only HTTP/1.1 client;
//! * [`Volume`] is the volume object of the API; [`loopdev`] reads loop
//!   devices from sysfs and changes them with `losetup`.

pub mod loopdev;

mod client;

pub use client::{ArrayServer, find_bin, request, try_request};

use serde::{Deserialize, Serialize};

/// A volume as the API returns it and as `volumes.json` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// `vol-<8 hex>`, chosen by the server.
    pub id: String,
    /// Chosen by the caller; unique, so creating by name is idempotent.
    pub name: String,
    pub size_bytes: u64,
    /// The node the volume is attached to, if any.
    pub attached_to: Option<String>,
    /// The loop device (`/dev/loopN`) when attached.
    pub device: Option<String>,
    /// Absolute, canonical path of the image file: exactly what the kernel
    /// reports in `/sys/block/loopN/loop/backing_file`, so a plugin can find
    /// the device by it.
    pub backing_file: String,
    /// Stable per volume (see [`serial_for`]), like an array's volume serial.
    pub serial: String,
}

/// The serial of volume `id`: `FWA` and 16 upper-case hex digits of the
/// 64-bit FNV-1a hash of the id. Deterministic so tests and plugins can
/// compute it, and it survives server restarts without being stored.
pub fn serial_for(id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("FWA{hash:016X}")
}

/// Whether this process runs as root: attach and detach need it (loop
/// devices), so privileged tests check it first.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_stable_and_distinct() {
        assert_eq!(serial_for("vol-0000abcd"), serial_for("vol-0000abcd"));
        assert_ne!(serial_for("vol-0000abcd"), serial_for("vol-0000abce"));
        assert_eq!(serial_for("vol-0000abcd").len(), 19);
    }
}
