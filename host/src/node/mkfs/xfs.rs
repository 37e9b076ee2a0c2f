//! mkfs.xfs: its options and sub-options, each with what the host does
//! about it and why ("measured": see [`super::args`]), and the checks of
//! their values.

use super::MIB;
use super::args::{
    COPIED_UUID, HOST_FILES, OptSpec, Reason, Rule, Sub, SubRule, decimal, decimal_in, need_value,
    s, sub,
};
use super::layout::Note;

/// mkfs.xfs: "b:c:d:i:l:L:m:n:KNp:qr:s:fV".
pub(super) const MKFS_XFS_OPTS: &[OptSpec] = &[
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

/// At most this many xfs allocation groups (see [`xfs_agcount`]).
pub(super) const MAX_XFS_AGS: u64 = 1024;

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
pub(super) fn xfs_size_bytes(v: &str, block_size: Option<u64>) -> std::result::Result<u64, String> {
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
