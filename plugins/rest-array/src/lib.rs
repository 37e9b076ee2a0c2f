//! Reference plugin: attachable block volumes on a storage array with a
//! REST API, shaped like the FlexVolume drivers of cloud block storage and
//! arrays (OCI block volumes, Pure FlashArray).
//!
//! The array creates, grows, attaches and detaches volumes; this driver
//! calls its API (see `src/array.rs`) and tells the host how to find the
//! attached device on the node and how to format and mount it. The host
//! does the privileged work and sends the requests, only to the origins the
//! grant policy's `[http]` table allows.
//!
//! | call | what the driver does |
//! |---|---|
//! | `attach` | find (state, then by name) or create the volume named after the PV, attach it to the node, remember its id in state; answer the device the array reports |
//! | `waitforattach` | look the volume up on the array; wait for the loop device backed by its `backing_file`; answer that locator |
//! | `isattached` | ask the array whether the volume is attached to that node |
//! | `detach` | the id from state (detach gets no options), else by name; detach; idempotent |
//! | `mountdevice` | format (if blank) and mount, with the operator's defaults |
//! | `expandvolume` | grow the volume on the array |
//! | `expandfs` | nothing: the array refreshed the device; the host grows the filesystem |
//! | `mount`, `unmount` | not implemented: the host bind-mounts the device mount into the pod dir (with its `nosuid,nodev`) |
//!
//! Configuration (the policy's `[config]`):
//!
//! | key | meaning |
//! |---|---|
//! | `endpoint` | required: the array's API, e.g. `https://array.example.com:8443` |
//! | `token` | required: the API token (mark it `secret = true`). kubelet passes volume secrets only to `mount`, and attach/detach/isattached run in the controller-manager with none, so the token is the operator's |
//! | `defaultFSType` | filesystem when the volume sets no `fsType`; default `ext4` |
//! | `defaultFSOpt` | extra `mkfs` arguments, separated by spaces |
//! | `defaultMountOpt` | mount options, separated by commas |
//!
//! Volume options: `size`, the size of a new volume as a Kubernetes
//! quantity (default `1Gi`).

use std::time::Duration;

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::{config, devices, log, state};

mod array;

use array::{Array, Volume};

/// Size of a new volume when the volume has no `size` option.
const DEFAULT_SIZE_BYTES: u64 = 1 << 30;
/// Filesystem when neither `fsType` nor `defaultFSType` is set.
const DEFAULT_FS_TYPE: &str = "ext4";
/// How long `waitforattach` waits for the device to appear on the node.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct RestArrayDriver;

impl Driver for RestArrayDriver {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }

    fn get_volume_name(&self, options: &Options) -> Result<String> {
        Ok(pv_name(&options.volume_name)?.to_owned())
    }

    fn attach(&self, options: &Options, node_name: &str) -> Result<String> {
        let pv = pv_name(&options.volume_name)?;
        let size = options.size_bytes("size")?.unwrap_or(DEFAULT_SIZE_BYTES);
        if size == 0 {
            fail!("volume {pv}: option \"size\" must be more than 0 bytes");
        }
        let array = Array::connect()?;
        let volume = match volume_of(&array, pv)? {
            Some(volume) => volume,
            None => {
                let volume = array.create(pv, size)?;
                log::info(format!(
                    "volume {pv} is {} on the array at {} ({} bytes)",
                    volume.id,
                    array.endpoint(),
                    volume.size_bytes
                ));
                volume
            }
        };
        // Recorded before attaching: a detach after a failed attach still
        // knows the volume.
        state::set(&volume_key(pv), &volume.id)?;
        let attached = array.attach(&volume.id, node_name)?;
        let Some(device) = attached.device.filter(|device| !device.is_empty()) else {
            fail!(
                "array at {}: volume {pv} ({}) was attached to node {node_name} but the array \
                 reported no device for it",
                array.endpoint(),
                attached.id
            );
        };
        log::info(format!(
            "attached volume {pv} ({}) to node {node_name:?} as {device}",
            attached.id
        ));
        Ok(device)
    }

    fn wait_for_attach(&self, _device: &str, options: &Options) -> Result<DeviceLocator> {
        // The device path from `attach` was the array's view; on this node
        // the device is found by the file backing it.
        let pv = pv_name(&options.volume_name)?;
        let array = Array::connect()?;
        let Some(volume) = volume_of(&array, pv)? else {
            fail!(
                "array at {}: there is no volume {pv}, so it cannot be attached to this node",
                array.endpoint()
            );
        };
        let Some(node) = volume.attached_to.as_deref() else {
            fail!(
                "array at {}: volume {pv} ({}) is not attached to any node",
                array.endpoint(),
                volume.id
            );
        };
        let Some(backing_file) = volume.backing_file.as_deref().filter(|f| !f.is_empty()) else {
            fail!(
                "array at {}: volume {pv} ({}) has no backing file, so its device cannot be \
                 found on this node",
                array.endpoint(),
                volume.id
            );
        };
        let locator = DeviceLocator::loop_backing_file(backing_file);
        match devices::wait_for(&locator, DEVICE_WAIT) {
            Some(device) => {
                log::info(format!(
                    "volume {pv} ({}) is {} on this node",
                    volume.id, device.path
                ));
                Ok(locator)
            }
            None => fail!(
                "volume {pv} ({}) is attached to node {node:?}, but no loop device backed by \
                 {backing_file} appeared on this node within {} s",
                volume.id,
                DEVICE_WAIT.as_secs()
            ),
        }
    }

    fn detach(&self, volume_name: &str, node_name: &str) -> Result<()> {
        let pv = pv_name(volume_name)?;
        // No options here: the volume is found through state, or by name.
        let array = Array::connect()?;
        let key = volume_key(pv);
        let mut detached = false;
        if let Some(id) = state::get_string(&key)? {
            detached = array.detach(&id, node_name)?;
            if !detached {
                log::warn(format!(
                    "the array has no volume {id}, recorded for {pv}; looking it up by name"
                ));
            }
        }
        if !detached {
            match array.find_by_name(pv)? {
                Some(volume) => detached = array.detach(&volume.id, node_name)?,
                None => log::warn(format!(
                    "the array has no volume {pv}: nothing to detach from node {node_name:?}"
                )),
            }
        }
        state::delete(&key)?;
        if detached {
            log::info(format!("detached volume {pv} from node {node_name:?}"));
        }
        Ok(())
    }

    fn is_attached(&self, options: &Options, node_name: &str) -> Result<bool> {
        let pv = pv_name(&options.volume_name)?;
        let array = Array::connect()?;
        Ok(volume_of(&array, pv)?
            .is_some_and(|volume| volume.attached_to.as_deref() == Some(node_name)))
    }

    fn mount_device(
        &self,
        device_mount_path: &str,
        device: &str,
        options: &Options,
    ) -> Result<BlockPlan> {
        let defaults = Defaults {
            fs_type: config::get("defaultFSType")?,
            mkfs_options: config::get("defaultFSOpt")?,
            mount_options: config::get("defaultMountOpt")?,
        };
        let plan = block_plan(device, options.fs_type.as_deref(), &defaults);
        log::info(format!(
            "mounting volume {:?}: {device} as {} at {device_mount_path}",
            options.volume_name, plan.fs_type
        ));
        Ok(plan)
    }

    fn unmount_device(&self, _device_mount_path: &str) -> Result<()> {
        // The host has unmounted it; the volume stays attached until `detach`.
        Ok(())
    }

    // `mount` and `unmount` are left to the default: the host bind-mounts
    // the device mount into the pod volume dir, keeping its flags.

    fn expand_volume(
        &self,
        options: &Options,
        _device_mount_path: &str,
        new_size: u64,
        _old_size: u64,
    ) -> Result<()> {
        let pv = pv_name(&options.volume_name)?;
        let array = Array::connect()?;
        let Some(volume) = volume_of(&array, pv)? else {
            fail!(
                "array at {}: there is no volume {pv} to expand",
                array.endpoint()
            );
        };
        if volume.size_bytes >= new_size {
            log::info(format!(
                "volume {pv} ({}) is already {} bytes, at least the {new_size} asked for",
                volume.id, volume.size_bytes
            ));
            return Ok(());
        }
        let grown = array.resize(&volume.id, new_size)?;
        log::info(format!(
            "grew volume {pv} ({}) from {} to {} bytes",
            grown.id, volume.size_bytes, grown.size_bytes
        ));
        Ok(())
    }

    fn expand_fs(
        &self,
        options: &Options,
        device_path: &str,
        _device_mount_path: &str,
        new_size: u64,
        _old_size: u64,
    ) -> Result<()> {
        // The array refreshed the device's capacity when it grew the volume;
        // the host grows the filesystem after this returns.
        log::info(format!(
            "volume {:?} on {device_path}: growing the filesystem to {new_size} bytes",
            options.volume_name
        ));
        Ok(())
    }
}

flexwasm_sdk::export_driver!(RestArrayDriver);

/// The volume of PV `pv`: by the id recorded at attach, else by name.
fn volume_of(array: &Array, pv: &str) -> Result<Option<Volume>> {
    if let Some(id) = state::get_string(&volume_key(pv))? {
        match array.get(&id)? {
            Some(volume) if volume.name == pv => return Ok(Some(volume)),
            _ => log::warn(format!(
                "volume {id}, recorded for {pv}, is gone from the array or renamed; looking {pv} \
                 up by name"
            )),
        }
    }
    array.find_by_name(pv)
}

/// The PV (or inline volume) name, which names the volume on the array.
fn pv_name(volume_name: &str) -> Result<&str> {
    if volume_name.is_empty() {
        fail!("the volume has no name (kubernetes.io/pvOrVolumeName is empty)");
    }
    Ok(volume_name)
}

/// The state key recording the array's id of a PV's volume.
fn volume_key(pv: &str) -> String {
    format!("volume/{pv}")
}

/// The operator's formatting and mounting defaults (the policy's `[config]`).
#[derive(Default)]
struct Defaults {
    /// `defaultFSType`.
    fs_type: Option<String>,
    /// `defaultFSOpt`: mkfs arguments separated by spaces.
    mkfs_options: Option<String>,
    /// `defaultMountOpt`: mount options separated by commas.
    mount_options: Option<String>,
}

/// Format and mount `device` as `fs_type` (the volume's), else the
/// operator's default, else ext4.
fn block_plan(device: &str, fs_type: Option<&str>, defaults: &Defaults) -> BlockPlan {
    let fs_type = fs_type
        .filter(|fs_type| !fs_type.trim().is_empty())
        .or_else(|| {
            defaults
                .fs_type
                .as_deref()
                .filter(|fs_type| !fs_type.trim().is_empty())
        })
        .map_or(DEFAULT_FS_TYPE, str::trim);
    let mkfs_options = defaults
        .mkfs_options
        .as_deref()
        .unwrap_or_default()
        .split_whitespace();
    let mount_options = defaults
        .mount_options
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|option| !option.is_empty());
    BlockPlan::new(device, fs_type)
        .mkfs_options(mkfs_options)
        .mount_options(mount_options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_plan_defaults_to_ext4() {
        assert_eq!(
            block_plan("/dev/loop3", None, &Defaults::default()),
            BlockPlan::new("/dev/loop3", "ext4")
        );
    }

    #[test]
    fn volume_fs_type_wins_over_the_operators_default() {
        let defaults = Defaults {
            fs_type: Some("xfs".into()),
            ..Defaults::default()
        };
        assert_eq!(block_plan("/dev/sdb", None, &defaults).fs_type, "xfs");
        assert_eq!(
            block_plan("/dev/sdb", Some("ext4"), &defaults).fs_type,
            "ext4"
        );
        assert_eq!(block_plan("/dev/sdb", Some(""), &defaults).fs_type, "xfs");
    }

    #[test]
    fn operator_mkfs_and_mount_options_are_split() {
        let defaults = Defaults {
            fs_type: Some(" ext4 ".into()),
            mkfs_options: Some(" -m 0  -E nodiscard ".into()),
            mount_options: Some("noatime, discard,,".into()),
        };
        let plan = block_plan("/dev/loop3", None, &defaults);
        assert_eq!(plan.fs_type, "ext4");
        assert_eq!(plan.mkfs_options, ["-m", "0", "-E", "nodiscard"]);
        assert_eq!(plan.mount_options, ["noatime", "discard"]);
    }

    #[test]
    fn volumes_are_named_after_the_pv() {
        assert_eq!(pv_name("pv-1"), Ok("pv-1"));
        assert!(pv_name("").is_err());
        assert_eq!(volume_key("pv-1"), "volume/pv-1");
    }
}
