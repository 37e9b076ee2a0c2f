//! The checks that need the device's size: how many block groups,
//! allocation groups and how much inode table the options would make.

use super::ext::{UsageType, usage_type};
use super::xfs::{MAX_XFS_AGS, xfs_size_bytes};
use super::{GIB, MIB, NodeError, Result};

/// At most this many ext block groups unless the defaults make more.
/// Measured: 4 KiB blocks (the default, 128 MiB groups) make 32768 groups
/// on 4 TiB in 1 s; `-b 1024` (8 MiB groups) took 21 s on 1 TiB and 64 s
/// on 4 TiB; `-g 1024` took 55 s on 4 TiB and `-g 256` did not finish in
/// 5 minutes.
const MAX_EXT_GROUPS: u64 = 32768;

/// What an option says about the layout mkfs will make.
#[derive(Debug, Clone)]
pub(super) enum Note {
    BlockSize(u64),
    BlocksPerGroup(u64),
    InodeSize(u64),
    InodeRatio(u64),
    InodeCount(u64),
    UsageTypes(Vec<&'static UsageType>),
    /// `lazy_itable_init=0`: mke2fs writes every inode table itself.
    InodeTablesByMkfs(bool),
    /// `-d agsize=` as given (its `b` unit needs the block size).
    XfsAgSize(String),
}

/// A value an option set, and the option as given (for messages).
#[derive(Debug, Clone)]
struct Set<T> {
    value: T,
    arg: String,
}

/// The layout the options ask for; unset fields are mkfs's defaults.
#[derive(Debug, Clone, Default)]
pub(super) struct Layout {
    block_size: Option<Set<u64>>,
    blocks_per_group: Option<Set<u64>>,
    inode_size: Option<Set<u64>>,
    inode_ratio: Option<Set<u64>>,
    inode_count: Option<Set<u64>>,
    usage_types: Option<Set<Vec<&'static UsageType>>>,
    inode_tables_by_mkfs: Option<Set<bool>>,
    xfs_agsize: Option<Set<String>>,
}

impl Layout {
    /// Later options win, as with getopt in mkfs.
    pub(super) fn note(&mut self, note: Note, arg: &str) {
        fn set<T>(slot: &mut Option<Set<T>>, value: T, arg: &str) {
            *slot = Some(Set {
                value,
                arg: arg.to_string(),
            });
        }
        match note {
            Note::BlockSize(n) => set(&mut self.block_size, n, arg),
            Note::BlocksPerGroup(n) => set(&mut self.blocks_per_group, n, arg),
            Note::InodeSize(n) => set(&mut self.inode_size, n, arg),
            Note::InodeRatio(n) => set(&mut self.inode_ratio, n, arg),
            Note::InodeCount(n) => set(&mut self.inode_count, n, arg),
            Note::UsageTypes(t) => set(&mut self.usage_types, t, arg),
            Note::InodeTablesByMkfs(b) => set(&mut self.inode_tables_by_mkfs, b, arg),
            Note::XfsAgSize(v) => set(&mut self.xfs_agsize, v, arg),
        }
    }

    fn types(&self) -> &[&'static UsageType] {
        self.usage_types
            .as_ref()
            .map_or(&[], |s| s.value.as_slice())
    }
}

/// The options given for the values that decided a layout, e.g.
/// "-b 1024 -g 8192", or "the defaults".
fn blame(sets: &[Option<&str>]) -> String {
    let given: Vec<&str> = sets.iter().flatten().copied().collect();
    if given.is_empty() {
        "the defaults".to_string()
    } else {
        given.join(" ")
    }
}

fn arg_of<T>(s: &Option<Set<T>>) -> Option<&str> {
    s.as_ref().map(|s| s.arg.as_str())
}

/// The usage type mke2fs picks by size when `-T` is not given.
fn auto_usage_type(device_bytes: u64) -> Option<&'static UsageType> {
    let name = match device_bytes {
        b if b < 3 * MIB => "floppy",
        b if b < 512 * MIB => "small",
        b if b < 4 * 1024 * GIB => return None,
        b if b < 16 * 1024 * GIB => "big",
        _ => "huge",
    };
    usage_type(name)
}

/// mkfs arguments that passed the allowlist.
#[derive(Debug, Clone)]
pub struct CheckedArgs {
    /// The labels the arguments set, to be checked against the node's
    /// devices.
    pub labels: Vec<String>,
    pub(super) layout: Layout,
}

impl CheckedArgs {
    /// The checks that depend on the device: how many block groups,
    /// allocation groups and how much inode table the options make on a
    /// device of `device_bytes`.
    pub fn check_device_size(&self, fs_type: &str, device_bytes: u64) -> Result<()> {
        let reject = |arg: String, reason: String| NodeError::MkfsArgRejected {
            fs_type: fs_type.to_string(),
            arg,
            reason,
        };
        match fs_type {
            "ext2" | "ext3" | "ext4" => self
                .check_ext_layout(device_bytes)
                .map_err(|(arg, reason)| reject(arg, reason)),
            "xfs" => self
                .check_xfs_layout(device_bytes)
                .map_err(|(arg, reason)| reject(arg, reason)),
            _ => Ok(()),
        }
    }

    fn check_ext_layout(&self, device_bytes: u64) -> std::result::Result<(), (String, String)> {
        let lay = &self.layout;
        let auto = if lay.usage_types.is_none() {
            auto_usage_type(device_bytes)
        } else {
            None
        };
        let types: Vec<&UsageType> = lay.types().iter().copied().chain(auto).collect();
        let size = human_bytes(device_bytes);

        // Block groups.
        let block_size = lay
            .block_size
            .as_ref()
            .map(|s| s.value)
            .or_else(|| types.iter().filter_map(|t| t.block_size).min())
            .unwrap_or(4096);
        let per_group = lay
            .blocks_per_group
            .as_ref()
            .map_or(8 * block_size, |s| s.value);
        let groups = device_bytes.div_ceil(block_size.saturating_mul(per_group).max(1));
        let default_groups = device_bytes.div_ceil(128 * MIB);
        let max_groups = MAX_EXT_GROUPS.max(default_groups);
        if groups > max_groups {
            let arg = blame(&[
                arg_of(&lay.block_size),
                arg_of(&lay.blocks_per_group),
                arg_of(&lay.usage_types),
            ]);
            return Err((
                arg,
                format!(
                    "on this {size} device they make {groups} block groups ({block_size}-byte \
                     blocks, {per_group} per group); at most {max_groups} are allowed, because \
                     mkfs time grows with them (-b 1024 took 64 s on 4 TiB, -g 256 over 5 \
                     minutes); use 4096-byte blocks and the default group size"
                ),
            ));
        }

        // Inode tables.
        let inode_size = lay
            .inode_size
            .as_ref()
            .map(|s| s.value)
            .or_else(|| types.iter().filter_map(|t| t.inode_size).min())
            .unwrap_or(256);
        let ratio = lay
            .inode_ratio
            .as_ref()
            .map(|s| s.value)
            .or_else(|| types.iter().filter_map(|t| t.inode_ratio).min())
            .unwrap_or(16384);
        let inodes = lay
            .inode_count
            .as_ref()
            .map_or(device_bytes / ratio, |s| s.value);
        let tables = inodes.saturating_mul(inode_size);
        // mke2fs's densest stock setting (news, small: one 256-byte inode
        // per 4 KiB) uses 1/16 of the device.
        let max_tables = (device_bytes / 16).max(GIB);
        let table_args = [
            arg_of(&lay.inode_count),
            arg_of(&lay.inode_ratio),
            arg_of(&lay.inode_size),
            arg_of(&lay.usage_types),
        ];
        if tables > max_tables {
            return Err((
                blame(&table_args),
                format!(
                    "on this {size} device they make {inodes} inodes of {inode_size} bytes, {} of \
                     inode tables; at most {} (1/16 of the device) are allowed: the kernel \
                     zeroes them all in the background after the first mount and fsck reads \
                     them all",
                    human_bytes(tables),
                    human_bytes(max_tables)
                ),
            ));
        }
        if let Some(by_mkfs) = lay.inode_tables_by_mkfs.as_ref().filter(|s| s.value)
            && tables > GIB
        {
            let mut args = vec![Some(by_mkfs.arg.as_str())];
            args.extend(table_args);
            return Err((
                blame(&args),
                format!(
                    "with lazy_itable_init=0 mke2fs writes all {} of inode tables before it \
                     answers (33.8 GiB on a 4 TiB device); allowed up to 1 GiB; leave it out and \
                     the kernel zeroes them in the background",
                    human_bytes(tables)
                ),
            ));
        }
        Ok(())
    }

    fn check_xfs_layout(&self, device_bytes: u64) -> std::result::Result<(), (String, String)> {
        let lay = &self.layout;
        let Some(agsize) = &lay.xfs_agsize else {
            return Ok(());
        };
        let block_size = lay.block_size.as_ref().map_or(4096, |s| s.value);
        let bytes =
            xfs_size_bytes(&agsize.value, Some(block_size)).map_err(|r| (agsize.arg.clone(), r))?;
        let ags = device_bytes.div_ceil(bytes.max(1));
        if ags > MAX_XFS_AGS {
            return Err((
                agsize.arg.clone(),
                format!(
                    "on this {} device it makes {ags} allocation groups; at most {MAX_XFS_AGS} \
                     are allowed, because every one costs time at mkfs and at every mount \
                     (40000 took 39 s to make and 11 s per mount on 4 TiB)",
                    human_bytes(device_bytes)
                ),
            ));
        }
        Ok(())
    }
}

/// "1 GiB", "3.5 TiB", "512 B".
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 || unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
