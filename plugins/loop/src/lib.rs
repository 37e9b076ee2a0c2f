//! Reference plugin: attachable block volumes backed by sparse image files,
//! exposed on the node as loop devices.
//!
//! One image per volume, in the host's image directory, named after the
//! volume (see [`image_name`]). `attach` creates the image if needed and
//! attaches it to a loop device; `mount-device` asks the host to format it
//! (only if blank) and mount it; `detach` releases the loop device but keeps
//! the image, because the image *is* the volume's data.
//!
//! Images live on one node, and attach/detach run in the attach/detach
//! controller: this plugin is meant for single-node clusters and tests, where
//! both are the same machine.
//!
//! **Do not copy its naming into a multi-tenant driver.** The image is named
//! after `kubernetes.io/pvOrVolumeName`, which for an *inline* volume is
//! just the pod's volume name: two pods in different namespaces with an
//! inline volume called `data` would share `data.img`, and a pod could name
//! its inline volume after someone else's PV. A real driver keys its
//! backend volume by PV (and refuses inline use), or by namespace + name.
//!
//! Volume options (the `options:` of the `flexVolume` source):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `size` | `1Gi` | size of a new image, as a Kubernetes quantity |
//! | `defaultFsType` | `ext4` | filesystem when the volume sets no `fsType` |
//! | `mkfsOptions` | none | extra `mkfs` arguments, separated by spaces |
//! | `mountOptions` | none | mount options, separated by commas |

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::{log, loop_images, state};

/// Size of a new image when the volume has no `size` option.
const DEFAULT_SIZE_BYTES: u64 = 1 << 30;
/// Filesystem when neither `fsType` nor `defaultFsType` is set.
const DEFAULT_FS_TYPE: &str = "ext4";
const IMAGE_SUFFIX: &str = ".img";
/// Longest file name Linux filesystems accept (NAME_MAX).
const MAX_FILE_NAME_BYTES: usize = 255;

#[derive(Default)]
struct LoopDriver;

impl Driver for LoopDriver {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }

    fn get_volume_name(&self, options: &Options) -> Result<String> {
        image_base_name(&options.volume_name)
    }

    fn attach(&self, options: &Options, node_name: &str) -> Result<String> {
        let image = image_name(&options.volume_name)?;
        let requested_size = options.size_bytes("size")?.unwrap_or(DEFAULT_SIZE_BYTES);
        if requested_size == 0 {
            fail!(
                "volume {:?}: option \"size\" must be more than 0 bytes",
                options.volume_name
            );
        }
        // Leaves an existing image (and its data) alone, so a repeated
        // attach is harmless.
        // `detach` gets only the volume name: remember which image it means.
        // Recorded first, so a full state store fails the attach before a
        // loop device exists rather than leaving one attached.
        state::set(&volume_key(&options.volume_name), &image)?;
        let size = loop_images::create_image(&image, requested_size)?;
        let device = loop_images::attach(&image)?;
        log::info(format!(
            "attached volume {:?} on node {node_name:?}: image {image} ({size} bytes) at {device}",
            options.volume_name
        ));
        Ok(device)
    }

    fn wait_for_attach(&self, _device: &str, options: &Options) -> Result<DeviceLocator> {
        // Find the device by its image rather than trusting the path from
        // `attach`: loop device numbers are not stable across re-attaches.
        Ok(DeviceLocator::loop_image(image_name(&options.volume_name)?))
    }

    fn detach(&self, volume_name: &str, node_name: &str) -> Result<()> {
        let image = match state::get_string(&volume_key(volume_name))? {
            Some(image) => image,
            None => {
                let image = image_name(volume_name)?;
                log::warn(format!(
                    "no record of volume {volume_name:?} being attached; detaching image {image}, \
                     named after the volume"
                ));
                image
            }
        };
        // The image holds the volume's data: release only the loop device.
        loop_images::detach(&image)?;
        // Forget the record once detached, so state does not grow with
        // every volume ever attached.
        state::delete(&volume_key(volume_name))?;
        log::info(format!(
            "detached volume {volume_name:?} from node {node_name:?} (image {image} kept)"
        ));
        Ok(())
    }

    fn is_attached(&self, options: &Options, _node_name: &str) -> Result<bool> {
        let image = image_name(&options.volume_name)?;
        Ok(loop_images::find(&image)?.is_some())
    }

    fn mount_device(
        &self,
        device_mount_path: &str,
        device: &str,
        options: &Options,
    ) -> Result<BlockPlan> {
        // kubelet passes the device `waitforattach` found, which may be
        // stale by now: after a detach and re-attach the image can be on
        // another loop device, and this one can back another volume, whose
        // filesystem would then be mounted (or formatted) here. Mount the
        // volume's own device, found by its image.
        let image = image_name(&options.volume_name)?;
        let Some(attached) = loop_images::find(&image)? else {
            fail!(
                "volume {:?} is not attached (image {image} is on no loop device); attach it \
                 first",
                options.volume_name
            );
        };
        if attached != device {
            log::warn(format!(
                "volume {:?}: kubelet passed {device}, but its image {image} is attached at \
                 {attached}; mounting {attached}",
                options.volume_name
            ));
        }
        let plan = block_plan(&attached, options);
        log::info(format!(
            "mounting volume {:?}: {device} as {} at {device_mount_path}",
            options.volume_name, plan.fs_type
        ));
        Ok(plan)
    }

    fn unmount_device(&self, _device_mount_path: &str) -> Result<()> {
        // The host has unmounted it; the loop device stays until `detach`.
        Ok(())
    }

    // `mount` and `unmount` are left to the default: the host bind-mounts
    // the device mount into the pod volume dir, keeping its `nosuid,nodev`
    // (and `ro` for a read-only volume).

    fn expand_volume(
        &self,
        options: &Options,
        _device_mount_path: &str,
        new_size: u64,
        _old_size: u64,
    ) -> Result<()> {
        let image = image_name(&options.volume_name)?;
        let size = loop_images::grow_image(&image, new_size)?;
        log::info(format!(
            "grew image {image} of volume {:?} to {size} bytes",
            options.volume_name
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
        // The loop device keeps the image's old size until told to look
        // again; the host then grows the filesystem.
        let image = image_name(&options.volume_name)?;
        loop_images::refresh(&image)?;
        log::info(format!(
            "refreshed {device_path} (image {image}) to {new_size} bytes for volume {:?}",
            options.volume_name
        ));
        Ok(())
    }
}

flexwasm_sdk::export_driver!(LoopDriver);

/// The image file of a volume: [`image_base_name`] plus `.img`.
fn image_name(volume_name: &str) -> Result<String> {
    Ok(image_base_name(volume_name)? + IMAGE_SUFFIX)
}

/// A file name derived from the volume name: every character outside
/// `[A-Za-z0-9_.-]` becomes `-`, and so does a leading `.` (the host refuses
/// hidden names). PV and inline volume names are DNS names, so in practice
/// the name is the volume name itself.
fn image_base_name(volume_name: &str) -> Result<String> {
    let mut name: String = volume_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "-");
    }
    if name.is_empty() {
        fail!("the volume has no name (kubernetes.io/pvOrVolumeName is empty)");
    }
    if name.len() + IMAGE_SUFFIX.len() > MAX_FILE_NAME_BYTES {
        fail!(
            "volume name {volume_name:?} is too long for an image file name (at most {} characters)",
            MAX_FILE_NAME_BYTES - IMAGE_SUFFIX.len()
        );
    }
    Ok(name)
}

/// The state key recording which image a volume was attached from.
fn volume_key(volume_name: &str) -> String {
    format!("volume/{volume_name}")
}

/// Format and mount `device` as the volume's options ask.
fn block_plan(device: &str, options: &Options) -> BlockPlan {
    let fs_type = options
        .fs_type
        .as_deref()
        .or_else(|| {
            options
                .get("defaultFsType")
                .filter(|fs_type| !fs_type.is_empty())
        })
        .unwrap_or(DEFAULT_FS_TYPE);
    let mkfs_options = options
        .get("mkfsOptions")
        .unwrap_or_default()
        .split_whitespace();
    let mount_options = options
        .get("mountOptions")
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
    fn image_names_follow_the_volume_name() {
        assert_eq!(image_name("pv-data.01").as_deref(), Ok("pv-data.01.img"));
        assert_eq!(image_base_name("My_Volume").as_deref(), Ok("My_Volume"));
    }

    #[test]
    fn unsafe_characters_and_leading_dots_become_dashes() {
        assert_eq!(image_base_name("a/b c:d").as_deref(), Ok("a-b-c-d"));
        assert_eq!(image_base_name("../etc").as_deref(), Ok("-.-etc"));
        assert_eq!(image_base_name(".hidden").as_deref(), Ok("-hidden"));
        assert_eq!(image_base_name("völume").as_deref(), Ok("v-lume"));
    }

    #[test]
    fn empty_or_overlong_names_fail() {
        assert!(matches!(image_name(""), Err(Error::Failure(_))));
        assert!(image_name(&"a".repeat(251)).is_ok());
        assert!(matches!(
            image_name(&"a".repeat(252)),
            Err(Error::Failure(_))
        ));
    }

    fn options(extra: &[(&str, &str)]) -> Options {
        Options {
            volume_name: "pv1".into(),
            extra: extra
                .iter()
                .map(|&(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            ..Options::default()
        }
    }

    #[test]
    fn block_plan_defaults_to_ext4_without_options() {
        assert_eq!(
            block_plan("/dev/loop0", &options(&[])),
            BlockPlan::new("/dev/loop0", "ext4")
        );
    }

    #[test]
    fn block_plan_takes_fs_type_then_default_fs_type() {
        let with_default = options(&[("defaultFsType", "xfs")]);
        assert_eq!(block_plan("/dev/loop0", &with_default).fs_type, "xfs");
        let with_both = Options {
            fs_type: Some("btrfs".into()),
            ..with_default
        };
        assert_eq!(block_plan("/dev/loop0", &with_both).fs_type, "btrfs");
    }

    #[test]
    fn block_plan_splits_mkfs_and_mount_options() {
        let plan = block_plan(
            "/dev/loop0",
            &options(&[
                ("mkfsOptions", " -m 0  -E nodiscard "),
                ("mountOptions", "noatime, discard,,"),
            ]),
        );
        assert_eq!(plan.mkfs_options, ["-m", "0", "-E", "nodiscard"]);
        assert_eq!(plan.mount_options, ["noatime", "discard"]);
    }

    // Natively, the SDK's host functions are in-memory stand-ins
    // (flexwasm_sdk::testing): the whole attach/detach cycle runs here.
    #[test]
    fn attach_records_the_image_and_detach_releases_only_the_device() {
        use flexwasm_sdk::testing;
        let options = options(&[("size", "2Gi")]);
        let device = LoopDriver.attach(&options, "node-1").unwrap();
        assert_eq!(device, "/dev/loop0");
        assert_eq!(
            state::get_string("volume/pv1").unwrap().as_deref(),
            Some("pv1.img")
        );
        assert_eq!(testing::loop_images()["pv1.img"].size_bytes, 2 << 30);
        assert!(LoopDriver.is_attached(&options, "node-1").unwrap());
        assert!(testing::logged(
            "image pv1.img (2147483648 bytes) at /dev/loop0"
        ));
        // kubelet repeats calls: the same device, the image untouched.
        testing::new_call();
        assert_eq!(LoopDriver.attach(&options, "node-1").unwrap(), device);

        LoopDriver.detach("pv1", "node-1").unwrap();
        assert!(!LoopDriver.is_attached(&options, "node-1").unwrap());
        assert!(testing::state_entries().is_empty());
        assert_eq!(testing::loop_images()["pv1.img"].device, None);
        LoopDriver.detach("pv1", "node-1").unwrap();
        assert!(testing::logged(
            "no record of volume \"pv1\" being attached"
        ));
    }

    #[test]
    fn mount_device_mounts_the_volumes_own_device_not_the_one_kubelet_passed() {
        use flexwasm_sdk::testing;
        let options = options(&[("size", "1Mi")]);
        let error = LoopDriver
            .mount_device("/dmp", "/dev/loop0", &options)
            .unwrap_err();
        assert!(error.to_string().contains("is not attached"), "{error}");
        let device = LoopDriver.attach(&options, "node-1").unwrap();
        // A stale device from before a detach and re-attach, which another
        // volume may have now.
        let plan = LoopDriver
            .mount_device("/dmp", "/dev/loop9", &options)
            .unwrap();
        assert_eq!(plan.device, device);
        assert!(testing::logged("kubelet passed /dev/loop9"));
    }

    #[test]
    fn a_full_state_store_fails_attach_before_a_device_is_attached() {
        use flexwasm_sdk::testing;
        testing::set_state_quota_kib(4);
        let error = LoopDriver.attach(&options(&[]), "node-1").unwrap_err();
        assert!(error.to_string().contains("quota exceeded"), "{error}");
        assert!(testing::loop_images().is_empty());
    }
}
