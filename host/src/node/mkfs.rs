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
use std::io::Read;
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
    let labels = check_extra_args(fs_type, extra_args)?;
    for label in &labels {
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
    exec::run_checked(&program, &args, MKFS_TIMEOUT)?;

    match probe(&dev)? {
        Signature::Filesystem { fs_type: ref t, .. } if t == fs_type => Ok(()),
        other => Err(NodeError::FormatNotVerified {
            device: device.to_path_buf(),
            fs_type: fs_type.to_string(),
            found: other,
        }),
    }
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

/// What we do with one option.
#[derive(Clone, Copy)]
enum Rule {
    Allow,
    Force,
    Deny(&'static str),
    /// Allowed unless the value names one of these `key` / `key=`
    /// sub-options (comma-separated value).
    DenySubopts(&'static [&'static str], &'static str),
    /// A filesystem label: allowed unless a device on the node already
    /// carries it (checked before mkfs runs).
    Label,
    /// mke2fs `-U`: only `random` or `time`, which make a fresh UUID.
    FreshUuid,
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

/// mke2fs (ext2/3/4): "b:cd:e:g:i:jl:m:no:qr:s:t:vC:DE:FG:I:J:KL:M:N:O:R:ST:U:Vz:".
const MKE2FS_OPTS: &[OptSpec] = &[
    s('b', true, Rule::Allow),
    s('c', false, Rule::Allow),
    s('C', true, Rule::Allow),
    s('d', true, Rule::Deny(HOST_FILES)),
    s('D', false, Rule::Allow),
    s('e', true, Rule::Allow),
    s('E', true, Rule::Allow),
    s('F', false, Rule::Force),
    s('g', true, Rule::Allow),
    s('G', true, Rule::Allow),
    s('i', true, Rule::Allow),
    s('I', true, Rule::Allow),
    s('j', false, Rule::Allow),
    s('J', true, Rule::DenySubopts(&["device"], HOST_FILES)),
    s('K', false, Rule::Allow),
    s('l', true, Rule::Deny(HOST_FILES)),
    s('L', true, Rule::Label),
    s('m', true, Rule::Allow),
    s('M', true, Rule::Allow),
    s('n', false, Rule::Allow),
    s('N', true, Rule::Allow),
    s('o', true, Rule::Allow),
    s('O', true, Rule::Allow),
    s('q', false, Rule::Allow),
    s('r', true, Rule::Allow),
    s('R', true, Rule::Allow),
    s('s', true, Rule::Allow),
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
    s('T', true, Rule::Allow),
    s('U', true, Rule::FreshUuid),
    s('v', false, Rule::Allow),
    s('V', false, Rule::Allow),
    s('z', true, Rule::Deny(HOST_FILES)),
];

/// mkfs.xfs: "b:c:d:i:l:L:m:n:KNp:qr:s:fV".
const MKFS_XFS_OPTS: &[OptSpec] = &[
    s('b', true, Rule::Allow),
    s('c', true, Rule::Deny(HOST_FILES)),
    s('d', true, Rule::DenySubopts(&["name", "file"], HOST_FILES)),
    s('f', false, Rule::Force),
    s('i', true, Rule::Allow),
    s('K', false, Rule::Allow),
    s(
        'l',
        true,
        Rule::DenySubopts(&["logdev", "file", "name"], HOST_FILES),
    ),
    s('L', true, Rule::Label),
    s('m', true, Rule::DenySubopts(&["uuid"], COPIED_UUID)),
    s('n', true, Rule::Allow),
    s('N', false, Rule::Allow),
    s('p', true, Rule::Deny(HOST_FILES)),
    s('q', false, Rule::Allow),
    s(
        'r',
        true,
        Rule::DenySubopts(&["rtdev", "file", "name"], HOST_FILES),
    ),
    s('s', true, Rule::Allow),
    s('V', false, Rule::Allow),
];

/// mkfs.btrfs (btrfs-progs 5.x/6.x).
const MKFS_BTRFS_OPTS: &[OptSpec] = &[
    sl('A', "alloc-start", true, Rule::Allow),
    sl('b', "byte-count", true, Rule::Allow),
    l("checksum", true, Rule::Allow),
    l("csum", true, Rule::Allow),
    sl('d', "data", true, Rule::Allow),
    sl('f', "force", false, Rule::Force),
    sl('K', "nodiscard", false, Rule::Allow),
    sl('l', "leafsize", true, Rule::Allow),
    sl('L', "label", true, Rule::Label),
    sl('m', "metadata", true, Rule::Allow),
    sl('M', "mixed", false, Rule::Allow),
    sl('n', "nodesize", true, Rule::Allow),
    sl('O', "features", true, Rule::Allow),
    sl('q', "quiet", false, Rule::Allow),
    sl('r', "rootdir", true, Rule::Deny(HOST_FILES)),
    sl('R', "runtime-features", true, Rule::Allow),
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

/// Check `extra_args` for `mkfs.<fs_type>` against the allowlist (see the
/// module docs). Parses like getopt, so `-qF` and `-Lx` are understood.
/// Returns the labels the arguments set, which the caller checks against
/// the node's devices.
pub fn check_extra_args(fs_type: &str, extra_args: &[String]) -> Result<Vec<String>> {
    let table = opt_table(fs_type);
    let reject = |arg: &str, reason: String| NodeError::MkfsArgRejected {
        fs_type: fs_type.to_string(),
        arg: arg.to_string(),
        reason,
    };
    let mut labels = Vec::new();
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
            apply_rule(spec.rule, value, &mut labels).map_err(|r| reject(arg, r))?;
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
                    apply_rule(spec.rule, Some(value), &mut labels).map_err(|r| reject(arg, r))?;
                    break;
                }
                apply_rule(spec.rule, None, &mut labels).map_err(|r| reject(arg, r))?;
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
    if let Some(long) = labels.iter().find(|l| l.len() > max) {
        return Err(reject(
            long,
            format!(
                "the label is {} bytes; {fs_type} labels hold at most {max} (mkfs would cut it)",
                long.len()
            ),
        ));
    }
    Ok(labels)
}

/// The longest label each mkfs stores whole.
fn max_label_bytes(fs_type: &str) -> usize {
    match fs_type {
        "xfs" => 12,
        "btrfs" => 255,
        _ => 16,
    }
}

fn apply_rule(
    rule: Rule,
    value: Option<&str>,
    labels: &mut Vec<String>,
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
            labels.push(label.to_string());
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
        Rule::DenySubopts(keys, why) => {
            let v = value.unwrap_or("");
            let hit = v
                .split(',')
                .map(|sub| sub.split('=').next().unwrap_or("").trim())
                .find(|k| keys.contains(k));
            match hit {
                Some(k) => Err(format!("sub-option {k:?} is not allowed: {why}")),
                None => Ok(()),
            }
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
            check_extra_args("ext4", &args(&["-L", "a", "-m", "0", "-Lb"])).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            check_extra_args("btrfs", &args(&["--label=c"])).unwrap(),
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

    #[test]
    fn unescape_export_handles_trailing_backslash() {
        assert_eq!(unescape_export("a\\ b"), "a b");
        assert_eq!(unescape_export("a\\"), "a\\");
        assert_eq!(unescape_export("plain"), "plain");
    }
}
