//! End to end, as root, in a private mount namespace: install a reference
//! plugin into a temp plugin dir and drive real volumes through it with
//! kubelet's exact argv shapes. Every call runs twice (idempotency) and
//! every answer is checked against kubelet's output rules.

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

const NODE: &str = "node-1";

fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn loop_driver_full_kubelet_sequence() {
    if !privileged("loop_driver_full_kubelet_sequence") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install("loop");
    let vol = "pv-e2e-loop";
    // xfs: it grows online everywhere; ext4's online grow needs
    // CAP_SYS_RESOURCE, which some sandboxes (this CI's) drop even for root.
    let volume = VolumeSpec::new(vol, "xfs", &[("size", "320Mi")]);
    let opts = |op| kubelet_options(op, &volume, None);

    // init: attachable driver, capabilities as an object.
    let init = sb.call_twice("loop", &["init"]);
    init.assert_success();
    assert_eq!(init.json["capabilities"]["attach"], true);

    let name = sb.call_twice("loop", &["getvolumename", &opts(Op::GetVolumeName)]);
    name.assert_success();
    assert!(name.json["volumeName"].is_string());

    // attach (controller) → device.
    let attach = sb.call_twice("loop", &["attach", &opts(Op::Attach), NODE]);
    attach.assert_success();
    let attached_dev = attach.json["device"].as_str().expect("device").to_string();
    assert!(attached_dev.starts_with("/dev/loop"), "{attached_dev}");
    assert_eq!(
        loop_devices_under(sb.root.path()).len(),
        1,
        "attach twice must not attach twice"
    );

    let is = sb.call_twice("loop", &["isattached", &opts(Op::IsAttached), NODE]);
    is.assert_success();
    assert_eq!(is.json["attached"], true);

    // waitforattach: device first, then options.
    let wait = sb.call_twice(
        "loop",
        &["waitforattach", &attached_dev, &opts(Op::WaitForAttach)],
    );
    wait.assert_success();
    let dev = wait.json["device"].as_str().expect("device").to_string();
    assert_eq!(dev, attached_dev);

    // mountdevice formats the blank device and mounts it.
    let dmp = sb.device_mount_path("loop", vol);
    let dmp_s = dmp.to_str().unwrap();
    sb.call_twice(
        "loop",
        &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
    )
    .assert_success();
    assert!(is_mounted(&dmp));
    std::fs::write(dmp.join("hello.txt"), "kept across remounts").unwrap();

    // mount/unmount: the loop driver leaves them to the default, which the
    // host does itself (kubelet's would lose nosuid,nodev): the pod dir is
    // a bind of the device mount, with its flags.
    let pod_dir = sb.pod_volume_dir("uid-1", "loop", vol);
    let pod_s = pod_dir.to_str().unwrap();
    let mount_opts = kubelet_options(Op::Mount, &volume, Some(&PodMount::new("uid-1")));
    sb.call_twice("loop", &["mount", pod_s, &mount_opts])
        .assert_success();
    let flags = mount_options_of(&pod_dir).expect("the pod dir is mounted");
    assert!(
        flags.contains(&"nosuid".into()) && flags.contains(&"nodev".into()),
        "{flags:?}"
    );
    assert_eq!(
        read_file(&pod_dir.join("hello.txt")),
        "kept across remounts"
    );
    sb.call_twice("loop", &["unmount", pod_s]).assert_success();
    assert!(!is_mounted(&pod_dir));

    sb.call_twice("loop", &["unmountdevice", dmp_s])
        .assert_success();
    assert!(!is_mounted(&dmp));
    assert!(!dmp.join("hello.txt").exists());

    sb.call_twice(
        "loop",
        &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
    )
    .assert_success();
    assert_eq!(read_file(&dmp.join("hello.txt")), "kept across remounts");

    // Expand: backend (image) then filesystem; df shows the new size.
    let before = df_size(&dmp);
    sb.expand_twice("loop", &volume, &dev, dmp_s, 640 << 20, 320 << 20);
    let after = df_size(&dmp);
    assert!(
        after > before + (250 << 20),
        "df size {before} → {after}: filesystem did not grow"
    );
    assert_eq!(read_file(&dmp.join("hello.txt")), "kept across remounts");

    sb.call_twice("loop", &["unmountdevice", dmp_s])
        .assert_success();
    // detach gets a name, no options: the plugin finds the image via state.
    sb.call_twice("loop", &["detach", vol, NODE])
        .assert_success();
    assert!(loop_devices_under(sb.root.path()).is_empty());
    let is = sb.call_twice("loop", &["isattached", &opts(Op::IsAttached), NODE]);
    is.assert_success();
    assert_eq!(is.json["attached"], false);

    // The call log has one JSON line per call, with the plugin's log lines.
    let log = sb.log_lines("loop");
    // 15 calls above, each made twice.
    assert_eq!(log.len(), 15 * 2, "one log line per call");
    assert!(
        log.iter()
            .any(|l| l["op"] == "attach" && l["plugin_log"].is_array())
    );
}

#[test]
fn tmpfs_driver_node_only_mount_unmount() {
    if !privileged("tmpfs_driver_node_only_mount_unmount") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install("tmpfs");
    let vol = "scratch";
    // An inline volume with no fsType; only mount gets the pod's keys.
    let volume = VolumeSpec::new(vol, "", &[("size", "16Mi")]);
    let init = sb.call_twice("tmpfs", &["init"]);
    init.assert_success();
    assert_eq!(init.json["capabilities"]["attach"], false);
    sb.call_twice(
        "tmpfs",
        &[
            "getvolumename",
            &kubelet_options(Op::GetVolumeName, &volume, None),
        ],
    )
    .assert_success();

    let dir = sb.pod_volume_dir("uid-2", "tmpfs", vol);
    let d = dir.to_str().unwrap();
    let opts = kubelet_options(Op::Mount, &volume, Some(&PodMount::new("uid-2")));
    sb.call_twice("tmpfs", &["mount", d, &opts])
        .assert_success();
    assert!(is_mounted(&dir));
    assert_eq!(df_size(&dir), 16 << 20);
    let mountinfo = read_file(Path::new("/proc/thread-self/mountinfo"));
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(d))
        .expect("mountinfo line");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    std::fs::write(dir.join("f"), "x").unwrap();
    // Like an emptyDir: a pod running as any user can write there.
    {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o777, "mode {mode:o}");
        // Let `nobody` reach it, as a container reaches its bind mount.
        std::fs::set_permissions(sb.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = Command::new("sh")
            .args(["-c", "echo x > \"$0/by-nobody\""])
            .arg(&dir)
            .uid(65534)
            .gid(65534)
            .status()
            .unwrap();
        assert!(status.success(), "uid 65534 cannot write in the volume");
    }

    sb.call_twice("tmpfs", &["unmount", d]).assert_success();
    assert!(!is_mounted(&dir));
    // attach is never called for a node-only driver; if it is, Not supported.
    let attach = kubelet_options(Op::Attach, &volume, None);
    let a = sb.call("tmpfs", &["attach", &attach, NODE]);
    assert_eq!(a.status(), "Not supported");
    assert_eq!(a.code, 1);
}

#[test]
fn read_only_volume_is_mounted_read_only_and_never_formatted() {
    if !privileged("read_only_volume_is_mounted_read_only_and_never_formatted") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install("loop");
    let vol = "pv-ro";
    let volume = VolumeSpec::new(vol, "ext4", &[("size", "32Mi")]);
    let read_only = VolumeSpec {
        read_only: true,
        ..volume.clone()
    };
    let rw = kubelet_options(Op::MountDevice, &volume, None);
    let ro = kubelet_options(Op::MountDevice, &read_only, None);
    let attach = kubelet_options(Op::Attach, &volume, None);
    let dev = sb.call("loop", &["attach", &attach, NODE]).json["device"]
        .as_str()
        .unwrap()
        .to_string();
    let dmp = sb.device_mount_path("loop", vol);
    let dmp_s = dmp.to_str().unwrap();
    // Blank + read-only: refuse, do not format.
    sb.call("loop", &["mountdevice", dmp_s, &dev, &ro])
        .assert_failure("read-only; not formatting");
    let probe = Command::new("blkid").args(["-p", &dev]).output().unwrap();
    assert_eq!(probe.status.code(), Some(2), "device must still be blank");
    // Format read-write once, then a read-only mount is read-only.
    sb.call("loop", &["mountdevice", dmp_s, &dev, &rw])
        .assert_success();
    std::fs::write(dmp.join("data"), "v1").unwrap();
    sb.call("loop", &["unmountdevice", dmp_s]).assert_success();
    sb.call("loop", &["mountdevice", dmp_s, &dev, &ro])
        .assert_success();
    assert_eq!(read_file(&dmp.join("data")), "v1");
    let err = std::fs::write(dmp.join("data"), "v2").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    sb.call("loop", &["unmountdevice", dmp_s]).assert_success();
    sb.call("loop", &["detach", vol, NODE]).assert_success();
}

#[test]
fn mountdevice_refuses_a_device_holding_another_filesystem() {
    if !privileged("mountdevice_refuses_a_device_holding_another_filesystem") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install("loop");
    let vol = "pv-safety";
    let xfs = VolumeSpec::new(vol, "xfs", &[("size", "320Mi")]);
    // The same volume with its fsType changed to ext4.
    let ext4 = VolumeSpec {
        fs_type: "ext4",
        ..xfs.clone()
    };
    let as_xfs = kubelet_options(Op::MountDevice, &xfs, None);
    let as_ext4 = kubelet_options(Op::MountDevice, &ext4, None);
    let attach = kubelet_options(Op::Attach, &xfs, None);
    let dev = sb.call("loop", &["attach", &attach, NODE]).json["device"]
        .as_str()
        .unwrap()
        .to_string();
    let dmp = sb.device_mount_path("loop", vol);
    let dmp_s = dmp.to_str().unwrap();
    sb.call("loop", &["mountdevice", dmp_s, &dev, &as_xfs])
        .assert_success();
    std::fs::write(dmp.join("precious"), "do not lose me").unwrap();
    sb.call("loop", &["unmountdevice", dmp_s]).assert_success();

    // Same device, fsType ext4: must refuse, neither format nor mount.
    for _ in 0..2 {
        sb.call("loop", &["mountdevice", dmp_s, &dev, &as_ext4])
            .assert_failure("already holds a xfs filesystem");
        assert!(!is_mounted(&dmp));
    }
    let probe = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", &dev])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "xfs");
    sb.call("loop", &["mountdevice", dmp_s, &dev, &as_xfs])
        .assert_success();
    assert_eq!(read_file(&dmp.join("precious")), "do not lose me");
    sb.call("loop", &["unmountdevice", dmp_s]).assert_success();
    sb.call("loop", &["detach", vol, NODE]).assert_success();
}

#[test]
fn concurrent_attach_of_one_volume_attaches_once() {
    if !privileged("concurrent_attach_of_one_volume_attaches_once") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install("loop");
    let volume = VolumeSpec::new("pv-race", "ext4", &[("size", "16Mi")]);
    let opts = kubelet_options(Op::Attach, &volume, None);
    let devices: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| sb.call("loop", &["attach", &opts, NODE])))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let a = h.join().expect("thread");
                a.assert_success();
                a.json["device"].as_str().unwrap().to_string()
            })
            .collect()
    });
    assert!(devices.windows(2).all(|w| w[0] == w[1]), "{devices:?}");
    assert_eq!(loop_devices_under(sb.root.path()).len(), 1);
    sb.call("loop", &["detach", "pv-race", NODE])
        .assert_success();
}

/// ext4, xfs and btrfs volumes through the host's own mount/unmount: the
/// pod dir is a bind of the device mount with nosuid,nodev and sees its
/// files. (btrfs shows a subvolume's own anonymous device in st_dev, never
/// mountinfo's: the host must still recognise its device mount.)
#[test]
fn every_block_filesystem_binds_into_the_pod_with_its_flags() {
    if !privileged("every_block_filesystem_binds_into_the_pod_with_its_flags") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    let policy = sb.root.path().join("loop-btrfs.toml");
    let text = std::fs::read_to_string(workspace_root().join("plugins/loop/policy.toml"))
        .unwrap()
        .replace(
            "format = [\"ext4\", \"xfs\"]\nblock = [\"ext4\", \"xfs\"]",
            "format = [\"ext4\", \"xfs\", \"btrfs\"]\nblock = [\"ext4\", \"xfs\", \"btrfs\"]",
        );
    assert!(
        text.contains("\"btrfs\"]"),
        "the loop policy's [mount] changed shape"
    );
    std::fs::write(&policy, text).unwrap();
    sb.install_with_policy("loop", &plugin_wasm("loop"), Some(&policy));
    for fs in ["ext4", "xfs", "btrfs"] {
        let vol = format!("pv-bind-{fs}");
        let volume = VolumeSpec::new(&vol, fs, &[("size", "320Mi")]);
        let opts = |op| kubelet_options(op, &volume, None);
        let attach = sb.call("loop", &["attach", &opts(Op::Attach), NODE]);
        attach.assert_success();
        let dev = attach.json["device"].as_str().expect("device").to_string();
        let dmp = sb.device_mount_path("loop", &vol);
        let dmp_s = dmp.to_str().unwrap();
        sb.call(
            "loop",
            &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
        )
        .assert_success();
        std::fs::write(dmp.join("hello.txt"), fs).unwrap();
        let pod_dir = sb.pod_volume_dir("uid-bind", "loop", &vol);
        let pod_s = pod_dir.to_str().unwrap();
        let mount_opts = kubelet_options(Op::Mount, &volume, Some(&PodMount::new("uid-bind")));
        sb.call_twice("loop", &["mount", pod_s, &mount_opts])
            .assert_success();
        let flags = mount_options_of(&pod_dir).expect("the pod dir is mounted");
        assert!(
            flags.contains(&"nosuid".into()) && flags.contains(&"nodev".into()),
            "{fs}: {flags:?}"
        );
        assert_eq!(read_file(&pod_dir.join("hello.txt")), fs);
        sb.call("loop", &["unmount", pod_s]).assert_success();
        sb.call("loop", &["unmountdevice", dmp_s]).assert_success();
        sb.call("loop", &["detach", &vol, NODE]).assert_success();
        assert!(
            !is_mounted(&pod_dir) && !is_mounted(&dmp),
            "{fs}: left mounted"
        );
    }
    assert!(loop_devices_under(sb.root.path()).is_empty());
}
