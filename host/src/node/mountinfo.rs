//! The mount table, from `/proc/thread-self/mountinfo`.
//!
//! We read `/proc/thread-self/mountinfo` (falling back to
//! `/proc/self/mountinfo` on kernels older than 3.17): mount namespaces are
//! per *thread*, and `/proc/self` names the thread-group leader, which may be
//! in a different namespace than the calling thread. In the single-threaded
//! host both are the same file.
//!
//! Line format (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)  (4)   (5)      (6)       (7)  (8) (9)    (10)         (11)
//! ```
//!
//! Fields 4, 5, 9 and 10 (and, in theory, the option lists) escape space,
//! tab, newline and backslash as `\NNN` octal; we undo that. Mount points are
//! kept as raw bytes (`PathBuf`), so a non-UTF-8 path round-trips.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use super::{NodeError, Result};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `st_dev` of files in this mount. For block-device filesystems such as
    /// ext4 or xfs it is the device's number; btrfs and overlay report an
    /// anonymous `0:N` instead.
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that is mounted here (`/` unless this
    /// is a bind mount of a subdirectory).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, `relatime`, …).
    pub options: Vec<String>,
    /// Propagation tags such as `shared:1`, `master:2`, `unbindable`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options (`rw`, `errors=remount-ro`, …).
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether this mount is read-only at the mount level.
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Read and parse the calling thread's mount table.
pub fn read() -> Result<Vec<MountEntry>> {
    let text = match std::fs::read_to_string("/proc/thread-self/mountinfo") {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| NodeError::io("reading /proc/self/mountinfo", e))?
        }
        Err(e) => return Err(NodeError::io("reading /proc/thread-self/mountinfo", e)),
    };
    parse(&text)
}

/// Parse mountinfo text. Any malformed line is an error naming the line:
/// guessing at a mount table is how the wrong thing gets unmounted.
pub fn parse(text: &str) -> Result<Vec<MountEntry>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_line(line).map_err(|reason| NodeError::MountinfoParse {
                line: i + 1,
                reason,
                text: line.to_string(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> std::result::Result<MountEntry, String> {
    // Fields are separated by single spaces; escaped values contain none.
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| "no \" - \" separator".to_string())?;
    if sep < 6 {
        return Err(format!(
            "expected at least 6 fields before \" - \", found {sep}"
        ));
    }
    let after = &fields[sep + 1..];
    if after.len() < 3 {
        return Err(format!(
            "expected 3 fields after \" - \", found {}",
            after.len()
        ));
    }
    let mount_id = fields[0]
        .parse::<u32>()
        .map_err(|_| format!("bad mount id {:?}", fields[0]))?;
    let parent_id = fields[1]
        .parse::<u32>()
        .map_err(|_| format!("bad parent id {:?}", fields[1]))?;
    let (major, minor) = parse_dev(fields[2])?;
    Ok(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root: unescape_string(fields[3]),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        options: split_list(fields[5]),
        optional_fields: fields[6..sep].iter().map(|f| unescape_string(f)).collect(),
        fs_type: unescape_string(after[0]),
        source: unescape_string(after[1]),
        // Anything after field 11 would be a format extension; the options
        // themselves never contain a raw space.
        super_options: split_list(after[2]),
    })
}

fn parse_dev(field: &str) -> std::result::Result<(u32, u32), String> {
    let (ma, mi) = field
        .split_once(':')
        .ok_or_else(|| format!("bad device number {field:?}"))?;
    let major = ma
        .parse::<u32>()
        .map_err(|_| format!("bad major number {field:?}"))?;
    let minor = mi
        .parse::<u32>()
        .map_err(|_| format!("bad minor number {field:?}"))?;
    Ok((major, minor))
}

fn split_list(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .map(unescape_string)
        .collect()
}

/// Undo the kernel's `\NNN` octal escapes. A backslash not followed by
/// exactly three octal digits (value ≤ 0o377) is kept literally.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && is_octal_escape(&b[i + 1..i + 4]) {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            // is_octal_escape guarantees v <= 0o377.
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn is_octal_escape(d: &[u8]) -> bool {
    d.len() == 3
        && (b'0'..=b'3').contains(&d[0])
        && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
}

fn unescape_string(field: &str) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// The topmost mount whose mount point is `path`, or `None`.
///
/// `path` is canonicalised first when possible. If it cannot be (a dead
/// FUSE or NFS mount answers `stat` with ENOTCONN/ESTALE/EIO), its parent is
/// canonicalised and the last component appended, so a broken mount can
/// still be found and unmounted. A path that does not exist is compared
/// lexically (made absolute, `.`/`..` folded).
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    let wanted = comparable_path(path)?;
    let entries = read()?;
    Ok(topmost_at(&entries, &wanted).cloned())
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(mount_at(path)?.is_some())
}

/// Every mount whose `st_dev` is `major:minor` (in mount-table order).
/// A device mounted in several places, or bind-mounted, appears once per
/// mount.
pub fn mounts_of(major: u32, minor: u32) -> Result<Vec<MountEntry>> {
    Ok(read()?
        .into_iter()
        .filter(|e| e.major == major && e.minor == minor)
        .collect())
}

/// Among the entries mounted at `path`, the one on top of the stack: the
/// one that no other entry at the same path is mounted over. Falls back to
/// the last such line (mountinfo lists mounts in creation order).
pub fn topmost_at<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let here: Vec<&MountEntry> = entries.iter().filter(|e| e.mount_point == path).collect();
    here.iter()
        .rev()
        .find(|e| !here.iter().any(|other| other.parent_id == e.mount_id))
        .or(here.last())
        .copied()
}

/// The form of `path` that appears in mountinfo.
fn comparable_path(path: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => {
            // The path exists but cannot be stat'ed through (dead mount):
            // resolve the parent only.
            let abs = lexical_absolute(path)?;
            if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name())
                && let Ok(p) = std::fs::canonicalize(parent)
            {
                return Ok(p.join(name));
            }
            return Ok(abs);
        }
    }
    lexical_absolute(path)
}

/// Absolute, with `.` and `..` folded, without touching the filesystem.
fn lexical_absolute(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| NodeError::io("reading the current directory", e))?
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard,resuid=65534
36 27 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue
40 27 7:3 / /var/lib/kubelet/pods/x/volumes/a~b/vol ro,nosuid,nodev - xfs /dev/loop3 ro,attr2,inode64
41 40 0:50 / /var/lib/kubelet/pods/x/volumes/a~b/vol rw - tmpfs tmpfs rw,size=4k
";

    #[test]
    fn parses_all_fields() {
        let m = parse(SAMPLE).expect("parses");
        assert_eq!(m.len(), 5);
        let e = &m[2];
        assert_eq!(e.mount_id, 36);
        assert_eq!(e.parent_id, 27);
        assert_eq!((e.major, e.minor), (98, 0));
        assert_eq!(e.root, "/mnt1");
        assert_eq!(e.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(e.options, vec!["rw", "noatime"]);
        assert_eq!(e.optional_fields, vec!["master:1", "shared:7"]);
        assert_eq!(e.fs_type, "ext3");
        assert_eq!(e.source, "/dev/root");
        assert_eq!(e.super_options, vec!["rw", "errors=continue"]);
        assert!(m[0].optional_fields.is_empty());
        assert!(m[3].is_read_only());
        assert!(!m[2].is_read_only());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        // Not a valid escape: kept literally.
        assert_eq!(unescape(r"a\04"), b"a\\04");
        assert_eq!(unescape(r"a\9999"), b"a\\9999");
        assert_eq!(unescape(r"trailing\"), b"trailing\\");
        // Non-UTF-8 bytes survive in mount points.
        let m = parse("1 0 8:1 / /mnt/\\377x rw - ext4 /dev/sda1 rw\n").expect("parses");
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(m[0].mount_point.as_os_str().as_bytes(), b"/mnt/\xffx");
    }

    #[test]
    fn escaped_source_and_root() {
        let m = parse("5 1 0:40 /sub\\040dir /mnt/b rw - fuse.sshfs user@host:/my\\040files rw\n")
            .expect("parses");
        assert_eq!(m[0].root, "/sub dir");
        assert_eq!(m[0].source, "user@host:/my files");
        assert_eq!(m[0].fs_type, "fuse.sshfs");
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for bad in [
            "22 27 0:21 / /proc rw,relatime proc proc rw", // no separator
            "22 27 0:21 / - proc proc rw",                 // too few before
            "22 27 0:21 / /proc rw - proc proc",           // too few after
            "x 27 0:21 / /proc rw - proc proc rw",         // bad id
            "22 27 021 / /proc rw - proc proc rw",         // bad dev
            "22 27 0:z / /proc rw - proc proc rw",         // bad minor
        ] {
            let text = format!("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n{bad}\n");
            let err = parse(&text).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.starts_with("cannot parse mountinfo line 2: "), "{msg}");
        }
    }

    #[test]
    fn empty_source_is_allowed() {
        // Some filesystems show an empty source ("none" is also common).
        let m = parse("9 1 0:60 / /mnt/x rw - tmpfs  rw\n").expect("parses");
        assert_eq!(m[0].source, "");
        assert_eq!(m[0].super_options, vec!["rw"]);
    }

    #[test]
    fn topmost_picks_the_mount_on_top() {
        let m = parse(SAMPLE).expect("parses");
        let p = Path::new("/var/lib/kubelet/pods/x/volumes/a~b/vol");
        let top = topmost_at(&m, p).expect("found");
        assert_eq!(top.mount_id, 41);
        assert_eq!(top.fs_type, "tmpfs");
        assert!(topmost_at(&m, Path::new("/var/lib")).is_none());

        // Order in the file does not matter: the child (mounted over) wins.
        let reordered: Vec<MountEntry> = vec![m[4].clone(), m[3].clone()];
        assert_eq!(topmost_at(&reordered, p).expect("found").mount_id, 41);
    }

    #[test]
    fn lexical_absolute_folds_dots() {
        assert_eq!(
            lexical_absolute(Path::new("/a/./b/../c/")).expect("ok"),
            PathBuf::from("/a/c")
        );
        assert_eq!(
            lexical_absolute(Path::new("/../..")).expect("ok"),
            PathBuf::from("/")
        );
    }

    #[test]
    fn reads_the_real_table() {
        let m = read().expect("mountinfo readable");
        assert!(m.iter().any(|e| e.mount_point == Path::new("/")));
        assert!(is_mount_point(Path::new("/")).expect("ok"));
        assert!(is_mount_point(Path::new("/proc")).expect("ok"));
        assert!(!is_mount_point(Path::new("/proc/self")).expect("ok"));
        assert!(!is_mount_point(Path::new("/nonexistent/flexwasm")).expect("ok"));
    }
}
