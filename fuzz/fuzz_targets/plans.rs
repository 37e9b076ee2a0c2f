//! Every plan and answer a plugin can return, through the host checks that
//! stand between it and the node or kubelet: block plans (`mount`,
//! `mountdevice`) with their mkfs and mount options, filesystem plans
//! (`mount`), `attach`'s device, the answer as sanitised and printed
//! (`DriverStatus::sanitized` / `to_json`), and what blkid reports before
//! mkfs (`parse_blkid_export`).
//!
//! Input: structured (`arbitrary`): a grant (the lists a policy sets), one
//! secret of the call, and one plan or answer; names are mostly picked from
//! the words the checks know, so the fuzzer spends its time on
//! combinations. Checked: no panic; whatever a check accepts is re-checked
//! here against the rules independently (grant lists, option names and
//! characters, never-allowed options, nosuid/nodev hardening, no secret in
//! anything that leaves the host, device paths under /dev, mkfs arguments
//! that stay refused with a force flag or a second device appended, the
//! fs types a filesystem plan may never use); the answer is one JSON object
//! kubelet parses, bounded, with the contract's exit code; blkid output is
//! never taken as "blank".
#![no_main]

use std::path::{Component, Path};

use flexwasm::contract::{CapabilitiesJson, DriverStatus, Status};
use flexwasm::fuzzing;
use flexwasm::node::mkfs;
use flexwasm::policy::{self, Grant};
use flexwasm::secrets::SecretSet;
use flexwasm_fuzz::check_answer;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const FS_TYPES: &[&str] = &[
    "ext4",
    "xfs",
    "ext3",
    "ext2",
    "btrfs",
    "tmpfs",
    "vfat",
    "fuse.sshfs",
    "ramfs",
    "proc",
    "overlay",
    "nfs",
    "ext4 ",
    " tmpfs",
    "fuseblk",
    "sysfs",
    "mqueue",
    "devpts",
    "hugetlbfs",
];
const MOUNT_OPTIONS: &[&str] = &[
    "noatime",
    "discard",
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "suid",
    "dev",
    "exec",
    "comment",
    "data",
    "errors",
    "context",
    "nodiratime",
    "relatime",
    "inode64",
    "huge",
    "nouuid",
    "commit",
    "barrier",
    "user_xattr",
    "acl",
    "compress",
    "subvol",
    "ssd",
];
const OPTION_WORDS: &[&str] = &[
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "suid",
    "dev",
    "exec",
    "bind",
    "rbind",
    "remount",
    "shared",
    "rslave",
    "noatime",
    "discard",
    "size=64m",
    "size=1g",
    "size=50%",
    "mode=0755",
    "mode=1777",
    "uid=1000",
    "gid=0",
    "nr_inodes=1k",
    "nr_inodes=0",
    "size=0",
    "data=ordered",
    "errors=remount-ro",
    "errors=panic",
    "commit=5",
    "subvol=/",
    "compress=zstd",
    "context=x",
    "huge=always",
    "inode64",
    "nouuid",
    "user_xattr",
    "x-mount.mkdir",
    "defaults",
    "loop",
    "offset=0",
    "sizelimit=1",
    "",
    " ",
    "noatime,suid",
    "size",
    "mode=",
    "uid=-1",
];
const MKFS_WORDS: &[&str] = &[
    "-F",
    "-f",
    "--force",
    "-q",
    "-L",
    "data",
    "-U",
    "random",
    "time",
    "-b",
    "4096",
    "1024",
    "65536",
    "-E",
    "stride=8,stripe_width=16",
    "lazy_itable_init=0",
    "offset=4096",
    "-N",
    "100000000",
    "-i",
    "16384",
    "1024",
    "-I",
    "256",
    "-m",
    "1",
    "-O",
    "^has_journal",
    "metadata_csum,64bit",
    "-J",
    "size=64",
    "device=/dev/sda",
    "-T",
    "news",
    "huge",
    "largefile",
    "-g",
    "8",
    "256",
    "-G",
    "16",
    "-c",
    "-l",
    "/etc/passwd",
    "-d",
    "/etc",
    "-S",
    "-t",
    "ext3",
    "-e",
    "panic",
    "remount-ro",
    "-j",
    "-n",
    "agcount=4",
    "agcount=100000",
    "su=64k,sw=4",
    "-s",
    "size=512",
    "-r",
    "rtdev=/dev/sdb",
    "-p",
    "/tmp/proto",
    "-K",
    "--rootdir",
    "/",
    "-M",
    "--mixed",
    "--nodesize",
    "16384",
    "--sectorsize",
    "-R",
    "quota",
    "--csum",
    "xxhash",
    "--features",
    "free-space-tree",
    "no-holes",
    "--",
    "/dev/sda",
    "-z",
    "-D",
    "-C",
    "-v",
    "-V",
    "agsize=16m",
    "bigalloc",
    "-Lx",
    "-qF",
    "-E",
    "num_backup_sb=2",
    "mmp_update_interval=600",
    "orphan_file_size=1G",
    "root_owner=0:0",
    "quotatype=usrquota",
    "-M",
    "-o",
    "hurd",
];

/// A name from `words`, or (rarely) any string.
fn word(u: &mut Unstructured<'_>, words: &[&str]) -> arbitrary::Result<String> {
    let i: u8 = u.arbitrary()?;
    if (i as usize) < words.len() * 3 {
        Ok(words[i as usize % words.len()].to_string())
    } else {
        u.arbitrary()
    }
}

fn words(u: &mut Unstructured<'_>, from: &[&str], max: usize) -> arbitrary::Result<Vec<String>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| word(u, from)).collect()
}

fn subset(u: &mut Unstructured<'_>, from: &[&str]) -> arbitrary::Result<Vec<String>> {
    let mask: u64 = u.arbitrary()?;
    Ok(from
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 64)) != 0)
        .map(|(_, s)| s.to_string())
        .collect())
}

#[derive(Debug)]
enum Plan {
    Block {
        device: String,
        fs_type: String,
        mkfs: Vec<String>,
        mount: Vec<String>,
        size: u64,
    },
    Filesystem {
        source: String,
        fs_type: String,
        mount: Vec<String>,
    },
    Attach {
        device: String,
    },
    Answer(DriverStatus),
    Blkid(String),
}

#[derive(Debug)]
struct Input {
    grant: Grant,
    secret: String,
    read_only: bool,
    plan: Plan,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut grant = Grant::baseline();
        grant.format = subset(u, &["ext4", "xfs", "ext3", "ext2", "btrfs"])?;
        grant.block = subset(u, &["ext4", "xfs", "ext3", "ext2", "btrfs", "vfat"])?;
        grant.filesystem = subset(
            u,
            &["tmpfs", "fuse.sshfs", "ramfs", "ext4", "proc", "mqueue"],
        )?;
        grant.mount_options = subset(u, MOUNT_OPTIONS)?;
        let secret = word(
            u,
            &[
                "hunter2-password",
                "s3cr3t",
                "czNjcjN0",
                "tmpfs",
                "noatime",
                "aaaa",
            ],
        )?;
        let read_only = u.arbitrary()?;
        let plan = match u.int_in_range(0..=4u8)? {
            0 => Plan::Block {
                device: word(
                    u,
                    &["/dev/loop0", "/dev/sdb", "/dev/disk/by-id/x", "relative"],
                )?,
                fs_type: word(u, FS_TYPES)?,
                mkfs: words(u, MKFS_WORDS, 8)?,
                mount: words(u, OPTION_WORDS, 6)?,
                size: match u.int_in_range(0..=3u8)? {
                    0 => 1 << 30,
                    1 => 4 << 40,
                    2 => 16 << 20,
                    _ => u.arbitrary()?,
                },
            },
            1 => Plan::Filesystem {
                source: word(
                    u,
                    &[
                        "tmpfs",
                        "none",
                        "/dev/loop0",
                        "/dev/null",
                        "/",
                        "host:/x",
                        "\0",
                    ],
                )?,
                fs_type: word(u, FS_TYPES)?,
                mount: words(u, OPTION_WORDS, 6)?,
            },
            2 => Plan::Attach {
                device: word(
                    u,
                    &[
                        "/dev/loop0",
                        "/dev/../etc/passwd",
                        "/dev/disk/by-id/wwn-0x5",
                        "/dev/",
                    ],
                )?,
            },
            3 => {
                let status = match u.int_in_range(0..=2u8)? {
                    0 => Status::Success,
                    1 => Status::Failure,
                    _ => Status::NotSupported,
                };
                let caps = if u.arbitrary()? {
                    Some(CapabilitiesJson {
                        attach: u.arbitrary()?,
                        selinux_relabel: u.arbitrary()?,
                        supports_metrics: u.arbitrary()?,
                        fs_group: u.arbitrary()?,
                        requires_fs_resize: u.arbitrary()?,
                    })
                } else {
                    None
                };
                Plan::Answer(DriverStatus {
                    status,
                    message: u.arbitrary()?,
                    device: u.arbitrary()?,
                    volume_name: u.arbitrary()?,
                    attached: u.arbitrary()?,
                    capabilities: caps,
                    quiet_failure: u.arbitrary()?,
                })
            }
            _ => Plan::Blkid(u.arbitrary()?),
        };
        Ok(Input {
            grant,
            secret,
            read_only,
            plan,
        })
    }
}

fuzz_target!(|input: Input| {
    let mut secrets = SecretSet::new();
    secrets.add_str(&input.secret);
    let g = &input.grant;
    match &input.plan {
        Plan::Block {
            device,
            fs_type,
            mkfs,
            mount,
            size,
        } => {
            let r = fuzzing::check_block_plan(
                g,
                &secrets,
                device,
                fs_type,
                mkfs,
                mount,
                input.read_only,
            );
            if let Ok((t, opts)) = &r {
                assert_eq!(t, fs_type.trim());
                assert!(
                    mkfs::is_supported_fs(t) && g.block.contains(t),
                    "block type {t}"
                );
                check_mount_options(g, &secrets, mount, opts);
                assert!(
                    !mkfs.iter().any(|a| secrets.found_in(a)),
                    "mkfs option with a secret"
                );
            }
            // What mkfs gets, when the device is to be formatted.
            let t = fs_type.trim();
            if mkfs::is_supported_fs(t) {
                if let Ok(checked) = mkfs::check_extra_args(t, mkfs) {
                    let _ = checked.check_device_size(t, *size);
                    // ("--" may be accepted as an option's value, as getopt
                    // takes it; appended on its own it must be refused.)
                    for tail in [&["-F"][..], &["-f"], &["--force"], &["/dev/sda"], &["--"]] {
                        let mut more = mkfs.clone();
                        more.extend(tail.iter().map(|s| s.to_string()));
                        assert!(
                            mkfs::check_extra_args(t, &more).is_err(),
                            "{t}: {more:?} accepted"
                        );
                    }
                }
            }
        }
        Plan::Filesystem {
            source,
            fs_type,
            mount,
        } => {
            let r = fuzzing::check_filesystem_plan(
                g,
                &secrets,
                source,
                fs_type,
                mount,
                input.read_only,
            );
            if let Ok((t, opts)) = &r {
                assert_eq!(t, fs_type.trim());
                assert!(g.filesystem.contains(t), "filesystem type {t} not granted");
                assert!(policy::check_filesystem_plan_type(t).is_ok());
                assert!(!mkfs::is_supported_fs(t), "{t} lives on a device");
                assert!(
                    kernel_nodev(t),
                    "{t} needs a device, says /proc/filesystems"
                );
                assert!(!source.is_empty() && !source.contains('\0') && source.len() <= 4096);
                assert!(!secrets.found_in(source), "source with a secret");
                use std::os::unix::fs::FileTypeExt;
                assert!(
                    !std::fs::metadata(source).is_ok_and(|m| m.file_type().is_block_device()),
                    "source {source} is a block device"
                );
                check_mount_options(g, &secrets, mount, opts);
            }
        }
        Plan::Attach { device } => {
            if fuzzing::check_attach_device(g, &secrets, device).is_ok() {
                assert!(
                    device.starts_with("/dev/") && device.len() <= 256,
                    "{device:?}"
                );
                assert!(
                    !Path::new(device)
                        .components()
                        .any(|c| c == Component::ParentDir)
                );
                assert!(
                    device
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._:+@=,-".contains(&b))
                );
                assert!(!secrets.found_in(device));
            }
        }
        Plan::Answer(status) => {
            let quiet = status.quiet_failure;
            let out = status.clone().sanitized(&secrets, "acme/fuzz attach");
            assert_eq!(out.quiet_failure, quiet);
            if out.status == Status::Success {
                assert_eq!(
                    &out.device, &status.device,
                    "a device is withheld, never changed"
                );
                assert_eq!(&out.volume_name, &status.volume_name);
            }
            check_answer(&out, &secrets, quiet);
        }
        Plan::Blkid(text) => {
            if let Ok(sig) = mkfs::parse_blkid_export(text) {
                assert!(
                    !sig.is_blank(),
                    "blkid found something (exit 0): never blank"
                );
            }
        }
    }
});

fn kernel_nodev(t: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| {
        f.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("nodev") && w.next() == Some(t)
        })
    })
}

/// Accepted mount options, re-checked (driver_call's rules, stated anew).
fn check_mount_options(g: &Grant, secrets: &SecretSet, asked: &[String], got: &[String]) {
    const NEVER: &[&str] = &[
        "bind",
        "rbind",
        "remount",
        "move",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
        "unbindable",
        "runbindable",
    ];
    for o in got {
        let name = o.split('=').next().unwrap();
        assert!(!o.is_empty() && o.len() <= 256, "{o:?}");
        assert!(
            o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:=/+@-".contains(&b)),
            "{o:?}"
        );
        assert!(!NEVER.contains(&name), "{o} is never allowed");
        assert!(
            ["ro", "nosuid", "nodev", "noexec"].contains(&name)
                || g.mount_options.iter().any(|m| m == name),
            "{o} is not granted"
        );
        // (The host's own nosuid/nodev count only when the plugin asked.)
        let asked_for = asked.iter().any(|a| a.trim() == o);
        assert!(
            !asked_for || !secrets.found_in(o),
            "mount option {o} holds a secret"
        );
        assert!(
            asked_for || o == "nosuid" || o == "nodev",
            "{o} was not asked for"
        );
    }
    for (safe, power) in [("nosuid", "suid"), ("nodev", "dev")] {
        let has = |x: &str| got.iter().any(|o| o == x);
        assert!(
            has(safe) || (has(power) && g.mount_options.iter().any(|m| m == power)),
            "{got:?} without {safe}"
        );
    }
    assert!(got.len() <= asked.len() + 2);
}
