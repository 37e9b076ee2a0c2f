//! Which block devices a plugin may have the host hand to kubelet, format
//! or mount.
//!
//! "A block device under /dev" is not enough: that is every disk of the
//! node, including the one holding its root filesystem. A plugin may claim
//! a device only when both hold:
//!
//! - **it is the plugin's**: a loop device backed by a file inside the
//!   grant's `[loop] image_dir`, or a device matching one of the grant's
//!   `[devices] claim` patterns (`loop-backing-dir:/abs/dir`,
//!   `by-id:<prefix of a /dev/disk/by-id name>`, `serial:<prefix>`,
//!   `wwn:<prefix>`);
//! - **it is free**: not used as swap, not held by device-mapper/md/bcache
//!   (`holders/`), none of its partitions mounted, and — for a mount — not
//!   mounted anywhere but the target itself.

use std::path::Path;

use crate::layout::DriverName;
use crate::node::blockdev::{self, normalise_wwn};
use crate::node::mountinfo;
use crate::policy::{ClaimPattern, Grant};

fn inside(file: &Path, dir: &Path) -> bool {
    // Both canonical: a symlinked image dir or `..` in a backing path cannot
    // make an outside file look inside.
    match (std::fs::canonicalize(file), std::fs::canonicalize(dir)) {
        (Ok(f), Ok(d)) => f.starts_with(&d) && f != d,
        _ => false,
    }
}

fn owned(dev: &blockdev::BlockDevice, grant: &Grant) -> bool {
    let backing_inside = |dir: &Path| {
        dev.loop_backing_file
            .as_deref()
            .is_some_and(|b| inside(b, dir))
    };
    if grant.loop_image_dir.as_deref().is_some_and(backing_inside) {
        return true;
    }
    grant.device_claims.iter().any(|p| match p {
        ClaimPattern::LoopBackingDir(d) => backing_inside(d),
        ClaimPattern::ById(prefix) => dev.links.iter().any(|l| {
            l.parent() == Some(Path::new("/dev/disk/by-id"))
                && l.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix.as_str()))
        }),
        ClaimPattern::Serial(prefix) => dev
            .serial
            .as_deref()
            .is_some_and(|s| s.trim().starts_with(prefix.as_str())),
        ClaimPattern::Wwn(prefix) => dev
            .wwn
            .as_deref()
            .is_some_and(|w| normalise_wwn(w).starts_with(prefix.as_str())),
    })
}

/// The mounts of block device `dev`: by its device number, which only the
/// kernel sets. The mount table's source is text a FUSE filesystem chooses
/// (`fsname=/dev/loop5`); it counts only for btrfs, which reports an
/// anonymous device number, and whose type no FUSE filesystem can claim.
pub fn mounts_of_device<'a>(
    entries: &'a [mountinfo::MountEntry],
    dev: &'a blockdev::BlockDevice,
) -> impl Iterator<Item = &'a mountinfo::MountEntry> {
    entries.iter().filter(move |m| {
        (m.major, m.minor) == (dev.major, dev.minor)
            || (m.fs_type == "btrfs" && Path::new(&m.source) == dev.path)
    })
}

/// Where a device to be mounted may already be mounted.
#[derive(Debug, Clone, Copy)]
pub struct MountedOnlyAt<'a> {
    /// The path it is (about to be) mounted at.
    pub target: &'a Path,
    /// Whose pod volume dirs may hold binds of it: an attachable volume is
    /// mounted once at its device mount path and bound into each pod.
    pub driver: &'a DriverName,
}

/// Check that the plugin may use block device `dev` (already resolved to
/// a block device under /dev). `mount`: for a mount, where it goes — it
/// must then not be mounted anywhere else (but binds of it in the driver's
/// pod volume dirs).
pub fn check(dev: &Path, grant: &Grant, mount: Option<MountedOnlyAt<'_>>) -> Result<(), String> {
    let mount_target = mount.map(|m| m.target);
    let info = blockdev::get(dev)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} is not a block device known to sysfs", dev.display()))?;
    if !owned(&info, grant) {
        let mut what = String::new();
        if let Some(b) = &info.loop_backing_file {
            what = format!(" (a loop device backed by {})", b.display());
        }
        return Err(format!(
            "{}{what} is not a device this driver may use: it is neither one of its loop images nor matched by a [devices] claim in its grant",
            dev.display()
        ));
    }
    let holders_dir = Path::new("/sys/class/block")
        .join(&info.name)
        .join("holders");
    if let Ok(entries) = std::fs::read_dir(&holders_dir) {
        let holders: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !holders.is_empty() {
            return Err(format!(
                "{} is in use by {} (device-mapper, md or similar); not touching it",
                dev.display(),
                holders.join(", ")
            ));
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps")
        && swaps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .any(|s| Path::new(s) == dev)
    {
        return Err(format!("{} is in use as swap", dev.display()));
    }
    let entries = mountinfo::read().map_err(|e| e.to_string())?;
    // Partitions of `dev` only: a partition's sysfs directory sits in its
    // disk's and has a `partition` attribute.
    let of_this_disk = |sys: &Path| {
        sys.join("partition").exists()
            && std::fs::canonicalize(sys).is_ok_and(|p| {
                p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == info.name.as_str())
            })
    };
    if let Ok(parts) = blockdev::list_where(of_this_disk) {
        for part in parts.iter().filter(|p| p.parent.as_deref() == Some(dev)) {
            if let Some(m) = mounts_of_device(&entries, part).next() {
                return Err(format!(
                    "{} has a partition ({}) mounted at {}; not touching it",
                    dev.display(),
                    part.path.display(),
                    m.mount_point.display()
                ));
            }
        }
    }
    if let Some(target) = mount_target {
        let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let root = mount.and_then(|m| {
            crate::kubelet_paths::kubelet_root_of(&target, m.driver).map(|r| (r, m.driver))
        });
        if let Some(m) = mounts_of_device(&entries, &info).find(|m| {
            m.mount_point != target
                && !root.as_ref().is_some_and(|(r, d)| {
                    crate::kubelet_paths::is_pod_binding(&m.mount_point, d, r)
                })
        }) {
            return Err(format!(
                "{} is already mounted at {}; a volume's device is mounted in one place only",
                dev.display(),
                m.mount_point.display()
            ));
        }
    }
    Ok(())
}
