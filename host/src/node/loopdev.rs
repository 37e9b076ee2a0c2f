//! Loop devices, natively (the `losetup` ioctls, no binary).
//!
//! - [`attach`] takes an already-open `File`, so the caller decides how the
//!   backing file is reached (e.g. `openat` below a directory fd with no
//!   symlink following) and we never re-resolve a path.
//! - **No autoclear.** A FlexVolume call is a short-lived process; the
//!   device must stay attached after it exits, until an explicit [`detach`].
//! - Free-device race: `LOOP_CTL_GET_FREE` may hand the same number to two
//!   processes; the loser's `LOOP_CONFIGURE`/`LOOP_SET_FD` fails with EBUSY
//!   and we ask again (up to [`ATTACH_ATTEMPTS`] times).
//! - `LOOP_CONFIGURE` (Linux 5.8) sets everything atomically; older kernels
//!   get `LOOP_SET_FD` + `LOOP_SET_STATUS64`, undone if the second fails.
//! - Identity: [`find_by_file`] compares the kernel's record of the backing
//!   inode (`lo_device`, `lo_inode` from `LOOP_GET_STATUS64`), never the
//!   path, so renames, symlinks and bind mounts cannot fool it. The kernel
//!   stores `lo_device` in its "huge" dev_t encoding, which differs from
//!   glibc's `st_dev` encoding for large major/minor numbers; we convert.
//! - [`detach`] refuses while the device is mounted (in any namespace: an
//!   exclusive open fails) or held by device-mapper/md, instead of letting
//!   the kernel defer the detach silently. Recent kernels always finish a
//!   detach when the last opener closes the device, so we wait briefly for
//!   that and report a still-pending detach as an error.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::{NodeError, Result, blockdev, mountinfo};

/// The block major of loop devices (Documentation/admin-guide/devices.txt).
pub const LOOP_MAJOR: u32 = 7;

/// How many times [`attach`] asks for a free device when others keep
/// winning the race.
pub const ATTACH_ATTEMPTS: usize = 32;

/// How long [`detach`] waits for the kernel to finish a detach.
pub const DETACH_WAIT: Duration = Duration::from_secs(2);

// <linux/loop.h>
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_GET_STATUS64: u32 = 0x4C05;
const LOOP_SET_CAPACITY: u32 = 0x4C07;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// What the kernel says about an attached loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopStatus {
    pub number: u32,
    /// `st_dev` of the backing file, as (major, minor).
    pub backing_major: u32,
    pub backing_minor: u32,
    pub backing_inode: u64,
    pub offset: u64,
    pub size_limit: u64,
    pub read_only: bool,
    pub autoclear: bool,
    pub partscan: bool,
    pub direct_io: bool,
    /// The name recorded at attach time (truncated to 63 bytes); informative
    /// only. The authoritative path is [`backing_file`].
    pub file_name: String,
}

// ---- raw ioctls ----

fn ioctl_arg(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: libc::c_ulong,
) -> std::result::Result<libc::c_int, Errno> {
    // SAFETY: `fd` is a live descriptor for the duration of the call; the
    // loop ioctls used with this helper take an integer argument (or none)
    // and do not access user memory through it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
    Errno::result(rc)
}

fn ioctl_ptr<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: &mut T,
) -> std::result::Result<libc::c_int, Errno> {
    // SAFETY: `fd` is live; `arg` is an exclusive reference to a #[repr(C)]
    // struct whose layout matches what `request` reads or writes
    // (loop_info64 / loop_config, sizes checked at compile time above).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg as *mut T) };
    Errno::result(rc)
}

// ---- dev_t encodings ----

/// The kernel's `new_encode_dev`/`huge_encode_dev`, used for `lo_device`
/// (the tests check [`kernel_decode_dev`] against it).
#[cfg(test)]
pub(crate) fn kernel_encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The kernel's `huge_decode_dev` of `lo_device`: (major, minor).
pub(crate) fn kernel_decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

// ---- helpers ----

fn open_dev(path: &Path, write: bool, extra_flags: libc::c_int) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | extra_flags)
        .open(path)
}

/// Resolve `loop_dev`, require major 7, return (resolved path, minor).
fn loop_identity(loop_dev: &Path) -> Result<(PathBuf, u32)> {
    let resolved = blockdev::resolve_block_device(loop_dev)?;
    let (major, minor) = blockdev::dev_numbers(&resolved)?;
    if major != LOOP_MAJOR {
        return Err(NodeError::NotLoopDevice {
            device: loop_dev.to_path_buf(),
        });
    }
    Ok((resolved, minor))
}

fn sys_dir(minor: u32) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{LOOP_MAJOR}:{minor}"))
}

fn get_status(fd: BorrowedFd<'_>) -> std::result::Result<LoopInfo64, Errno> {
    let mut info = LoopInfo64::zeroed();
    ioctl_ptr(fd, LOOP_GET_STATUS64, &mut info)?;
    Ok(info)
}

fn to_status(info: &LoopInfo64) -> LoopStatus {
    let (backing_major, backing_minor) = kernel_decode_dev(info.lo_device);
    let name_len = info
        .lo_file_name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(LO_NAME_SIZE);
    LoopStatus {
        number: info.lo_number,
        backing_major,
        backing_minor,
        backing_inode: info.lo_inode,
        offset: info.lo_offset,
        size_limit: info.lo_sizelimit,
        read_only: info.lo_flags & LO_FLAGS_READ_ONLY != 0,
        autoclear: info.lo_flags & LO_FLAGS_AUTOCLEAR != 0,
        partscan: info.lo_flags & LO_FLAGS_PARTSCAN != 0,
        direct_io: info.lo_flags & LO_FLAGS_DIRECT_IO != 0,
        file_name: String::from_utf8_lossy(&info.lo_file_name[..name_len]).into_owned(),
    }
}

// ---- public API ----

/// Attach `file` to a free loop device and return its path (`/dev/loopN`).
///
/// `read_only` attaches read-only. A read-write attach needs `file` opened
/// for writing ([`NodeError::LoopFileReadOnly`] otherwise). The device is
/// *not* autoclear: it stays attached until [`detach`].
pub fn attach(file: &File, read_only: bool) -> Result<PathBuf> {
    let mode = fcntl(file.as_fd(), FcntlArg::F_GETFL)
        .map_err(|e| NodeError::sys("fcntl(F_GETFL) on the backing file", e))?;
    let acc = OFlag::from_bits_retain(mode) & OFlag::O_ACCMODE;
    if !read_only && acc == OFlag::O_RDONLY {
        return Err(NodeError::LoopFileReadOnly);
    }

    // The fallback path (LOOP_SET_FD) takes read-only-ness from the fd's
    // mode, so for a read-only attach hand the kernel a read-only fd.
    let self_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let ro_file;
    let backing: BorrowedFd<'_> = if read_only && acc != OFlag::O_RDONLY {
        ro_file = open_dev(&self_fd, false, 0)
            .map_err(|e| NodeError::io("reopening the backing file read-only", e))?;
        ro_file.as_fd()
    } else {
        file.as_fd()
    };
    let name = std::fs::read_link(&self_fd)
        .map(|p| p.into_os_string().into_vec())
        .unwrap_or_default();

    let ctl =
        open_dev(Path::new("/dev/loop-control"), true, 0).map_err(|e| NodeError::NoFreeLoop {
            detail: format!("cannot open /dev/loop-control: {e} (is the loop module loaded?)"),
        })?;

    for _ in 0..ATTACH_ATTEMPTS {
        let n =
            ioctl_arg(ctl.as_fd(), LOOP_CTL_GET_FREE, 0).map_err(|e| NodeError::NoFreeLoop {
                detail: format!("LOOP_CTL_GET_FREE: {e}"),
            })?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_new_loop(&path, !read_only)?;
        match configure(dev.as_fd(), backing, read_only, &name) {
            Ok(()) => return Ok(path),
            // Another process configured this device between GET_FREE and us.
            Err((_, Errno::EBUSY)) => continue,
            Err((op, errno)) => {
                return Err(NodeError::Loop {
                    op,
                    device: path,
                    errno,
                });
            }
        }
    }
    Err(NodeError::NoFreeLoop {
        detail: format!(
            "other processes took the free device {ATTACH_ATTEMPTS} times in a row; retry"
        ),
    })
}

/// Open a loop device just handed out by LOOP_CTL_GET_FREE; its node can
/// take a moment to appear in /dev.
fn open_new_loop(path: &Path, write: bool) -> Result<File> {
    let start = Instant::now();
    loop {
        match open_dev(path, write, 0) {
            Ok(f) => return Ok(f),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && start.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(NodeError::io(format!("opening {}", path.display()), e)),
        }
    }
}

fn configure(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    read_only: bool,
    name: &[u8],
) -> std::result::Result<(), (&'static str, Errno)> {
    let mut info = LoopInfo64::zeroed();
    // Deliberately no LO_FLAGS_AUTOCLEAR (see the module docs).
    info.lo_flags = if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);

    let backing_fd =
        u32::try_from(backing.as_raw_fd()).map_err(|_| ("LOOP_CONFIGURE", Errno::EBADF))?;
    let mut config = LoopConfig {
        fd: backing_fd,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    match ioctl_ptr(dev, LOOP_CONFIGURE, &mut config) {
        Ok(_) => return Ok(()),
        // Kernel before 5.8: the ioctl does not exist.
        Err(Errno::EINVAL | Errno::ENOTTY) => {}
        Err(e) => return Err(("LOOP_CONFIGURE", e)),
    }

    ioctl_arg(dev, LOOP_SET_FD, libc::c_ulong::from(backing_fd)).map_err(|e| ("LOOP_SET_FD", e))?;
    // SET_STATUS64 cannot set READ_ONLY (it came from the fd's mode above).
    info.lo_flags = 0;
    if let Err(e) = ioctl_ptr(dev, LOOP_SET_STATUS64, &mut info) {
        let _ = ioctl_arg(dev, LOOP_CLR_FD, 0);
        // Report EBUSY here as a real error, not as "lost the race".
        let e = if e == Errno::EBUSY { Errno::EAGAIN } else { e };
        return Err(("LOOP_SET_STATUS64", e));
    }
    Ok(())
}

/// The kernel's status of `loop_dev`; `None` if it is not attached.
pub fn status(loop_dev: &Path) -> Result<Option<LoopStatus>> {
    let (path, _) = loop_identity(loop_dev)?;
    let dev = open_dev(&path, false, 0)
        .map_err(|e| NodeError::io(format!("opening {}", path.display()), e))?;
    match get_status(dev.as_fd()) {
        Ok(info) => Ok(Some(to_status(&info))),
        Err(Errno::ENXIO) => Ok(None),
        Err(errno) => Err(NodeError::Loop {
            op: "LOOP_GET_STATUS64",
            device: path,
            errno,
        }),
    }
}

/// The first loop device (lowest number) whose backing file is the inode
/// `file_ino` on device `file_dev` (both as in `stat(2)`: `st_dev`,
/// `st_ino`).
pub fn find_by_file(file_dev: u64, file_ino: u64) -> Result<Option<PathBuf>> {
    Ok(find_all_by_file(file_dev, file_ino)?.into_iter().next())
}

/// Every loop device backed by that inode, lowest number first (a file can
/// be attached more than once).
pub fn find_all_by_file(file_dev: u64, file_ino: u64) -> Result<Vec<PathBuf>> {
    let (major, minor) = (libc::major(file_dev), libc::minor(file_dev));
    Ok(attached()?
        .into_iter()
        .filter(|(_, s)| {
            (s.backing_major, s.backing_minor, s.backing_inode) == (major, minor, file_ino)
        })
        .map(|(path, _)| path)
        .collect())
}

/// Every attached loop device and its status, lowest number first.
pub fn attached() -> Result<Vec<(PathBuf, LoopStatus)>> {
    let mut found = Vec::new();
    for n in loop_numbers()? {
        // Only bound devices have a `loop` directory: skip the rest unopened.
        if !Path::new(&format!("/sys/block/loop{n}/loop")).exists() {
            continue;
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match open_dev(&path, false, 0) {
            Ok(d) => d,
            // No node (e.g. a minimal /dev) or being torn down: not usable.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => continue,
            Err(e) => return Err(NodeError::io(format!("opening {}", path.display()), e)),
        };
        match get_status(dev.as_fd()) {
            Ok(info) => found.push((path, to_status(&info))),
            Err(Errno::ENXIO) => {}
            Err(errno) => {
                return Err(NodeError::Loop {
                    op: "LOOP_GET_STATUS64",
                    device: path,
                    errno,
                });
            }
        }
    }
    Ok(found)
}

/// Numbers N of every `/sys/block/loopN`, ascending.
fn loop_numbers() -> Result<Vec<u32>> {
    let entries =
        std::fs::read_dir("/sys/block").map_err(|e| NodeError::io("listing /sys/block", e))?;
    let mut nums: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|s| s.strip_prefix("loop"))
                .and_then(|s| s.parse().ok())
        })
        .collect();
    nums.sort_unstable();
    Ok(nums)
}

/// The backing file of `loop_dev` as the kernel reports it
/// (`/sys/…/loop/backing_file`; may end in " (deleted)"), or `None` if the
/// device is not attached. Informative: for identity use [`find_by_file`].
pub fn backing_file(loop_dev: &Path) -> Result<Option<PathBuf>> {
    let (_, minor) = loop_identity(loop_dev)?;
    let attr = sys_dir(minor).join("loop/backing_file");
    match std::fs::read(&attr) {
        Ok(mut b) => {
            while b.last() == Some(&b'\n') {
                b.pop();
            }
            Ok(Some(PathBuf::from(OsString::from_vec(b))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::io(format!("reading {}", attr.display()), e)),
    }
}

/// Detach `loop_dev`. Not attached is success. Mounted, held, or still open
/// elsewhere is [`NodeError::LoopBusy`].
pub fn detach(loop_dev: &Path) -> Result<()> {
    let (path, minor) = loop_identity(loop_dev)?;
    let sys = sys_dir(minor);
    if !sys.join("loop").exists() {
        return Ok(()); // not attached
    }

    let mounts = mountinfo::mounts_of(LOOP_MAJOR, minor)?;
    if !mounts.is_empty() {
        let at: Vec<String> = mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        return Err(NodeError::LoopBusy {
            device: path,
            reason: format!("it is mounted at {}; unmount it first", at.join(", ")),
        });
    }
    let holders = holders(&sys)?;
    if !holders.is_empty() {
        return Err(NodeError::LoopBusy {
            device: path,
            reason: format!(
                "it is in use by {} (device-mapper or md); remove those first",
                holders.join(", ")
            ),
        });
    }

    // An exclusive open fails while a filesystem (in any mount namespace)
    // or a device-mapper target holds the device.
    let dev = match open_dev(&path, false, libc::O_EXCL) {
        Ok(d) => Some(d),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(NodeError::LoopBusy {
                device: path,
                reason: "it is in exclusive use (most likely mounted in another mount namespace); unmount it there first".to_string(),
            });
        }
        // Already being torn down.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
        Err(e) => return Err(NodeError::io(format!("opening {}", path.display()), e)),
    };
    if let Some(dev) = dev {
        match ioctl_arg(dev.as_fd(), LOOP_CLR_FD, 0) {
            Ok(_) | Err(Errno::ENXIO) => {}
            Err(errno) => {
                return Err(NodeError::Loop {
                    op: "LOOP_CLR_FD",
                    device: path,
                    errno,
                });
            }
        }
        // Closing our descriptor is what completes the detach on current
        // kernels.
        drop(dev);
    }

    let start = Instant::now();
    while sys.join("loop").exists() {
        if start.elapsed() >= DETACH_WAIT {
            return Err(NodeError::LoopBusy {
                device: path,
                reason: "another process still has it open; the kernel will finish the detach when that process closes it".to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn holders(sys: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(sys.join("holders")) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(NodeError::io(
            format!("listing {}", sys.join("holders").display()),
            e,
        )),
    }
}

/// Make the kernel re-read the backing file's size (after the file grew).
pub fn set_capacity(loop_dev: &Path) -> Result<()> {
    let (path, _) = loop_identity(loop_dev)?;
    let dev = open_dev(&path, false, 0)
        .map_err(|e| NodeError::io(format!("opening {}", path.display()), e))?;
    match ioctl_arg(dev.as_fd(), LOOP_SET_CAPACITY, 0) {
        Ok(_) => Ok(()),
        Err(Errno::ENXIO) => Err(NodeError::LoopNotAttached { device: path }),
        Err(errno) => Err(NodeError::Loop {
            op: "LOOP_SET_CAPACITY",
            device: path,
            errno,
        }),
    }
}

/// Best-effort detach for cleanup paths (tests, rollback): clears the fd
/// without the mounted/held checks, so the kernel detaches as soon as the
/// last user lets go. Errors are ignored.
pub fn detach_eventually(loop_dev: &Path) {
    if let Ok(dev) = open_dev(loop_dev, false, 0) {
        let _ = ioctl_arg(dev.as_fd(), LOOP_CLR_FD, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_the_kernel() {
        // Small numbers: identical to the classic 16-bit encoding.
        assert_eq!(kernel_encode_dev(8, 1), 0x0801);
        assert_eq!(kernel_encode_dev(254, 0), 0xfe00);
        // Large minor: high minor bits go above the major.
        assert_eq!(kernel_encode_dev(259, 0x12345), 0x1231_0345);
        for (ma, mi) in [(0, 0), (7, 3), (259, 65536), (4095, 0xfffff), (8, 256)] {
            assert_eq!(kernel_decode_dev(kernel_encode_dev(ma, mi)), (ma, mi));
        }
    }

    #[test]
    fn glibc_and_kernel_encodings_agree_after_conversion() {
        for (ma, mi) in [(8u32, 1u32), (259, 65536), (4095, 0xfffff), (0, 300)] {
            let st_dev = libc::makedev(ma, mi);
            assert_eq!((libc::major(st_dev), libc::minor(st_dev)), (ma, mi));
            assert_eq!(
                kernel_decode_dev(kernel_encode_dev(libc::major(st_dev), libc::minor(st_dev))),
                (ma, mi)
            );
        }
    }

    #[test]
    fn non_loop_devices_are_rejected() {
        let err = backing_file(Path::new("/dev/null")).expect_err("char");
        assert!(matches!(err, NodeError::NotBlockDevice { .. }), "{err:?}");
    }
}
