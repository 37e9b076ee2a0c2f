//! Reference plugin: node-local scratch volumes on tmpfs.
//!
//! Node-only (no attach): kubelet calls `mount` for each pod, and the host
//! mounts a fresh tmpfs at the pod volume dir. The data lives in memory and
//! disappears at unmount. The plugin calls no host function, so it needs no
//! grant beyond its exports.
//!
//! Volume options: `size` (default `64Mi`), the tmpfs size limit as a
//! Kubernetes quantity.

use flexwasm_sdk::prelude::*;

/// tmpfs size when the volume has no `size` option.
const DEFAULT_SIZE_BYTES: u64 = 64 << 20;
/// Shown as the mount source in `/proc/mounts`, so people can tell where a
/// mount came from.
const MOUNT_SOURCE: &str = "flexwasm-tmpfs";

#[derive(Default)]
struct TmpfsDriver;

impl Driver for TmpfsDriver {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            // A fresh tmpfs has nothing to grow.
            requires_fs_resize: false,
            ..Capabilities::node_only()
        })
    }

    fn get_volume_name(&self, options: &Options) -> Result<String> {
        Ok(options.volume_name.clone())
    }

    fn mount(&self, _pod_volume_dir: &str, options: &Options) -> Result<MountPlan> {
        let size = options.size_bytes("size")?.unwrap_or(DEFAULT_SIZE_BYTES);
        if size == 0 {
            // tmpfs reads `size=0` as "no limit": never let a typo do that.
            fail!(
                "volume {:?}: option \"size\" must be more than 0 bytes",
                options.volume_name
            );
        }
        // Like an emptyDir (kubelet makes those 0777): a pod running as any
        // user can write; with fsGroup, kubelet then hands the volume to
        // the group. Read-only volumes need nothing here: the host adds `ro`.
        Ok(FilesystemPlan::new(MOUNT_SOURCE, "tmpfs")
            .mount_option(format!("size={size}"))
            .mount_option("mode=0777")
            .into())
    }

    fn unmount(&self, _pod_volume_dir: &str) -> Result<()> {
        // The host has unmounted it, and with it gone is all of the data.
        Ok(())
    }
}

flexwasm_sdk::export_driver!(TmpfsDriver);

#[cfg(test)]
mod tests {
    use super::*;

    fn options(size: Option<&str>) -> Options {
        Options {
            volume_name: "scratch".into(),
            extra: size
                .map(|size| ("size".to_owned(), size.to_owned()))
                .into_iter()
                .collect(),
            ..Options::default()
        }
    }

    fn mount_options(plan: MountPlan) -> Vec<String> {
        match plan {
            MountPlan::Filesystem(plan) => {
                assert_eq!(
                    (plan.source.as_str(), plan.fs_type.as_str()),
                    (MOUNT_SOURCE, "tmpfs")
                );
                plan.mount_options
            }
            MountPlan::Block(plan) => panic!("expected a filesystem plan, got {plan:?}"),
        }
    }

    #[test]
    fn is_node_only_without_resize() {
        let capabilities = TmpfsDriver.init().unwrap();
        assert!(!capabilities.attach);
        assert!(!capabilities.requires_fs_resize);
        assert!(capabilities.fs_group);
    }

    #[test]
    fn mounts_64mi_by_default() {
        let plan = TmpfsDriver.mount("/pods/x", &options(None)).unwrap();
        assert_eq!(mount_options(plan), ["size=67108864", "mode=0777"]);
    }

    #[test]
    fn size_option_sets_the_limit() {
        let plan = TmpfsDriver.mount("/pods/x", &options(Some("1Gi"))).unwrap();
        assert_eq!(mount_options(plan), ["size=1073741824", "mode=0777"]);
    }

    #[test]
    fn bad_or_zero_size_fails() {
        assert!(TmpfsDriver.mount("/pods/x", &options(Some("big"))).is_err());
        assert!(TmpfsDriver.mount("/pods/x", &options(Some("0"))).is_err());
    }

    #[test]
    fn other_calls_are_not_supported() {
        assert_eq!(
            TmpfsDriver.attach(&options(None), "node"),
            Err(Error::NotSupported)
        );
        assert_eq!(TmpfsDriver.unmount_device("/m"), Err(Error::NotSupported));
        assert_eq!(
            TmpfsDriver.get_volume_name(&options(None)).as_deref(),
            Ok("scratch")
        );
    }
}
