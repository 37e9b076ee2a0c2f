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
//!   allowlist section below): `mke2fs -e panic`, badblocks scans, offsets,
//!   oversized journals, orphan files and MMP intervals, and layouts whose
//!   cost grows with the device (too many block or allocation groups, inode
//!   tables over 1/16 of the device, inode tables written by mkfs itself on
//!   big devices). Sub-options of comma-list options are allowlisted one by
//!   one; an unknown one is refused, not passed on.
//! - A mkfs killed midway (its own limit, the call's deadline, a stop
//!   request) is reported as such, with how to wipe the half-made
//!   filesystem it may leave.
//! - Identity is never copied: a UUID option is refused (`mke2fs -U` only
//!   takes `random`/`time`), and a label is refused when a device on the
//!   node already carries it, so a plugin cannot make the node mount its
//!   volume where fstab or systemd expect another filesystem (the check and
//!   mkfs are not atomic: two calls racing on one new label can both pass).
//! - After mkfs, the device is probed again and must hold the requested
//!   filesystem.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::{NodeError, Result, blockdev, exec};

/// Filesystems [`format`] can create.
pub const SUPPORTED_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs"];
const SUPPORTED_FS_TEXT: &str = "ext2, ext3, ext4, xfs, btrfs";

/// How long `blkid` may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `mkfs.*` may take.
pub const MKFS_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of the device start must be zero when blkid finds nothing.
pub const PARANOID_BYTES: usize = 64 * 1024;

/// What a device holds, as far as a probe can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No signature, and the first [`PARANOID_BYTES`] are zero.
    Blank,
    Filesystem {
        fs_type: String,
        label: Option<String>,
        uuid: Option<String>,
    },
    /// `dos`, `gpt`, …
    PartitionTable { kind: String },
    /// Anything else that is not blank (RAID or LVM member, LUKS, swap,
    /// conflicting signatures, unrecognised non-zero data). `what` is a
    /// noun phrase with its article, e.g. "a LVM2_member signature (raid)".
    Other { what: String },
}

impl Signature {
    pub fn is_blank(&self) -> bool {
        matches!(self, Signature::Blank)
    }
}

impl fmt::Display for Signature {
    /// A noun phrase that completes "…/dev/x already holds ___".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Blank => f.write_str("no filesystem, partition table or other signature"),
            Signature::Filesystem {
                fs_type,
                label,
                uuid,
            } => {
                write!(f, "{} {fs_type} filesystem", article(fs_type))?;
                match (label, uuid) {
                    (Some(l), _) => write!(f, " (label {l})"),
                    (None, Some(u)) => write!(f, " (UUID {u})"),
                    (None, None) => Ok(()),
                }
            }
            Signature::PartitionTable { kind } => {
                write!(f, "{} {kind} partition table", article(kind))
            }
            Signature::Other { what } => f.write_str(what),
        }
    }
}

fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u' | 'x') => "an",
        _ => "a",
    }
}

/// Whether [`format`] can create `fs_type`.
pub fn is_supported_fs(fs_type: &str) -> bool {
    SUPPORTED_FS.contains(&fs_type)
}

/// Find out what `device` holds. See the module docs for why exit 2 is
/// double-checked by reading the device.
pub fn probe(device: &Path) -> Result<Signature> {
    // Open first: blkid reports an unopenable device as "nothing found".
    let mut file = File::open(device)
        .map_err(|e| NodeError::io(format!("cannot open {} to probe it", device.display()), e))?;
    let dev_str = path_str(device)?;
    let out = exec::run("blkid", &["-p", "-o", "export", dev_str], PROBE_TIMEOUT)?;
    match out.status_code {
        Some(0) => parse_blkid_export(&out.stdout).map_err(|reason| NodeError::ProbeParse {
            device: device.to_path_buf(),
            reason,
        }),
        Some(2) => {
            if !out.stderr.trim().is_empty() {
                // Exit 2 plus a complaint is an open/read failure, not "blank".
                return Err(NodeError::ProbeFailed {
                    device: device.to_path_buf(),
                    status: out.status_text(),
                    detail: out.detail(),
                });
            }
            check_zeroed_start(&mut file, device)
        }
        Some(8) => Ok(Signature::Other {
            what: "several conflicting signatures (blkid: ambivalent probe result; `wipefs -n` lists them)"
                .to_string(),
        }),
        _ => Err(NodeError::ProbeFailed {
            device: device.to_path_buf(),
            status: out.status_text(),
            detail: out.detail(),
        }),
    }
}

fn check_zeroed_start(file: &mut File, device: &Path) -> Result<Signature> {
    let mut buf = vec![0u8; PARANOID_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(NodeError::io(
                    format!(
                        "cannot read the start of {} to confirm it is blank",
                        device.display()
                    ),
                    e,
                ));
            }
        }
    }
    if filled == 0 {
        return Err(NodeError::ProbeFailed {
            device: device.to_path_buf(),
            status: "found nothing".to_string(),
            detail: "but the device returned no data (size 0: is the loop device attached, is media present?)"
                .to_string(),
        });
    }
    Ok(classify_start(&buf[..filled]))
}

/// Blank only if every byte is zero.
fn classify_start(bytes: &[u8]) -> Signature {
    match bytes.iter().position(|b| *b != 0) {
        None => Signature::Blank,
        Some(at) => Signature::Other {
            what: format!(
                "unrecognised data (blkid finds no signature, but byte {at} of the first {} KiB is not zero; if the device is really unused, zero its start, e.g. with `dd if=/dev/zero bs=64K count=1`)",
                bytes.len() / 1024
            ),
        },
    }
}

/// Parse `blkid -o export` output (exit 0) into a signature.
pub fn parse_blkid_export(text: &str) -> std::result::Result<Signature, String> {
    let mut kv: HashMap<&str, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {line:?}"))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("bad key in line {line:?}"));
        }
        kv.insert(k, unescape_export(v));
    }
    let non_empty = |k: &str| kv.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(ty) = non_empty("TYPE") {
        let usage = non_empty("USAGE");
        return Ok(match usage.as_deref() {
            None | Some("filesystem") => Signature::Filesystem {
                fs_type: ty,
                label: non_empty("LABEL"),
                uuid: non_empty("UUID"),
            },
            Some(u) => Signature::Other {
                what: format!("{} {ty} signature ({u})", article(&ty)),
            },
        });
    }
    if let Some(pt) = non_empty("PTTYPE") {
        return Ok(Signature::PartitionTable { kind: pt });
    }
    // Exit 0 means blkid found *something*; never call that blank.
    let keys: Vec<&str> = {
        let mut k: Vec<&str> = kv.keys().copied().filter(|k| *k != "DEVNAME").collect();
        k.sort_unstable();
        k
    };
    Ok(Signature::Other {
        what: format!(
            "an unidentified signature (blkid reported {})",
            keys.join(", ")
        ),
    })
}

/// `blkid -o export` backslash-escapes shell metacharacters in values.
fn unescape_export(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Create a `fs_type` filesystem on `device`, only if it probes blank.
pub fn format(device: &Path, fs_type: &str, extra_args: &[String]) -> Result<()> {
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
    let found = probe(&dev)?;
    if !found.is_blank() {
        return Err(NodeError::MkfsRefused {
            device: device.to_path_buf(),
            holds: found,
        });
    }
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
        },
        other => other,
    })?;

    match probe(&dev)? {
        Signature::Filesystem { fs_type: ref t, .. } if t == fs_type => Ok(()),
        other => Err(NodeError::FormatNotVerified {
            device: device.to_path_buf(),
            fs_type: fs_type.to_string(),
            found: other,
        }),
    }
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

// ---- extra-argument allowlist ----
//
// Every option, and every sub-option of the comma-list options (`mke2fs
// -E/-J`, `mkfs.xfs -d/-l/…`), is listed here with what we do about it;
// anything not listed is refused. The reasons written next to the rules
// come from running the tools on loop devices (a 1 GiB one and sparse 1 and
// 4 TiB ones, e2fsprogs 1.47.0, xfsprogs 6.1.0, btrfs-progs 6.2, Linux
// 6.18); "measured" below refers to those runs.

/// What we do with one option.
#[derive(Clone, Copy)]
enum Rule {
    Allow,
    Force,
    Deny(&'static str),
    /// A filesystem label: allowed unless a device on the node already
    /// carries it (checked before mkfs runs).
    Label,
    /// mke2fs `-U`: only `random` or `time`, which make a fresh UUID.
    FreshUuid,
    /// The value must pass this check, which may note what it means for the
    /// layout (checked against the device's size later).
    Value(fn(&str, &mut Vec<Note>) -> Reason),
    /// A comma-separated list of `name` / `name=value` sub-options, each of
    /// which must be in the table.
    Subopts(&'static [Sub]),
}

/// Why a value is refused, for the message.
type Reason = std::result::Result<(), String>;

/// One sub-option of a comma-list option.
struct Sub {
    name: &'static str,
    rule: SubRule,
}

#[derive(Clone, Copy)]
enum SubRule {
    Allow,
    Deny(&'static str),
    /// Gets the value (`None` for a bare `name`).
    Check(fn(Option<&str>, &mut Vec<Note>) -> Reason),
}

const fn sub(name: &'static str, rule: SubRule) -> Sub {
    Sub { name, rule }
}

const COPIED_UUID: &str = "a filesystem UUID is always fresh: a copied one could make the node \
     mount the wrong filesystem by UUID (fstab, systemd)";

struct OptSpec {
    short: Option<char>,
    long: Option<&'static str>,
    takes_value: bool,
    rule: Rule,
}

const fn s(c: char, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: Some(c),
        long: None,
        takes_value,
        rule,
    }
}

const fn sl(c: char, long: &'static str, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: Some(c),
        long: Some(long),
        takes_value,
        rule,
    }
}

const fn l(long: &'static str, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: None,
        long: Some(long),
        takes_value,
        rule,
    }
}

const HOST_FILES: &str =
    "it makes mkfs read or write a file or device on the host other than the volume";

// Measured: `-c` did not finish in 60 s on a 4 TiB device (badblocks reads
// all of it first); `-cc` took 5-9 s on 1 GiB and wrote every block, which
// allocates all of a thin-provisioned volume. Disks remap bad sectors
// themselves, so the scan buys nothing.
const BADBLOCKS: &str = "it scans the whole device for bad blocks before formatting (badblocks), \
     which takes time in proportion to its size (a 4 TiB device was not done after 60 s) and with \
     -cc writes every block; disks remap bad sectors themselves: leave it out";

/// mke2fs (ext2/3/4): "b:cd:e:g:i:jl:m:no:qr:s:t:vC:DE:FG:I:J:KL:M:N:O:R:ST:U:Vz:".
const MKE2FS_OPTS: &[OptSpec] = &[
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

/// mkfs.xfs: "b:c:d:i:l:L:m:n:KNp:qr:s:fV".
const MKFS_XFS_OPTS: &[OptSpec] = &[
    s('b', true, Rule::Subopts(XFS_BLOCK)),
    s('c', true, Rule::Deny(HOST_FILES)),
    s('d', true, Rule::Subopts(XFS_DATA)),
    s('f', false, Rule::Force),
    s('i', true, Rule::Subopts(XFS_INODE)),
    s('K', false, Rule::Allow),
    s('l', true, Rule::Subopts(XFS_LOG)),
    s('L', true, Rule::Label),
    s('m', true, Rule::Subopts(XFS_METADATA)),
    s('n', true, Rule::Subopts(XFS_NAMING)),
    s('N', false, Rule::Allow),
    s('p', true, Rule::Deny(HOST_FILES)),
    s('q', false, Rule::Allow),
    s('r', true, Rule::Subopts(XFS_REALTIME)),
    s('s', true, Rule::Subopts(XFS_SECTOR)),
    s('V', false, Rule::Allow),
];

/// mkfs.xfs checks sizes against the device and its own limits itself
/// (measured: `-l size=2g` "too large", stripe widths beyond an AG refused,
/// a 1 GiB stripe unit accepted and harmless for a small-file workload).
const XFS_BLOCK: &[Sub] = &[sub("size", SubRule::Check(xfs_block_size))];

const NO_REALTIME: &str = "there is no realtime section: it needs a separate realtime device, \
     which is not allowed";

const XFS_DATA: &[Sub] = &[
    sub("agcount", SubRule::Check(xfs_agcount)),
    sub("agsize", SubRule::Check(xfs_agsize)),
    sub("file", SubRule::Deny(HOST_FILES)),
    sub("name", SubRule::Deny(HOST_FILES)),
    sub("size", SubRule::Allow),
    sub("sunit", SubRule::Allow),
    sub("swidth", SubRule::Allow),
    sub("su", SubRule::Allow),
    sub("sw", SubRule::Allow),
    sub("noalign", SubRule::Allow),
    sub("sectsize", SubRule::Allow),
    sub("projinherit", SubRule::Allow),
    sub("extszinherit", SubRule::Allow),
    sub("cowextsize", SubRule::Allow),
    sub("daxinherit", SubRule::Allow),
    sub("rtinherit", SubRule::Deny(NO_REALTIME)),
];

const XFS_INODE: &[Sub] = &[
    sub("size", SubRule::Allow),
    sub("perblock", SubRule::Allow),
    sub("maxpct", SubRule::Allow),
    sub("align", SubRule::Allow),
    sub("attr", SubRule::Allow),
    sub("projid32bit", SubRule::Allow),
    sub("sparse", SubRule::Allow),
    sub("nrext64", SubRule::Allow),
];

// The log is at most ~2 GiB (mkfs.xfs refuses more); zeroing it is
// bounded by that.
const XFS_LOG: &[Sub] = &[
    sub("agnum", SubRule::Allow),
    sub("internal", SubRule::Allow),
    sub("size", SubRule::Allow),
    sub("version", SubRule::Allow),
    sub("sunit", SubRule::Allow),
    sub("su", SubRule::Allow),
    sub("sectsize", SubRule::Allow),
    sub("lazy-count", SubRule::Allow),
    sub("logdev", SubRule::Deny(HOST_FILES)),
    sub("file", SubRule::Deny(HOST_FILES)),
    sub("name", SubRule::Deny(HOST_FILES)),
];

const XFS_METADATA: &[Sub] = &[
    sub("crc", SubRule::Allow),
    sub("finobt", SubRule::Allow),
    sub("rmapbt", SubRule::Allow),
    sub("reflink", SubRule::Allow),
    sub("inobtcount", SubRule::Allow),
    sub("bigtime", SubRule::Allow),
    sub("uuid", SubRule::Deny(COPIED_UUID)),
];

const XFS_NAMING: &[Sub] = &[
    sub("size", SubRule::Allow),
    sub("version", SubRule::Allow),
    sub("ftype", SubRule::Allow),
];

const XFS_REALTIME: &[Sub] = &[
    sub("rtdev", SubRule::Deny(HOST_FILES)),
    sub("file", SubRule::Deny(HOST_FILES)),
    sub("name", SubRule::Deny(HOST_FILES)),
    sub("extsize", SubRule::Deny(NO_REALTIME)),
    sub("size", SubRule::Deny(NO_REALTIME)),
    sub("noalign", SubRule::Deny(NO_REALTIME)),
];

const XFS_SECTOR: &[Sub] = &[sub("size", SubRule::Allow)];

/// mkfs.btrfs (btrfs-progs 5.x/6.x).
const MKFS_BTRFS_OPTS: &[OptSpec] = &[
    sl('A', "alloc-start", true, Rule::Allow),
    sl('b', "byte-count", true, Rule::Allow),
    l("checksum", true, Rule::Value(btrfs_checksum)),
    l("csum", true, Rule::Value(btrfs_checksum)),
    // Profiles that need more devices than one fail at once.
    sl('d', "data", true, Rule::Allow),
    sl('f', "force", false, Rule::Force),
    sl('K', "nodiscard", false, Rule::Allow),
    sl('l', "leafsize", true, Rule::Allow),
    sl('L', "label", true, Rule::Label),
    sl('m', "metadata", true, Rule::Allow),
    sl('M', "mixed", false, Rule::Allow),
    sl('n', "nodesize", true, Rule::Allow),
    sl('O', "features", true, Rule::Value(btrfs_features)),
    sl('q', "quiet", false, Rule::Allow),
    sl('r', "rootdir", true, Rule::Deny(HOST_FILES)),
    sl('R', "runtime-features", true, Rule::Value(btrfs_features)),
    sl('s', "sectorsize", true, Rule::Allow),
    l(
        "shrink",
        false,
        Rule::Deny("it only applies to --rootdir, which is not allowed"),
    ),
    sl(
        'u',
        "subvol",
        true,
        Rule::Deny("it only applies to --rootdir, which is not allowed"),
    ),
    sl('U', "uuid", true, Rule::Deny(COPIED_UUID)),
    l("device-uuid", true, Rule::Deny(COPIED_UUID)),
    sl('v', "verbose", false, Rule::Allow),
    sl('V', "version", false, Rule::Allow),
];

fn opt_table(fs_type: &str) -> &'static [OptSpec] {
    match fs_type {
        "xfs" => MKFS_XFS_OPTS,
        "btrfs" => MKFS_BTRFS_OPTS,
        _ => MKE2FS_OPTS,
    }
}

// ---- value checks ----

/// A plain decimal number. mke2fs reads most numbers with `strtoul(…, 0)`,
/// so "010" would be 8 and "0x10" 16 to it: only plain decimals are
/// accepted, so that the number checked is the number mkfs uses.
fn decimal(v: &str) -> std::result::Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not a plain decimal number"));
    }
    if v.len() > 1 && v.starts_with('0') {
        return Err(format!(
            "{v:?} has a leading zero (mkfs would read it as octal)"
        ));
    }
    v.parse::<u64>().map_err(|_| format!("{v:?} is too large"))
}

fn decimal_in(v: &str, lo: u64, hi: u64, why: &str) -> std::result::Result<u64, String> {
    let n = decimal(v)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is outside {lo}..={hi}: {why}"))
    }
}

fn need_value(v: Option<&str>) -> std::result::Result<&str, String> {
    v.ok_or_else(|| "it needs a value (name=value)".to_string())
}

fn any_decimal(v: &str, _: &mut Vec<Note>) -> Reason {
    decimal(v).map(drop)
}

fn any_decimal_value(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    decimal(need_value(v)?).map(drop)
}

/// A bare flag (meaning 1) or `=0` / `=1`.
fn flag_value(v: Option<&str>) -> std::result::Result<bool, String> {
    match v {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(format!("{other:?} is not 0 or 1")),
    }
}

fn zero_or_one(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    flag_value(v).map(drop)
}

/// The page size: the largest ext block size the kernel mounts.
fn page_size() -> u64 {
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
struct UsageType {
    name: &'static str,
    block_size: Option<u64>,
    inode_ratio: Option<u64>,
    inode_size: Option<u64>,
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

fn usage_type(name: &str) -> Option<&'static UsageType> {
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

fn xfs_block_size(v: Option<&str>, notes: &mut Vec<Note>) -> Reason {
    let bytes = xfs_size_bytes(need_value(v)?, None)?;
    notes.push(Note::BlockSize(bytes));
    Ok(())
}

fn xfs_agcount(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    // Measured on 4 TiB: agcount=1024 made in 0.8 s and mounts in 0.1 s;
    // 10000 took 12-15 s to make and 2.2 s to mount; 40000 took 39 s and
    // 11.4 s, and that mount time is paid on every mount.
    decimal_in(
        need_value(v)?,
        1,
        MAX_XFS_AGS,
        "every allocation group costs time at mkfs and at every mount (40000 took 39 s to make \
         and 11 s per mount on 4 TiB)",
    )
    .map(drop)
}

fn xfs_agsize(v: Option<&str>, notes: &mut Vec<Note>) -> Reason {
    let v = need_value(v)?;
    // Parsed again with the block size once all options are known.
    xfs_size_bytes(v, Some(4096))?;
    notes.push(Note::XfsAgSize(v.to_string()));
    Ok(())
}

/// mkfs.xfs's `<num>`: bytes, or with a suffix s (512-byte sectors),
/// b (filesystem blocks), k, m, g, t, p.
fn xfs_size_bytes(v: &str, block_size: Option<u64>) -> std::result::Result<u64, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{v:?} is not a size (a number, or one with s, b, k, m, g, t or p)"
        ));
    }
    let n = decimal(digits)?;
    let unit = match (suffix, block_size) {
        ("", _) => 1,
        ("s", _) => 512,
        ("b", Some(bs)) => bs,
        ("k" | "K", _) => 1024,
        ("m" | "M", _) => MIB,
        ("g" | "G", _) => 1024 * MIB,
        ("t" | "T", _) => 1024 * 1024 * MIB,
        ("p" | "P", _) => 1024 * 1024 * 1024 * MIB,
        _ => {
            return Err(format!(
                "{v:?} is not a size (a number, or one with s, b, k, m, g, t or p)"
            ));
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{v:?} is too large"))
}

fn btrfs_checksum(v: &str, _: &mut Vec<Note>) -> Reason {
    match v {
        "crc32c" | "xxhash" | "sha256" | "blake2" => Ok(()),
        other => Err(format!("{other:?} is not crc32c, xxhash, sha256 or blake2")),
    }
}

fn btrfs_features(v: &str, _: &mut Vec<Note>) -> Reason {
    for feature in v.split(',') {
        let name = feature.strip_prefix('^').unwrap_or(feature);
        match name {
            "mixed-bg" | "extref" | "raid56" | "skinny-metadata" | "no-holes" | "raid1c34"
            | "zoned" | "free-space-tree" | "block-group-tree" => {}
            // Not measured here: qgroup accounting is known upstream for
            // making snapshot deletion and balance CPU-heavy, with long
            // transaction stalls on busy volumes.
            "quota" | "squota" if !feature.starts_with('^') => {
                return Err(
                    "quota groups make snapshot deletion and balance CPU-heavy on the \
                     node; enable them deliberately with `btrfs quota enable`, not through mkfs \
                     options"
                        .into(),
                );
            }
            "quota" | "squota" => {}
            other => {
                return Err(format!(
                    "{other:?} is not a feature the host has checked (mixed-bg, extref, raid56, \
                     skinny-metadata, no-holes, raid1c34, zoned, free-space-tree, \
                     block-group-tree)"
                ));
            }
        }
    }
    Ok(())
}

// ---- layout checks (need the device's size) ----

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// At most this many ext block groups unless the defaults make more.
/// Measured: 4 KiB blocks (the default, 128 MiB groups) make 32768 groups
/// on 4 TiB in 1 s; `-b 1024` (8 MiB groups) took 21 s on 1 TiB and 64 s
/// on 4 TiB; `-g 1024` took 55 s on 4 TiB and `-g 256` did not finish in
/// 5 minutes.
const MAX_EXT_GROUPS: u64 = 32768;

/// At most this many xfs allocation groups (see [`xfs_agcount`]).
const MAX_XFS_AGS: u64 = 1024;

/// What an option says about the layout mkfs will make.
#[derive(Debug, Clone)]
enum Note {
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

impl fmt::Debug for UsageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A value an option set, and the option as given (for messages).
#[derive(Debug, Clone)]
struct Set<T> {
    value: T,
    arg: String,
}

/// The layout the options ask for; unset fields are mkfs's defaults.
#[derive(Debug, Clone, Default)]
struct Layout {
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
    fn note(&mut self, note: Note, arg: &str) {
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
    layout: Layout,
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
fn human_bytes(n: u64) -> String {
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

// ---- the parser ----

/// Check `extra_args` for `mkfs.<fs_type>` against the allowlist (see the
/// module docs). Parses like getopt, so `-qF` and `-Lx` are understood.
/// Device-size checks follow in [`CheckedArgs::check_device_size`].
pub fn check_extra_args(fs_type: &str, extra_args: &[String]) -> Result<CheckedArgs> {
    let table = opt_table(fs_type);
    let reject = |arg: &str, reason: String| NodeError::MkfsArgRejected {
        fs_type: fs_type.to_string(),
        arg: arg.to_string(),
        reason,
    };
    let mut checked = CheckedArgs {
        labels: Vec::new(),
        layout: Layout::default(),
    };
    let mut i = 0;
    while i < extra_args.len() {
        let arg = extra_args[i].as_str();
        if arg == "--" {
            return Err(reject(
                arg,
                "\"--\" is not allowed; the host supplies the device".into(),
            ));
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let spec = table
                .iter()
                .find(|o| o.long == Some(name))
                .ok_or_else(|| reject(arg, "unknown or unsupported option".into()))?;
            let value = if spec.takes_value {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        Some(
                            extra_args
                                .get(i)
                                .map(String::as_str)
                                .ok_or_else(|| reject(arg, "option needs a value".into()))?,
                        )
                    }
                }
            } else if inline.is_some() {
                return Err(reject(arg, "option takes no value".into()));
            } else {
                None
            };
            let shown = match value {
                Some(v) => format!("--{name}={v}"),
                None => format!("--{name}"),
            };
            apply_rule(spec.rule, value, &shown, &mut checked).map_err(|r| reject(&shown, r))?;
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (pos, c) in cluster.char_indices() {
                let spec = table
                    .iter()
                    .find(|o| o.short == Some(c))
                    .ok_or_else(|| reject(arg, format!("unknown or unsupported option -{c}")))?;
                if spec.takes_value {
                    let rest = &cluster[pos + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        i += 1;
                        extra_args
                            .get(i)
                            .map(String::as_str)
                            .ok_or_else(|| reject(arg, format!("option -{c} needs a value")))?
                    } else {
                        rest
                    };
                    let shown = format!("-{c} {value}");
                    apply_rule(spec.rule, Some(value), &shown, &mut checked)
                        .map_err(|r| reject(&shown, r))?;
                    break;
                }
                apply_rule(spec.rule, None, arg, &mut checked).map_err(|r| reject(arg, r))?;
            }
        } else {
            return Err(reject(
                arg,
                "extra positional arguments are not allowed; the host supplies the device".into(),
            ));
        }
        i += 1;
    }
    let max = max_label_bytes(fs_type);
    if let Some(long) = checked.labels.iter().find(|l| l.len() > max) {
        return Err(reject(
            long,
            format!(
                "the label is {} bytes; {fs_type} labels hold at most {max} (mkfs would cut it)",
                long.len()
            ),
        ));
    }
    Ok(checked)
}

/// The longest label each mkfs stores whole.
fn max_label_bytes(fs_type: &str) -> usize {
    match fs_type {
        "xfs" => 12,
        "btrfs" => 255,
        _ => 16,
    }
}

/// `shown` is the option as messages name it ("-E stride=8").
fn apply_rule(
    rule: Rule,
    value: Option<&str>,
    shown: &str,
    checked: &mut CheckedArgs,
) -> std::result::Result<(), String> {
    match rule {
        Rule::Allow => Ok(()),
        Rule::Label => {
            // What blkid reports (and fstab matches) must be exactly what
            // the duplicate check looked for: blkid strips trailing blanks
            // and `-t` strips quotes, and mkfs would cut a long label (see
            // `check_extra_args` for the length).
            let label = value.unwrap_or("");
            if label.is_empty()
                || label.trim() != label
                || label
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
            {
                return Err(
                    "a label must be non-empty text without leading or trailing \
                     blanks, quotes, backslashes or control characters"
                        .into(),
                );
            }
            checked.labels.push(label.to_string());
            Ok(())
        }
        Rule::FreshUuid => match value {
            Some("random" | "time") => Ok(()),
            _ => Err(format!(
                "{COPIED_UUID}; use \"random\" or \"time\", or leave it out"
            )),
        },
        Rule::Force => Err(
            "forcing is never allowed: the host formats a device only after probing it blank"
                .to_string(),
        ),
        Rule::Deny(why) => Err(why.to_string()),
        Rule::Value(check) => {
            let mut notes = Vec::new();
            check(value.unwrap_or(""), &mut notes)?;
            for note in notes {
                checked.layout.note(note, shown);
            }
            Ok(())
        }
        Rule::Subopts(table) => {
            for item in value.unwrap_or("").split(',') {
                let (name, sub_value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v)),
                    None => (item.trim(), None),
                };
                let sub = table.iter().find(|s| s.name == name).ok_or_else(|| {
                    let known: Vec<&str> = table.iter().map(|s| s.name).collect();
                    format!(
                        "sub-option {name:?} is not one the host has checked (known: {})",
                        known.join(", ")
                    )
                })?;
                match sub.rule {
                    SubRule::Allow => {}
                    SubRule::Deny(why) => {
                        return Err(format!("sub-option {name:?} is not allowed: {why}"));
                    }
                    SubRule::Check(check) => {
                        let mut notes = Vec::new();
                        check(sub_value, &mut notes)
                            .map_err(|r| format!("sub-option {name:?}: {r}"))?;
                        for note in notes {
                            checked.layout.note(note, shown);
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_filesystem() {
        let out = "DEVNAME=/dev/loop3\nLABEL=data01\nUUID=1234-abcd\nBLOCK_SIZE=4096\nTYPE=xfs\nUSAGE=filesystem\n";
        let sig = parse_blkid_export(out).expect("parses");
        assert_eq!(
            sig,
            Signature::Filesystem {
                fs_type: "xfs".into(),
                label: Some("data01".into()),
                uuid: Some("1234-abcd".into())
            }
        );
        assert_eq!(sig.to_string(), "an xfs filesystem (label data01)");
    }

    #[test]
    fn parses_escaped_label() {
        let out = "DEVNAME=/tmp/x.img\nLABEL=my\\ lab\\$l\nUUID=u\nTYPE=ext4\nUSAGE=filesystem\n";
        match parse_blkid_export(out).expect("parses") {
            Signature::Filesystem { label, .. } => assert_eq!(label.as_deref(), Some("my lab$l")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_partition_table() {
        let out = "DEVNAME=/dev/sdb\nPTUUID=5c8a9d1e\nPTTYPE=dos\n";
        let sig = parse_blkid_export(out).expect("parses");
        assert_eq!(sig, Signature::PartitionTable { kind: "dos".into() });
        assert_eq!(sig.to_string(), "a dos partition table");
    }

    #[test]
    fn non_filesystem_usage_is_other() {
        let out = "DEVNAME=/dev/sdc\nUUID=x\nVERSION=LVM2 001\nTYPE=LVM2_member\nUSAGE=raid\n";
        let sig = parse_blkid_export(out).expect("parses");
        assert_eq!(sig.to_string(), "a LVM2_member signature (raid)");
        let out = "TYPE=crypto_LUKS\nUSAGE=crypto\n";
        assert_eq!(
            parse_blkid_export(out).expect("parses").to_string(),
            "a crypto_LUKS signature (crypto)"
        );
        let out = "TYPE=swap\nUSAGE=other\n";
        assert!(matches!(
            parse_blkid_export(out).expect("parses"),
            Signature::Other { .. }
        ));
    }

    #[test]
    fn exit_zero_without_type_is_never_blank() {
        let sig = parse_blkid_export("DEVNAME=/dev/x\nPART_ENTRY_SCHEME=dos\n").expect("parses");
        assert!(matches!(sig, Signature::Other { .. }), "{sig:?}");
        assert!(sig.to_string().contains("PART_ENTRY_SCHEME"));
        let sig = parse_blkid_export("").expect("parses");
        assert!(!sig.is_blank());
    }

    #[test]
    fn garbage_output_is_an_error() {
        assert!(parse_blkid_export("this is not export format\n").is_err());
        assert!(parse_blkid_export("=x\n").is_err());
    }

    #[test]
    fn filesystem_display_variants() {
        let fs = |label: Option<&str>, uuid: Option<&str>| Signature::Filesystem {
            fs_type: "ext4".into(),
            label: label.map(Into::into),
            uuid: uuid.map(Into::into),
        };
        assert_eq!(
            fs(None, Some("u-1")).to_string(),
            "an ext4 filesystem (UUID u-1)"
        );
        assert_eq!(fs(None, None).to_string(), "an ext4 filesystem");
        let b = Signature::Filesystem {
            fs_type: "btrfs".into(),
            label: None,
            uuid: None,
        };
        assert_eq!(b.to_string(), "a btrfs filesystem");
    }

    #[test]
    fn refusal_message_reads_well() {
        let e = NodeError::MkfsRefused {
            device: "/dev/loop3".into(),
            holds: Signature::Filesystem {
                fs_type: "xfs".into(),
                label: Some("data01".into()),
                uuid: None,
            },
        };
        assert_eq!(
            e.to_string(),
            "mkfs refused: /dev/loop3 already holds an xfs filesystem (label data01); not formatting"
        );
    }

    #[test]
    fn zero_start_is_blank_and_anything_else_is_not() {
        assert_eq!(classify_start(&[0u8; 4096]), Signature::Blank);
        let mut b = vec![0u8; 65536];
        b[1234] = 7;
        let sig = classify_start(&b);
        assert!(matches!(sig, Signature::Other { .. }));
        assert!(
            sig.to_string().contains("byte 1234 of the first 64 KiB"),
            "{sig}"
        );
    }

    #[test]
    fn supported_fs() {
        for fs in ["ext2", "ext3", "ext4", "xfs", "btrfs"] {
            assert!(is_supported_fs(fs));
        }
        for fs in ["", "vfat", "EXT4", "ext4 ", "ntfs", "../ext4"] {
            assert!(!is_supported_fs(fs), "{fs}");
        }
    }

    #[test]
    fn unsupported_fs_is_refused_before_touching_the_device() {
        let err = format(Path::new("/dev/null"), "vfat", &[]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "filesystem type \"vfat\" is not supported for formatting (supported: ext2, ext3, ext4, xfs, btrfs)"
        );
    }

    #[test]
    fn force_flags_are_rejected_for_every_tool() {
        for (fs, bad) in [
            ("ext4", vec!["-F"]),
            ("ext4", vec!["-qF"]),
            ("ext3", vec!["-F", "-F"]),
            ("ext2", vec!["-L", "x", "-F"]),
            ("xfs", vec!["-f"]),
            ("xfs", vec!["-qf"]),
            ("btrfs", vec!["-f"]),
            ("btrfs", vec!["--force"]),
            ("btrfs", vec!["-Kf"]),
        ] {
            let err = check_extra_args(fs, &args(&bad)).expect_err(&format!("{fs} {bad:?}"));
            assert!(
                err.to_string().contains("forcing is never allowed"),
                "{err}"
            );
        }
        // "--force" is not an mke2fs or mkfs.xfs option at all: rejected as unknown.
        for fs in ["ext4", "xfs"] {
            assert!(check_extra_args(fs, &args(&["--force"])).is_err());
        }
    }

    #[test]
    fn option_values_are_not_mistaken_for_flags() {
        // "-L F" is a label "F", not -F; "-LFoo" likewise.
        check_extra_args("ext4", &args(&["-L", "F"])).expect("label F is fine");
        check_extra_args("ext4", &args(&["-LFoo", "-m", "0"])).expect("fine");
        check_extra_args("xfs", &args(&["-L", "-f"])).expect("label \"-f\" is a value");
        check_extra_args("btrfs", &args(&["--label=force", "-L", "f"])).expect("fine");
    }

    #[test]
    fn labels_are_returned_and_uuids_must_be_fresh() {
        assert_eq!(
            check_extra_args("ext4", &args(&["-L", "a", "-m", "0", "-Lb"]))
                .expect("ok")
                .labels,
            ["a", "b"]
        );
        assert_eq!(
            check_extra_args("btrfs", &args(&["--label=c"]))
                .expect("ok")
                .labels,
            ["c"]
        );
        check_extra_args("ext4", &args(&["-U", "random"])).expect("random uuid");
        check_extra_args("ext4", &args(&["-U", "time"])).expect("time uuid");
        for (fs, bad) in [
            ("ext4", vec!["-U", "6f1c5e1a-2b1e-4c55-9d43-1f0c2a9b7e11"]),
            ("ext4", vec!["-U", "clear"]),
            (
                "xfs",
                vec!["-m", "crc=1,uuid=6f1c5e1a-2b1e-4c55-9d43-1f0c2a9b7e11"],
            ),
            ("btrfs", vec!["-U", "6f1c5e1a-2b1e-4c55-9d43-1f0c2a9b7e11"]),
            (
                "btrfs",
                vec!["--device-uuid=6f1c5e1a-2b1e-4c55-9d43-1f0c2a9b7e11"],
            ),
        ] {
            let err = check_extra_args(fs, &args(&bad)).expect_err(&format!("{fs} {bad:?}"));
            assert!(err.to_string().contains("UUID is always fresh"), "{err}");
        }
        for bad in ["", "DATA ", " DATA", "\"x\"", "a'b", "a\\b", "a\nb"] {
            let err = check_extra_args("ext4", &args(&["-L", bad])).expect_err(bad);
            assert!(err.to_string().contains("non-empty text without"), "{err}");
        }
        // Labels mkfs would cut are refused, not cut.
        check_extra_args("ext4", &args(&["-L", &"a".repeat(16)])).expect("16 bytes fit ext4");
        let err = check_extra_args("ext4", &args(&["-L", &"a".repeat(17)])).expect_err("17");
        assert!(err.to_string().contains("at most 16"), "{err}");
        let err = check_extra_args("xfs", &args(&["-L", "thirteen-char"])).expect_err("13");
        assert!(err.to_string().contains("at most 12"), "{err}");
    }

    #[test]
    fn common_tuning_is_allowed() {
        check_extra_args(
            "ext4",
            &args(&[
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,nodiscard",
                "-O",
                "^has_journal",
                "-b",
                "4096",
                "-i",
                "16384",
            ]),
        )
        .expect("ok");
        check_extra_args("ext4", &args(&["-J", "size=64"])).expect("internal journal size ok");
        check_extra_args(
            "xfs",
            &args(&[
                "-K",
                "-m",
                "reflink=1,crc=1",
                "-i",
                "size=512",
                "-l",
                "size=64m,internal",
                "-d",
                "agcount=4",
            ]),
        )
        .expect("ok");
        check_extra_args(
            "btrfs",
            &args(&[
                "-m",
                "single",
                "-d",
                "single",
                "--csum",
                "xxhash",
                "--nodesize=16384",
                "-L",
                "v1",
            ]),
        )
        .expect("ok");
        check_extra_args("ext4", &[]).expect("empty is fine");
    }

    #[test]
    fn options_touching_other_host_files_or_devices_are_rejected() {
        for (fs, bad) in [
            ("ext4", vec!["-d", "/etc"]),
            ("ext4", vec!["-d/etc"]),
            ("ext4", vec!["-l", "/etc/badblocks"]),
            ("ext4", vec!["-z", "/tmp/undo"]),
            ("ext4", vec!["-J", "device=/dev/sda2"]),
            ("ext4", vec!["-J", "size=32,device=/dev/sda2"]),
            ("xfs", vec!["-p", "/etc/proto"]),
            ("xfs", vec!["-c", "options=/etc/xfs.conf"]),
            ("xfs", vec!["-d", "name=/tmp/img,file"]),
            ("xfs", vec!["-l", "logdev=/dev/sdb"]),
            ("xfs", vec!["-r", "rtdev=/dev/sdc"]),
            ("btrfs", vec!["--rootdir", "/etc"]),
            ("btrfs", vec!["--rootdir=/etc"]),
            ("btrfs", vec!["-r", "/etc"]),
        ] {
            let err = check_extra_args(fs, &args(&bad)).expect_err(&format!("{fs} {bad:?}"));
            assert!(err.to_string().contains("other than the volume"), "{err}");
        }
    }

    #[test]
    fn positional_args_and_unknown_options_are_rejected() {
        for (fs, bad) in [
            ("ext4", vec!["/dev/sda"]),
            ("ext4", vec!["-q", "--", "/dev/sda"]),
            ("ext4", vec!["1024"]), // blocks-count would follow the device
            ("btrfs", vec!["/dev/sdb"]), // multi-device btrfs
            ("ext4", vec!["-t", "ext2"]),
            ("ext4", vec!["-S"]),
            ("ext4", vec!["-X"]),
            ("xfs", vec!["--unsupported"]),
            ("btrfs", vec!["--shrink"]),
            ("btrfs", vec!["--quiet=yes"]),
            ("ext4", vec!["-L"]), // missing value
            ("btrfs", vec!["--label"]),
        ] {
            check_extra_args(fs, &args(&bad)).expect_err(&format!("{fs} {bad:?}"));
        }
        let err = check_extra_args("ext4", &args(&["/dev/sda"])).expect_err("positional");
        assert_eq!(
            err.to_string(),
            "mkfs.ext4 option \"/dev/sda\" rejected: extra positional arguments are not allowed; the host supplies the device"
        );
    }

    // ---- options that harm the node or burn time ----

    /// The reason a refused option gives.
    fn refusal(fs: &str, list: &[&str]) -> String {
        match check_extra_args(fs, &args(list)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{fs} {list:?} was accepted"),
        }
    }

    fn refusal_on(fs: &str, list: &[&str], device_bytes: u64) -> String {
        let checked = check_extra_args(fs, &args(list)).expect("passes the allowlist");
        match checked.check_device_size(fs, device_bytes) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{fs} {list:?} was accepted on {device_bytes} bytes"),
        }
    }

    fn accepted_on(fs: &str, list: &[&str], device_bytes: u64) {
        check_extra_args(fs, &args(list))
            .and_then(|c| c.check_device_size(fs, device_bytes))
            .unwrap_or_else(|e| panic!("{fs} {list:?} on {device_bytes} bytes: {e}"));
    }

    const TIB: u64 = 1024 * GIB;

    #[test]
    fn ext_errors_panic_is_refused() {
        for list in [&["-e", "panic"][..], &["-epanic"], &["-q", "-e", "panic"]] {
            let msg = refusal("ext4", list);
            assert!(msg.contains("panics the whole node"), "{msg}");
        }
        assert!(refusal("ext4", &["-e", "reboot"]).contains("not continue or remount-ro"));
        check_extra_args("ext4", &args(&["-e", "continue"])).expect("continue");
        check_extra_args("ext3", &args(&["-e", "remount-ro"])).expect("remount-ro");
    }

    #[test]
    fn badblocks_scans_are_refused() {
        for list in [&["-c"][..], &["-c", "-c"], &["-cc"], &["-qc"]] {
            let msg = refusal("ext4", list);
            assert!(
                msg.contains("scans the whole device for bad blocks"),
                "{msg}"
            );
        }
    }

    #[test]
    fn offsets_are_refused_in_either_extended_spelling() {
        for list in [
            &["-E", "offset=4096"][..],
            &["-Eoffset=1099511627776"],
            &["-E", "stride=8,offset=1"],
            &["-R", "offset=4096"],
        ] {
            let msg = refusal("ext4", list);
            assert!(
                msg.contains("must start at the device's first byte"),
                "{msg}"
            );
        }
        assert_eq!(
            refusal("ext4", &["-E", "stride=8,offset=1"]),
            "mkfs.ext4 option \"-E stride=8,offset=1\" rejected: sub-option \"offset\" is not \
             allowed: the filesystem must start at the device's first byte, where the host \
             probes and mounts it (large offsets also keep mke2fs busy for minutes)"
        );
    }

    #[test]
    fn unknown_extended_suboptions_are_refused() {
        for list in [
            &["-E", "bogus"][..],
            &["-E", "stride=8,"],
            &["-E", ""],
            &["-R", "made_up=1"],
            &["-J", "v1_superblock"],
        ] {
            let msg = refusal("ext4", list);
            assert!(
                msg.contains("is not one the host has checked"),
                "{list:?}: {msg}"
            );
        }
    }

    #[test]
    fn hash_seed_prezeroed_and_android_sparse_are_refused() {
        let msg = refusal(
            "ext4",
            &["-E", "hash_seed=6f1c5e1a-2b1e-4c55-9d43-1f0c2a9b7e11"],
        );
        assert!(msg.contains("collide in the directory index"), "{msg}");
        for v in ["assume_storage_prezeroed", "assume_storage_prezeroed=1"] {
            let msg = refusal("ext4", &["-E", v]);
            assert!(
                msg.contains("only checks the device's first 64 KiB"),
                "{msg}"
            );
        }
        check_extra_args("ext4", &args(&["-E", "assume_storage_prezeroed=0"])).expect("=0");
        let msg = refusal("ext4", &["-E", "android_sparse"]);
        assert!(msg.contains("Android sparse image"), "{msg}");
    }

    #[test]
    fn journal_size_and_placement_are_bounded() {
        check_extra_args("ext4", &args(&["-J", "size=1024"])).expect("1 GiB journal");
        let msg = refusal("ext4", &["-J", "size=1025"]);
        assert!(msg.contains("1025 is outside 1..=1024"), "{msg}");
        assert!(refusal("ext4", &["-J", "size=40000"]).contains("replayed at mount"));
        check_extra_args("ext4", &args(&["-J", "size=64,fast_commit_size=1024"])).expect("ok");
        assert!(refusal("ext4", &["-J", "fast_commit_size=1000000"]).contains("at most 256 MiB"));
        assert!(
            refusal("ext4", &["-J", "location=3000000000"]).contains("does not range-check it")
        );
        // A journal zeroed by mkfs is at most that 1 GiB: allowed.
        check_extra_args("ext4", &args(&["-E", "lazy_journal_init=0"])).expect("ok");
    }

    #[test]
    fn orphan_file_size_is_bounded() {
        let four_k_pages = page_size() == 4096;
        for ok in ["2m", "8M", "8192k", "16384s"] {
            check_extra_args("ext4", &args(&["-E", &format!("orphan_file_size={ok}")]))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        if four_k_pages {
            check_extra_args("ext4", &args(&["-E", "orphan_file_size=2048"])).expect("2048 blocks");
        }
        for bad in ["1099511627776", "9m", "1g", "12x", "0x100"] {
            let msg = refusal("ext4", &["-E", &format!("orphan_file_size={bad}")]);
            assert!(msg.contains("orphan_file_size"), "{bad}: {msg}");
        }
    }

    #[test]
    fn mmp_update_interval_is_bounded() {
        for ok in ["0", "5", "10"] {
            check_extra_args(
                "ext4",
                &args(&["-O", "mmp", "-E", &format!("mmp_update_interval={ok}")]),
            )
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let msg = refusal("ext4", &["-O", "mmp", "-E", "mmp_update_interval=299"]);
        assert!(
            msg.contains("mounting waits about four times the interval"),
            "{msg}"
        );
    }

    #[test]
    fn descriptor_size_is_32_or_64() {
        check_extra_args("ext4", &args(&["-E", "desc_size=64"])).expect("64");
        check_extra_args("ext4", &args(&["-E", "desc-size=32"])).expect("32");
        let msg = refusal("ext4", &["-E", "desc_size=1024"]);
        assert!(msg.contains("only 32 or 64"), "{msg}");
    }

    #[test]
    fn stride_and_stripe_width_are_bounded_to_a_block_group() {
        check_extra_args("ext4", &args(&["-E", "stride=128,stripe_width=1024"])).expect("ok");
        check_extra_args("ext4", &args(&["-E", "stripe-width=32768"])).expect("ok");
        for bad in [
            "stride=0",
            "stride=32769",
            "stripe_width=4294967295",
            "stride",
        ] {
            let msg = refusal("ext4", &["-E", bad]);
            assert!(msg.contains("sub-option"), "{bad}: {msg}");
        }
    }

    #[test]
    fn checked_extended_suboptions_are_accepted() {
        check_extra_args(
            "ext4",
            &args(&[
                "-E",
                "discard,nodiscard,lazy_itable_init,lazy_journal_init=1,packed_meta_blocks=1,\
                 num_backup_sb=1,resize=18446744073709551615,root_owner=1000:1000,root_owner,\
                 quotatype=usrquota:grpquota:prjquota,test_fs,no_copy_xattrs,encoding=utf8,\
                 encoding_flags=strict",
            ]),
        )
        .expect("ok");
        assert!(refusal("ext4", &["-E", "root_owner=me"]).contains("not uid:gid"));
        assert!(refusal("ext4", &["-E", "quotatype=all"]).contains("not usrquota"));
        assert!(refusal("ext4", &["-E", "num_backup_sb=3"]).contains("outside 0..=2"));
        assert!(refusal("ext4", &["-E", "lazy_itable_init=2"]).contains("not 0 or 1"));
    }

    #[test]
    fn numbers_must_be_plain_decimals() {
        // mke2fs reads these with strtoul(…, 0): "010" is 8, "0x10" 16,
        // "-1" is the largest number. Only what we parse the same is taken.
        for list in [
            &["-N", "0x10"][..],
            &["-i", "010"],
            &["-G", "-1"],
            &["-N", "+5"],
            &["-N", " 5"],
            &["-I", "256k"],
            &["-g", "99999999999999999999999"],
        ] {
            let msg = refusal("ext4", list);
            assert!(
                msg.contains("plain decimal")
                    || msg.contains("leading zero")
                    || msg.contains("too large"),
                "{list:?}: {msg}"
            );
        }
    }

    #[test]
    fn block_size_is_one_the_kernel_mounts() {
        for ok in ["1024", "2048", "4096"] {
            check_extra_args("ext4", &args(&["-b", ok])).expect(ok);
        }
        for bad in ["3000", "512", "-2048", "131072"] {
            let msg = refusal("ext4", &["-b", bad]);
            assert!(
                msg.contains("power of two") || msg.contains("plain decimal"),
                "{bad}: {msg}"
            );
        }
        if page_size() == 4096 {
            let msg = refusal("ext4", &["-b", "65536"]);
            assert!(msg.contains("from 1024 to 4096"), "{msg}");
        }
    }

    #[test]
    fn usage_types_must_be_stock_ones() {
        check_extra_args("ext4", &args(&["-T", "largefile4"])).expect("stock");
        check_extra_args("ext4", &args(&["-T", "huge,news"])).expect("a list of stock ones");
        let msg = refusal("ext4", &["-T", "mine"]);
        assert!(msg.contains("not one of the stock usage types"), "{msg}");
    }

    #[test]
    fn journal_dev_feature_is_refused() {
        assert!(refusal("ext4", &["-O", "journal_dev"]).contains("not a filesystem"));
        assert!(refusal("ext4", &["-O", "metadata_csum,journal_dev"]).contains("not a filesystem"));
        check_extra_args(
            "ext4",
            &args(&["-O", "^journal_dev,mmp,^has_journal,quota"]),
        )
        .expect("other features");
        assert!(refusal("ext4", &["-O", "a b"]).contains("not a feature name"));
    }

    #[test]
    fn defaults_pass_the_layout_checks_at_every_size() {
        for size in [2 * MIB, 100 * MIB, GIB, TIB, 4 * TIB, 64 * TIB, 1024 * TIB] {
            for fs in ["ext2", "ext3", "ext4", "xfs", "btrfs"] {
                accepted_on(fs, &[], size);
            }
        }
    }

    #[test]
    fn small_block_groups_are_refused_on_big_devices() {
        // 1 KiB blocks: 8 MiB groups.
        accepted_on("ext4", &["-b", "1024"], 256 * GIB);
        let msg = refusal_on("ext4", &["-b", "1024"], 4 * TIB);
        assert_eq!(
            msg,
            "mkfs.ext4 option \"-b 1024\" rejected: on this 4 TiB device they make 524288 block \
             groups (1024-byte blocks, 8192 per group); at most 32768 are allowed, because mkfs \
             time grows with them (-b 1024 took 64 s on 4 TiB, -g 256 over 5 minutes); use \
             4096-byte blocks and the default group size"
        );
        assert!(refusal_on("ext4", &["-g", "1024"], 4 * TIB).contains("block groups"));
        accepted_on("ext4", &["-g", "8192"], TIB);
        // -T small and floppy pick 1 KiB blocks too.
        let msg = refusal_on("ext4", &["-T", "small"], TIB);
        assert!(
            msg.contains("\"-T small\"") && msg.contains("block groups"),
            "{msg}"
        );
        assert!(refusal_on("ext4", &["-T", "huge,floppy"], TIB).contains("block groups"));
        // An explicit -b wins over the usage type, as in mke2fs.
        accepted_on("ext4", &["-T", "small", "-b", "4096", "-i", "16384"], TIB);
    }

    #[test]
    fn oversized_inode_tables_are_refused() {
        let msg = refusal_on("ext4", &["-N", "4294967295"], 4 * TIB);
        assert!(
            msg.contains("1024.0 GiB of inode tables") || msg.contains("1 TiB of inode tables"),
            "{msg}"
        );
        assert!(msg.contains("1/16 of the device"), "{msg}");
        assert!(refusal_on("ext4", &["-i", "1024"], 4 * TIB).contains("inode tables"));
        assert!(refusal_on("ext4", &["-I", "4096"], 4 * TIB).contains("inode tables"));
        // news: one inode per 4 KiB, exactly 1/16: allowed, as is -i 4096.
        accepted_on("ext4", &["-T", "news"], 4 * TIB);
        accepted_on("ext4", &["-i", "4096"], 4 * TIB);
        accepted_on("ext4", &["-I", "1024"], 4 * TIB);
        // Small devices may be dense: the cost is at most 1 GiB.
        accepted_on("ext4", &["-i", "1024", "-b", "1024"], 2 * GIB);
        accepted_on("ext4", &["-N", "1000000"], GIB);
    }

    #[test]
    fn inode_tables_written_by_mke2fs_are_bounded() {
        let msg = refusal_on("ext4", &["-E", "lazy_itable_init=0"], 4 * TIB);
        assert!(msg.contains("writes all 32 GiB of inode tables"), "{msg}");
        assert!(
            msg.starts_with("mkfs.ext4 option \"-E lazy_itable_init=0\" rejected"),
            "{msg}"
        );
        accepted_on("ext4", &["-E", "lazy_itable_init=0"], 64 * GIB);
        // The last setting wins.
        accepted_on(
            "ext4",
            &["-E", "lazy_itable_init=0", "-E", "lazy_itable_init=1"],
            4 * TIB,
        );
    }

    #[test]
    fn xfs_allocation_groups_are_bounded() {
        check_extra_args("xfs", &args(&["-d", "agcount=1024"])).expect("1024");
        let msg = refusal("xfs", &["-d", "agcount=10000"]);
        assert!(msg.contains("40000 took 39 s"), "{msg}");
        accepted_on("xfs", &["-d", "agsize=4g"], 4 * TIB);
        assert!(
            refusal_on("xfs", &["-d", "agsize=1g"], 4 * TIB).contains("4096 allocation groups")
        );
        accepted_on("xfs", &["-d", "agsize=16m"], GIB);
        let msg = refusal_on("xfs", &["-d", "agsize=16m"], 4 * TIB);
        assert!(msg.contains("262144 allocation groups"), "{msg}");
        // `b` counts filesystem blocks.
        accepted_on("xfs", &["-b", "size=4k", "-d", "agsize=1048576b"], 4 * TIB);
        assert!(
            refusal_on(
                "xfs",
                &["-b", "size=1024", "-d", "agsize=1048576b"],
                4 * TIB
            )
            .contains("allocation groups")
        );
        assert!(refusal("xfs", &["-d", "agsize=lots"]).contains("not a size"));
    }

    #[test]
    fn xfs_unknown_and_realtime_suboptions_are_refused() {
        for (list, needle) in [
            (&["-d", "bogus=1"][..], "is not one the host has checked"),
            (
                &["-i", "size=512,made_up"],
                "is not one the host has checked",
            ),
            (&["-n", "size=8k,x"], "is not one the host has checked"),
            (&["-d", "rtinherit=1"], "there is no realtime section"),
            (&["-r", "extsize=64k"], "there is no realtime section"),
            (&["-s", "log=9"], "is not one the host has checked"),
        ] {
            let msg = refusal("xfs", list);
            assert!(msg.contains(needle), "{list:?}: {msg}");
        }
        check_extra_args(
            "xfs",
            &args(&[
                "-d",
                "su=64k,sw=4,noalign,projinherit=1,cowextsize=32,sectsize=4096,size=1g",
                "-i",
                "maxpct=5,sparse=1,nrext64=1,attr=2,projid32bit=1,align=1,perblock=8",
                "-l",
                "version=2,lazy-count=1,su=32k,sectsize=4096,agnum=0",
                "-m",
                "finobt=1,rmapbt=1,inobtcount=1,bigtime=1",
                "-n",
                "size=8192,version=2,ftype=1",
                "-s",
                "size=4096",
                "-b",
                "size=4096",
            ]),
        )
        .expect("checked sub-options");
    }

    #[test]
    fn btrfs_quota_is_refused() {
        for list in [
            &["-R", "quota"][..],
            &["--runtime-features=free-space-tree,quota"],
            &["-O", "quota"],
            &["--features", "squota"],
        ] {
            let msg = refusal("btrfs", list);
            assert!(
                msg.contains("quota groups make snapshot deletion"),
                "{list:?}: {msg}"
            );
        }
        check_extra_args("btrfs", &args(&["-R", "^quota,free-space-tree"])).expect("off is fine");
        check_extra_args(
            "btrfs",
            &args(&["-O", "no-holes,^mixed-bg,block-group-tree"]),
        )
        .expect("checked features");
    }

    #[test]
    fn btrfs_unknown_features_and_checksums_are_refused() {
        assert!(
            refusal("btrfs", &["-O", "list-all"]).contains("not a feature the host has checked")
        );
        assert!(refusal("btrfs", &["-O", "raid-stripe-tree"]).contains("not a feature"));
        assert!(refusal("btrfs", &["--csum", "md5"]).contains("not crc32c"));
        for c in ["crc32c", "xxhash", "sha256", "blake2"] {
            check_extra_args("btrfs", &args(&["--checksum", c])).expect(c);
        }
    }

    #[test]
    fn interrupted_mkfs_says_how_to_start_again() {
        let e = NodeError::MkfsInterrupted {
            device: "/dev/loop3".into(),
            cause: Box::new(NodeError::CallDeadline {
                command: "mkfs.xfs -q /dev/loop3".into(),
                after: Duration::from_millis(1500),
                cap: MKFS_TIMEOUT,
            }),
        };
        assert_eq!(
            e.to_string(),
            "`mkfs.xfs -q /dev/loop3` was killed after 1.5 s: the call's deadline ran out (the \
             tool's own limit is 300 s); the call needs a longer deadline, or the tool is stuck; \
             /dev/loop3 may now hold a partly made filesystem, which will not mount: check it \
             with `blkid -p /dev/loop3` and, if it holds nothing you need, wipe it with \
             `wipefs -a /dev/loop3` before retrying"
        );
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(GIB), "1 GiB");
        assert_eq!(human_bytes(4 * TIB), "4 TiB");
        assert_eq!(human_bytes(1536 * MIB), "1.5 GiB");
    }

    #[test]
    fn unescape_export_handles_trailing_backslash() {
        assert_eq!(unescape_export("a\\ b"), "a b");
        assert_eq!(unescape_export("a\\"), "a\\");
        assert_eq!(unescape_export("plain"), "plain");
    }
}
