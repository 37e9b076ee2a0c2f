//! Files the host trusts, and what makes a file trustworthy.
//!
//! The host runs as root and acts on what some files say: the grant policy
//! (what a plugin may do), `plugin.wasm` and its precompiled code (what
//! runs), `[config] file = …` entries (credentials), `[http] ca_bundle`
//! (whom TLS trusts). Whoever can change one of them can make the host do
//! what they want. So a trusted file must be one **only root can change**:
//!
//! - a regular file (not a FIFO or device, which could block a call or
//!   feed it endless data), owned by root, not writable by group or others;
//! - in directories that all, from `/` down, are owned by root and not
//!   writable by group or others — or have the sticky bit (like `/tmp`),
//!   where nobody but root can rename or remove root's entries.
//!
//! When the host itself is not root (a developer running it unprivileged),
//! "root" means root or the user the host runs as.
//!
//! Checking a path and then opening it is racy only if someone can change
//! the path in between; a path whose every directory only root can change
//! cannot be changed by anyone else. The file is opened `O_NOFOLLOW |
//! O_NONBLOCK` (a FIFO swapped in cannot block) and checked again through
//! the open descriptor.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a file is not trusted; the message names the file and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {why}", .path.display())]
pub struct Untrusted {
    pub path: PathBuf,
    pub why: String,
}

fn untrusted(path: &Path, why: impl Into<String>) -> Untrusted {
    Untrusted {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn unreadable(path: &Path, e: std::io::Error) -> Untrusted {
    untrusted(path, format!("cannot be read: {e}"))
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

const FIX: &str =
    "make it owned by root and not writable by group or others (chown root; chmod go-w)";

fn check_file_meta(path: &Path, meta: &Metadata) -> Result<(), Untrusted> {
    if !meta.file_type().is_file() {
        return Err(untrusted(path, "is not a regular file"));
    }
    if !trusted_owner(meta.uid()) {
        return Err(untrusted(
            path,
            format!("is owned by uid {}, not root: {FIX}", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            format!(
                "is writable by {} (mode {:04o}): {FIX}",
                if meta.mode() & 0o002 != 0 {
                    "anyone"
                } else {
                    "its group"
                },
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Every directory from `/` to `dir` (inclusive), which must be absolute
/// and free of `..`, only root can change.
fn check_dirs(dir: &Path) -> Result<(), Untrusted> {
    if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
        return Err(untrusted(dir, "is not an absolute path without '..'"));
    }
    let mut at = PathBuf::from("/");
    let components = std::iter::once(Component::RootDir).chain(dir.components().skip(1));
    for component in components {
        if component != Component::RootDir {
            at.push(component);
        }
        let meta = std::fs::symlink_metadata(&at).map_err(|e| unreadable(&at, e))?;
        if !meta.file_type().is_dir() {
            return Err(untrusted(
                &at,
                "is not a directory (a symlink in a trusted path is not followed)",
            ));
        }
        if !trusted_owner(meta.uid()) {
            return Err(untrusted(
                &at,
                format!(
                    "is owned by uid {}, not root, so its owner could replace what it holds: {FIX}",
                    meta.uid()
                ),
            ));
        }
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(untrusted(
                &at,
                format!(
                    "is writable by others (mode {:04o}), so they could replace what it holds: {FIX}",
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `path` (not followed if it is a symlink) is a file only root
/// can change, in directories only root can change.
pub fn check(path: &Path) -> Result<(), Untrusted> {
    let parent = path
        .parent()
        .ok_or_else(|| untrusted(path, "has no parent directory"))?;
    check_dirs(parent)?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| unreadable(path, e))?;
    check_file_meta(path, &meta)
}

/// [`check`] as a bool.
pub fn only_root_can_change(path: &Path) -> bool {
    check(path).is_ok()
}

/// Open a trusted file for reading. With `follow`, symlinks in `path` are
/// resolved first and the file they lead to is what must be trusted (an
/// operator's credentials are often a link into a secret mount).
pub fn open(path: &Path, follow: bool) -> Result<File, Untrusted> {
    let real = if follow {
        std::fs::canonicalize(path).map_err(|e| unreadable(path, e))?
    } else {
        path.to_path_buf()
    };
    check(&real).map_err(|mut e| {
        if real != path {
            e.why = format!("{} (the file {} leads to)", e.why, path.display());
        }
        e
    })?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| unreadable(&real, e))?;
    let meta = file.metadata().map_err(|e| unreadable(&real, e))?;
    check_file_meta(&real, &meta)?;
    Ok(file)
}

/// Read a trusted file of at most `max` bytes.
pub fn read(path: &Path, follow: bool, max: u64) -> Result<Vec<u8>, Untrusted> {
    let file = open(path, follow)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, e))?;
    if bytes.len() as u64 > max {
        return Err(untrusted(
            path,
            format!("is larger than {} KiB", max.div_ceil(1024)),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn writable_files_and_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        chmod(&d, 0o755);
        let f = d.join("policy.toml");
        std::fs::write(&f, "x").unwrap();
        chmod(&f, 0o644);
        assert_eq!(read(&f, false, 10).unwrap(), b"x");
        chmod(&f, 0o666);
        assert!(check(&f).unwrap_err().why.contains("writable by anyone"));
        chmod(&f, 0o664);
        assert!(check(&f).unwrap_err().why.contains("its group"));
        chmod(&f, 0o644);
        chmod(&d, 0o777);
        let e = check(&f).unwrap_err();
        assert_eq!(e.path, d);
        // Sticky, like /tmp: others cannot replace root's entries.
        chmod(&d, 0o1777);
        assert!(check(&f).is_ok());
        chmod(&d, 0o755);
        assert!(read(&f, false, 0).unwrap_err().why.contains("larger than"));
    }

    #[test]
    fn fifos_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Refused at once; it would block a reader forever.
        assert!(
            read(&fifo, true, 10)
                .unwrap_err()
                .why
                .contains("not a regular")
        );
        let target = dir.path().join("real");
        std::fs::write(&target, "v").unwrap();
        chmod(&target, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read(&link, true, 10).unwrap(), b"v");
        assert!(read(&link, false, 10).is_err());
    }
}
