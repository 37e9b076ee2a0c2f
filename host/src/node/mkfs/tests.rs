use super::ext::page_size;
use super::layout::human_bytes;
use super::probe::{classify_start, unescape_export};
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
        ("ext4", vec!["1024"]),      // blocks-count would follow the device
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
    assert!(refusal("ext4", &["-J", "location=3000000000"]).contains("does not range-check it"));
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
    assert!(refusal_on("xfs", &["-d", "agsize=1g"], 4 * TIB).contains("4096 allocation groups"));
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
    assert!(refusal("btrfs", &["-O", "list-all"]).contains("not a feature the host has checked"));
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
        noted: false,
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
fn interrupted_noted_mkfs_says_the_next_try_formats_again() {
    let e = NodeError::MkfsInterrupted {
        device: "/dev/loop3".into(),
        cause: Box::new(NodeError::Cancelled {
            command: "mkfs.ext4 -q /dev/loop3".into(),
        }),
        noted: true,
    };
    assert_eq!(
        e.to_string(),
        "`mkfs.ext4 -q /dev/loop3` was killed because the driver was asked to stop; /dev/loop3 \
         may now hold a partly made filesystem, which will not mount; the host noted the format \
         it started, so the next try wipes what it left and formats /dev/loop3 again"
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
