//! Free space on the filesystem that holds a driver's state or loop images,
//! and the reserve that no write of a plugin may take.
//!
//! Why a reserve, and why this one: the state dir and the default image dir
//! live under `/var/lib`, on the node's root filesystem — kubelet's
//! "nodefs". kubelet starts evicting pods when nodefs has less than 10 %
//! of its space available or less than 5 % of its inodes free (its default
//! `evictionHard`: `nodefs.available<10%`, `nodefs.inodesFree<5%`). A
//! plugin's writes must never be what pushes a node there, so a write that
//! takes space is refused when it would leave the filesystem with less than
//!
//! - max(64 MiB, 10 % of its size) available, or
//! - 5 % of its inodes free (filesystems that report no inode count, such
//!   as btrfs, skip this part).
//!
//! The 64 MiB floor keeps room on a small dedicated filesystem for its own
//! metadata and journal. "Available" is `f_bavail`, what `df` shows and what
//! kubelet measures: ext4's root-reserved blocks do not count, even though
//! the host runs as root and could use them.
//!
//! The check is made when space is taken (a state write) or promised (a
//! sparse loop image created or grown). Other writers on the same
//! filesystem — kubelet, container images, logs — can still take space
//! afterwards; the reserve is the margin that leaves them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The least a filesystem keeps available, however small it is.
pub const MIN_RESERVE_BYTES: u64 = 64 << 20;
/// The share of a filesystem's size it keeps available: kubelet's default
/// hard eviction threshold for nodefs.
pub const RESERVE_PERCENT: u64 = 10;
/// The share of a filesystem's inodes it keeps free: kubelet's default hard
/// eviction threshold for nodefs inodes.
pub const INODE_RESERVE_PERCENT: u64 = 5;

/// A write refused because it would take the filesystem below its reserve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct LowSpace {
    /// Mount point, type and source of the filesystem, e.g. `/var (ext4 on /dev/sda2)`.
    pub filesystem: String,
    /// The directory written to.
    pub path: PathBuf,
    pub size: u64,
    pub available: u64,
    pub reserve: u64,
    /// What the write needed: bytes, or inodes when `inodes` is true.
    pub needed: u64,
    pub inodes: bool,
}

impl LowSpace {
    fn describe(&self) -> String {
        if self.inodes {
            format!(
                "the filesystem at {} (holding {}) has {} inodes free; {} more would leave fewer \
                 than its reserve of {} ({INODE_RESERVE_PERCENT} % of its inodes: below that \
                 kubelet evicts pods); free inodes on it or move the driver's state dir",
                self.filesystem,
                self.path.display(),
                self.available,
                self.needed,
                self.reserve
            )
        } else {
            format!(
                "the filesystem at {} (holding {}) has {} available; {} more would leave it under \
                 its reserve of {} (the larger of {} and {RESERVE_PERCENT} % of its {}: below \
                 that kubelet evicts pods); free space on it or move the driver's state dir",
                self.filesystem,
                self.path.display(),
                human_bytes(self.available),
                human_bytes(self.needed),
                human_bytes(self.reserve),
                human_bytes(MIN_RESERVE_BYTES),
                human_bytes(self.size)
            )
        }
    }
}

/// What `statvfs` says about the filesystem holding `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct FsSpace {
    pub path: PathBuf,
    /// `st_dev` of `path`: files with this `st_dev` are on this filesystem.
    pub dev: u64,
    pub size: u64,
    /// Available to unprivileged writers (`f_bavail`), as `df` shows.
    pub available: u64,
    /// The fundamental block size: the least a file with data takes.
    pub block_size: u64,
    /// 0 when the filesystem does not count inodes (btrfs).
    pub inodes: u64,
    pub inodes_free: u64,
}

impl FsSpace {
    pub fn of(path: &Path) -> std::io::Result<FsSpace> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let dev = std::fs::metadata(path)?.dev();
        // 64-bit Linux (glibc and musl): every field is a u64.
        let frsize = s.fragment_size();
        let block_size = if frsize > 0 { frsize } else { s.block_size() }.max(512);
        Ok(FsSpace {
            path: path.to_path_buf(),
            dev,
            size: s.blocks().saturating_mul(block_size),
            available: s.blocks_available().saturating_mul(block_size),
            block_size,
            inodes: s.files(),
            inodes_free: s.files_available(),
        })
    }

    /// Bytes the filesystem keeps available: max(64 MiB, 10 % of its size).
    pub fn reserve(&self) -> u64 {
        MIN_RESERVE_BYTES.max(self.size / 100 * RESERVE_PERCENT)
    }

    /// Inodes it keeps free: 5 % of its inodes.
    pub fn inode_reserve(&self) -> u64 {
        self.inodes / 100 * INODE_RESERVE_PERCENT
    }

    /// Bytes that may still be taken: what is available above the reserve.
    pub fn room(&self) -> u64 {
        self.available.saturating_sub(self.reserve())
    }

    /// `len` rounded up to whole blocks.
    pub fn blocks_for(&self, len: u64) -> u64 {
        len.div_ceil(self.block_size)
            .saturating_mul(self.block_size)
    }

    /// Refuse taking `bytes` and `inodes` when that would leave the
    /// filesystem below its reserve.
    pub fn check(&self, bytes: u64, inodes: u64) -> Result<(), LowSpace> {
        let refuse = |available, reserve, needed, inodes| LowSpace {
            filesystem: filesystem_name(&self.path),
            path: self.path.clone(),
            size: self.size,
            available,
            reserve,
            needed,
            inodes,
        };
        if bytes > self.room() {
            return Err(refuse(self.available, self.reserve(), bytes, false));
        }
        if inodes > 0
            && self.inodes > 0
            && inodes > self.inodes_free.saturating_sub(self.inode_reserve())
        {
            return Err(refuse(self.inodes_free, self.inode_reserve(), inodes, true));
        }
        Ok(())
    }

    /// The filesystem, for a message: `/var (ext4 on /dev/sda2)`.
    pub fn filesystem(&self) -> String {
        filesystem_name(&self.path)
    }
}

/// Mount point, type and source of the mount holding `path` in this
/// thread's mount table; the path itself if the table cannot say.
pub fn filesystem_name(path: &Path) -> String {
    let fallback = || format!("the filesystem holding {}", path.display());
    let Ok(real) = std::fs::canonicalize(path) else {
        return fallback();
    };
    let Ok(entries) = crate::node::mountinfo::read() else {
        return fallback();
    };
    let Some(point) = entries
        .iter()
        .map(|e| &e.mount_point)
        .filter(|p| real.starts_with(p))
        .max_by_key(|p| p.as_os_str().len())
    else {
        return fallback();
    };
    match crate::node::mountinfo::topmost_at(&entries, point) {
        Some(e) => format!("{} ({} on {})", point.display(), e.fs_type, e.source),
        None => fallback(),
    }
}

/// `n` bytes for a person: `512 bytes`, `4.0 KiB`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(size: u64, available: u64, inodes: u64, inodes_free: u64) -> FsSpace {
        FsSpace {
            path: PathBuf::from("/nonexistent/kv"),
            dev: 0,
            size,
            available,
            block_size: 4096,
            inodes,
            inodes_free,
        }
    }

    #[test]
    fn reserve_is_the_larger_of_the_floor_and_ten_percent() {
        assert_eq!(space(100 << 20, 0, 0, 0).reserve(), 64 << 20);
        assert_eq!(space(100 << 30, 0, 0, 0).reserve(), 10 << 30);
    }

    #[test]
    fn writes_that_would_cross_the_reserve_are_refused() {
        // 1 GiB filesystem: reserve 102.4 MiB.
        let s = space(1 << 30, 200 << 20, 1000, 100);
        assert!(s.check(90 << 20, 1).is_ok());
        let e = s.check(100 << 20, 1).unwrap_err();
        assert!(!e.inodes && e.needed == 100 << 20, "{e:?}");
        let text = e.to_string();
        for part in [
            "/nonexistent/kv",
            "200.0 MiB available",
            "reserve of 102.4 MiB",
            "10 %",
            "1.0 GiB",
        ] {
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
        // 100 inodes free, 50 kept (5 % of 1000).
        assert!(s.check(0, 50).is_ok());
        let e = s.check(0, 51).unwrap_err();
        assert!(e.inodes && e.to_string().contains("100 inodes free"), "{e}");
        // No inode count (btrfs): no inode check.
        assert!(space(1 << 30, 200 << 20, 0, 0).check(0, 1 << 20).is_ok());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn the_real_filesystem_is_named() {
        let s = FsSpace::of(Path::new("/")).unwrap();
        assert!(s.size > 0 && s.block_size >= 512, "{s:?}");
        assert!(s.filesystem().starts_with("/ ("), "{}", s.filesystem());
    }
}
