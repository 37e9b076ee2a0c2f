//! Growing a filesystem after its device grew (`expandfs`).
//!
//! | fs | tool | runs on |
//! |---|---|---|
//! | ext2/3/4 | `resize2fs <device>` | the device; online if mounted, else offline (resize2fs then insists on a recent `e2fsck -f`, and says so) |
//! | xfs | `xfs_growfs <mount_path>` | the mount point; xfs grows only while mounted |
//! | btrfs | `btrfs filesystem resize max <mount_path>` | the mount point; grows device id 1 (a single-device filesystem) |
//!
//! The device itself must already be bigger (for loop devices see
//! [`super::loopdev::set_capacity`]). Growing to the current size is a no-op
//! for all three tools, so the call is idempotent.

use std::path::Path;
use std::time::Duration;

use super::mkfs::path_str;
use super::{NodeError, Result, blockdev, exec, mountinfo};

/// How long a grow may take. Online grows are metadata-only and quick, but
/// resize2fs on a large offline ext4 can take minutes.
pub const RESIZE_TIMEOUT: Duration = Duration::from_secs(600);

const GROWABLE: &str = "ext2, ext3, ext4, xfs, btrfs";

/// Grow the `fs_type` filesystem on `device` (mounted at `mount_path`, where
/// xfs and btrfs need it) to fill the device.
pub fn grow_filesystem(device: &Path, mount_path: &Path, fs_type: &str) -> Result<()> {
    match fs_type {
        "ext2" | "ext3" | "ext4" => {
            let dev = path_str(device)?;
            // resize2fs works online when the device is mounted anywhere.
            // Unknown counts as offline: then a stop gets the fsck advice.
            let mounted = blockdev::dev_numbers(device)
                .and_then(|(major, minor)| mountinfo::mounts_of(major, minor))
                .is_ok_and(|mounts| !mounts.is_empty());
            let offline = !mounted;
            exec::run_checked("resize2fs", &[dev], RESIZE_TIMEOUT)
                .map_err(|e| explain_resize2fs(e, device, offline))?;
        }
        "xfs" => {
            require_mounted(fs_type, mount_path)?;
            let mp = path_str(mount_path)?;
            exec::run_checked("xfs_growfs", &[mp], RESIZE_TIMEOUT)?;
        }
        "btrfs" => {
            require_mounted(fs_type, mount_path)?;
            let mp = path_str(mount_path)?;
            exec::run_checked(
                "btrfs",
                &["filesystem", "resize", "max", mp],
                RESIZE_TIMEOUT,
            )?;
        }
        other => {
            return Err(NodeError::UnsupportedFs {
                fs_type: other.to_string(),
                operation: "growing",
                supported: GROWABLE,
            });
        }
    }
    Ok(())
}

/// resize2fs's "Permission denied to resize filesystem" is EPERM from
/// EXT4_IOC_RESIZE_FS, which has two causes; name them. An offline
/// resize2fs stopped midway (its limit, the call's deadline, a stop
/// request) has rewritten only part of the metadata: say what to run.
fn explain_resize2fs(e: NodeError, device: &Path, offline: bool) -> NodeError {
    match e {
        NodeError::Timeout { .. }
        | NodeError::CallDeadline { .. }
        | NodeError::Cancelled { .. }
            if offline =>
        {
            NodeError::ResizeInterrupted {
                device: device.to_path_buf(),
                cause: Box::new(e),
            }
        }
        NodeError::CommandFailed {
            command,
            status,
            detail,
        } if detail.contains("Permission denied to resize filesystem") => {
            NodeError::CommandFailed {
                command,
                status,
                detail: format!(
                    "{detail} (online ext4 resize needs CAP_SYS_RESOURCE, which the driver process lacks, or the filesystem has recorded errors: check the kernel log and run e2fsck)"
                ),
            }
        }
        other => other,
    }
}

fn require_mounted(fs_type: &str, mount_path: &Path) -> Result<()> {
    if mountinfo::is_mount_point(mount_path)? {
        Ok(())
    } else {
        Err(NodeError::NotMounted {
            fs_type: fs_type.to_string(),
            mount_path: mount_path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_offline_resize_says_to_run_fsck() {
        let killed = || NodeError::CallDeadline {
            command: "resize2fs /dev/loop3".into(),
            after: Duration::from_secs(12),
            cap: RESIZE_TIMEOUT,
        };
        let e = explain_resize2fs(killed(), Path::new("/dev/loop3"), true);
        assert_eq!(
            e.to_string(),
            "`resize2fs /dev/loop3` was killed after 12 s: the call's deadline ran out (the \
             tool's own limit is 600 s); the call needs a longer deadline, or the tool is stuck; \
             the filesystem on /dev/loop3 was being resized offline and may be left half \
             resized: run `e2fsck -f /dev/loop3` before mounting it"
        );
        // Online, the kernel does the resize and finishes it: no advice.
        let e = explain_resize2fs(killed(), Path::new("/dev/loop3"), false);
        assert!(matches!(e, NodeError::CallDeadline { .. }), "{e:?}");
    }

    #[test]
    fn unsupported_fs_is_a_clear_error() {
        let err = grow_filesystem(Path::new("/dev/null"), Path::new("/"), "vfat").expect_err("no");
        assert_eq!(
            err.to_string(),
            "filesystem type \"vfat\" is not supported for growing (supported: ext2, ext3, ext4, xfs, btrfs)"
        );
    }

    #[test]
    fn xfs_needs_a_mount_point() {
        let err = grow_filesystem(
            Path::new("/dev/null"),
            Path::new("/nonexistent/flexwasm-test"),
            "xfs",
        )
        .expect_err("not mounted");
        assert!(matches!(err, NodeError::NotMounted { .. }), "{err:?}");
        assert!(err.to_string().contains("is not a mount point"));
    }
}
