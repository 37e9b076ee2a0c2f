//! The formats the host started and has not seen finish.
//!
//! mkfs is many writes, not one. Killed midway — the host SIGKILLed
//! together with mkfs (kubelet's cgroup killed on a restart or an OOM),
//! the call's deadline — it leaves a device that is neither blank nor a
//! filesystem that mounts: a killed mke2fs leaves group descriptors and no
//! superblock, which the probe calls unrecognised data; a killed mkfs.xfs
//! leaves a superblock the kernel refuses to mount (measured in
//! `tests/crash.rs`). The host never formats a device holding data, so
//! without more it would refuse that device for ever and the volume would
//! never mount.
//!
//! So, on a device it has just proved blank, [`super::format_noted`]
//! notes the device in the driver's state (synced) before it runs mkfs, and
//! removes the note (synced) only once the new filesystem probes as asked.
//! A note left behind says: the host started mkfs on this very device and
//! never saw it finish. Nothing on it was ever mounted (the host mounts a
//! device it formats only after the note is gone), so nothing on it is
//! data: [`recover_interrupted`] zeroes the device's start, so it probes
//! blank again, and the caller formats it as the first time.
//!
//! "This very device" is its numbers plus what tells apart the media that
//! can be behind the same numbers: the kernel's disk sequence number
//! (Linux 5.15+; a new one for every loop attach and media change) and, for
//! a loop device, its backing file (device, inode, offset), all in this
//! boot (`boot_id`: disk sequence numbers and inode numbers start again
//! after a reboot). A note matches only when all of these are the same, so
//! a plugin that attaches another image, or has its backend put another
//! LUN, at the same numbers does not get that one wiped. Where neither is
//! known (an older kernel, not a loop device), no note is taken and an
//! interrupted format needs a person, as its error says.
//!
//! And a matching note is only the first condition: the device must also
//! still hold what a cut-short mkfs leaves — data no probe recognises, or
//! an XFS superblock still flagged "mkfs in progress". A complete
//! filesystem, a partition table or any other signature found under a note
//! is never wiped (the format did finish, or something else is there
//! now): the note is dropped instead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::super::{NodeError, Result, blockdev, loopdev};
use super::Signature;

const MAGIC: &str = "flexwasm-format v1";

/// How much of the start of a device [`recover_interrupted`] zeroes: every
/// signature blkid looks for at the start (ext at 1 KiB, xfs at 0, btrfs at
/// 64 KiB, partition tables) and the 64 KiB the probe wants zero.
pub const WIPE_BYTES: u64 = 1 << 20;

/// What identifies the medium behind `device` now (see the module docs);
/// `None` when nothing tells media behind the same numbers apart.
pub fn incarnation(device: &Path) -> Result<Option<String>> {
    let (major, minor) = blockdev::dev_numbers(device)?;
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    // A partition's sequence number is its disk's.
    let diskseq = ["diskseq", "../diskseq"]
        .iter()
        .find_map(|f| std::fs::read_to_string(sys.join(f)).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let backing = if major == loopdev::LOOP_MAJOR {
        loopdev::status(device)?.map(|s| {
            format!(
                "{}:{}:{}+{}",
                s.backing_major, s.backing_minor, s.backing_inode, s.offset
            )
        })
    } else {
        None
    };
    if diskseq.is_none() && backing.is_none() {
        return Ok(None);
    }
    // Without the boot's identity a note could outlive the numbers it
    // names: take none.
    let Some(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    Ok(Some(format!(
        "{major}:{minor} diskseq={} loop={} boot={boot}",
        diskseq.as_deref().unwrap_or("-"),
        backing.as_deref().unwrap_or("-")
    )))
}

fn note_path(dir: &Path, incarnation: &str) -> PathBuf {
    dir.join(crate::digest::sha256_hex(incarnation.as_bytes()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| NodeError::io(format!("syncing {}", dir.display()), e))
}

/// Note, synced, that mkfs of `fs_type` is about to run on `device`
/// (`incarnation`).
pub fn note(dir: &Path, device: &Path, incarnation: &str, fs_type: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |what: &str, e| NodeError::io(format!("{what} in {}", dir.display()), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("cannot note the format", e))?;
    let path = note_path(dir, incarnation);
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let text = format!("{MAGIC}\n{incarnation}\n{fs_type}\n{}\n", device.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("cannot note the format", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| io("cannot note the format", e))?;
    sync_dir(dir)
}

/// Remove the note of a format that finished, synced: from now on what is
/// on the device is a filesystem, which nothing may wipe.
pub fn clear(dir: &Path, incarnation: &str) -> Result<()> {
    match std::fs::remove_file(note_path(dir, incarnation)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::io(
            format!(
                "cannot remove the note of a finished format in {}",
                dir.display()
            ),
            e,
        )),
    }
}

/// The fs type of a format noted for `incarnation` and never finished.
fn noted(dir: &Path, incarnation: &str) -> Option<String> {
    let text = std::fs::read_to_string(note_path(dir, incarnation)).ok()?;
    let mut lines = text.lines();
    (lines.next()? == MAGIC && lines.next()? == incarnation)
        .then(|| lines.next().unwrap_or("").to_string())
}

/// If the host started mkfs on `device` (as it is now, see [`incarnation`])
/// and never saw it finish, zero the device's first [`WIPE_BYTES`] so it
/// probes blank again, and say which filesystem was being made. The device
/// is opened exclusively first: while a killed call's mkfs still runs
/// (orphaned), or anything has it mounted, this fails and wipes nothing.
/// Temp files of notes cut short are removed.
pub fn recover_interrupted(device: &Path, dir: &Path) -> Result<Option<String>> {
    remove_temp_files(dir);
    // Nearly always: no format was ever cut short.
    let any_note = std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
    });
    if !any_note {
        return Ok(None);
    }
    let Some(id) = incarnation(device)? else {
        return Ok(None);
    };
    let Some(fs_type) = noted(dir, &id) else {
        return Ok(None);
    };
    let dev = blockdev::resolve_block_device(device)?;
    let _lock = lock_device(&dev)?;
    // Under the lock: the format may have finished (and its note gone)
    // while we waited.
    if noted(dir, &id).is_none() {
        return Ok(None);
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&dev)
        .map_err(|e| {
            NodeError::io(
                format!(
                    "a format of {} as {fs_type} was cut short and must be done again, but the \
                     device is in use (its mkfs still running, or mounted); try again",
                    dev.display()
                ),
                e,
            )
        })?;
    // What is there now decides, not the note alone.
    let found = super::probe(&dev)?;
    let cut_short = match &found {
        Signature::Filesystem { fs_type: found, .. } if found == "xfs" && fs_type == "xfs" => {
            xfs_mkfs_in_progress(&file)?
        }
        other => other.is_unrecognised_data(),
    };
    if !cut_short {
        // Blank (nothing to wipe), or a whole filesystem or other
        // structure: never wiped. The note has done its work.
        clear(dir, &id)?;
        return Ok(None);
    }
    let size = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
        .map_err(|e| NodeError::io(format!("cannot read the size of {}", dev.display()), e))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
        .map_err(|e| NodeError::io(format!("cannot seek {}", dev.display()), e))?;
    let zeros = vec![0u8; WIPE_BYTES.min(size) as usize];
    file.write_all(&zeros)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            NodeError::io(
                format!(
                    "cannot wipe what a cut-short format left on {}",
                    dev.display()
                ),
                e,
            )
        })?;
    // Blank again at its start: what follows is a first format, noted
    // afresh.
    clear(dir, &id)?;
    Ok(Some(fs_type))
}

/// Whether the XFS superblock at the start of `device` still has
/// `sb_inprogress` set: mkfs.xfs sets it first and clears it last, and the
/// kernel refuses to mount such a filesystem.
fn xfs_mkfs_in_progress(device: &File) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    // struct xfs_dsb: sb_magicnum at 0, sb_inprogress (one byte) at 126.
    let mut sb = [0u8; 128];
    device
        .read_exact_at(&mut sb, 0)
        .map_err(|e| NodeError::io("cannot read the XFS superblock", e))?;
    Ok(&sb[..4] == b"XFSB" && sb[126] != 0)
}

/// Temp files of [`note`]s cut short (their writer killed): no note, so
/// nothing to act on; removed, so they do not pile up. Only those whose
/// writer is gone: its pid is in the name.
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// An exclusive `flock` of `device`'s node, held while it is probed,
/// formatted and verified, or wiped: two calls never decide on one device
/// at once (a probe taken before another call's mkfs would be stale). It
/// is the lock systemd documents for tools that write a block device
/// ("Locking Block Device Access"; udev does not probe a device while it
/// is held). Waited for until the call's deadline.
pub fn lock_device(device: &Path) -> Result<nix::fcntl::Flock<File>> {
    use nix::fcntl::{Flock, FlockArg};
    let open = || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(device)
            .map_err(|e| NodeError::io(format!("cannot open {} to lock it", device.display()), e))
    };
    let until = super::super::exec::call_deadline();
    let mut file = open()?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                if until.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(NodeError::sys(
                        format!(
                            "{} stayed locked by another call formatting or probing it until \
                             the call's deadline",
                            device.display()
                        ),
                        nix::errno::Errno::EWOULDBLOCK,
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                file = f;
            }
            Err((_, errno)) => {
                return Err(NodeError::sys(
                    format!("cannot lock {}", device.display()),
                    errno,
                ));
            }
        }
    }
}
