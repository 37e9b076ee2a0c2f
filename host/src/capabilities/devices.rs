//! `flexwasm:driver/devices`: a read-only view of the node's block devices,
//! and finding the one a locator names (also how the host resolves what
//! `wait-for-attach` returns).
//!
//! Nothing here opens a device: sysfs and /dev symlinks are read, and a
//! path a plugin names must resolve to a block device under /dev.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bindings::flexwasm::driver::devices::{self as wit, BlockDevice as WitDevice};
use crate::bindings::wit::DeviceLocator;
use crate::capabilities::loop_images::LoopImages;
use crate::node::blockdev::{self, BlockDevice, normalise_wwn};
use wasmtime::component::{HasData, Linker};

/// How often `wait-for` looks again.
const POLL: Duration = Duration::from_millis(100);

fn to_wit(d: BlockDevice) -> WitDevice {
    WitDevice {
        path: d.path.to_string_lossy().into_owned(),
        size_bytes: d.size_bytes,
        read_only: d.read_only,
        links: d
            .links
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .collect(),
        serial: d.serial,
        wwn: d.wwn,
        loop_backing_file: d
            .loop_backing_file
            .map(|p| p.to_string_lossy().into_owned()),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// The device a locator names, if present now. `loop_device_of` maps a
/// `loop-image` name to its device (it needs the loop grant).
pub fn find(
    locator: &DeviceLocator,
    loop_device_of: &mut dyn FnMut(&str) -> Option<PathBuf>,
) -> Option<BlockDevice> {
    match locator {
        DeviceLocator::Path(p) => {
            let dev = blockdev::resolve_block_device(Path::new(p)).ok()?;
            blockdev::get(&dev).ok().flatten()
        }
        DeviceLocator::Link(l) => {
            // Only the udev link farms: a plugin cannot point us anywhere else.
            if !l.starts_with("/dev/disk/") {
                return None;
            }
            let dev = blockdev::resolve_block_device(Path::new(l)).ok()?;
            blockdev::get(&dev).ok().flatten()
        }
        DeviceLocator::LoopImage(name) => {
            let dev = loop_device_of(name)?;
            blockdev::get(&dev).ok().flatten()
        }
        DeviceLocator::Serial(s) => blockdev::list()
            .ok()?
            .into_iter()
            .find(|d| d.serial.as_deref().map(str::trim) == Some(s.trim())),
        DeviceLocator::Wwn(w) => {
            let want = normalise_wwn(w);
            blockdev::list()
                .ok()?
                .into_iter()
                .find(|d| d.wwn.as_deref().map(normalise_wwn).as_deref() == Some(want.as_str()))
        }
        DeviceLocator::LoopBackingFile(f) => {
            let backs_f = |b: &Path| same_file(b, Path::new(f));
            // Only loop devices backed by `f` are read in full.
            blockdev::list_where(|sys| {
                std::fs::read(sys.join("loop/backing_file")).is_ok_and(|mut b| {
                    // As the full read does: trailing newlines are sysfs's.
                    while b.last() == Some(&b'\n') {
                        b.pop();
                    }
                    !b.is_empty() && backs_f(Path::new(std::ffi::OsStr::from_bytes(&b)))
                })
            })
            .ok()?
            .into_iter()
            .find(|d| d.loop_backing_file.as_deref().is_some_and(backs_f))
        }
    }
}

/// Look for the device until it appears or `until` passes.
pub fn wait_for(
    locator: &DeviceLocator,
    until: Instant,
    loop_device_of: &mut dyn FnMut(&str) -> Option<PathBuf>,
) -> Option<BlockDevice> {
    loop {
        if let Some(d) = find(locator, loop_device_of) {
            return Some(d);
        }
        let now = Instant::now();
        if now >= until {
            return None;
        }
        std::thread::sleep(POLL.min(until - now));
    }
}

/// What the interface acts on: the call's loop images (a `loop-image`
/// locator names one of them) and the call's deadline.
pub struct DevicesView<'a> {
    pub loops: &'a mut LoopImages,
    pub deadline: Instant,
}

struct HasDevices;
impl HasData for HasDevices {
    type Data<'a> = DevicesView<'a>;
}

impl wit::Host for DevicesView<'_> {
    fn list_devices(&mut self) -> Vec<WitDevice> {
        blockdev::list()
            .map(|v| v.into_iter().map(to_wit).collect())
            .unwrap_or_default()
    }

    fn get(&mut self, path: String) -> Option<WitDevice> {
        blockdev::get(Path::new(&path)).ok().flatten().map(to_wit)
    }

    fn find(&mut self, locator: DeviceLocator) -> Option<WitDevice> {
        let loops = &mut self.loops;
        find(&locator, &mut |name| loops.device_for(name).ok().flatten()).map(to_wit)
    }

    fn wait_for(&mut self, locator: DeviceLocator, timeout_ms: u32) -> Option<WitDevice> {
        // Never past the call's deadline (minus a margin to answer in time):
        // a host call cannot be interrupted by the epoch deadline.
        let by_deadline = self
            .deadline
            .checked_sub(Duration::from_millis(500))
            .unwrap_or(self.deadline);
        let until = (Instant::now() + Duration::from_millis(timeout_ms.into())).min(by_deadline);
        let loops = &mut self.loops;
        wait_for(&locator, until, &mut |name| {
            loops.device_for(name).ok().flatten()
        })
        .map(to_wit)
    }
}

/// Link `flexwasm:driver/devices`; `view` gives the store's loop images
/// and deadline.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> DevicesView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasDevices>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwn_forms_match() {
        assert_eq!(normalise_wwn("0x600A0B80"), normalise_wwn("naa.600a0b80"));
    }

    #[test]
    fn links_outside_dev_disk_are_not_followed() {
        let l = DeviceLocator::Link("/etc/passwd".into());
        assert!(find(&l, &mut |_| None).is_none());
    }
}
