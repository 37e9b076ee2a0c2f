//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from
//! the docs, may change with any commit). Each runs a host check of
//! something a plugin answers exactly as a call does, minus what needs the
//! node (a device, the mount table): the pure checks come first in every
//! call, and nothing is mounted or formatted unless they pass.

use std::path::PathBuf;

use crate::driver_call::{self, CallContext};
use crate::layout::{DriverLayout, DriverName};
use crate::policy::Grant;
use crate::runtime::wit;
use crate::secrets::SecretSet;

fn with_ctx<T>(grant: &Grant, secrets: &SecretSet, f: impl FnOnce(&CallContext<'_>) -> T) -> T {
    let layout = DriverLayout::for_driver(
        DriverName::parse("acme/fuzz").expect("a valid driver name"),
        PathBuf::from("/usr/libexec/kubernetes/kubelet-plugins/volume/exec/acme~fuzz"),
    );
    let ctx = CallContext {
        layout: &layout,
        grant,
        secrets: secrets.clone(),
    };
    f(&ctx)
}

/// A `mount` / `mountdevice` block plan's checks before its device is
/// looked at: `Ok((fs type, mount options to use))` or why it is refused.
pub fn check_block_plan(
    grant: &Grant,
    secrets: &SecretSet,
    device: &str,
    fs_type: &str,
    mkfs_options: &[String],
    mount_options: &[String],
    read_only: bool,
) -> Result<(String, Vec<String>), String> {
    let plan = wit::BlockPlan {
        device: device.to_string(),
        fs_type: fs_type.to_string(),
        mkfs_options: mkfs_options.to_vec(),
        mount_options: mount_options.to_vec(),
    };
    with_ctx(grant, secrets, |ctx| {
        driver_call::check_block_plan(ctx, &plan, read_only)
            .map(|(t, o)| (t.to_string(), o))
            .map_err(|e| e.to_string())
    })
}

/// A `mount` filesystem plan's checks before the mount table is looked
/// at: `Ok((fs type, mount options to use))` or why it is refused.
pub fn check_filesystem_plan(
    grant: &Grant,
    secrets: &SecretSet,
    source: &str,
    fs_type: &str,
    mount_options: &[String],
    read_only: bool,
) -> Result<(String, Vec<String>), String> {
    let plan = wit::FilesystemPlan {
        source: source.to_string(),
        fs_type: fs_type.to_string(),
        mount_options: mount_options.to_vec(),
    };
    with_ctx(grant, secrets, |ctx| {
        driver_call::check_filesystem_plan(ctx, &plan, read_only)
            .map(|(t, o)| (t.to_string(), o))
            .map_err(|e| e.to_string())
    })
}

/// An `attach` answer's checks that need nothing from the node (on
/// another node than the volume's, they are all there is).
pub fn check_attach_device(grant: &Grant, secrets: &SecretSet, device: &str) -> Result<(), String> {
    with_ctx(grant, secrets, |ctx| {
        driver_call::check_attach_device_path(ctx, device).map_err(|e| e.to_string())
    })
}
