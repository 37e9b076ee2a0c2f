//! Tests against the real kernel: real loop devices, real mkfs, real mounts.
//!
//! Each test calls [`privileged`] first: as root it moves the test thread
//! into a private mount namespace; otherwise it skips (or fails under `CI`).
//! Loop devices are detached by [`LoopGuard`] and mounts removed by
//! [`MountGuard`] even when an assertion fails; declare the guards in the
//! order temp dir → loop → mount so they drop in reverse.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::mkfs::Signature;
use super::mount::{MountRequest, mount, unmount, unmount_all};
use super::testutil::{
    LoopGuard, MountGuard, TempDir, allocated_bytes, have, image, privileged, processes_mentioning,
};
use super::{NodeError, blockdev, exec, loopdev, mkfs, mountinfo, resize};

const MIB: u64 = 1024 * 1024;
const TIB: u64 = 1024 * 1024 * MIB;

fn opts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn mount_fs(dev: &Path, target: &Path, fs_type: &str, read_only: bool) -> super::Result<()> {
    let dev = dev.to_str().expect("utf-8 device path");
    mount(MountRequest {
        source: dev,
        target,
        fs_type,
        options: &[],
        read_only,
    })
}

fn fs_size(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks() as u64 * st.fragment_size() as u64
}

fn sys_size_bytes(loop_dev: &Path) -> u64 {
    blockdev::get(loop_dev)
        .expect("get")
        .expect("device known to sysfs")
        .size_bytes
}

#[test]
fn probe_blank_ext4_xfs_and_partition_table() {
    if !privileged("probe_blank_ext4_xfs_and_partition_table") {
        return;
    }
    let tmp = TempDir::new("probe");

    // Blank.
    let blank = LoopGuard::attach(&image(&tmp, "blank.img", 16 * MIB), false);
    assert_eq!(mkfs::probe(blank.path()).expect("probe"), Signature::Blank);

    // ext4 with a label.
    let ext = LoopGuard::attach(&image(&tmp, "ext.img", 32 * MIB), false);
    mkfs::format(ext.path(), "ext4", &opts(&["-L", "fwt-probe-e4"])).expect("format ext4");
    match mkfs::probe(ext.path()).expect("probe") {
        Signature::Filesystem {
            fs_type,
            label,
            uuid,
        } => {
            assert_eq!(fs_type, "ext4");
            assert_eq!(label.as_deref(), Some("fwt-probe-e4"));
            assert!(uuid.is_some());
        }
        other => panic!("expected ext4, got {other:?}"),
    }

    // xfs (mkfs.xfs wants at least 300 MiB; the file is sparse).
    let xfs = LoopGuard::attach(&image(&tmp, "xfs.img", 320 * MIB), false);
    mkfs::format(xfs.path(), "xfs", &opts(&["-L", "fwt-probe-x"])).expect("format xfs");
    match mkfs::probe(xfs.path()).expect("probe") {
        Signature::Filesystem { fs_type, label, .. } => {
            assert_eq!(fs_type, "xfs");
            assert_eq!(label.as_deref(), Some("fwt-probe-x"));
        }
        other => panic!("expected xfs, got {other:?}"),
    }

    // A DOS partition table, written by hand (no sfdisk needed): one Linux
    // partition from sector 2048 to the end, boot signature 0x55AA.
    let pt_img = image(&tmp, "pt.img", 16 * MIB);
    {
        let mut f = OpenOptions::new().write(true).open(&pt_img).expect("open");
        let mut mbr = [0u8; 512];
        mbr[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes()); // disk id
        let entry = &mut mbr[446..462];
        entry[4] = 0x83; // Linux
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&((16 * MIB / 512 - 2048) as u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        f.write_all(&mbr).expect("write mbr");
    }
    let pt = LoopGuard::attach(&pt_img, false);
    assert_eq!(
        mkfs::probe(pt.path()).expect("probe"),
        Signature::PartitionTable { kind: "dos".into() }
    );
    let err = mkfs::format(pt.path(), "ext4", &[]).expect_err("must refuse");
    assert_eq!(
        err.to_string(),
        format!(
            "mkfs refused: {} already holds a dos partition table; not formatting",
            pt.path().display()
        )
    );
}

#[test]
fn probe_does_not_call_unknown_data_blank() {
    if !privileged("probe_does_not_call_unknown_data_blank") {
        return;
    }
    let tmp = TempDir::new("garbage");
    let img = image(&tmp, "g.img", 8 * MIB);
    {
        let mut f = OpenOptions::new().write(true).open(&img).expect("open");
        f.seek(SeekFrom::Start(40_000)).expect("seek");
        f.write_all(b"application data, not a filesystem")
            .expect("write");
    }
    let dev = LoopGuard::attach(&img, false);
    let sig = mkfs::probe(dev.path()).expect("probe");
    assert!(matches!(sig, Signature::Other { .. }), "{sig:?}");
    assert!(sig.to_string().contains("byte 40000"), "{sig}");
    let err = mkfs::format(dev.path(), "ext4", &[]).expect_err("must refuse");
    assert!(matches!(err, NodeError::MkfsRefused { .. }), "{err:?}");
    // Nothing was written.
    let mut start = vec![0u8; 1024];
    File::open(&img)
        .expect("open")
        .read_exact(&mut start)
        .expect("read");
    assert!(start.iter().all(|b| *b == 0));
}

#[test]
fn format_refuses_a_device_that_holds_a_filesystem() {
    if !privileged("format_refuses_a_device_that_holds_a_filesystem") {
        return;
    }
    let tmp = TempDir::new("refuse");
    let dev = LoopGuard::attach(&image(&tmp, "x.img", 320 * MIB), false);
    mkfs::format(dev.path(), "xfs", &opts(&["-L", "fwt-refuse"])).expect("format xfs");
    for fs in ["ext4", "xfs"] {
        let err = mkfs::format(dev.path(), fs, &[]).expect_err("must refuse");
        assert_eq!(
            err.to_string(),
            format!(
                "mkfs refused: {} already holds an xfs filesystem (label fwt-refuse); not formatting",
                dev.path().display()
            )
        );
    }
    // Force flags are rejected before anything is probed.
    let err = mkfs::format(dev.path(), "xfs", &opts(&["-f"])).expect_err("force");
    assert!(matches!(err, NodeError::MkfsArgRejected { .. }), "{err:?}");
    // Still the same filesystem.
    assert!(matches!(
        mkfs::probe(dev.path()).expect("probe"),
        Signature::Filesystem { ref fs_type, .. } if fs_type == "xfs"
    ));
}

#[test]
fn format_refuses_a_label_or_uuid_another_device_has() {
    if !privileged("format_refuses_a_label_or_uuid_another_device_has") {
        return;
    }
    let tmp = TempDir::new("label");
    let first = LoopGuard::attach(&image(&tmp, "first.img", 32 * MIB), false);
    let second = LoopGuard::attach(&image(&tmp, "second.img", 32 * MIB), false);
    mkfs::format(first.path(), "ext4", &opts(&["-L", "fwt-taken"])).expect("format first");
    let Signature::Filesystem {
        uuid: Some(uuid), ..
    } = mkfs::probe(first.path()).expect("probe")
    else {
        panic!("first has no UUID");
    };
    // The label of the first device: refused, and the second stays blank.
    let err = mkfs::format(second.path(), "ext4", &opts(&["-L", "fwt-taken"])).expect_err("taken");
    assert!(
        err.to_string().contains(&format!(
            "{} already has a filesystem labelled \"fwt-taken\"",
            first.path().display()
        )),
        "{err}"
    );
    // Its UUID: refused before anything is probed.
    let err = mkfs::format(second.path(), "ext4", &opts(&["-U", &uuid])).expect_err("uuid");
    assert!(
        err.to_string()
            .contains("a filesystem UUID is always fresh"),
        "{err}"
    );
    assert_eq!(mkfs::probe(second.path()).expect("probe"), Signature::Blank);
    // A label no device has, and a fresh random UUID: fine.
    mkfs::format(
        second.path(),
        "ext4",
        &opts(&["-L", "fwt-free", "-U", "random"]),
    )
    .expect("format second");
    match mkfs::probe(second.path()).expect("probe") {
        Signature::Filesystem {
            label,
            uuid: Some(u),
            ..
        } => {
            assert_eq!(label.as_deref(), Some("fwt-free"));
            assert_ne!(u, uuid);
        }
        other => panic!("expected ext4, got {other:?}"),
    }
}

#[test]
fn format_mount_write_unmount_remount_read() {
    if !privileged("format_mount_write_unmount_remount_read") {
        return;
    }
    let tmp = TempDir::new("cycle");
    let mnt = tmp.dir("mnt");
    let dev = LoopGuard::attach(&image(&tmp, "e.img", 32 * MIB), false);
    let _m = MountGuard(mnt.clone());

    mkfs::format(dev.path(), "ext4", &[]).expect("format");
    mount_fs(dev.path(), &mnt, "ext4", false).expect("mount rw");
    let entry = mountinfo::mount_at(&mnt)
        .expect("mountinfo")
        .expect("mounted");
    assert_eq!(entry.fs_type, "ext4");
    assert_eq!(entry.source, dev.path().to_str().expect("utf-8"));
    let (ma, mi) = blockdev::dev_numbers(dev.path()).expect("dev numbers");
    assert_eq!((entry.major, entry.minor), (ma, mi));
    assert_eq!(mountinfo::mounts_of(ma, mi).expect("mounts_of").len(), 1);

    fs::write(mnt.join("hello.txt"), b"persisted").expect("write");
    assert!(unmount(&mnt).expect("unmount"));
    assert!(!mountinfo::is_mount_point(&mnt).expect("check"));
    assert!(!mnt.join("hello.txt").exists());
    // Idempotent: nothing mounted any more.
    assert!(!unmount(&mnt).expect("second unmount"));

    // Mount again read-only (with options): data is there, writes fail.
    mount(MountRequest {
        source: dev.path().to_str().expect("utf-8"),
        target: &mnt,
        fs_type: "ext4",
        options: &opts(&["nosuid", "nodev", "noatime", "errors=remount-ro"]),
        read_only: true,
    })
    .expect("mount ro");
    assert_eq!(fs::read(mnt.join("hello.txt")).expect("read"), b"persisted");
    let e = fs::write(mnt.join("new.txt"), b"x").expect_err("read-only");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let entry = mountinfo::mount_at(&mnt)
        .expect("mountinfo")
        .expect("mounted");
    for o in ["ro", "nosuid", "nodev", "noatime"] {
        assert!(
            entry.options.iter().any(|x| x == o),
            "{o} missing in {:?}",
            entry.options
        );
    }
    assert!(
        entry.super_options.iter().any(|x| x == "errors=remount-ro"),
        "{:?}",
        entry.super_options
    );
    assert_eq!(unmount_all(&mnt).expect("unmount"), 1);
}

#[test]
fn mount_failure_explains_itself() {
    if !privileged("mount_failure_explains_itself") {
        return;
    }
    let tmp = TempDir::new("mountfail");
    let mnt = tmp.dir("mnt");
    let dev = LoopGuard::attach(&image(&tmp, "b.img", 8 * MIB), false);
    let _m = MountGuard(mnt.clone());
    let err = mount_fs(dev.path(), &mnt, "ext4", false).expect_err("blank device");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "mount of {} on {} (type ext4",
            dev.path().display(),
            mnt.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("bad superblock"), "{msg}");

    let err = mount_fs(dev.path(), &mnt, "nosuchfs", false).expect_err("unknown fs");
    assert!(
        err.to_string()
            .contains("no driver for this filesystem type"),
        "{err}"
    );
}

/// Online ext4 grow needs CAP_SYS_RESOURCE (EXT4_IOC_RESIZE_FS); some
/// sandboxes drop it even for root.
fn have_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Format `fs_type` on a loop device of `size`, grow the file to `grown`,
/// set_capacity, grow the filesystem (mounted if `online`), check the size.
fn grow_case(tmp: &TempDir, fs_type: &str, size: u64, grown: u64, online: bool) {
    let tag = format!("{fs_type}-{}", if online { "online" } else { "offline" });
    let mnt = tmp.dir(&format!("mnt-{tag}"));
    let img = image(tmp, &format!("{tag}.img"), size);
    let dev = LoopGuard::attach(&img, false);
    let _m = MountGuard(mnt.clone());
    mkfs::format(dev.path(), fs_type, &[]).expect("format");
    // A filesystem can never be bigger than its device: compare with that
    // offline, because mounting it once would make resize2fs insist on an
    // `e2fsck -f` first (mount time newer than last check).
    let before = if online {
        mount_fs(dev.path(), &mnt, fs_type, false).expect("mount");
        fs_size(&mnt)
    } else {
        size
    };

    OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open")
        .set_len(grown)
        .expect("grow file");
    assert_eq!(sys_size_bytes(dev.path()), size, "{tag}: not yet re-read");
    loopdev::set_capacity(dev.path()).expect("set_capacity");
    assert_eq!(sys_size_bytes(dev.path()), grown, "{tag}");

    resize::grow_filesystem(dev.path(), &mnt, fs_type).unwrap_or_else(|e| panic!("{tag}: {e}"));
    // Idempotent.
    resize::grow_filesystem(dev.path(), &mnt, fs_type)
        .unwrap_or_else(|e| panic!("{tag} again: {e}"));
    if !online {
        mount_fs(dev.path(), &mnt, fs_type, false).expect("mount");
    }
    let after = fs_size(&mnt);
    assert!(
        after > before + (grown - size) / 2,
        "{tag}: {before} -> {after}"
    );
    assert_eq!(unmount_all(&mnt).expect("unmount"), 1);
}

#[test]
fn grow_ext4_offline_and_xfs_online() {
    if !privileged("grow_ext4_offline_and_xfs_online") {
        return;
    }
    let tmp = TempDir::new("grow");
    grow_case(&tmp, "ext4", 64 * MIB, 128 * MIB, false);
    grow_case(&tmp, "xfs", 320 * MIB, 480 * MIB, true);
}

#[test]
fn grow_ext4_online() {
    if !privileged("grow_ext4_online") {
        return;
    }
    let tmp = TempDir::new("grow-online");
    if have_cap_sys_resource() {
        grow_case(&tmp, "ext4", 64 * MIB, 128 * MIB, true);
        return;
    }
    // Without the capability the kernel refuses; the message must say why.
    let mnt = tmp.dir("mnt");
    let img = image(&tmp, "e.img", 64 * MIB);
    let dev = LoopGuard::attach(&img, false);
    let _m = MountGuard(mnt.clone());
    mkfs::format(dev.path(), "ext4", &[]).expect("format");
    mount_fs(dev.path(), &mnt, "ext4", false).expect("mount");
    OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open")
        .set_len(128 * MIB)
        .expect("grow");
    loopdev::set_capacity(dev.path()).expect("set_capacity");
    let err = resize::grow_filesystem(dev.path(), &mnt, "ext4").expect_err("no CAP_SYS_RESOURCE");
    assert!(err.to_string().contains("CAP_SYS_RESOURCE"), "{err}");
    eprintln!("grow_ext4_online: no CAP_SYS_RESOURCE here; checked the error message only");
}

#[test]
fn btrfs_format_and_grow_if_tools_present() {
    if !privileged("btrfs_format_and_grow_if_tools_present") {
        return;
    }
    if !have("mkfs.btrfs") || !have("btrfs") {
        crate::test_skip::skip(
            "btrfs_format_and_grow_if_tools_present",
            "btrfs-progs not installed (bash tests/prereqs.sh --install)",
        );
        return;
    }
    let tmp = TempDir::new("btrfs");
    let mnt = tmp.dir("mnt");
    let img = image(&tmp, "b.img", 256 * MIB);
    let dev = LoopGuard::attach(&img, false);
    let _m = MountGuard(mnt.clone());
    mkfs::format(dev.path(), "btrfs", &opts(&["-L", "fwt-btrfs"])).expect("format");
    mount_fs(dev.path(), &mnt, "btrfs", false).expect("mount");
    OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open")
        .set_len(512 * MIB)
        .expect("grow");
    loopdev::set_capacity(dev.path()).expect("set_capacity");
    resize::grow_filesystem(dev.path(), &mnt, "btrfs").expect("grow");
}

#[test]
fn loop_attach_find_set_capacity_detach() {
    if !privileged("loop_attach_find_set_capacity_detach") {
        return;
    }
    let tmp = TempDir::new("loop");
    let img = image(&tmp, "l.img", 8 * MIB);
    let meta = fs::metadata(&img).expect("stat");

    let guard = LoopGuard::attach(&img, false);
    let dev = guard.path().to_path_buf();
    let st = loopdev::status(&dev).expect("status").expect("attached");
    assert!(!st.autoclear, "must not be autoclear");
    assert!(!st.read_only);
    assert_eq!(st.backing_inode, meta.ino());
    assert_eq!(
        (st.backing_major, st.backing_minor),
        (libc::major(meta.dev()), libc::minor(meta.dev()))
    );
    assert_eq!(
        loopdev::find_by_file(meta.dev(), meta.ino()).expect("find"),
        Some(dev.clone())
    );
    assert_eq!(
        loopdev::backing_file(&dev).expect("backing"),
        Some(fs::canonicalize(&img).expect("canon"))
    );
    // The sysfs view agrees.
    let bd = blockdev::get(&dev).expect("get").expect("present");
    assert_eq!(
        bd.loop_backing_file,
        Some(fs::canonicalize(&img).expect("canon"))
    );
    assert_eq!(bd.size_bytes, 8 * MIB);
    assert!(
        blockdev::list()
            .expect("list")
            .iter()
            .any(|d| d.path == dev)
    );

    // A different file with the same name elsewhere is not a match.
    let other = image(&tmp, "other.img", MIB);
    let om = fs::metadata(&other).expect("stat");
    assert_eq!(
        loopdev::find_by_file(om.dev(), om.ino()).expect("find"),
        None
    );
    // Renaming the backing file does not change identity.
    let renamed = tmp.join("renamed.img");
    fs::rename(&img, &renamed).expect("rename");
    assert_eq!(
        loopdev::find_by_file(meta.dev(), meta.ino()).expect("find"),
        Some(dev.clone())
    );

    // Grow the file; the device follows after set_capacity.
    OpenOptions::new()
        .write(true)
        .open(&renamed)
        .expect("open")
        .set_len(24 * MIB)
        .expect("grow");
    loopdev::set_capacity(&dev).expect("set_capacity");
    assert_eq!(sys_size_bytes(&dev), 24 * MIB);

    // Detach, idempotently.
    loopdev::detach(&dev).expect("detach");
    assert_eq!(loopdev::status(&dev).expect("status"), None);
    assert_eq!(loopdev::backing_file(&dev).expect("backing"), None);
    assert_eq!(
        loopdev::find_by_file(meta.dev(), meta.ino()).expect("find"),
        None
    );
    loopdev::detach(&dev).expect("detach again is fine");
    let err = loopdev::set_capacity(&dev).expect_err("not attached");
    assert!(matches!(err, NodeError::LoopNotAttached { .. }), "{err:?}");
    drop(guard);
}

#[test]
fn loop_read_only_attach() {
    if !privileged("loop_read_only_attach") {
        return;
    }
    let tmp = TempDir::new("loopro");
    let img = image(&tmp, "r.img", 4 * MIB);
    // A read-write file handle attached read-only is still read-only.
    let dev = LoopGuard::attach(&img, true);
    let st = loopdev::status(dev.path())
        .expect("status")
        .expect("attached");
    assert!(st.read_only);
    assert!(
        blockdev::get(dev.path())
            .expect("get")
            .expect("present")
            .read_only
    );
    // The kernel lets a read-only disk be opened for writing; writes fail.
    let mut w = OpenOptions::new()
        .write(true)
        .open(dev.path())
        .expect("open");
    let e = w
        .write_all(&[1u8; 4096])
        .and_then(|_| w.sync_all())
        .expect_err("read-only device");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(w);
    let mut start = [0u8; 4096];
    File::open(&img)
        .expect("open")
        .read_exact(&mut start)
        .expect("read");
    assert!(start.iter().all(|b| *b == 0), "backing file was written");

    // A read-only handle cannot be attached read-write.
    let f = File::open(&img).expect("open");
    let err = loopdev::attach(&f, false).expect_err("ro file");
    assert!(matches!(err, NodeError::LoopFileReadOnly), "{err:?}");
}

#[test]
fn detach_refuses_while_mounted() {
    if !privileged("detach_refuses_while_mounted") {
        return;
    }
    let tmp = TempDir::new("busyloop");
    let mnt = tmp.dir("mnt");
    let dev = LoopGuard::attach(&image(&tmp, "m.img", 32 * MIB), false);
    let _m = MountGuard(mnt.clone());
    mkfs::format(dev.path(), "ext4", &[]).expect("format");
    mount_fs(dev.path(), &mnt, "ext4", false).expect("mount");

    let err = loopdev::detach(dev.path()).expect_err("mounted");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot detach {}: it is mounted at {}; unmount it first",
            dev.path().display(),
            mnt.display()
        )
    );
    // Still attached, and not secretly marked for autoclear.
    let st = loopdev::status(dev.path())
        .expect("status")
        .expect("attached");
    assert!(!st.autoclear);
    assert!(unmount(&mnt).expect("unmount"));
    loopdev::detach(dev.path()).expect("detach after unmount");
}

#[test]
fn concurrent_attaches_get_distinct_devices() {
    if !privileged("concurrent_attaches_get_distinct_devices") {
        return;
    }
    let tmp = TempDir::new("race");
    let images: Vec<_> = (0..6)
        .map(|i| image(&tmp, &format!("r{i}.img"), MIB))
        .collect();
    let guards: Vec<LoopGuard> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|img| s.spawn(move || LoopGuard::attach(img, false)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attach thread"))
            .collect()
    });
    let mut paths: Vec<_> = guards.iter().map(|g| g.path().to_path_buf()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), images.len(), "{paths:?}");
    for (img, g) in images.iter().zip(&guards) {
        let m = fs::metadata(img).expect("stat");
        assert_eq!(
            loopdev::find_by_file(m.dev(), m.ino()).expect("find"),
            Some(g.path().to_path_buf())
        );
    }
}

#[test]
fn busy_unmount_is_an_error_not_a_lazy_detach() {
    if !privileged("busy_unmount_is_an_error_not_a_lazy_detach") {
        return;
    }
    let tmp = TempDir::new("busy");
    let mnt = tmp.dir("mnt");
    let _m = MountGuard(mnt.clone());
    mount(MountRequest {
        source: "tmpfs",
        target: &mnt,
        fs_type: "tmpfs",
        options: &opts(&["size=1m"]),
        read_only: false,
    })
    .expect("mount tmpfs");
    let open = File::create(mnt.join("held")).expect("create");
    let err = unmount(&mnt).expect_err("busy");
    assert!(matches!(err, NodeError::UnmountBusy { .. }), "{err:?}");
    assert!(err.to_string().contains("not detaching lazily"), "{err}");
    assert!(
        mountinfo::is_mount_point(&mnt).expect("check"),
        "must still be mounted"
    );
    drop(open);
    assert!(unmount(&mnt).expect("unmount"));
}

#[test]
fn stacked_mounts_are_all_removed() {
    if !privileged("stacked_mounts_are_all_removed") {
        return;
    }
    let tmp = TempDir::new("stack");
    let mnt = tmp.dir("mnt");
    let _m = MountGuard(mnt.clone());
    for i in 0..3 {
        mount(MountRequest {
            source: "tmpfs",
            target: &mnt,
            fs_type: "tmpfs",
            options: &opts(&[&format!("size={}k", 64 * (i + 1))]),
            read_only: false,
        })
        .expect("mount");
    }
    let top = mountinfo::mount_at(&mnt)
        .expect("mountinfo")
        .expect("mounted");
    assert!(
        top.super_options.iter().any(|o| o == "size=192k"),
        "{:?}",
        top.super_options
    );
    // Through a path that is not canonical, too.
    let odd = tmp.path().join("mnt/../mnt/.");
    assert_eq!(
        mountinfo::mount_at(&odd)
            .expect("mountinfo")
            .map(|e| e.mount_id),
        Some(top.mount_id)
    );
    assert_eq!(unmount_all(&odd).expect("unmount_all"), 3);
    assert!(!mountinfo::is_mount_point(&mnt).expect("check"));
    assert_eq!(unmount_all(&mnt).expect("again"), 0);
}

#[test]
fn read_only_bind_mount_is_really_read_only() {
    if !privileged("read_only_bind_mount_is_really_read_only") {
        return;
    }
    let tmp = TempDir::new("bind");
    let src = tmp.dir("src");
    let dst = tmp.dir("dst");
    let _m = MountGuard(dst.clone());
    fs::write(src.join("f"), b"data").expect("write");
    mount(MountRequest {
        source: src.to_str().expect("utf-8"),
        target: &dst,
        fs_type: "",
        options: &opts(&["bind", "nosuid"]),
        read_only: true,
    })
    .expect("bind");
    assert_eq!(fs::read(dst.join("f")).expect("read"), b"data");
    let e = fs::write(dst.join("g"), b"x").expect_err("ro bind");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let entry = mountinfo::mount_at(&dst)
        .expect("mountinfo")
        .expect("mounted");
    assert!(entry.is_read_only());
    assert!(entry.options.iter().any(|o| o == "nosuid"));
    // The source is untouched and still writable.
    fs::write(src.join("g"), b"x").expect("source writable");
    assert!(unmount(&dst).expect("unmount"));
}

#[test]
fn resolve_block_device_cases() {
    if !privileged("resolve_block_device_cases") {
        return;
    }
    let tmp = TempDir::new("resolve");
    let file = image(&tmp, "plain.img", MIB);
    let err = blockdev::resolve_block_device(&file).expect_err("regular file");
    assert_eq!(
        err.to_string(),
        format!("{} is a regular file, not a block device", file.display())
    );

    let link = tmp.join("link-to-file");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    let err = blockdev::resolve_block_device(&link).expect_err("symlink to file");
    assert_eq!(
        err.to_string(),
        format!(
            "{} (resolves to {}) is a regular file, not a block device",
            link.display(),
            file.display()
        )
    );

    let err = blockdev::resolve_block_device(Path::new("/dev/null")).expect_err("char");
    assert_eq!(
        err.to_string(),
        "/dev/null is a character device, not a block device"
    );

    let dev = LoopGuard::attach(&file, false);
    assert_eq!(
        blockdev::resolve_block_device(dev.path()).expect("loop"),
        dev.path()
    );
    // A symlink (like /dev/disk/by-id/…) resolving into /dev is fine.
    let dev_link = tmp.join("by-id-like");
    std::os::unix::fs::symlink(dev.path(), &dev_link).expect("symlink");
    assert_eq!(
        blockdev::resolve_block_device(&dev_link).expect("link"),
        dev.path()
    );
    let (ma, _) = blockdev::dev_numbers(&dev_link).expect("numbers");
    assert_eq!(ma, loopdev::LOOP_MAJOR);

    // A block device node outside /dev is refused.
    let (ma, mi) = blockdev::dev_numbers(dev.path()).expect("numbers");
    let node = tmp.join("rogue-node");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        libc::makedev(ma, mi),
    )
    .expect("mknod");
    let err = blockdev::resolve_block_device(&node).expect_err("outside /dev");
    assert!(matches!(err, NodeError::OutsideDev { .. }), "{err:?}");
    assert!(err.to_string().contains("which is outside /dev"), "{err}");
}

#[test]
fn probe_of_an_empty_or_missing_device_is_an_error_not_blank() {
    // No root needed: blkid exits 2 ("nothing found") for both of these.
    let tmp = TempDir::new("probe-missing");
    let err = mkfs::probe(&tmp.join("missing")).expect_err("missing");
    assert!(err.to_string().starts_with("cannot open "), "{err}");
    let empty = image(&tmp, "empty.img", 0);
    let err = mkfs::probe(&empty).expect_err("empty");
    assert!(matches!(err, NodeError::ProbeFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("size 0"), "{err}");
}

#[test]
fn refused_mkfs_options_never_start_mkfs_and_leave_the_device_blank() {
    if !privileged("refused_mkfs_options_never_start_mkfs_and_leave_the_device_blank") {
        return;
    }
    let tmp = TempDir::new("refused-opts");
    // Sparse: nothing is allocated until something writes to it.
    let img = image(&tmp, "huge.img", 4 * TIB);
    let dev = LoopGuard::attach(&img, false);
    let mut cases: Vec<(&str, Vec<&str>)> = vec![
        // Refused by the allowlist alone.
        ("ext4", vec!["-e", "panic"]),
        ("ext4", vec!["-c"]),
        ("ext4", vec!["-cc"]),
        ("ext4", vec!["-E", "offset=1099511627776"]),
        ("ext4", vec!["-R", "offset=4096"]),
        (
            "ext4",
            vec!["-O", "orphan_file", "-E", "orphan_file_size=1099511627776"],
        ),
        ("ext4", vec!["-O", "mmp", "-E", "mmp_update_interval=299"]),
        ("ext4", vec!["-J", "size=40000"]),
        ("ext4", vec!["-E", "assume_storage_prezeroed=1"]),
        // Refused because of this device's size (4 TiB).
        ("ext4", vec!["-E", "lazy_itable_init=0"]),
        ("ext4", vec!["-b", "1024"]),
        ("ext4", vec!["-g", "256"]),
        ("ext4", vec!["-N", "4294967295"]),
        ("ext4", vec!["-T", "small"]),
    ];
    if have("mkfs.xfs") {
        cases.push(("xfs", vec!["-d", "agcount=40000"]));
        cases.push(("xfs", vec!["-d", "agsize=16m"]));
    }
    if have("mkfs.btrfs") {
        cases.push(("btrfs", vec!["-R", "quota"]));
    }
    for (fs_type, list) in &cases {
        let start = std::time::Instant::now();
        let err = mkfs::format(dev.path(), fs_type, &opts(list))
            .expect_err(&format!("{fs_type} {list:?} must be refused"));
        assert!(
            matches!(err, NodeError::MkfsArgRejected { .. }),
            "{fs_type} {list:?}: {err:?}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{fs_type} {list:?} took {:?}",
            start.elapsed()
        );
        assert_eq!(
            allocated_bytes(&img),
            0,
            "{fs_type} {list:?}: something wrote to the device"
        );
    }
    assert_eq!(mkfs::probe(dev.path()).expect("probe"), Signature::Blank);
    // The same device takes a filesystem with the defaults.
    mkfs::format(dev.path(), "ext4", &[]).expect("defaults are fine on 4 TiB");
}

#[test]
fn mkfs_xfs_failure_keeps_the_cause_not_the_usage_text() {
    if !privileged("mkfs_xfs_failure_keeps_the_cause_not_the_usage_text") {
        return;
    }
    if !have("mkfs.xfs") {
        crate::test_skip::skip(
            "mkfs_xfs_failure_keeps_the_cause_not_the_usage_text",
            "xfsprogs not installed (bash tests/prereqs.sh --install)",
        );
        return;
    }
    let tmp = TempDir::new("xfs-small");
    let dev = LoopGuard::attach(&image(&tmp, "small.img", 100 * MIB), false);
    let err = mkfs::format(dev.path(), "xfs", &[]).expect_err("too small for xfs");
    assert!(matches!(err, NodeError::CommandFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("must be larger than 300MB"), "{msg}");
    assert!(!msg.contains("Usage"), "{msg}");
    assert_eq!(mkfs::probe(dev.path()).expect("probe"), Signature::Blank);
}

#[test]
fn the_call_deadline_kills_a_running_mkfs_and_reports_it() {
    if !privileged("the_call_deadline_kills_a_running_mkfs_and_reports_it") {
        return;
    }
    let tmp = TempDir::new("deadline-mkfs");
    let dev = LoopGuard::attach(&image(&tmp, "huge.img", 4 * TIB), false);
    let dev_str = dev.path().to_str().expect("utf-8").to_string();
    // `format` would refuse -c; run mke2fs directly: its badblocks scan of
    // 4 TiB takes far longer than the 1 s left before the deadline. The
    // scan only reads, so the killed tools exit at once.
    let flag = std::sync::atomic::AtomicBool::new(false);
    let start = std::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(1);
    let err = exec::run_until(
        "mkfs.ext4",
        &["-q", "-c", &dev_str],
        mkfs::MKFS_TIMEOUT,
        &flag,
        Some(deadline),
    )
    .expect_err("killed at the deadline");
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(1)
            + exec::KILL_GRACE
            + std::time::Duration::from_secs(1),
        "{took:?}"
    );
    let NodeError::CallDeadline {
        ref command,
        after,
        cap,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(command, &format!("mkfs.ext4 -q -c {dev_str}"));
    assert_eq!(cap, mkfs::MKFS_TIMEOUT);
    assert!(after >= std::time::Duration::from_millis(900), "{after:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("`mkfs.ext4 -q -c {dev_str}` was killed after "))
            && msg.contains("the call's deadline ran out (the tool's own limit is 300 s)"),
        "{msg}"
    );
    // mke2fs and the badblocks it started are gone (the whole group). A
    // killed process in uninterruptible I/O on the device exits only when
    // that I/O completes, which on a loaded node takes a moment.
    let mut left = processes_mentioning(&dev_str);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_mentioning(&dev_str);
    }
    assert!(
        left.is_empty(),
        "still running 5 s after the kill: {left:?}"
    );
}

#[test]
fn a_noted_format_cut_short_is_wiped_and_made_again_on_that_device_only() {
    if !privileged("a_noted_format_cut_short_is_wiped_and_made_again_on_that_device_only") {
        return;
    }
    use super::mkfs::journal;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = TempDir::new("noted");
    let notes = tmp.join("formats");
    let mnt = tmp.dir("mnt");
    let dev = LoopGuard::attach(&image(&tmp, "cut.img", 32 * MIB), false);
    let _m = MountGuard(mnt.clone());
    let cut_short = |dev: &Path| {
        // What format_noted leaves when it is killed with its mke2fs
        // (tests/crash.rs): its note, and group descriptors without a
        // superblock, which the probe calls unrecognised data.
        let id = journal::incarnation(dev)
            .expect("incarnation")
            .expect("known");
        journal::note(&notes, dev, &id, "ext4").expect("note");
        let mut f = OpenOptions::new().write(true).open(dev).expect("open");
        f.seek(SeekFrom::Start(3072)).expect("seek");
        f.write_all(&[0x5a; 512])
            .and_then(|()| f.sync_all())
            .expect("write");
    };
    cut_short(dev.path());
    assert!(matches!(
        mkfs::probe(dev.path()).expect("probe"),
        Signature::Other { .. }
    ));

    // While the device is in use (its mkfs orphaned and still running, or
    // mounted), nothing is wiped.
    let busy = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev.path())
        .expect("open exclusively");
    let err = mkfs::recover_interrupted(dev.path(), &notes).expect_err("in use");
    assert!(
        err.to_string()
            .contains("was cut short and must be done again"),
        "{err}"
    );
    drop(busy);
    assert!(matches!(
        mkfs::probe(dev.path()).expect("probe"),
        Signature::Other { .. }
    ));

    // Then it is wiped, and formats as the first time.
    assert_eq!(
        mkfs::recover_interrupted(dev.path(), &notes).expect("recover"),
        Some("ext4".to_string())
    );
    assert_eq!(mkfs::probe(dev.path()).expect("probe"), Signature::Blank);
    mkfs::format_noted(dev.path(), "ext4", &[], &notes).expect("format");
    assert_eq!(
        fs::read_dir(&notes).expect("notes").count(),
        0,
        "a verified format leaves no note"
    );
    assert_eq!(
        mkfs::recover_interrupted(dev.path(), &notes).expect("nothing"),
        None
    );

    // A note is for that device only: another image attached at the same
    // numbers (a new disk sequence, another backing file) is not wiped.
    cut_short(dev.path());
    drop(dev);
    let other = LoopGuard::attach(&image(&tmp, "data.img", 32 * MIB), false);
    mkfs::format(other.path(), "ext4", &[]).expect("format other");
    mount_fs(other.path(), &mnt, "ext4", false).expect("mount");
    fs::write(mnt.join("data"), b"keep").expect("write");
    assert!(unmount(&mnt).expect("unmount"));
    assert_eq!(
        mkfs::recover_interrupted(other.path(), &notes).expect("other"),
        None
    );
    mount_fs(other.path(), &mnt, "ext4", true).expect("mount again");
    assert_eq!(fs::read(mnt.join("data")).expect("read"), b"keep");
}

#[test]
fn a_note_never_wipes_a_whole_filesystem_only_what_a_cut_short_mkfs_leaves() {
    if !privileged("a_note_never_wipes_a_whole_filesystem_only_what_a_cut_short_mkfs_leaves") {
        return;
    }
    use super::mkfs::journal;
    let tmp = TempDir::new("note-whole");
    let notes = tmp.join("formats");
    let mnt = tmp.dir("mnt");
    let _m = MountGuard(mnt.clone());
    let dev = LoopGuard::attach(&image(&tmp, "whole.img", 320 * MIB), false);
    let id = journal::incarnation(dev.path())
        .expect("incarnation")
        .expect("known");
    assert!(id.contains(" boot="), "{id}");

    // A note left over (its format finished after all, or someone made a
    // filesystem there since) over a whole ext4 holding data: not wiped,
    // and the note is dropped.
    mkfs::format(dev.path(), "ext4", &[]).expect("format");
    mount_fs(dev.path(), &mnt, "ext4", false).expect("mount");
    fs::write(mnt.join("data"), b"keep").expect("write");
    assert!(unmount(&mnt).expect("unmount"));
    journal::note(&notes, dev.path(), &id, "ext4").expect("note");
    assert_eq!(
        mkfs::recover_interrupted(dev.path(), &notes).expect("recover"),
        None
    );
    assert_eq!(fs::read_dir(&notes).expect("notes").count(), 0, "note kept");
    mount_fs(dev.path(), &mnt, "ext4", true).expect("mount again");
    assert_eq!(fs::read(mnt.join("data")).expect("read"), b"keep");
    assert!(unmount(&mnt).expect("unmount"));

    // A whole xfs under a note for ext4, or for xfs: kept too.
    zero_start(dev.path());
    mkfs::format(dev.path(), "xfs", &[]).expect("format xfs");
    for noted in ["ext4", "xfs"] {
        journal::note(&notes, dev.path(), &id, noted).expect("note");
        assert_eq!(
            mkfs::recover_interrupted(dev.path(), &notes).expect("recover"),
            None
        );
        assert!(matches!(
            mkfs::probe(dev.path()).expect("probe"),
            Signature::Filesystem { ref fs_type, .. } if fs_type == "xfs"
        ));
    }

    // What a killed mkfs.xfs leaves: its superblock still flagged "mkfs in
    // progress" (sb_inprogress, byte 126), which the kernel refuses to
    // mount. Under a note for xfs it is wiped; under a note for ext4 not.
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .open(dev.path())
            .expect("open");
        f.write_all_at(&[1], 126)
            .and_then(|()| f.sync_all())
            .expect("flag");
    }
    assert!(
        mount_fs(dev.path(), &mnt, "xfs", true).is_err(),
        "the kernel mounted an xfs flagged in progress"
    );
    journal::note(&notes, dev.path(), &id, "ext4").expect("note");
    assert_eq!(
        mkfs::recover_interrupted(dev.path(), &notes).expect("recover"),
        None
    );
    journal::note(&notes, dev.path(), &id, "xfs").expect("note");
    assert_eq!(
        mkfs::recover_interrupted(dev.path(), &notes).expect("recover"),
        Some("xfs".to_string())
    );
    assert_eq!(mkfs::probe(dev.path()).expect("probe"), Signature::Blank);
}

/// Zero the first MiB of `device`.
fn zero_start(device: &Path) {
    let mut f = OpenOptions::new().write(true).open(device).expect("open");
    f.write_all(&vec![0u8; MIB as usize])
        .and_then(|()| f.sync_all())
        .expect("zero");
}
