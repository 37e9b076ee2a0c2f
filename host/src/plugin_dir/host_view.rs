//! A path as another process sees it, as the host sees it.
//!
//! A kubelet in a container (RKE, kind, k3d) reads its flags relative to
//! its own root. Whether its root is ours is decided by comparing
//! `stat(<root>)` with `stat(<root>/proc/PID/root)` (device and inode: two
//! mount namespaces over the same root directory count as the same root).
//! When they differ, the path is carried over through the mounts: in the
//! process's `mountinfo` the mount holding the path gives a device and a
//! directory inside that filesystem; a mount of the same device in the
//! host's table (`<root>/proc/1/mountinfo`, init's namespace; ours when
//! init's cannot be read) whose root contains that directory gives the
//! host path. That is exactly how a hostPath or `docker -v` bind of the
//! plugin dir is seen from both sides.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::processes::read_bounded;
use crate::node::mountinfo::{self, MountEntry};

/// mountinfo of a busy node is a few hundred KiB at most.
const MOUNTINFO_LIMIT: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootRelation {
    Same,
    Different,
    /// Cannot tell (no `/proc/PID/root`, permission denied, …): treated as
    /// the same root, and said so.
    Unknown(String),
}

/// Whether process `pid` has the same root directory as `<root>`.
pub(crate) fn root_relation(root: &Path, pid: u32) -> RootRelation {
    let theirs_path = root.join("proc").join(pid.to_string()).join("root");
    let ours = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) => return RootRelation::Unknown(format!("stat {}: {e}", root.display())),
    };
    match std::fs::metadata(&theirs_path) {
        Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => RootRelation::Same,
        Ok(_) => RootRelation::Different,
        Err(e) => RootRelation::Unknown(format!("{}: {e}", theirs_path.display())),
    }
}

/// `path` with `.` and `..` folded lexically, made absolute.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `path` (absolute or not) inside `root`, never above it.
pub(crate) fn under(root: &Path, path: &Path) -> PathBuf {
    let rel = lexical(path);
    match rel.strip_prefix("/") {
        Ok(r) if r.as_os_str().is_empty() => root.to_path_buf(),
        Ok(r) => root.join(r),
        Err(_) => root.join(rel),
    }
}

fn read_mountinfo(path: &Path) -> Result<Vec<MountEntry>, String> {
    let (bytes, truncated) =
        read_bounded(path, MOUNTINFO_LIMIT).map_err(|e| format!("{}: {e}", path.display()))?;
    if truncated {
        return Err(format!("{}: larger than 16 MiB", path.display()));
    }
    mountinfo::parse(&String::from_utf8_lossy(&bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The mount of `entries` that holds `path`: the longest mount point that
/// is a prefix of it, the topmost of a stack.
fn mount_holding<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let best = entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .map(|e| e.mount_point.components().count())
        .max()?;
    let point = entries
        .iter()
        .find(|e| path.starts_with(&e.mount_point) && e.mount_point.components().count() == best)?
        .mount_point
        .clone();
    mountinfo::topmost_at(entries, &point)
}

/// Where the host sees process `pid`'s `path`: the host path and how it
/// was found, or why it could not be.
pub(crate) fn host_path(root: &Path, pid: u32, path: &Path) -> Result<(PathBuf, String), String> {
    let path = lexical(path);
    let theirs = read_mountinfo(&root.join("proc").join(pid.to_string()).join("mountinfo"))?;
    let host = read_mountinfo(&root.join("proc/1/mountinfo"))
        .or_else(|_| read_mountinfo(&root.join("proc/self/mountinfo")))?;
    let m = mount_holding(&theirs, &path)
        .ok_or_else(|| format!("no mount holds {} in its mount table", path.display()))?;
    let rest = path.strip_prefix(&m.mount_point).unwrap_or(Path::new(""));
    if m.root.contains('\u{fffd}') {
        return Err(format!(
            "the mount at {} has a non-UTF-8 root",
            m.mount_point.display()
        ));
    }
    let in_fs = Path::new(&m.root).join(rest);
    let (h, below) = host
        .iter()
        .filter(|e| (e.major, e.minor) == (m.major, m.minor))
        .filter_map(|e| Some((e, in_fs.strip_prefix(&e.root).ok()?)))
        .max_by_key(|(e, _)| {
            (
                Path::new(&e.root).components().count(),
                std::cmp::Reverse(e.mount_id),
            )
        })
        .ok_or_else(|| {
            format!(
                "its mount at {} ({}:{} {}) is not mounted on the host",
                m.mount_point.display(),
                m.major,
                m.minor,
                m.root
            )
        })?;
    let host_path = if below.as_os_str().is_empty() {
        h.mount_point.clone()
    } else {
        h.mount_point.join(below)
    };
    let how = format!(
        "its {} is on its mount at {} (device {}:{}, {} in that filesystem), which the host mounts at {}",
        path.display(),
        m.mount_point.display(),
        m.major,
        m.minor,
        in_fs.display(),
        h.mount_point.display()
    );
    Ok((host_path, how))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_stay_under_the_root() {
        assert_eq!(lexical(Path::new("/a/./b/../c/")), Path::new("/a/c"));
        assert_eq!(lexical(Path::new("../../x")), Path::new("/x"));
        assert_eq!(
            under(Path::new("/r"), Path::new("/../../etc")),
            Path::new("/r/etc")
        );
        assert_eq!(under(Path::new("/r"), Path::new("/")), Path::new("/r"));
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_prefix() {
        let entries = mountinfo::parse(
            "1 0 0:30 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/kubelet /var/lib/kubelet rw - ext4 /dev/sda1 rw\n\
             3 1 8:1 /srv /var/lib/kubeletx rw - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        let m = mount_holding(&entries, Path::new("/var/lib/kubelet/volumeplugins")).unwrap();
        assert_eq!(m.mount_id, 2);
        assert_eq!(
            mount_holding(&entries, Path::new("/usr")).unwrap().mount_id,
            1
        );
    }
}
