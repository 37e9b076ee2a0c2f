//! Block devices: the read-only view plugins get, and the validation every
//! device path from a plugin goes through.
//!
//! [`resolve_block_device`] is the gate: a device path from a plugin is
//! canonicalised (symlinks such as `/dev/disk/by-id/…` resolved), must name
//! a block device (`S_ISBLK`), and must resolve to somewhere under `/dev/`.
//! The resolved path is what the host passes on to mkfs, mount, etc. (There
//! is an unavoidable window between this check and the later use; `/dev` is
//! writable only by root and udev.)
//!
//! [`list`] reads `/sys/class/block`. Choices:
//!
//! - `ram*` (brd) devices are skipped, and so is every device whose size is
//!   0 (unattached loop devices, empty drives): nothing can be stored there.
//! - Whole disks *and* partitions are listed; a partition has `parent` set
//!   and no `serial`/`wwn` (those identify the disk, and copying them to
//!   partitions would make a serial match ambiguous).
//! - Serial: `device/serial` (NVMe, some SCSI), `serial` (virtio-blk), then
//!   SCSI VPD page 0x80 (`device/vpd_pg80`). WWN: `device/wwid` (SCSI),
//!   then `wwid` (NVMe namespaces).
//! - Links come from `/dev/disk/by-id` and `/dev/disk/by-path` when udev
//!   maintains them (it may not, e.g. in containers); dangling links are
//!   ignored.
//! - A device that disappears while we read it is left out rather than
//!   failing the whole listing.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{NodeError, Result};

const SYS_CLASS_BLOCK: &str = "/sys/class/block";
const LINK_DIRS: &[&str] = &["/dev/disk/by-id", "/dev/disk/by-path"];

/// One block device as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The device node, `/dev/<DEVNAME>`.
    pub path: PathBuf,
    /// Kernel name (`sda1`, `loop3`, `nvme0n1`).
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub size_bytes: u64,
    pub read_only: bool,
    /// Symlinks to this device under `/dev/disk/by-id` and `/dev/disk/by-path`, sorted.
    pub links: Vec<PathBuf>,
    /// Whole disks only.
    pub serial: Option<String>,
    /// Whole disks only.
    pub wwn: Option<String>,
    /// For an attached loop device: its backing file, as the kernel reports
    /// it (may end in " (deleted)").
    pub loop_backing_file: Option<PathBuf>,
    /// For a partition: the whole disk's device node.
    pub parent: Option<PathBuf>,
}

/// Every block device with a non-zero size, except `ram*`, sorted by path.
pub fn list() -> Result<Vec<BlockDevice>> {
    list_where(|_| true)
}

/// [`list`], reading in full only the devices whose sysfs directory passes
/// `prefilter`: a lookup by one attribute (a loop device's backing file)
/// need not read ten attributes of each of a node's hundreds of devices.
pub fn list_where(prefilter: impl Fn(&Path) -> bool) -> Result<Vec<BlockDevice>> {
    let links = link_map();
    let entries = fs::read_dir(SYS_CLASS_BLOCK)
        .map_err(|e| NodeError::io(format!("listing {SYS_CLASS_BLOCK}"), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NodeError::io(format!("listing {SYS_CLASS_BLOCK}"), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ram") || !prefilter(&entry.path()) {
            continue;
        }
        if let Some(dev) = from_sysfs(&entry.path(), &links)?
            && dev.size_bytes > 0
        {
            out.push(dev);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The block device at `path` (symlinks followed). `Ok(None)` if the path
/// does not exist or the kernel has no sysfs entry for it; an error if it
/// exists but is not a block device. Unlike [`list`], a size-0 device is
/// returned.
pub fn get(path: &Path) -> Result<Option<BlockDevice>> {
    let resolved = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::io(format!("resolving {}", path.display()), e)),
    };
    let (major, minor) = dev_numbers_of(path, &resolved)?;
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let sys = match fs::canonicalize(&sys) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::io(format!("resolving {}", sys.display()), e)),
    };
    from_sysfs(&sys, &link_map())
}

/// Validate a device path from a plugin: resolve symlinks, require a block
/// device, require the result to be under `/dev/`. Returns the resolved path.
pub fn resolve_block_device(path: &Path) -> Result<PathBuf> {
    let resolved = canonicalize_existing(path)?;
    // Type first: "is a regular file" is the more useful message for the
    // common mistake; the /dev check guards against device nodes made
    // elsewhere (mknod in a writable directory).
    dev_numbers_of(path, &resolved)?;
    if !resolved.starts_with("/dev") || resolved == Path::new("/dev") {
        return Err(NodeError::OutsideDev {
            path: path.to_path_buf(),
            resolved,
        });
    }
    Ok(resolved)
}

/// `(major, minor)` of the block device at `path` (symlinks followed).
pub fn dev_numbers(path: &Path) -> Result<(u32, u32)> {
    let resolved = canonicalize_existing(path)?;
    dev_numbers_of(path, &resolved)
}

fn canonicalize_existing(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            NodeError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            NodeError::io(format!("resolving {}", path.display()), e)
        }
    })
}

/// stat `resolved` and require a block device; messages name `path` as given.
fn dev_numbers_of(path: &Path, resolved: &Path) -> Result<(u32, u32)> {
    let meta = fs::metadata(resolved).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            NodeError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            NodeError::io(format!("stat {}", resolved.display()), e)
        }
    })?;
    let ft = meta.file_type();
    if !ft.is_block_device() {
        let what = if ft.is_file() {
            "is a regular file"
        } else if ft.is_dir() {
            "is a directory"
        } else if ft.is_char_device() {
            "is a character device"
        } else if ft.is_fifo() {
            "is a named pipe"
        } else if ft.is_socket() {
            "is a socket"
        } else {
            "is of an unknown file type"
        };
        let shown = if path == resolved {
            path.display().to_string()
        } else {
            format!("{} (resolves to {})", path.display(), resolved.display())
        };
        return Err(NodeError::NotBlockDevice { path: shown, what });
    }
    let rdev = meta.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// resolved device node → links pointing at it.
fn link_map() -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    for dir in LINK_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue; // no udev here
        };
        for entry in entries.flatten() {
            let link = entry.path();
            if let Ok(target) = fs::canonicalize(&link) {
                map.entry(target).or_default().push(link);
            }
        }
    }
    for links in map.values_mut() {
        links.sort();
    }
    map
}

/// Build a [`BlockDevice`] from its sysfs directory. `Ok(None)` if it
/// vanished meanwhile.
fn from_sysfs(dir: &Path, links: &HashMap<PathBuf, Vec<PathBuf>>) -> Result<Option<BlockDevice>> {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    let Some(dev) = read_attr(&dir.join("dev"))? else {
        return Ok(None);
    };
    let (major, minor) = parse_dev(&dev).ok_or_else(|| {
        NodeError::io(
            format!("reading {}", dir.join("dev").display()),
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("unexpected content {dev:?}"),
            ),
        )
    })?;
    let Some(size) = read_attr(&dir.join("size"))? else {
        return Ok(None);
    };
    let sectors: u64 = size.parse().map_err(|_| {
        NodeError::io(
            format!("reading {}", dir.join("size").display()),
            std::io::Error::new(ErrorKind::InvalidData, format!("not a number: {size:?}")),
        )
    })?;
    let read_only = read_attr(&dir.join("ro"))?.as_deref() == Some("1");
    let path = dev_node(dir, &name)?;

    let is_partition = dir.join("partition").exists();
    let (serial, wwn, parent) = if is_partition {
        let parent_dir = fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let parent = match parent_dir {
            Some(pd) => match pd.file_name().map(|n| n.to_string_lossy().into_owned()) {
                Some(pn) => Some(dev_node(&pd, &pn)?),
                None => None,
            },
            None => None,
        };
        (None, None, parent)
    } else {
        (read_serial(dir)?, read_wwn(dir)?, None)
    };

    let loop_backing_file = read_raw_attr(&dir.join("loop/backing_file"))?
        .filter(|b| !b.is_empty())
        .map(|b| PathBuf::from(OsString::from_vec(b)));

    Ok(Some(BlockDevice {
        links: links.get(&path).cloned().unwrap_or_default(),
        path,
        name,
        major,
        minor,
        size_bytes: sectors.saturating_mul(512),
        read_only,
        serial,
        wwn,
        loop_backing_file,
        parent,
    }))
}

/// `/dev/<DEVNAME>` from the uevent file (names like `cciss!c0d0` map to
/// `cciss/c0d0`), falling back to the sysfs name.
fn dev_node(dir: &Path, name: &str) -> Result<PathBuf> {
    let devname = read_attr(&dir.join("uevent"))?
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
        })
        .filter(|n| !n.is_empty() && !n.split('/').any(|c| c == ".." || c.is_empty()))
        .unwrap_or_else(|| name.replace('!', "/"));
    Ok(Path::new("/dev").join(devname))
}

fn read_serial(dir: &Path) -> Result<Option<String>> {
    for f in ["device/serial", "serial"] {
        if let Some(s) = read_attr(&dir.join(f))?.and_then(clean_id) {
            return Ok(Some(s));
        }
    }
    Ok(read_raw_attr(&dir.join("device/vpd_pg80"))?.and_then(|b| parse_vpd_pg80(&b)))
}

/// WWNs are written `naa.600…`, `0x600…` or bare hex; compare them bare.
pub fn normalise_wwn(w: &str) -> String {
    let w = w.trim().to_ascii_lowercase();
    let w = w.strip_prefix("0x").unwrap_or(&w);
    let w = w.strip_prefix("naa.").unwrap_or(w);
    w.to_string()
}

fn read_wwn(dir: &Path) -> Result<Option<String>> {
    for f in ["device/wwid", "wwid"] {
        if let Some(s) = read_attr(&dir.join(f))?.and_then(clean_id) {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

fn clean_id(s: String) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if t.is_empty() {
        None
    } else {
        Some(t.to_string())
    }
}

/// SCSI VPD page 0x80 (Unit Serial Number): 4-byte header, then the serial.
pub(crate) fn parse_vpd_pg80(b: &[u8]) -> Option<String> {
    if b.len() < 4 || b[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let end = 4usize.saturating_add(len).min(b.len());
    let serial = String::from_utf8_lossy(&b[4..end]).into_owned();
    clean_id(serial)
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A sysfs attribute as trimmed text; `None` if it does not exist.
fn read_attr(path: &Path) -> Result<Option<String>> {
    Ok(read_raw_attr(path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
}

/// A sysfs attribute as bytes without the trailing newline; `None` if it
/// does not exist (or the device went away while we looked).
fn read_raw_attr(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(mut b) => {
            while b.last() == Some(&b'\n') {
                b.pop();
            }
            Ok(Some(b))
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound) => Ok(None),
        // ENODEV/ENXIO: the device is going away; EIO/EINVAL: some drivers
        // fail reads of attributes they don't support (vpd pages).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV | libc::ENXIO | libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_pg80() {
        let mut b = vec![0x00, 0x80, 0x00, 0x0a];
        b.extend_from_slice(b"  SER1234 ");
        assert_eq!(parse_vpd_pg80(&b).as_deref(), Some("SER1234"));
        // Length beyond the buffer is clamped.
        assert_eq!(
            parse_vpd_pg80(&[0, 0x80, 0, 99, b'A']).as_deref(),
            Some("A")
        );
        // Wrong page / too short / empty.
        assert_eq!(parse_vpd_pg80(&[0, 0x83, 0, 1, b'A']), None);
        assert_eq!(parse_vpd_pg80(&[0, 0x80]), None);
        assert_eq!(parse_vpd_pg80(&[0, 0x80, 0, 2, b' ', 0]), None);
    }

    #[test]
    fn dev_parse() {
        assert_eq!(parse_dev("7:3\n"), Some((7, 3)));
        assert_eq!(parse_dev("259:65536"), Some((259, 65536)));
        assert_eq!(parse_dev("7"), None);
        assert_eq!(parse_dev("a:b"), None);
    }

    #[test]
    fn clean_ids() {
        assert_eq!(
            clean_id(" naa.600a\n\0".into()).as_deref(),
            Some("naa.600a")
        );
        assert_eq!(clean_id(" \n".into()), None);
    }

    #[test]
    fn resolve_rejects_non_block_paths() {
        let err = resolve_block_device(Path::new("/dev/null")).expect_err("char dev");
        assert_eq!(
            err.to_string(),
            "/dev/null is a character device, not a block device"
        );
        let err = resolve_block_device(Path::new("/dev")).expect_err("dir");
        assert_eq!(err.to_string(), "/dev is a directory, not a block device");
        let err = resolve_block_device(Path::new("/nonexistent/dev/sda")).expect_err("missing");
        assert_eq!(err.to_string(), "/nonexistent/dev/sda does not exist");
        let err = dev_numbers(Path::new("/dev/null")).expect_err("char dev");
        assert!(matches!(err, NodeError::NotBlockDevice { .. }));
    }

    #[test]
    fn get_of_missing_path_is_none_and_of_a_char_device_an_error() {
        assert_eq!(get(Path::new("/nonexistent/flexwasm")).expect("ok"), None);
        assert!(get(Path::new("/dev/null")).is_err());
    }

    #[test]
    fn list_reads_this_machine() {
        let devs = list().expect("listing works");
        for d in &devs {
            assert!(d.size_bytes > 0, "{d:?}");
            assert!(d.path.starts_with("/dev"), "{d:?}");
            assert!(!d.name.starts_with("ram"), "{d:?}");
        }
    }
}
