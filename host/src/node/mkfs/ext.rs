//! mke2fs (ext2, ext3, ext4): its options and sub-options, each with what
//! the host does about it and why ("measured": see [`super::args`]), and
//! the checks of their values.

use std::fmt;

use super::MIB;
use super::args::{
    HOST_FILES, OptSpec, Reason, Rule, Sub, SubRule, any_decimal, any_decimal_value, decimal,
    decimal_in, flag_value, need_value, s, sub, zero_or_one,
};
use super::layout::Note;

// Measured: `-c` did not finish in 60 s on a 4 TiB device (badblocks reads
// all of it first); `-cc` took 5-9 s on 1 GiB and wrote every block, which
// allocates all of a thin-provisioned volume. Disks remap bad sectors
// themselves, so the scan buys nothing.
const BADBLOCKS: &str = "it scans the whole device for bad blocks before formatting (badblocks), \
     which takes time in proportion to its size (a 4 TiB device was not done after 60 s) and with \
     -cc writes every block; disks remap bad sectors themselves: leave it out";

/// mke2fs (ext2/3/4): "b:cd:e:g:i:jl:m:no:qr:s:t:vC:DE:FG:I:J:KL:M:N:O:R:ST:U:Vz:".
pub(super) const MKE2FS_OPTS: &[OptSpec] = &[
    s('b', true, Rule::Value(ext_block_size)),
    s('c', false, Rule::Deny(BADBLOCKS)),
    // mke2fs itself bounds the cluster size (2048..=256M; measured: 256M
    // fails cleanly at once).
    s('C', true, Rule::Allow),
    s('d', true, Rule::Deny(HOST_FILES)),
    // Direct I/O: measured 2.4 s instead of 0.8 s on 4 TiB, and it spares
    // the node's page cache.
    s('D', false, Rule::Allow),
    s('e', true, Rule::Value(ext_errors)),
    s('E', true, Rule::Subopts(MKE2FS_EXTENDED)),
    s('F', false, Rule::Force),
    s('g', true, Rule::Value(ext_blocks_per_group)),
    // Flex group size: measured no cost up to 2^31 on 4 TiB (mkfs 1.0 s,
    // mount 0.2 s); mke2fs checks it is a power of two.
    s('G', true, Rule::Value(any_decimal)),
    s('i', true, Rule::Value(ext_inode_ratio)),
    s('I', true, Rule::Value(ext_inode_size)),
    s('j', false, Rule::Allow),
    s('J', true, Rule::Subopts(MKE2FS_JOURNAL)),
    s('K', false, Rule::Allow),
    s('l', true, Rule::Deny(HOST_FILES)),
    s('L', true, Rule::Label),
    // Reserved-blocks percentage: mke2fs refuses values outside 0..=50.
    s('m', true, Rule::Allow),
    s('M', true, Rule::Allow),
    s('n', false, Rule::Allow),
    s('N', true, Rule::Value(ext_inode_count)),
    s('o', true, Rule::Allow),
    s('O', true, Rule::Value(ext_features)),
    s('q', false, Rule::Allow),
    s('r', true, Rule::Allow),
    // `-R` is the old spelling of `-E`: the same sub-options, the same rules.
    s('R', true, Rule::Subopts(MKE2FS_EXTENDED)),
    s(
        'S',
        false,
        Rule::Deny("it rewrites superblocks over existing data (a recovery tool, not a format)"),
    ),
    s(
        't',
        true,
        Rule::Deny("the filesystem type is chosen by the host, not by an mkfs option"),
    ),
    s('T', true, Rule::Value(ext_usage_types)),
    s('U', true, Rule::FreshUuid),
    s('v', false, Rule::Allow),
    s('V', false, Rule::Allow),
    s('z', true, Rule::Deny(HOST_FILES)),
];

/// mke2fs `-E` (and `-R`) sub-options, e2fsprogs 1.47.
const MKE2FS_EXTENDED: &[Sub] = &[
    sub("desc_size", SubRule::Check(ext_desc_size)),
    sub("desc-size", SubRule::Check(ext_desc_size)),
    sub("discard", SubRule::Allow),
    sub("nodiscard", SubRule::Allow),
    sub("encoding", SubRule::Allow),
    sub("encoding_flags", SubRule::Allow),
    sub(
        "hash_seed",
        SubRule::Deny(
            "a known directory hash seed lets whoever knows it pick file names that collide in \
             the directory index, making lookups crawl; mke2fs chooses a random one",
        ),
    ),
    sub("lazy_itable_init", SubRule::Check(ext_lazy_itable_init)),
    // The journal is at most 1 GiB here (see `-J size`), so zeroing it
    // now costs at most that much writing.
    sub("lazy_journal_init", SubRule::Check(zero_or_one)),
    sub(
        "assume_storage_prezeroed",
        SubRule::Check(ext_assume_prezeroed),
    ),
    sub("mmp_update_interval", SubRule::Check(ext_mmp_interval)),
    sub("no_copy_xattrs", SubRule::Allow),
    sub("num_backup_sb", SubRule::Check(ext_num_backup_sb)),
    // Measured: 1 TiB-plus offsets on a 1 GiB device kept mke2fs busy at
    // full CPU until it was killed (60 s); one near 2^64 wrapped around and
    // wrote 500 MiB. Any offset puts the filesystem where neither the probe
    // nor the mount looks for it.
    sub(
        "offset",
        SubRule::Deny(
            "the filesystem must start at the device's first byte, where the host probes and \
             mounts it (large offsets also keep mke2fs busy for minutes)",
        ),
    ),
    sub("orphan_file_size", SubRule::Check(ext_orphan_file_size)),
    sub("packed_meta_blocks", SubRule::Check(zero_or_one)),
    // Measured: 2^64-1 is capped by mke2fs at 1024 reserved GDT blocks, 0.8 s.
    sub("resize", SubRule::Check(any_decimal_value)),
    sub("root_owner", SubRule::Check(ext_root_owner)),
    sub("quotatype", SubRule::Check(ext_quota_types)),
    sub("stride", SubRule::Check(ext_stripe)),
    sub("stripe_width", SubRule::Check(ext_stripe)),
    sub("stripe-width", SubRule::Check(ext_stripe)),
    sub("test_fs", SubRule::Allow),
    sub(
        "android_sparse",
        SubRule::Deny("it writes an Android sparse image instead of a filesystem"),
    ),
];

/// mke2fs `-J` sub-options.
const MKE2FS_JOURNAL: &[Sub] = &[
    sub("size", SubRule::Check(ext_journal_size)),
    sub("fast_commit_size", SubRule::Check(ext_fast_commit_size)),
    sub("device", SubRule::Deny(HOST_FILES)),
    // Measured: location=3000000000 on 4 TiB printed an internal bitmap
    // error and still exited 0.
    sub(
        "location",
        SubRule::Deny("mke2fs does not range-check it (an out-of-range block still \"succeeds\")"),
    ),
];

/// The page size: the largest ext block size the kernel mounts.
pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n >= 4096).unwrap_or(4096)
}

fn ext_block_size(v: &str, notes: &mut Vec<Note>) -> Reason {
    let page = page_size();
    let n = decimal(v)?;
    if !n.is_power_of_two() || !(1024..=page).contains(&n) {
        return Err(format!(
            "the block size must be a power of two from 1024 to {page} (the largest ext block \
             size this node's kernel mounts)"
        ));
    }
    notes.push(Note::BlockSize(n));
    Ok(())
}

fn ext_errors(v: &str, _: &mut Vec<Note>) -> Reason {
    match v {
        "continue" | "remount-ro" => Ok(()),
        "panic" => Err(
            "with errors=panic one filesystem error panics the whole node, taking \
             every pod on it down; use continue or remount-ro"
                .into(),
        ),
        other => Err(format!("{other:?} is not continue or remount-ro")),
    }
}

fn ext_blocks_per_group(v: &str, notes: &mut Vec<Note>) -> Reason {
    notes.push(Note::BlocksPerGroup(decimal(v)?));
    Ok(())
}

fn ext_inode_ratio(v: &str, notes: &mut Vec<Note>) -> Reason {
    // mke2fs's own range; the share of the device is checked later.
    let n = decimal_in(v, 1024, 64 * MIB, "mke2fs's range for bytes per inode")?;
    notes.push(Note::InodeRatio(n));
    Ok(())
}

fn ext_inode_size(v: &str, notes: &mut Vec<Note>) -> Reason {
    let n = decimal(v)?;
    if !n.is_power_of_two() || !(128..=65536).contains(&n) {
        return Err("the inode size must be a power of two from 128 up to the block size".into());
    }
    notes.push(Note::InodeSize(n));
    Ok(())
}

fn ext_inode_count(v: &str, notes: &mut Vec<Note>) -> Reason {
    let n = decimal_in(
        v,
        1,
        u64::from(u32::MAX),
        "ext4 holds at most 2^32-1 inodes",
    )?;
    notes.push(Note::InodeCount(n));
    Ok(())
}

fn ext_features(v: &str, _: &mut Vec<Note>) -> Reason {
    for feature in v.split(',') {
        let name = feature.strip_prefix('^').unwrap_or(feature);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{feature:?} is not a feature name"));
        }
        if name == "journal_dev" && !feature.starts_with('^') {
            return Err("journal_dev makes an external journal device, not a filesystem".into());
        }
    }
    Ok(())
}

/// The stock `mke2fs.conf` usage types and what they change; others are
/// refused because the layout checks could not know their sizes.
pub(super) struct UsageType {
    pub(super) name: &'static str,
    pub(super) block_size: Option<u64>,
    pub(super) inode_ratio: Option<u64>,
    pub(super) inode_size: Option<u64>,
}

const fn usage(
    name: &'static str,
    block_size: Option<u64>,
    inode_ratio: Option<u64>,
    inode_size: Option<u64>,
) -> UsageType {
    UsageType {
        name,
        block_size,
        inode_ratio,
        inode_size,
    }
}

const USAGE_TYPES: &[UsageType] = &[
    usage("floppy", Some(1024), Some(8192), None),
    usage("small", Some(1024), Some(4096), None),
    usage("news", None, Some(4096), None),
    usage("big", None, Some(32768), None),
    usage("huge", None, Some(65536), None),
    usage("largefile", None, Some(MIB), None),
    usage("largefile4", None, Some(4 * MIB), None),
    usage("hurd", Some(4096), None, Some(128)),
];

pub(super) fn usage_type(name: &str) -> Option<&'static UsageType> {
    USAGE_TYPES.iter().find(|t| t.name == name)
}

fn ext_usage_types(v: &str, notes: &mut Vec<Note>) -> Reason {
    let mut types = Vec::new();
    for name in v.split(',') {
        let t = usage_type(name).ok_or_else(|| {
            let known: Vec<&str> = USAGE_TYPES.iter().map(|t| t.name).collect();
            format!(
                "{name:?} is not one of the stock usage types ({})",
                known.join(", ")
            )
        })?;
        types.push(t);
    }
    notes.push(Note::UsageTypes(types));
    Ok(())
}

fn ext_desc_size(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured: 1024 made mkfs 7 times slower on 4 TiB (4.9 s, +660 MiB
    // of descriptors) for bytes the kernel never reads.
    match need_value(v)? {
        "32" | "64" => Ok(()),
        other => Err(format!(
            "{other:?}: only 32 or 64; the kernel reads 64 bytes of each group descriptor, so a \
             larger one only costs space and mkfs time"
        )),
    }
}

fn ext_lazy_itable_init(v: Option<&str>, notes: &mut Vec<Note>) -> Reason {
    // Whether mke2fs writes every inode table itself is checked against
    // the device's size (measured: 33.8 GiB written on 4 TiB).
    notes.push(Note::InodeTablesByMkfs(!flag_value(v)?));
    Ok(())
}

fn ext_assume_prezeroed(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    if flag_value(v)? {
        Err(
            "it marks the inode tables as zeroed without zeroing them, but the host only checks \
             the device's first 64 KiB: old data further in could be read as inodes"
                .into(),
        )
    } else {
        Ok(())
    }
}

fn ext_mmp_interval(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured: with 20 s, mounting after an unclean stop waited 86 s in
    // the kernel (it watches the MMP block for about twice the interval,
    // twice); mke2fs accepts up to 299 s, which would hold a mount for
    // about 12 minutes. 0 means the default, 5 s.
    decimal_in(
        need_value(v)?,
        0,
        10,
        "after an unclean stop, mounting waits about four times the interval (20 s took 86 s)",
    )
    .map(drop)
}

fn ext_num_backup_sb(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    decimal_in(need_value(v)?, 0, 2, "mke2fs's range").map(drop)
}

fn ext_orphan_file_size(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured: orphan_file_size=1099511627776 with -O orphan_file ran at
    // full CPU for 120 s, writing 10 GiB, before it was killed. mke2fs's
    // own default is at most 512 blocks (2 MiB).
    const MAX: u64 = 8 * MIB;
    let v = need_value(v)?;
    let bytes = e2p_size_bytes(v)?;
    if bytes > MAX {
        return Err(format!(
            "{v:?} is more than 8 MiB (a few blocks per CPU is what the file is for; large \
             values keep mke2fs writing for minutes)"
        ));
    }
    Ok(())
}

/// e2fsprogs' `parse_num_blocks2`: a plain number counts blocks, a suffix
/// (K, M, G, T; `s` for 512-byte sectors) gives bytes. Blocks are counted
/// at the largest block size this node mounts (the page size), so that the
/// bound holds whatever `-b` says.
fn e2p_size_bytes(v: &str) -> std::result::Result<u64, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{v:?} is not a size (a number, or one with K, M, G, T or s)"
        ));
    }
    let n = decimal(digits)?;
    let unit = match suffix {
        "" => page_size(),
        "s" => 512,
        "k" | "K" => 1024,
        "m" | "M" => MIB,
        "g" | "G" => 1024 * MIB,
        "t" | "T" => 1024 * 1024 * MIB,
        _ => {
            return Err(format!(
                "{v:?} is not a size (a number, or one with K, M, G, T or s)"
            ));
        }
    };
    Ok(n.saturating_mul(unit))
}

fn ext_root_owner(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    let Some(v) = v else {
        return Ok(()); // the user running mke2fs: root
    };
    let ok = v
        .split_once(':')
        .is_some_and(|(u, g)| decimal(u).is_ok() && decimal(g).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not uid:gid (two decimal numbers)"))
    }
}

fn ext_quota_types(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    for t in need_value(v)?.split(':') {
        if !matches!(
            t,
            "usr" | "usrquota" | "grp" | "grpquota" | "prj" | "prjquota"
        ) {
            return Err(format!(
                "{t:?} is not usrquota, grpquota or prjquota (colon-separated)"
            ));
        }
    }
    Ok(())
}

fn ext_stripe(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured harmless to mkfs even at 2^32-1 (0.7 s on 4 TiB); bounded to
    // one block group because the kernel ignores a larger stripe
    // (ext4_get_stripe_size), so the value would silently do nothing.
    decimal_in(
        need_value(v)?,
        1,
        32768,
        "in blocks; the kernel ignores a stripe longer than a block group (32768 blocks)",
    )
    .map(drop)
}

fn ext_journal_size(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured: size=40000 (MiB) allocated 40 GiB on 4 TiB; mke2fs's own
    // default is at most 1 GiB. A big journal also lengthens the replay
    // that a mount after a crash must do before it returns.
    decimal_in(
        need_value(v)?,
        1,
        1024,
        "journal size in MiB; mke2fs's own default is at most 1024, and a larger journal is \
         written out at mkfs and replayed at mount after a crash",
    )
    .map(drop)
}

fn ext_fast_commit_size(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    decimal_in(
        need_value(v)?,
        1,
        256 * 1024,
        "fast-commit area size in KiB, at most 256 MiB",
    )
    .map(drop)
}

impl fmt::Debug for UsageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
