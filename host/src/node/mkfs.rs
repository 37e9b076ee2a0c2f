//! Probing devices and creating filesystems — fail-closed.
//!
//! The one rule: **mkfs never runs on a device unless a probe proved it
//! blank.** Everything here leans towards refusing:
//!
//! - [`probe`] uses `blkid -p -o export` (low-level superblock probe, no
//!   cache). Exit 0 is parsed; exit 2 ("nothing found") is *not* trusted on
//!   its own, because blkid also exits 2 when it cannot open the device at
//!   all (a missing path probes "blank"!). So on exit 2 we open and read the
//!   first [`PARANOID_BYTES`] of the device ourselves: the read must succeed,
//!   return data, and be all zeros. Bytes that blkid cannot name (say, a
//!   disk wiped with `wipefs`, which only clears magic numbers, or raw data
//!   of some application) make the device [`Signature::Other`], which mkfs
//!   refuses. 64 KiB covers every common superblock and partition-table
//!   location at the start of a disk and costs one small read. Exit 8
//!   (several conflicting signatures) is `Other` too. Any other exit, a
//!   timeout, or unparsable output is an error.
//! - [`format`] accepts only ext2/ext3/ext4/xfs/btrfs, probes first, and
//!   checks `extra_args` against a per-tool allowlist: force flags
//!   (`-F`, `-f`, `--force`) are rejected, and so are options that would
//!   read or write *other* host files or devices (`mke2fs -d/-l/-z/-J
//!   device=`, `mkfs.xfs -p/-c/-d name=/-l logdev=/-r rtdev=`, `mkfs.btrfs
//!   --rootdir`), change the fs type (`mke2fs -t`), or destroy metadata
//!   (`mke2fs -S`). Extra positional arguments (a second device!) and `--`
//!   are rejected; the device is always supplied by the host, last.
//! - Options that would harm the node later or keep mkfs busy for minutes
//!   are refused or bounded, each with its reason next to its rule (the
//!   allowlist modules): `mke2fs -e panic`, badblocks scans, offsets,
//!   oversized journals, orphan files and MMP intervals, and layouts whose
//!   cost grows with the device (too many block or allocation groups, inode
//!   tables over 1/16 of the device, inode tables written by mkfs itself on
//!   big devices). Sub-options of comma-list options are allowlisted one by
//!   one; an unknown one is refused, not passed on.
//! - A mkfs killed midway (its own limit, the call's deadline, a stop
//!   request, or the host killed with it) leaves a half-made filesystem,
//!   which no probe can tell from data. [`format_noted`] notes the device
//!   in the driver's state before mkfs runs and clears the note once the
//!   filesystem is verified; [`recover_interrupted`] wipes the start of a
//!   device with a note left behind, so the next try formats it as the
//!   first one did (`journal`). Probe, mkfs and verification hold the
//!   device's lock, so no other call decides on it meanwhile.
//! - Identity is never copied: a UUID option is refused (`mke2fs -U` only
//!   takes `random`/`time`), and a label is refused when a device on the
//!   node already carries it, so a plugin cannot make the node mount its
//!   volume where fstab or systemd expect another filesystem (the check and
//!   mkfs are not atomic: two calls racing on one new label can both pass).
//! - After mkfs, the device is probed again and must hold the requested
//!   filesystem.
//!
//! Here: running mkfs ([`format`]). Probing is in `probe`; the allowlist in
//! `args` (the parser and its rules), `ext`, `xfs` and `btrfs` (each tool's
//! options and their checks) and `layout` (the checks that need the
//! device's size).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::{NodeError, Result, blockdev, exec};

mod args;
mod btrfs;
mod ext;
pub(super) mod journal;
mod layout;
mod probe;
#[cfg(test)]
mod tests;
mod xfs;

pub use args::check_extra_args;
pub use journal::recover_interrupted;
pub use layout::CheckedArgs;
pub use probe::{Signature, parse_blkid_export, probe};

/// Filesystems [`format`] can create.
pub const SUPPORTED_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs"];
const SUPPORTED_FS_TEXT: &str = "ext2, ext3, ext4, xfs, btrfs";

/// How long `blkid` may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `mkfs.*` may take.
pub const MKFS_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of the device start must be zero when blkid finds nothing.
pub const PARANOID_BYTES: usize = 64 * 1024;

/// Units of the size checks.
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Whether [`format`] can create `fs_type`.
pub fn is_supported_fs(fs_type: &str) -> bool {
    SUPPORTED_FS.contains(&fs_type)
}

/// Create a `fs_type` filesystem on `device`, only if it probes blank.
pub fn format(device: &Path, fs_type: &str, extra_args: &[String]) -> Result<()> {
    format_inner(device, fs_type, extra_args, None)
}

/// [`format`], with the format noted in `journal` (the driver's
/// `host/formats/`) from just before mkfs runs until its filesystem is
/// verified, so that one cut short is known as the host's own and
/// [`recover_interrupted`] can start it again.
pub fn format_noted(
    device: &Path,
    fs_type: &str,
    extra_args: &[String],
    journal: &Path,
) -> Result<()> {
    format_inner(device, fs_type, extra_args, Some(journal))
}

fn format_inner(
    device: &Path,
    fs_type: &str,
    extra_args: &[String],
    journal: Option<&Path>,
) -> Result<()> {
    if !is_supported_fs(fs_type) {
        return Err(NodeError::UnsupportedFs {
            fs_type: fs_type.to_string(),
            operation: "formatting",
            supported: SUPPORTED_FS_TEXT,
        });
    }
    let checked = check_extra_args(fs_type, extra_args)?;
    for label in &checked.labels {
        if let Some(holder) = device_with_label(label)? {
            return Err(NodeError::MkfsArgRejected {
                fs_type: fs_type.to_string(),
                arg: label.clone(),
                reason: format!(
                    "{holder} already has a filesystem labelled {label:?}: a second one could \
                     make the node mount the wrong filesystem by label (fstab, systemd)"
                ),
            });
        }
    }
    let dev = blockdev::resolve_block_device(device)?;
    checked.check_device_size(fs_type, device_size(&dev)?)?;
    // From this probe to the verification: no other call probes, formats
    // or wipes this device (it would decide on what we are changing).
    let _lock = journal::lock_device(&dev)?;
    let found = probe(&dev)?;
    if !found.is_blank() {
        return Err(NodeError::MkfsRefused {
            device: device.to_path_buf(),
            holds: found,
        });
    }
    let noted = match journal {
        Some(dir) => match journal::incarnation(&dev)? {
            Some(id) => {
                journal::note(dir, &dev, &id, fs_type)?;
                Some((dir, id))
            }
            None => None,
        },
        None => None,
    };
    let dev_str = path_str(&dev)?;
    let program = format!("mkfs.{fs_type}");
    let mut args: Vec<&str> = vec!["-q"];
    args.extend(extra_args.iter().map(String::as_str));
    args.push(dev_str);
    exec::run_checked(&program, &args, MKFS_TIMEOUT).map_err(|e| match e {
        // Killed midway, mkfs leaves neither a blank device nor a usable
        // filesystem (measured: a killed mkfs.xfs leaves one that blkid
        // calls xfs and the kernel refuses to mount): say so, and how to
        // start again.
        NodeError::Timeout { .. }
        | NodeError::CallDeadline { .. }
        | NodeError::Cancelled { .. } => NodeError::MkfsInterrupted {
            device: device.to_path_buf(),
            cause: Box::new(e),
            noted: noted.is_some(),
        },
        other => other,
    })?;

    match probe(&dev)? {
        Signature::Filesystem { fs_type: ref t, .. } if t == fs_type => {}
        other => {
            return Err(NodeError::FormatNotVerified {
                device: device.to_path_buf(),
                fs_type: fs_type.to_string(),
                found: other,
            });
        }
    }
    if let Some((dir, id)) = noted {
        journal::clear(dir, &id)?;
    }
    Ok(())
}

/// The size of a block device in bytes.
fn device_size(device: &Path) -> Result<u64> {
    let mut file = File::open(device).map_err(|e| {
        NodeError::io(
            format!("cannot open {} to read its size", device.display()),
            e,
        )
    })?;
    file.seek(SeekFrom::End(0))
        .map_err(|e| NodeError::io(format!("cannot read the size of {}", device.display()), e))
}

/// A block device on the node whose filesystem has this label, if any:
/// `blkid -c /dev/null -t LABEL=… -o device` probes every device the kernel
/// lists, without a cache that could be stale. Exit 2 is "none".
fn device_with_label(label: &str) -> Result<Option<String>> {
    let token = format!("LABEL={label}");
    let args = ["-c", "/dev/null", "-t", token.as_str(), "-o", "device"];
    let out = exec::run("blkid", &args, PROBE_TIMEOUT)?;
    match out.status_code {
        Some(0) => Ok(out.stdout.lines().next().map(str::to_string)),
        Some(2) => Ok(None),
        _ => Err(NodeError::CommandFailed {
            command: exec::command_line("blkid", &args),
            status: out.status_text(),
            detail: out.detail(),
        }),
    }
}

pub(crate) fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| NodeError::NonUtf8Path {
        path: p.to_path_buf(),
    })
}
