//! A read-only view of this node's block devices.
//!
//! Using this module makes the plugin import `flexwasm:driver/devices`.

use std::time::Duration;

use crate::DeviceLocator;
use crate::imports::devices as host;

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

/// The device `locator` names, if it is present on this node now.
pub fn find(locator: &DeviceLocator) -> Option<BlockDevice> {
    host::find(locator)
}

/// Waits up to `timeout` for the device `locator` names to appear on this
/// node, e.g. after the storage backend attached it; `None` if it did not.
///
/// The host also bounds the wait by the call's deadline. `timeout` is passed
/// in whole milliseconds, at most `u32::MAX` (about 49 days).
pub fn wait_for(locator: &DeviceLocator, timeout: Duration) -> Option<BlockDevice> {
    host::wait_for(locator, timeout_millis(timeout))
}

fn timeout_millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_milliseconds_saturating() {
        assert_eq!(timeout_millis(Duration::from_secs(30)), 30_000);
        assert_eq!(timeout_millis(Duration::from_micros(1_500)), 1);
        assert_eq!(timeout_millis(Duration::ZERO), 0);
        assert_eq!(timeout_millis(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
