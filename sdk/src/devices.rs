//! A read-only view of this node's block devices.
//!
//! Using this module makes the plugin import `flexwasm:driver/devices`.

use crate::bindings::flexwasm::driver::devices as host;

#[doc(inline)]
pub use crate::bindings::flexwasm::driver::devices::BlockDevice;

/// Every block device on this node.
pub fn list() -> Vec<BlockDevice> {
    host::list_devices()
}

/// The block device at `path` (symlinks resolved); `None` if `path` is not a
/// block device.
pub fn get(path: &str) -> Option<BlockDevice> {
    host::get(path)
}
