//! Loop devices: read from sysfs, changed with `losetup`.
//!
//! Reading `/sys/block/loopN/loop/backing_file` needs no privilege and no
//! subprocess, and it is exactly what a plugin on the node sees. Changes go
//! through `losetup` (util-linux), which knows the loop-control dance and its
//! races better than a hand-written ioctl sequence would.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `losetup --find` picks a free device and then binds it; two threads doing
/// that at once can pick the same one. All changes in this process go
/// through this lock (the server also holds its store lock around them).
static LOSETUP_LOCK: Mutex<()> = Mutex::new(());

/// The sysfs name (`loopN`) of a `/dev/loopN` path, or `None` if `device`
/// is not one: keeps a stored or requested string from pointing anywhere
/// else in /sys.
fn sys_name(device: &str) -> Option<&str> {
    let name = device.strip_prefix("/dev/")?;
    let number = name.strip_prefix("loop")?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

/// The file backing `device` (`/dev/loopN`), or `None` if it is unbound or
/// not a loop device. A backing file deleted since has ` (deleted)` appended
/// by the kernel, so it no longer compares equal to the path it had.
pub fn backing_file(device: &str) -> Option<PathBuf> {
    let name = sys_name(device)?;
    let raw = fs::read(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
    Some(PathBuf::from(OsStr::from_bytes(raw)))
}

/// The size of `device` in bytes as the kernel sees it now.
pub fn size_bytes(device: &str) -> Option<u64> {
    let name = sys_name(device)?;
    let sectors = fs::read_to_string(format!("/sys/block/{name}/size")).ok()?;
    sectors.trim().parse::<u64>().ok()?.checked_mul(512)
}

/// Every bound loop device with its backing file, sorted by device.
pub fn list() -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut devices: Vec<(String, PathBuf)> = entries
        .filter_map(|entry| {
            let device = format!("/dev/{}", entry.ok()?.file_name().to_str()?);
            let file = backing_file(&device)?;
            Some((device, file))
        })
        .collect();
    devices.sort();
    devices
}

/// The loop devices backed by exactly `file` (an absolute, canonical path).
pub fn backed_by(file: &Path) -> Vec<String> {
    list()
        .into_iter()
        .filter(|(_, backing)| backing == file)
        .map(|(device, _)| device)
        .collect()
}

/// The loop devices backed by a file under `dir` (canonicalised here, as the
/// kernel reports canonical paths).
pub fn backed_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    list()
        .into_iter()
        .filter(|(_, backing)| backing.starts_with(&dir))
        .collect()
}

/// Loop-attaches `file` (absolute, canonical) and returns the device. A
/// device already backed by `file` is reused, so a retried attach does not
/// stack a second device on the same image.
pub fn attach(file: &Path) -> io::Result<String> {
    let _guard = LOSETUP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(device) = backed_by(file).into_iter().next() {
        return Ok(device);
    }
    // --nooverlap makes losetup itself reuse a device another process bound
    // to the same file between our check and this call.
    let out = losetup(&[
        OsStr::new("--find"),
        OsStr::new("--show"),
        OsStr::new("--nooverlap"),
        file.as_os_str(),
    ])?;
    let device = out.trim().to_string();
    if sys_name(&device).is_none() {
        return Err(io::Error::other(format!(
            "losetup printed {device:?}, not a loop device"
        )));
    }
    Ok(device)
}

/// Detaches `device`. With the device still open (mounted), the kernel
/// detaches it on last close instead, which is what a storage array's
/// detach amounts to as well.
pub fn detach(device: &str) -> io::Result<()> {
    checked(device)?;
    let _guard = LOSETUP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    losetup(&[OsStr::new("--detach"), OsStr::new(device)]).map(drop)
}

/// Makes `device` pick up the current size of its backing file.
pub fn refresh_size(device: &str) -> io::Result<()> {
    checked(device)?;
    let _guard = LOSETUP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    losetup(&[OsStr::new("--set-capacity"), OsStr::new(device)]).map(drop)
}

/// Best effort: detaches every loop device backed by a file under `dir` and
/// returns the ones it could not detach. Test cleanup.
pub fn detach_all_under(dir: &Path) -> Vec<(String, io::Error)> {
    backed_under(dir)
        .into_iter()
        .filter_map(|(device, _)| detach(&device).err().map(|e| (device, e)))
        .collect()
}

fn checked(device: &str) -> io::Result<()> {
    match sys_name(device) {
        Some(_) => Ok(()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{device:?} is not a /dev/loopN path"),
        )),
    }
}

/// Runs losetup and returns its stdout; a failure carries its stderr.
fn losetup(args: &[&OsStr]) -> io::Result<String> {
    let out = Command::new("losetup").args(args).output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(io::Error::other(format!(
        "losetup {}: {} ({})",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        stderr.trim(),
        out.status
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dev_loop_paths_reach_sysfs() {
        assert_eq!(sys_name("/dev/loop7"), Some("loop7"));
        assert_eq!(sys_name("/dev/loop"), None);
        assert_eq!(sys_name("/dev/loop7/../sda"), None);
        assert_eq!(sys_name("/dev/sda"), None);
        assert_eq!(sys_name("loop7"), None);
        assert_eq!(backing_file("/dev/loop../../etc"), None);
    }
}
