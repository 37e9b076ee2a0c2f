//! `flexwasm:driver/devices`: a read-only view of the node's block devices.

use crate::node::blockdev::{self, BlockDevice};
use crate::runtime::PluginHost;
use crate::runtime::bindings::flexwasm::driver::devices::{self as wit, BlockDevice as WitDevice};
use std::path::Path;
use wasmtime::component::{HasSelf, Linker};

pub struct DeviceView;

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

impl wit::Host for DeviceView {
    fn list_devices(&mut self) -> Vec<WitDevice> {
        blockdev::list()
            .map(|v| v.into_iter().map(to_wit).collect())
            .unwrap_or_default()
    }

    fn get(&mut self, path: String) -> Option<WitDevice> {
        blockdev::get(Path::new(&path)).ok().flatten().map(to_wit)
    }
}

pub fn add_to_linker(linker: &mut Linker<PluginHost>) -> wasmtime::Result<()> {
    wit::add_to_linker::<PluginHost, HasSelf<DeviceView>>(linker, |h| &mut h.devices)
}
