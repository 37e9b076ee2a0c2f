//! What a device holds: `blkid`'s low-level probe, double-checked by
//! reading the device's start when it finds nothing (see the module docs
//! of [`super`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{NodeError, PARANOID_BYTES, PROBE_TIMEOUT, Result, exec, path_str};

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

/// How [`classify_start`] names non-zero data no probe recognises.
const UNRECOGNISED: &str = "unrecognised data";

impl Signature {
    pub fn is_blank(&self) -> bool {
        matches!(self, Signature::Blank)
    }

    /// Non-zero data that blkid finds no signature in (what a mkfs killed
    /// before it wrote its superblock leaves, among other things).
    pub fn is_unrecognised_data(&self) -> bool {
        matches!(self, Signature::Other { what } if what.starts_with(UNRECOGNISED))
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
pub(super) fn classify_start(bytes: &[u8]) -> Signature {
    match bytes.iter().position(|b| *b != 0) {
        None => Signature::Blank,
        Some(at) => Signature::Other {
            what: format!(
                "{UNRECOGNISED} (blkid finds no signature, but byte {at} of the first {} KiB is not zero; if the device is really unused, zero its start, e.g. with `dd if=/dev/zero bs=64K count=1`)",
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
pub(super) fn unescape_export(v: &str) -> String {
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
