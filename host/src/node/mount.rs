//! mount(2) and umount2(2), natively (no `mount` binary).
//!
//! Options arrive as `mount(8)`-style strings. [`split_options`] turns the
//! ones that are really mount *flags* (`ro`, `nosuid`, `noatime`, `bind`, …)
//! into `MsFlags` and joins everything else, in order, into the
//! filesystem's data string. `fstab`-only words that `mount(8)` consumes
//! itself (`defaults`, `auto`, `nofail`, `_netdev`, `x-*`, …) are dropped,
//! as `mount(8)` does, because the kernel would reject them.
//!
//! Bind mounts: the kernel ignores `MS_RDONLY`, `MS_NOSUID`, … on the call
//! that creates a bind mount, so [`mount`] applies them with a second
//! `MS_REMOUNT|MS_BIND` call (like `mount(8)`), and undoes the bind if that
//! fails. A read-only request therefore really is read-only.
//!
//! Unmounting never detaches lazily (`MNT_DETACH`): a busy mount is an
//! error the operator should see, not a mount that silently lingers.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, umount2};

use super::{NodeError, Result, mountinfo};

/// `MS_NOSYMFOLLOW` (Linux 5.10); not in nix's `MsFlags` list.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// Upper bound on layers [`unmount_all`] peels off one path.
pub const MAX_STACKED_MOUNTS: usize = 64;

/// What to mount where.
#[derive(Debug, Clone, Copy)]
pub struct MountRequest<'a> {
    /// Device, directory (bind), or fs-specific source (`tmpfs`, `host:/x`).
    pub source: &'a str,
    pub target: &'a Path,
    /// Empty for bind mounts and remounts.
    pub fs_type: &'a str,
    /// `mount(8)`-style options; an element may itself be a comma list.
    pub options: &'a [String],
    /// Adds `ro` (wins over an `rw` in `options`).
    pub read_only: bool,
}

/// Flags that the first call of a bind mount ignores and that must be
/// applied by a bind remount.
const PER_MOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME)
    .union(MS_NOSYMFOLLOW);

enum Effect {
    Set(MsFlags),
    Clear(MsFlags),
    /// Consumed by mount(8) in userspace; never reaches the kernel.
    Drop,
}

fn flag_effect(opt: &str) -> Option<Effect> {
    use Effect::*;
    let e = match opt {
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "lazytime" => Set(MsFlags::MS_LAZYTIME),
        "nolazytime" => Clear(MsFlags::MS_LAZYTIME),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "silent" => Set(MsFlags::MS_SILENT),
        "loud" => Clear(MsFlags::MS_SILENT),
        "iversion" => Set(MsFlags::MS_I_VERSION),
        "noiversion" => Clear(MsFlags::MS_I_VERSION),
        "nosymfollow" => Set(MS_NOSYMFOLLOW),
        "symfollow" => Clear(MS_NOSYMFOLLOW),
        "bind" => Set(MsFlags::MS_BIND),
        "rbind" => Set(MsFlags::MS_BIND | MsFlags::MS_REC),
        "remount" => Set(MsFlags::MS_REMOUNT),
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" | "users"
        | "owner" | "group" => Drop,
        _ if opt.starts_with("x-") || opt.starts_with("comment=") => Drop,
        _ => return None,
    };
    Some(e)
}

/// Split `mount(8)`-style options into kernel flags and the data string.
///
/// Each element may be a single option or a comma list; commas inside
/// double quotes (SELinux `context="a,b"`) do not split. Later options win
/// (`ro,rw` is read-write). Unknown options go to the data string, in order.
pub fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for element in options {
        for opt in split_commas(element) {
            if opt.is_empty() {
                continue;
            }
            match flag_effect(opt) {
                Some(Effect::Set(f)) => flags |= f,
                Some(Effect::Clear(f)) => flags &= !f,
                Some(Effect::Drop) => {}
                None => data.push(opt),
            }
        }
    }
    (flags, data.join(","))
}

/// Split on commas that are not inside double quotes.
fn split_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Mount `req.source` on `req.target`.
pub fn mount(req: MountRequest<'_>) -> Result<()> {
    let (mut flags, data) = split_options(req.options);
    if req.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let is_bind = flags.contains(MsFlags::MS_BIND);
    let is_remount = flags.contains(MsFlags::MS_REMOUNT);

    if is_bind && !is_remount {
        // Step 1: the bind itself (only MS_REC matters here).
        let bind_flags = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
        sys_mount(&req, Some(req.source), None, bind_flags, "")?;
        // Step 2: per-mount flags, which step 1 ignored.
        let extra = flags & PER_MOUNT_FLAGS;
        if !extra.is_empty() {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
            if let Err(e) = sys_mount(&req, None, None, remount, "") {
                // Don't leave a bind mount with weaker flags than asked for.
                let _ = umount2(req.target, MntFlags::UMOUNT_NOFOLLOW);
                return Err(e);
            }
        }
        return Ok(());
    }

    let source = if req.source.is_empty() {
        None
    } else {
        Some(req.source)
    };
    let fs_type = if req.fs_type.is_empty() {
        None
    } else {
        Some(req.fs_type)
    };
    sys_mount(&req, source, fs_type, flags, &data)
}

fn sys_mount(
    req: &MountRequest<'_>,
    source: Option<&str>,
    fs_type: Option<&str>,
    flags: MsFlags,
    data: &str,
) -> Result<()> {
    let data_opt = if data.is_empty() { None } else { Some(data) };
    nix::mount::mount(source, req.target, fs_type, flags, data_opt).map_err(|errno| {
        NodeError::Mount {
            what: req.source.to_string(),
            target: req.target.to_path_buf(),
            fs_type: if req.fs_type.is_empty() {
                describe_kind(flags).to_string()
            } else {
                req.fs_type.to_string()
            },
            data: describe_options(flags, data),
            errno,
            hint: mount_hint(errno),
        }
    })
}

fn describe_kind(flags: MsFlags) -> &'static str {
    if flags.contains(MsFlags::MS_REMOUNT) {
        "remount"
    } else if flags.contains(MsFlags::MS_BIND) {
        "bind"
    } else {
        "unspecified"
    }
}

/// The options as the kernel saw them, for error messages.
fn describe_options(flags: MsFlags, data: &str) -> String {
    let names = [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_NODIRATIME, "nodiratime"),
        (MsFlags::MS_RELATIME, "relatime"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
        (MsFlags::MS_LAZYTIME, "lazytime"),
        (MsFlags::MS_SYNCHRONOUS, "sync"),
        (MsFlags::MS_DIRSYNC, "dirsync"),
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_REC, "rec"),
        (MsFlags::MS_REMOUNT, "remount"),
        (MS_NOSYMFOLLOW, "nosymfollow"),
    ];
    let mut parts: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    if !flags.contains(MsFlags::MS_RDONLY) {
        parts.insert(0, "rw");
    }
    if !data.is_empty() {
        parts.push(data);
    }
    parts.join(",")
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENODEV => {
            "; the kernel has no driver for this filesystem type (is the module loaded?)"
        }
        Errno::ENOTBLK => "; the source is not a block device",
        Errno::ENOENT | Errno::ENXIO => "; the source or the target directory does not exist",
        Errno::ENOTDIR => "; the target (or a component of a path) is not a directory",
        Errno::EBUSY => "; the source is already mounted or in use elsewhere",
        Errno::EINVAL => {
            "; wrong filesystem type, bad mount option, or bad superblock (the kernel log, dmesg, usually says which)"
        }
        Errno::EACCES | Errno::EROFS => "; the device is read-only: mount it with ro",
        Errno::EPERM => "; not permitted (the driver must run as root in the host mount namespace)",
        Errno::EUCLEAN => "; the filesystem is corrupt: check it with fsck before mounting",
        Errno::ELOOP => "; too many symbolic links in the path",
        _ => "",
    }
}

/// Unmount the topmost mount at `target`.
///
/// `Ok(false)` means nothing was mounted there (not an error: unmount must
/// be idempotent). A busy mount is [`NodeError::UnmountBusy`]; it is never
/// detached lazily.
pub fn unmount(target: &Path) -> Result<bool> {
    let Some(entry) = mountinfo::mount_at(target)? else {
        return Ok(false);
    };
    // Use the mount point exactly as the kernel reports it (canonical), and
    // don't follow a symlink someone may have put there since.
    match umount2(&entry.mount_point, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EBUSY) => Err(NodeError::UnmountBusy {
            target: target.to_path_buf(),
        }),
        // Someone else unmounted it between our look and our call.
        Err(errno @ (Errno::EINVAL | Errno::ENOENT)) => {
            if mountinfo::mount_at(target)?.is_none() {
                Ok(false)
            } else {
                Err(NodeError::Unmount {
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
        Err(errno) => Err(NodeError::Unmount {
            target: target.to_path_buf(),
            errno,
        }),
    }
}

/// Unmount `target` until nothing is mounted there (stacked mounts).
/// Returns how many layers were removed (0 if nothing was mounted).
pub fn unmount_all(target: &Path) -> Result<usize> {
    let mut layers = 0;
    while unmount(target)? {
        layers += 1;
        if layers >= MAX_STACKED_MOUNTS && mountinfo::is_mount_point(target)? {
            return Err(NodeError::UnmountStuck {
                target: target.to_path_buf(),
                layers,
            });
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_data_are_separated() {
        let (f, d) = split_options(&opts(&[
            "ro",
            "nosuid",
            "nodev",
            "noexec",
            "discard",
            "errors=remount-ro",
        ]));
        assert_eq!(
            f,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        );
        assert_eq!(d, "discard,errors=remount-ro");
    }

    #[test]
    fn later_options_win() {
        let (f, _) = split_options(&opts(&["ro", "rw"]));
        assert!(!f.contains(MsFlags::MS_RDONLY));
        let (f, _) = split_options(&opts(&["nosuid", "suid", "nodev", "dev", "noexec", "exec"]));
        assert!(f.is_empty());
        let (f, _) = split_options(&opts(&["rw", "ro"]));
        assert!(f.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn all_documented_flags() {
        let cases: &[(&str, MsFlags)] = &[
            ("noatime", MsFlags::MS_NOATIME),
            ("relatime", MsFlags::MS_RELATIME),
            ("strictatime", MsFlags::MS_STRICTATIME),
            ("nodiratime", MsFlags::MS_NODIRATIME),
            ("sync", MsFlags::MS_SYNCHRONOUS),
            ("dirsync", MsFlags::MS_DIRSYNC),
            ("lazytime", MsFlags::MS_LAZYTIME),
            ("bind", MsFlags::MS_BIND),
            ("rbind", MsFlags::MS_BIND | MsFlags::MS_REC),
            ("remount", MsFlags::MS_REMOUNT),
            ("nosymfollow", MS_NOSYMFOLLOW),
        ];
        for (name, flag) in cases {
            let (f, d) = split_options(&opts(&[name]));
            assert_eq!(f, *flag, "{name}");
            assert_eq!(d, "", "{name}");
        }
    }

    #[test]
    fn comma_lists_inside_one_element() {
        let (f, d) = split_options(&opts(&["rw,noatime,size=10m", "mode=0755"]));
        assert_eq!(f, MsFlags::MS_NOATIME);
        assert_eq!(d, "size=10m,mode=0755");
    }

    #[test]
    fn quoted_commas_do_not_split() {
        let (f, d) = split_options(&opts(&[
            "context=\"system_u:object_r:container_file_t:s0:c1,c2\",ro",
        ]));
        assert_eq!(f, MsFlags::MS_RDONLY);
        assert_eq!(d, "context=\"system_u:object_r:container_file_t:s0:c1,c2\"");
    }

    #[test]
    fn fstab_only_words_are_dropped() {
        let (f, d) = split_options(&opts(&[
            "defaults",
            "nofail",
            "_netdev",
            "x-systemd.automount",
            "noauto",
            "comment=foo",
            "inode64",
        ]));
        assert!(f.is_empty());
        assert_eq!(d, "inode64");
    }

    #[test]
    fn empty_options() {
        let (f, d) = split_options(&[]);
        assert!(f.is_empty());
        assert_eq!(d, "");
        let (f, d) = split_options(&opts(&["", ",,"]));
        assert!(f.is_empty());
        assert_eq!(d, "");
    }

    #[test]
    fn option_names_are_exact() {
        // Case and whitespace matter to the kernel: no guessing.
        let (f, d) = split_options(&opts(&["RO", " ro"]));
        assert!(f.is_empty());
        assert_eq!(d, "RO, ro");
    }

    #[test]
    fn describe_options_renders_what_the_kernel_got() {
        assert_eq!(describe_options(MsFlags::empty(), ""), "rw");
        assert_eq!(
            describe_options(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID, "discard"),
            "ro,nosuid,discard"
        );
    }

    #[test]
    fn unmount_of_a_non_mount_point_is_false() {
        let dir = super::super::testutil::TempDir::new("not-a-mount");
        assert!(!unmount(dir.path()).expect("no error"));
        assert_eq!(unmount_all(dir.path()).expect("no error"), 0);
        assert!(!unmount(Path::new("/nonexistent/flexwasm-test")).expect("no error"));
        assert_eq!(
            unmount_all(Path::new("/nonexistent/flexwasm-test")).expect("ok"),
            0
        );
    }
}
