//! What a driver answers with: capabilities, device locators and the
//! format/mount plans the host carries out.
//!
//! These are the WIT types themselves, with constructors added so that a
//! driver can build them in one expression.

#[doc(inline)]
pub use crate::bindings::flexwasm::driver::types::{
    BlockPlan, Capabilities, DeviceLocator, FilesystemPlan, MountPlan,
};

/// kubelet's defaults: what kubelet assumes for a driver that reports no
/// capabilities at all.
impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            attach: true,
            selinux_relabel: true,
            supports_metrics: false,
            fs_group: true,
            requires_fs_resize: true,
        }
    }
}

impl Capabilities {
    /// kubelet's defaults without controller-managed attach: kubelet then
    /// calls only `init`, `get-volume-name`, `mount`, `unmount` and the
    /// expand calls.
    pub fn node_only() -> Self {
        Capabilities {
            attach: false,
            ..Capabilities::default()
        }
    }
}

impl BlockPlan {
    /// Format `device` with `fs_type` if it is blank, then mount it, with no
    /// extra mkfs or mount options.
    pub fn new(device: impl Into<String>, fs_type: impl Into<String>) -> Self {
        BlockPlan {
            device: device.into(),
            fs_type: fs_type.into(),
            mkfs_options: Vec::new(),
            mount_options: Vec::new(),
        }
    }

    /// Adds one argument to `mkfs.<fs-type>`.
    pub fn mkfs_option(mut self, option: impl Into<String>) -> Self {
        self.mkfs_options.push(option.into());
        self
    }

    /// Adds arguments to `mkfs.<fs-type>`.
    pub fn mkfs_options<I>(mut self, options: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.mkfs_options
            .extend(options.into_iter().map(Into::into));
        self
    }

    /// Adds one mount option, e.g. `noatime`.
    pub fn mount_option(mut self, option: impl Into<String>) -> Self {
        self.mount_options.push(option.into());
        self
    }

    /// Adds mount options.
    pub fn mount_options<I>(mut self, options: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.mount_options
            .extend(options.into_iter().map(Into::into));
        self
    }
}

impl FilesystemPlan {
    /// Mount `source` as `fs_type` (e.g. `tmpfs`, `nfs`), with no options.
    pub fn new(source: impl Into<String>, fs_type: impl Into<String>) -> Self {
        FilesystemPlan {
            source: source.into(),
            fs_type: fs_type.into(),
            mount_options: Vec::new(),
        }
    }

    /// Adds one mount option, e.g. `size=64m`.
    pub fn mount_option(mut self, option: impl Into<String>) -> Self {
        self.mount_options.push(option.into());
        self
    }

    /// Adds mount options.
    pub fn mount_options<I>(mut self, options: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.mount_options
            .extend(options.into_iter().map(Into::into));
        self
    }
}

impl From<BlockPlan> for MountPlan {
    fn from(plan: BlockPlan) -> Self {
        MountPlan::Block(plan)
    }
}

impl From<FilesystemPlan> for MountPlan {
    fn from(plan: FilesystemPlan) -> Self {
        MountPlan::Filesystem(plan)
    }
}

impl DeviceLocator {
    /// A path under `/dev`; symlinks such as `/dev/disk/by-id/...` are resolved.
    pub fn path(path: impl Into<String>) -> Self {
        DeviceLocator::Path(path.into())
    }

    /// The device with this serial number.
    pub fn serial(serial: impl Into<String>) -> Self {
        DeviceLocator::Serial(serial.into())
    }

    /// The device with this World Wide Name, e.g. `naa.600...`.
    pub fn wwn(wwn: impl Into<String>) -> Self {
        DeviceLocator::Wwn(wwn.into())
    }

    /// The loop device backed by the image `name` (see
    /// [`loop_images`](crate::loop_images)).
    pub fn loop_image(name: impl Into<String>) -> Self {
        DeviceLocator::LoopImage(name.into())
    }

    /// The loop device backed by the file at `path`, any path, e.g. one a
    /// storage backend reported. The host only looks at which file each loop
    /// device is backed by; it opens nothing.
    pub fn loop_backing_file(path: impl Into<String>) -> Self {
        DeviceLocator::LoopBackingFile(path.into())
    }

    /// The device a symlink under `/dev/disk/` points at, e.g.
    /// `/dev/disk/by-id/scsi-3600a0980...` or `/dev/disk/by-path/...`.
    pub fn link(path: impl Into<String>) -> Self {
        DeviceLocator::Link(path.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_default_to_kubelets_defaults() {
        let capabilities = Capabilities::default();
        assert!(capabilities.attach);
        assert!(capabilities.selinux_relabel);
        assert!(!capabilities.supports_metrics);
        assert!(capabilities.fs_group);
        assert!(capabilities.requires_fs_resize);
        assert_eq!(
            Capabilities::node_only(),
            Capabilities {
                attach: false,
                ..capabilities
            }
        );
    }

    #[test]
    fn block_plan_builder() {
        let plan = BlockPlan::new("/dev/loop3", "ext4")
            .mkfs_option("-m0")
            .mkfs_options(["-E", "nodiscard"])
            .mount_option("noatime")
            .mount_options(vec![String::from("discard")]);
        assert_eq!(plan.device, "/dev/loop3");
        assert_eq!(plan.fs_type, "ext4");
        assert_eq!(plan.mkfs_options, ["-m0", "-E", "nodiscard"]);
        assert_eq!(plan.mount_options, ["noatime", "discard"]);
    }

    #[test]
    fn filesystem_plan_builder_and_mount_plan() {
        let plan = FilesystemPlan::new("none", "tmpfs").mount_option("size=1024");
        assert_eq!(plan.mount_options, ["size=1024"]);
        assert_eq!(MountPlan::from(plan.clone()), MountPlan::Filesystem(plan));
        let block = BlockPlan::new("/dev/sdb", "xfs");
        assert_eq!(MountPlan::from(block.clone()), MountPlan::Block(block));
    }

    #[test]
    fn locator_constructors() {
        assert_eq!(
            DeviceLocator::loop_image("a.img"),
            DeviceLocator::LoopImage("a.img".into())
        );
        assert_eq!(
            DeviceLocator::path("/dev/sdb"),
            DeviceLocator::Path("/dev/sdb".into())
        );
        assert_eq!(
            DeviceLocator::serial("S1"),
            DeviceLocator::Serial("S1".into())
        );
        assert_eq!(
            DeviceLocator::wwn("naa.6"),
            DeviceLocator::Wwn("naa.6".into())
        );
        assert_eq!(
            DeviceLocator::loop_backing_file("/var/lib/array/vol-1.img"),
            DeviceLocator::LoopBackingFile("/var/lib/array/vol-1.img".into())
        );
        assert_eq!(
            DeviceLocator::link("/dev/disk/by-id/wwn-0x600"),
            DeviceLocator::Link("/dev/disk/by-id/wwn-0x600".into())
        );
    }
}
