//! Values of mount options, checked per filesystem.
//!
//! Options reach this module as single `name` or `name=value` items of
//! plain characters, and the operator has granted every name. A grant says
//! "this driver may set `size`", not "any size": this module refuses the
//! values that switch a limit off, that harm the node, that point the
//! kernel at another device of the node, or that contradict a read-only
//! volume. Options it does not know pass: granting them was the
//! operator's decision. Names are matched exactly, as the kernel does.
//!
//! What is refused, and why:
//!
//! | fs | option | why |
//! |---|---|---|
//! | any, read-only volume | `rw` (any case) | it asks for the read-write mount the volume must not get |
//! | tmpfs | `size=0`, `nr_blocks=0`, `nr_inodes=0` (any spelling of zero) | zero means *unlimited*: the volume could fill the node's memory |
//! | tmpfs | `size` not bytes (`k`, `m`, `g` suffix) or a percentage 1..=100 | anything else is unlimited, more than the node has, or unparsable |
//! | tmpfs | `nr_blocks`, `nr_inodes` not a count (`k`, `m`, `g` suffix) | unparsable |
//! | tmpfs, ramfs | `mode` not octal ≤ 07777 | the kernel would read other digits differently or fail |
//! | tmpfs | `uid`, `gid` not a decimal id | only numbers are ids; 4294967295 is "no id" |
//! | ext2/3/4 | `errors=panic` | one filesystem error would panic the whole node |
//! | ext3/4 | `journal_dev`, `journal_path` | the kernel would use another device of the node as the journal |
//! | xfs | `logdev`, `rtdev` | the kernel would use another device of the node |
//! | btrfs | `fatal_errors=panic` | one fatal error would panic the whole node |
//! | btrfs | `device` | the kernel would assemble the volume with another device of the node |
//!
//! Measured on Linux 6.18 (device checksums before and after a read-only
//! mount): ext4 and btrfs wrote nothing with any option tried
//! (`journal_checksum`, `init_itable`, `discard`, `quota`, `clear_cache`,
//! `rescan_uuid_tree`, `space_cache=v2`, …); xfs writes its log and
//! superblock on *every* read-only mount of a writable device unless
//! `norecovery` is given, whatever the other options. That is not an
//! option this module can refuse; the caller must decide about it.

/// Check the values of `options` for a `fs_type` mount. `read_only` is
/// whether the volume must be mounted read-only. The error is a sentence
/// for `kubectl describe`, naming the option.
pub fn check_values(fs_type: &str, options: &[String], read_only: bool) -> Result<(), String> {
    // Items are single options, but a comma would make the kernel see
    // several: check every piece.
    for item in options.iter().flat_map(|o| o.split(',')) {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        check_one(fs_type, name, value, read_only)
            .map_err(|why| format!("mount option '{item}' is not allowed: {why}"))?;
    }
    Ok(())
}

fn check_one(
    fs_type: &str,
    name: &str,
    value: Option<&str>,
    read_only: bool,
) -> Result<(), String> {
    if read_only && name.eq_ignore_ascii_case("rw") {
        return Err("the volume is read-only, and this asks for a read-write mount".into());
    }
    match (fs_type, name) {
        ("tmpfs", "size") => tmpfs_size(value),
        ("tmpfs", "nr_blocks" | "nr_inodes") => tmpfs_count(name, value),
        ("tmpfs" | "ramfs", "mode") => mode(value),
        ("tmpfs", "uid" | "gid") => id(value),
        ("ext2" | "ext3" | "ext4", "errors") if value == Some("panic") => Err(
            "with errors=panic one filesystem error panics the whole node, taking every pod on \
             it down; use errors=remount-ro or errors=continue"
                .into(),
        ),
        ("ext3" | "ext4", "journal_dev" | "journal_path") => Err(OTHER_DEVICE.into()),
        ("xfs", "logdev" | "rtdev") => Err(OTHER_DEVICE.into()),
        ("btrfs", "device") => Err(OTHER_DEVICE.into()),
        ("btrfs", "fatal_errors") if value == Some("panic") => Err(
            "with fatal_errors=panic one fatal filesystem error panics the whole node; use \
             fatal_errors=bug (the default)"
                .into(),
        ),
        _ => Ok(()),
    }
}

const OTHER_DEVICE: &str = "it makes the kernel use another device of the node for this volume";

fn need(value: Option<&str>) -> Result<&str, String> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "it needs a value".to_string())
}

/// Digits and an optional k/m/g suffix (either case), as bytes or a
/// count; `None` when it does not parse or overflows.
fn with_suffix(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

const UNLIMITED: &str = "0 means unlimited to tmpfs: the volume could fill the node's memory; \
     give a real limit";

fn tmpfs_size(value: Option<&str>) -> Result<(), String> {
    let v = need(value)?;
    if let Some(pct) = v.strip_suffix('%') {
        return match pct.parse::<u64>() {
            Ok(0) => Err(UNLIMITED.into()),
            Ok(1..=100) if pct.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err("a percentage of the node's memory must be 1% to 100%".into()),
        };
    }
    match with_suffix(v) {
        Some(0) => Err(UNLIMITED.into()),
        Some(_) => Ok(()),
        None => Err(
            "the size must be bytes, optionally with a k, m or g suffix, or a percentage of the \
             node's memory up to 100%"
                .into(),
        ),
    }
}

fn tmpfs_count(name: &str, value: Option<&str>) -> Result<(), String> {
    match with_suffix(need(value)?) {
        Some(0) => Err(UNLIMITED.into()),
        Some(_) => Ok(()),
        None => Err(format!(
            "{name} must be a number, optionally with a k, m or g suffix"
        )),
    }
}

fn mode(value: Option<&str>) -> Result<(), String> {
    let v = need(value)?;
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o7777 && v.bytes().all(|b| (b'0'..=b'7').contains(&b)) => Ok(()),
        _ => Err("the mode must be an octal number up to 07777".into()),
    }
}

fn id(value: Option<&str>) -> Result<(), String> {
    let v = need(value)?;
    match v.parse::<u32>() {
        Ok(u32::MAX) => Err("4294967295 is not a valid id (it means \"no id\")".into()),
        Ok(_) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("it must be a numeric id (a decimal number)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fs: &str, list: &[&str], read_only: bool) -> Result<(), String> {
        let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        check_values(fs, &v, read_only)
    }

    fn refused(fs: &str, list: &[&str], read_only: bool) -> String {
        check(fs, list, read_only).expect_err(&format!("{fs} {list:?} ro={read_only}"))
    }

    #[test]
    fn read_only_volumes_refuse_rw_in_every_spelling() {
        for fs in ["ext4", "xfs", "btrfs", "tmpfs", "nfs"] {
            for rw in ["rw", "RW", "Rw", "noatime,rw"] {
                let msg = refused(fs, &[rw], true);
                assert!(msg.contains("asks for a read-write mount"), "{msg}");
            }
            check(fs, &["ro", "noatime"], true).expect("ro is fine");
            check(fs, &["rw"], false).expect("rw on a read-write volume");
        }
        assert_eq!(
            refused("ext4", &["rw"], true),
            "mount option 'rw' is not allowed: the volume is read-only, and this asks for a \
             read-write mount"
        );
    }

    #[test]
    fn tmpfs_zero_limits_mean_unlimited_and_are_refused() {
        for opt in [
            "size=0",
            "size=0k",
            "size=0M",
            "size=00",
            "size=0%",
            "nr_blocks=0",
            "nr_blocks=0g",
            "nr_inodes=0",
            "nr_inodes=0k",
        ] {
            let msg = refused("tmpfs", &[opt], false);
            assert!(msg.contains("0 means unlimited"), "{opt}: {msg}");
        }
    }

    #[test]
    fn tmpfs_size_must_be_bytes_or_a_percentage_up_to_100() {
        for ok in [
            "size=1",
            "size=64k",
            "size=512m",
            "size=2G",
            "size=50%",
            "size=100%",
        ] {
            check("tmpfs", &[ok], false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "size=101%",
            "size=200%",
            "size=-1",
            "size=1t",
            "size=1.5g",
            "size=",
            "size",
            "size=m",
            "size=18446744073709551615k",
            "size=+5%",
            "size=5 %",
        ] {
            let msg = refused("tmpfs", &[bad], false);
            assert!(
                msg.contains("percentage") || msg.contains("needs a value"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn tmpfs_counts_must_parse() {
        check("tmpfs", &["nr_inodes=10k", "nr_blocks=1024"], false).expect("ok");
        for bad in [
            "nr_inodes=many",
            "nr_blocks=-1",
            "nr_inodes=1t",
            "nr_blocks",
        ] {
            let msg = refused("tmpfs", &[bad], false);
            assert!(
                msg.contains("must be a number") || msg.contains("needs a value"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn mode_must_be_octal_up_to_07777() {
        for ok in ["mode=0755", "mode=755", "mode=1777", "mode=07777", "mode=0"] {
            check("tmpfs", &[ok], false).unwrap_or_else(|e| panic!("{ok}: {e}"));
            check("ramfs", &[ok], false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "mode=10000",
            "mode=0789",
            "mode=rwx",
            "mode=0x1ff",
            "mode=-1",
            "mode=",
        ] {
            let msg = refused("tmpfs", &[bad], false);
            assert!(
                msg.contains("octal") || msg.contains("needs a value"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn tmpfs_uid_and_gid_must_be_numbers() {
        check("tmpfs", &["uid=0", "gid=1000", "uid=4294967294"], false).expect("ok");
        for bad in ["uid=root", "gid=-1", "uid=4294967296", "gid=+5", "uid=1e3"] {
            let msg = refused("tmpfs", &[bad], false);
            assert!(msg.contains("numeric id"), "{bad}: {msg}");
        }
        assert!(refused("tmpfs", &["uid=4294967295"], false).contains("\"no id\""));
    }

    #[test]
    fn ext_errors_panic_is_refused() {
        for fs in ["ext2", "ext3", "ext4"] {
            let msg = refused(fs, &["errors=panic"], false);
            assert!(msg.contains("panics the whole node"), "{msg}");
            check(fs, &["errors=remount-ro"], false).expect("remount-ro");
            check(fs, &["errors=continue"], true).expect("continue");
        }
    }

    #[test]
    fn btrfs_fatal_errors_panic_is_refused() {
        let msg = refused("btrfs", &["fatal_errors=panic"], false);
        assert!(msg.contains("panics the whole node"), "{msg}");
        check("btrfs", &["fatal_errors=bug"], false).expect("bug");
    }

    #[test]
    fn options_naming_another_device_are_refused() {
        for (fs, opt) in [
            ("ext4", "journal_dev=2049"),
            ("ext3", "journal_path=/dev/sdb1"),
            ("xfs", "logdev=/dev/sdb"),
            ("xfs", "rtdev=/dev/sdc"),
            ("btrfs", "device=/dev/sdd"),
        ] {
            let msg = refused(fs, &[opt], false);
            assert!(
                msg.contains("another device of the node"),
                "{fs} {opt}: {msg}"
            );
        }
    }

    #[test]
    fn comma_lists_are_checked_piece_by_piece() {
        assert!(refused("tmpfs", &["size=1g,size=0"], false).contains("'size=0'"));
        assert!(refused("ext4", &["noatime,errors=panic"], false).contains("errors=panic"));
    }

    #[test]
    fn unknown_options_and_other_filesystems_pass() {
        check(
            "ext4",
            &["noatime", "discard", "commit=30", "data=ordered"],
            false,
        )
        .expect("ok");
        check("xfs", &["inode64", "logbsize=256k", "norecovery"], true).expect("ok");
        check("btrfs", &["compress=zstd:3", "subvol=/data"], false).expect("ok");
        // The tmpfs rules are tmpfs's: a size=0 elsewhere is not ours to judge.
        check("nfs", &["size=0", "mode=9999"], false).expect("not tmpfs");
        check("tmpfs", &["huge=within_size", "mpol=interleave"], false).expect("ok");
        check("tmpfs", &[], true).expect("nothing to check");
    }
}
