//! The extra-argument allowlist: how an option or sub-option is ruled on,
//! the parser that applies the tables of each mkfs (`ext`, `xfs`,
//! `btrfs`), and the value checks they share.
//!
//! Every option, and every sub-option of the comma-list options (`mke2fs
//! -E/-J`, `mkfs.xfs -d/-l/…`), is listed in those tables with what we do
//! about it; anything not listed is refused. The reasons written next to
//! the rules come from running the tools on loop devices (a 1 GiB one and
//! sparse 1 and 4 TiB ones, e2fsprogs 1.47.0, xfsprogs 6.1.0, btrfs-progs
//! 6.2, Linux 6.18); "measured" refers to those runs.

use super::btrfs::MKFS_BTRFS_OPTS;
use super::ext::MKE2FS_OPTS;
use super::layout::{CheckedArgs, Layout, Note};
use super::xfs::MKFS_XFS_OPTS;
use super::{NodeError, Result};

/// What we do with one option.
#[derive(Clone, Copy)]
pub(super) enum Rule {
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
pub(super) type Reason = std::result::Result<(), String>;

/// One sub-option of a comma-list option.
pub(super) struct Sub {
    name: &'static str,
    rule: SubRule,
}

#[derive(Clone, Copy)]
pub(super) enum SubRule {
    Allow,
    Deny(&'static str),
    /// Gets the value (`None` for a bare `name`).
    Check(fn(Option<&str>, &mut Vec<Note>) -> Reason),
}

pub(super) const fn sub(name: &'static str, rule: SubRule) -> Sub {
    Sub { name, rule }
}

pub(super) const COPIED_UUID: &str = "a filesystem UUID is always fresh: a copied one could make the node \
     mount the wrong filesystem by UUID (fstab, systemd)";

pub(super) struct OptSpec {
    short: Option<char>,
    long: Option<&'static str>,
    takes_value: bool,
    rule: Rule,
}

pub(super) const fn s(c: char, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: Some(c),
        long: None,
        takes_value,
        rule,
    }
}

pub(super) const fn sl(c: char, long: &'static str, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: Some(c),
        long: Some(long),
        takes_value,
        rule,
    }
}

pub(super) const fn l(long: &'static str, takes_value: bool, rule: Rule) -> OptSpec {
    OptSpec {
        short: None,
        long: Some(long),
        takes_value,
        rule,
    }
}

pub(super) const HOST_FILES: &str =
    "it makes mkfs read or write a file or device on the host other than the volume";

fn opt_table(fs_type: &str) -> &'static [OptSpec] {
    match fs_type {
        "xfs" => MKFS_XFS_OPTS,
        "btrfs" => MKFS_BTRFS_OPTS,
        _ => MKE2FS_OPTS,
    }
}

// ---- value checks the tables share ----

/// A plain decimal number. mke2fs reads most numbers with `strtoul(…, 0)`,
/// so "010" would be 8 and "0x10" 16 to it: only plain decimals are
/// accepted, so that the number checked is the number mkfs uses.
pub(super) fn decimal(v: &str) -> std::result::Result<u64, String> {
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

pub(super) fn decimal_in(v: &str, lo: u64, hi: u64, why: &str) -> std::result::Result<u64, String> {
    let n = decimal(v)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is outside {lo}..={hi}: {why}"))
    }
}

pub(super) fn need_value(v: Option<&str>) -> std::result::Result<&str, String> {
    v.ok_or_else(|| "it needs a value (name=value)".to_string())
}

pub(super) fn any_decimal(v: &str, _: &mut Vec<Note>) -> Reason {
    decimal(v).map(drop)
}

pub(super) fn any_decimal_value(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    decimal(need_value(v)?).map(drop)
}

/// A bare flag (meaning 1) or `=0` / `=1`.
pub(super) fn flag_value(v: Option<&str>) -> std::result::Result<bool, String> {
    match v {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(format!("{other:?} is not 0 or 1")),
    }
}

pub(super) fn zero_or_one(v: Option<&str>, _: &mut Vec<Note>) -> Reason {
    flag_value(v).map(drop)
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
