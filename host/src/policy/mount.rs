//! `[mount]`: the filesystem types a plugin's plans may format and mount,
//! the mount options it may pass, and which types a filesystem plan (one
//! without a device) may never use.

use serde::Deserialize;

use super::Grant;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub format: Option<Vec<String>>,
    pub block: Option<Vec<String>>,
    pub filesystem: Option<Vec<String>>,
    pub options: Option<Vec<String>>,
}

/// `[mount]`, checked, into `grant`: every list holds type names, a
/// filesystem plan's types need no device, `format` lists only what
/// flexwasm can make, and options are names without values.
pub(super) fn validate(m: RawMount, grant: &mut Grant) -> Result<(), String> {
    let fs_list = |key: &str, v: Option<Vec<String>>| -> Result<Vec<String>, String> {
        let v = v.unwrap_or_default();
        for t in &v {
            if t.is_empty()
                || t.len() > 32
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!("mount.{key}: '{t}' is not a filesystem type name"));
            }
        }
        Ok(v)
    };
    grant.format = fs_list("format", m.format)?;
    grant.block = fs_list("block", m.block)?;
    grant.filesystem = fs_list("filesystem", m.filesystem)?;
    for f in &grant.filesystem {
        check_filesystem_plan_type(f).map_err(|why| format!("mount.filesystem: {why}"))?;
    }
    for f in &grant.format {
        if !crate::node::mkfs::is_supported_fs(f) {
            return Err(format!(
                "mount.format: flexwasm cannot format '{f}' (supported: ext2, ext3, ext4, xfs, btrfs)"
            ));
        }
    }
    let options = m.options.unwrap_or_default();
    for o in &options {
        if o.is_empty() || o.contains('=') || o.contains(',') || o.len() > 64 {
            return Err(format!(
                "mount.options: '{o}' must be an option name such as \"noatime\" or \"size\" (no '=' or ',')"
            ));
        }
    }
    grant.mount_options = options;
    Ok(())
}

/// Filesystems that live on a block device: a filesystem plan (no device
/// checks, no claim) must never mount one.
const BLOCK_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "ext4dev", "xfs", "btrfs", "vfat", "msdos", "fat", "exfat", "ntfs",
    "ntfs3", "iso9660", "udf", "squashfs", "erofs", "f2fs", "jfs", "reiserfs", "hfs", "hfsplus",
    "minix", "nilfs2", "ocfs2", "gfs2", "zonefs", "fuseblk", "cramfs", "romfs", "ufs", "qnx4",
    "qnx6", "sysv", "affs", "befs", "bfs", "efs", "hpfs", "omfs", "vxfs", "xenix", "bcachefs",
    "jffs2", "ubifs",
];

/// Kernel views of the node, filesystems that would expose host paths or
/// descriptors or have no size limit, and network filesystems (the kernel
/// would reach servers no `[http]` rule checks): a pod must never get one
/// of these through a filesystem plan.
const NODE_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "hugetlbfs",
    "mqueue",
    "binfmt_misc",
    "fusectl",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "nsfs",
    "pipefs",
    "sockfs",
    "selinuxfs",
    "smackfs",
    "apparmorfs",
    "bdev",
    "anon_inodefs",
    "dax",
    "cpuset",
    "resctrl",
    "rootfs",
    "functionfs",
    "usbfs",
    "binder",
    "ramfs",
    "overlay",
    "aufs",
    "ecryptfs",
    "shiftfs",
    "9p",
    "none",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "afs",
    "coda",
    "virtiofs",
    "lustre",
    "orangefs",
    "gfs2meta",
    "zonefs",
];

/// Whether `fs_type` may be granted to, and mounted by, a filesystem plan
/// (by name: see [`check_kernel_needs_no_device`] for the kernel's word).
pub fn check_filesystem_plan_type(fs_type: &str) -> Result<(), String> {
    let base = fs_type.split('.').next().unwrap_or(fs_type);
    if BLOCK_FILESYSTEMS.contains(&base) {
        return Err(format!(
            "'{fs_type}' lives on a block device; mount it with a block plan (which checks the \
             device), not a filesystem plan"
        ));
    }
    if NODE_FILESYSTEMS.contains(&base) {
        return Err(format!(
            "'{fs_type}' would give a pod a view of the node, host paths, unbounded memory or a \
             network no grant checks; it is never allowed"
        ));
    }
    Ok(())
}

/// At mount time: the kernel must list `fs_type` in `/proc/filesystems` as
/// `nodev` — it then never looks a mount source up as a device. An
/// allowlist by the kernel's own word, not a list of ours that a new
/// filesystem could be missing from. (A type whose module is not loaded
/// yet is refused until it is.)
pub fn check_kernel_needs_no_device(fs_type: &str) -> Result<(), String> {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    for line in known.lines() {
        let mut fields = line.split_whitespace().rev();
        if fields.next() == Some(fs_type) {
            return if fields.next() == Some("nodev") {
                Ok(())
            } else {
                Err(format!(
                    "'{fs_type}' needs a block device (so says /proc/filesystems); mount it \
                     with a block plan, not a filesystem plan"
                ))
            };
        }
    }
    Err(format!(
        "'{fs_type}' is not a filesystem this kernel knows (/proc/filesystems); load its module \
         first"
    ))
}
