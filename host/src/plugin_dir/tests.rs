//! Every rule against a fake node tree (`--root`).

use super::*;
use std::os::unix::ffi::OsStringExt;

/// A fake node: files, `/proc/PID/cmdline`s, links.
struct Tree {
    dir: tempfile::TempDir,
}

fn never_read_only(_: &Path) -> io::Result<bool> {
    Ok(false)
}

/// `/usr` (of the fake tree) is read-only; the check gets the nearest
/// existing ancestor, so the answer depends on what exists.
fn usr_read_only(p: &Path) -> io::Result<bool> {
    Ok(p.components().any(|c| c.as_os_str() == "usr"))
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, path: &str, content: impl AsRef<[u8]>) -> &Tree {
        let p = under(self.root(), Path::new(path));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn dir(&self, path: &str) -> &Tree {
        std::fs::create_dir_all(under(self.root(), Path::new(path))).unwrap();
        self
    }

    fn symlink(&self, link: &str, target: &str) -> &Tree {
        let p = under(self.root(), Path::new(link));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    /// A process whose argv is `argv` (NUL-terminated, as the kernel shows it).
    fn process(&self, pid: u32, argv: &[&str]) -> &Tree {
        self.process_bytes(pid, &argv.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
    }

    fn process_bytes(&self, pid: u32, argv: &[&[u8]]) -> &Tree {
        let mut bytes = Vec::new();
        for a in argv {
            bytes.extend_from_slice(a);
            bytes.push(0);
        }
        self.file(&format!("/proc/{pid}/cmdline"), bytes)
    }

    fn detector(&self) -> Detector {
        Detector {
            read_only: never_read_only,
            ..Detector::new(self.root())
        }
    }

    fn detect(&self) -> Detection {
        self.detector().detect()
    }
}

#[track_caller]
fn assert_decided(d: &Detection, rule: Rule, dir: &str) {
    assert_eq!(
        (d.rule, d.plugin_dir.as_path()),
        (rule, Path::new(dir)),
        "explain: {:#?}\nwarnings: {:#?}",
        d.explain,
        d.warnings
    );
    assert_eq!(
        d.explain.len(),
        8,
        "one line per rule and the decision: {:#?}",
        d.explain
    );
}

fn explains(d: &Detection, needle: &str) -> bool {
    d.explain.iter().any(|l| l.contains(needle))
}

fn warns(d: &Detection, needle: &str) -> bool {
    d.warnings.iter().any(|l| l.contains(needle))
}

#[test]
fn rule1_plugin_dir_flag_decides_and_a_kubelet_that_disagrees_is_a_warning() {
    let t = Tree::new();
    t.process(
        100,
        &[
            "/usr/bin/kubelet",
            "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        ],
    );
    let d = Detector {
        plugin_dir_flag: Some("/opt/flex".into()),
        env_value: Some("/env/flex".into()),
        ..t.detector()
    }
    .detect();
    assert_decided(&d, Rule::PluginDirFlag, "/opt/flex");
    assert!(
        explains(&d, "rule 2 ($FLEXVOLUME_DIR_PATH): /env/flex"),
        "{:#?}",
        d.explain
    );
    assert!(warns(&d, "kubelet pid 100"), "{:#?}", d.warnings);
    assert!(warns(&d, "/var/lib/kubelet/volumeplugins"));
}

#[test]
fn rule2_env_decides_and_bad_values_are_ignored() {
    let t = Tree::new();
    let with_env = |v: &str| {
        Detector {
            env_value: Some(v.into()),
            ..t.detector()
        }
        .detect()
    };
    let d = with_env("/srv/flex/");
    assert_decided(&d, Rule::Env, "/srv/flex");
    assert!(d.warnings.is_empty(), "{:#?}", d.warnings);
    let d = with_env("relative/dir");
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(explains(&d, "not an absolute path: ignored"));
    let d = with_env("");
    assert!(explains(&d, "set but empty: ignored"));
}

#[test]
fn rule3_kubelet_flag_in_both_spellings_last_one_wins() {
    for (argv, want) in [
        (&["kubelet", "--volume-plugin-dir=/a/b"][..], "/a/b"),
        (
            &["/usr/bin/kubelet", "--v=2", "--volume-plugin-dir", "/c/d/"],
            "/c/d",
        ),
        (
            &[
                "kubelet",
                "--volume-plugin-dir",
                "/one",
                "--volume-plugin-dir=/two",
            ],
            "/two",
        ),
        (&["/hyperkube", "kubelet", "--volume-plugin-dir=/hk"], "/hk"),
    ] {
        let t = Tree::new();
        t.process(1, &["/sbin/init"])
            .process(77, &["bash"])
            .process(4242, argv);
        let d = t.detect();
        assert_decided(&d, Rule::KubeletCmdline, want);
        assert!(explains(&d, "pid 4242"), "{:#?}", d.explain);
        assert!(d.warnings.is_empty(), "{:#?}", d.warnings);
    }
}

#[test]
fn rule3_k3s_kubelet_arg_on_the_command_line_in_both_spellings() {
    for argv in [
        &[
            "/usr/local/bin/k3s",
            "server",
            "--kubelet-arg=volume-plugin-dir=/k3s/flex",
        ][..],
        &[
            "k3s",
            "agent",
            "--kubelet-arg",
            "volume-plugin-dir=/k3s/flex",
            "--token",
            "x",
        ],
        &[
            "k3s",
            "agent",
            "--kubelet-arg=--volume-plugin-dir=/k3s/flex",
        ],
    ] {
        let t = Tree::new();
        t.process(300, argv);
        let d = t.detect();
        assert_decided(&d, Rule::KubeletCmdline, "/k3s/flex");
        assert!(
            explains(&d, "kubelet-arg volume-plugin-dir=/k3s/flex"),
            "{:#?}",
            d.explain
        );
    }
}

#[test]
fn rule3_k3s_config_file_and_drop_ins_when_k3s_hides_its_arguments() {
    let t = Tree::new();
    // k3s rewrites its argv into a title: nothing but the config to go on.
    t.file("/proc/300/cmdline", b"/usr/local/bin/k3s server")
        .file(
            "/etc/rancher/k3s/config.yaml",
            "write-kubeconfig-mode: \"0644\"\nkubelet-arg:\n  - \"max-pods=200\"\n  - volume-plugin-dir=/from/config\n",
        );
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/from/config");
    assert!(explains(&d, "hides its arguments"), "{:#?}", d.explain);
    // A drop-in replaces the list; `kubelet-arg+` appends.
    t.file(
        "/etc/rancher/k3s/config.yaml.d/10-flex.yaml",
        "kubelet-arg: [volume-plugin-dir=/drop/in]\n",
    );
    assert_decided(&t.detect(), Rule::KubeletCmdline, "/drop/in");
    t.file(
        "/etc/rancher/k3s/config.yaml.d/20-more.yaml",
        "kubelet-arg+:\n- volume-plugin-dir=/appended\n",
    );
    assert_decided(&t.detect(), Rule::KubeletCmdline, "/appended");
    // The command line's --kubelet-arg comes after the config's.
    let t2 = Tree::new();
    t2.process(
        300,
        &["k3s", "server", "--kubelet-arg=volume-plugin-dir=/cli"],
    )
    .file(
        "/etc/rancher/k3s/config.yaml",
        "kubelet-arg: [volume-plugin-dir=/cfg]\n",
    );
    assert_decided(&t2.detect(), Rule::KubeletCmdline, "/cli");
}

#[test]
fn rule3_k3s_config_named_by_flag_or_environment_and_rke2() {
    let t = Tree::new();
    t.process(300, &["k3s", "agent", "-c", "/opt/k3s.yaml"])
        .file(
            "/opt/k3s.yaml",
            "kubelet-arg: volume-plugin-dir=/opt/flex\n",
        );
    assert_decided(&t.detect(), Rule::KubeletCmdline, "/opt/flex");

    let t = Tree::new();
    t.file("/proc/300/cmdline", b"k3s agent")
        .file(
            "/proc/300/environ",
            b"PATH=/bin\0K3S_CONFIG_FILE=/env/k3s.yaml\0",
        )
        .file(
            "/env/k3s.yaml",
            "kubelet-arg:\n- volume-plugin-dir=/env/flex\n",
        );
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/env/flex");
    assert!(explains(&d, "$K3S_CONFIG_FILE"));

    let t = Tree::new();
    t.process(10, &["/usr/local/bin/rke2", "server"]).file(
        "/etc/rancher/rke2/config.yaml",
        "kubelet-arg:\n  - volume-plugin-dir=/rke2/flex\n",
    );
    assert_decided(&t.detect(), Rule::KubeletCmdline, "/rke2/flex");
    // rke2's own kubelet process, when seen, is what counts.
    t.process(11, &["kubelet", "--volume-plugin-dir=/rke2/kubelet"]);
    assert_decided(&t.detect(), Rule::KubeletCmdline, "/rke2/kubelet");
}

#[test]
fn rule4_kubelet_config_yaml_and_json_and_relative_paths() {
    let t = Tree::new();
    t.process(500, &["kubelet", "--config=/var/lib/kubelet/config.yaml"]).file(
        "/var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\nvolumePluginDir: /yaml/flex # FlexVolume\n",
    );
    let d = t.detect();
    assert_decided(&d, Rule::KubeletConfig, "/yaml/flex");
    assert!(explains(&d, "volumePluginDir: /yaml/flex"));

    let t = Tree::new();
    t.process(500, &["kubelet", "--config", "/etc/kubelet.json"])
        .file(
            "/etc/kubelet.json",
            r#"{"kind":"KubeletConfiguration","volumePluginDir":"/json/flex"}"#,
        );
    assert_decided(&t.detect(), Rule::KubeletConfig, "/json/flex");

    // Relative to the kubelet's working directory.
    let t = Tree::new();
    t.process(500, &["kubelet", "--config=conf/kubelet.yaml"])
        .symlink("/proc/500/cwd", "../../etc/kubernetes")
        .file(
            "/etc/kubernetes/conf/kubelet.yaml",
            "volumePluginDir: '/relative/flex'\n",
        );
    assert_decided(&t.detect(), Rule::KubeletConfig, "/relative/flex");

    // Drop-ins (--config-dir, *.conf in name order) beat the main file.
    let t = Tree::new();
    t.process(500, &["kubelet", "--config=/k.yaml", "--config-dir=/k.d"])
        .file("/k.yaml", "volumePluginDir: /main\n")
        .file("/k.d/10-a.conf", "volumePluginDir: /first\n")
        .file("/k.d/20-b.conf", "volumePluginDir: /second\n")
        .file("/k.d/30-c.conf", "maxPods: 10\n")
        .file("/k.d/99-ignored.yaml", "volumePluginDir: /not-a-conf\n");
    assert_decided(&t.detect(), Rule::KubeletConfig, "/second");
}

#[test]
fn rule4_the_flag_beats_the_config_file() {
    let t = Tree::new();
    t.process(
        500,
        &["kubelet", "--config=/c.yaml", "--volume-plugin-dir=/flag"],
    )
    .file("/c.yaml", "volumePluginDir: /config\n");
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/flag");
    assert!(
        explains(&d, "the flag beats the config file"),
        "{:#?}",
        d.explain
    );
    assert!(explains(&d, "/config"));
    assert!(d.warnings.is_empty(), "{:#?}", d.warnings);
}

#[test]
fn rule4_an_unreadable_config_is_said_and_warned_not_guessed() {
    let t = Tree::new();
    t.process(500, &["kubelet", "--config=/c.yaml"])
        .file("/c.yaml", "volumePluginDir: |\n  /block\n");
    let d = t.detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(explains(&d, "block scalar"), "{:#?}", d.explain);
    assert!(warns(&d, "/c.yaml"), "{:#?}", d.warnings);

    // A FIFO named as the config must not hang the scan.
    let t = Tree::new();
    t.process(500, &["kubelet", "--config=/fifo"]);
    nix::unistd::mkfifo(
        &t.root().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let d = t.detect();
    assert!(explains(&d, "not a regular file"), "{:#?}", d.explain);

    let t = Tree::new();
    t.process(500, &["kubelet", "--config=/missing.yaml"]);
    assert!(warns(&t.detect(), "/missing.yaml"));
}

#[test]
fn rule3_a_kubelet_in_a_container_is_mapped_to_the_host_through_its_mounts() {
    let t = Tree::new();
    // pid 600's root is another directory (its container's rootfs); its
    // plugin dir is a bind of the host's /var/lib/kubelet.
    t.process(600, &["kubelet", "--config=/etc/kubernetes/kubelet.yaml"])
        .file(
            "/proc/600/root/etc/kubernetes/kubelet.yaml",
            "volumePluginDir: /var/lib/kubelet/volumeplugins\n",
        )
        .file(
            "/proc/600/mountinfo",
            "900 800 0:52 / / rw - overlay overlay rw\n\
             901 900 8:1 /var/lib/kubelet /var/lib/kubelet rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
        )
        .file(
            "/proc/1/mountinfo",
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             30 22 0:52 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw\n",
        );
    let d = t.detect();
    assert_decided(&d, Rule::KubeletConfig, "/var/lib/kubelet/volumeplugins");
    assert!(
        explains(&d, "which the host mounts at /"),
        "{:#?}",
        d.explain
    );
    assert!(d.warnings.is_empty(), "{:#?}", d.warnings);

    // A dir that is only in the container's own overlay maps to the
    // overlay's mount on the host.
    let t = Tree::new();
    t.process(600, &["kubelet", "--volume-plugin-dir", "/usr/libexec/flex"])
        .dir("/proc/600/root")
        .file("/proc/600/mountinfo", "900 800 0:52 / / rw - overlay overlay rw\n")
        .file("/proc/1/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:52 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw\n");
    assert_decided(
        &t.detect(),
        Rule::KubeletCmdline,
        "/var/lib/docker/overlay2/abc/merged/usr/libexec/flex",
    );
}

#[test]
fn rule3_a_containerized_kubelet_that_cannot_be_mapped_is_reported_through_proc() {
    let t = Tree::new();
    t.process(600, &["kubelet", "--volume-plugin-dir=/flex"])
        .dir("/proc/600/root/flex");
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/proc/600/root/flex");
    assert!(
        explains(&d, "reported as /proc/600/root/flex"),
        "{:#?}",
        d.explain
    );
    assert!(
        warns(&d, "exists only while that process runs"),
        "{:#?}",
        d.warnings
    );
    assert_eq!(d.path_under(t.root()), t.root().join("proc/600/root/flex"));
    assert!(d.path_under(t.root()).is_dir());
}

#[test]
fn a_kubelet_sharing_our_root_is_preferred_over_containerized_ones() {
    let t = Tree::new();
    t.process(50, &["kubelet", "--volume-plugin-dir=/in/kind"])
        .dir("/proc/50/root")
        .process(60, &["kubelet", "--volume-plugin-dir=/on/host"])
        .symlink("/proc/60/root", "../..");
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/on/host");
    assert!(warns(&d, "several kubelets"), "{:#?}", d.warnings);
}

#[test]
fn rule5_controller_manager_decides_only_without_a_kubelet() {
    let t = Tree::new();
    t.process(
        700,
        &[
            "/usr/local/bin/kube-controller-manager",
            "--flex-volume-plugin-dir=/cm/flex",
        ],
    );
    let d = t.detect();
    assert_decided(&d, Rule::ControllerManager, "/cm/flex");
    assert!(d.warnings.is_empty(), "{:#?}", d.warnings);

    let t = Tree::new();
    t.process(
        700,
        &[
            "hyperkube",
            "kube-controller-manager",
            "--flex-volume-plugin-dir",
            "/cm/hk",
        ],
    );
    assert_decided(&t.detect(), Rule::ControllerManager, "/cm/hk");

    // Without its flag it uses the default: not evidence of a choice.
    let t = Tree::new();
    t.process(700, &["kube-controller-manager"])
        .file("/etc/kubernetes/azure.json", "{}");
    let d = t.detect();
    assert_decided(&d, Rule::PlatformDefault, "/etc/kubernetes/volumeplugins");
    assert!(
        warns(&d, "kube-controller-manager pid 700"),
        "{:#?}",
        d.warnings
    );
}

#[test]
fn rule5_kubelet_and_controller_manager_disagreeing_is_a_loud_warning() {
    let t = Tree::new();
    t.process(
        100,
        &[
            "kubelet",
            "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        ],
    )
    .process(
        200,
        &[
            "kube-controller-manager",
            "--flex-volume-plugin-dir=/usr/libexec/other",
        ],
    );
    let d = t.detect();
    assert_decided(&d, Rule::KubeletCmdline, "/var/lib/kubelet/volumeplugins");
    let w = d.warnings.join("\n");
    assert!(w.contains("kube-controller-manager pid 200"), "{w}");
    assert!(w.contains("/usr/libexec/other"), "{w}");
    assert!(
        w.contains("kubelet pid 100 uses /var/lib/kubelet/volumeplugins"),
        "{w}"
    );
    assert!(
        w.contains("--flex-volume-plugin-dir=/var/lib/kubelet/volumeplugins"),
        "{w}"
    );
    let json = d.to_json();
    assert_eq!(json["warnings"].as_array().unwrap().len(), d.warnings.len());

    // Agreeing: nothing to say.
    let t = Tree::new();
    t.process(100, &["kubelet", "--volume-plugin-dir=/same"])
        .process(
            200,
            &["kube-controller-manager", "--flex-volume-plugin-dir=/same/"],
        );
    assert!(t.detect().warnings.is_empty());
}

#[test]
fn rule6_each_platform_default() {
    for (files, want, name) in [
        (
            &[("/home/kubernetes/bin/kubelet", "")][..],
            "/home/kubernetes/flexvolume",
            "GKE",
        ),
        (
            &[("/home/kubernetes/kube-env", "")],
            "/home/kubernetes/flexvolume",
            "GKE",
        ),
        (
            &[("/etc/kubernetes/azure.json", "{}")],
            "/etc/kubernetes/volumeplugins",
            "AKS",
        ),
        (
            &[("/etc/sysconfig/heat-params", "")],
            "/var/lib/kubelet/volumeplugins",
            "Magnum",
        ),
        (
            &[("/etc/origin/node/node-config.yaml", "")],
            "/etc/origin/kubelet-plugins/volume/exec",
            "OpenShift 3",
        ),
        (
            &[("/etc/os-release", "NAME=\"Flatcar\"\nID=flatcar\n")],
            "/etc/kubernetes/volumeplugins",
            "Flatcar",
        ),
        (
            &[("/etc/os-release", "ID=coreos\n")],
            "/etc/kubernetes/volumeplugins",
            "CoreOS",
        ),
        (
            &[("/etc/os-release", "ID=fedora\nVARIANT_ID=coreos\n")],
            "/etc/kubernetes/volumeplugins",
            "Fedora CoreOS",
        ),
        (
            &[(
                "/usr/lib/os-release",
                "ID=\"centos\"\nVARIANT_ID=\"atomic.host\"\n",
            )],
            "/etc/kubernetes/volumeplugins",
            "Atomic",
        ),
        (
            &[("/etc/os-release", "ID=\"rhcos\"\n")],
            "/etc/kubernetes/kubelet-plugins/volume/exec",
            "RHCOS",
        ),
    ] {
        let t = Tree::new();
        for (p, c) in files {
            t.file(p, c);
        }
        let d = t.detect();
        assert_decided(&d, Rule::PlatformDefault, want);
        assert!(explains(&d, name), "{name}: {:#?}", d.explain);
    }
    // Not a platform: a plain Debian.
    let t = Tree::new();
    t.file("/etc/os-release", "ID=debian\n");
    assert_decided(&t.detect(), Rule::Default, DEFAULT_PLUGIN_DIR);
    // Several markers: the first in order wins, the others are named.
    let t = Tree::new();
    t.file("/home/kubernetes/bin/kubelet", "")
        .file("/etc/os-release", "ID=flatcar\n");
    let d = t.detect();
    assert_decided(&d, Rule::PlatformDefault, "/home/kubernetes/flexvolume");
    assert!(
        explains(&d, "also matched, lower in order: Flatcar"),
        "{:#?}",
        d.explain
    );
}

#[test]
fn rule6_is_not_used_when_a_kubelet_runs_on_its_default() {
    let t = Tree::new();
    t.process(100, &["kubelet", "--v=2"])
        .file("/home/kubernetes/bin/kubelet", "");
    let d = t.detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(
        explains(&d, "uses its built-in default"),
        "{:#?}",
        d.explain
    );
    assert!(d.warnings.is_empty(), "{:#?}", d.warnings);
}

#[test]
fn rule7_default_and_read_only_usr() {
    let t = Tree::new();
    t.dir("/usr/lib");
    let d = t.detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(d.warnings.is_empty());

    let d = Detector {
        read_only: usr_read_only,
        ..t.detector()
    }
    .detect();
    assert_decided(&d, Rule::DefaultReadOnlyUsr, READ_WRITE_PLUGIN_DIR);
    assert_eq!(d.warnings.len(), 1, "{:#?}", d.warnings);
    let w = &d.warnings[0];
    for needle in [
        "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        "volumePluginDir: /var/lib/kubelet/volumeplugins",
        "--flex-volume-plugin-dir=/var/lib/kubelet/volumeplugins",
    ] {
        assert!(w.contains(needle), "{needle}: {w}");
    }
    assert!(
        explains(
            &d,
            &format!("{} is read-only", t.root().join("usr").display())
        ),
        "{:#?}",
        d.explain
    );

    // Without /usr in the fake tree, the check reaches the root itself.
    let t = Tree::new();
    let d = Detector {
        read_only: usr_read_only,
        ..t.detector()
    }
    .detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);

    // A kubelet on its default with a read-only /usr: FlexVolume is off.
    let t = Tree::new();
    t.dir("/usr").process(100, &["kubelet"]);
    let d = Detector {
        read_only: usr_read_only,
        ..t.detector()
    }
    .detect();
    assert_decided(&d, Rule::DefaultReadOnlyUsr, READ_WRITE_PLUGIN_DIR);
    assert!(
        warns(&d, "kubelet pid 100 uses the default"),
        "{:#?}",
        d.warnings
    );
    assert_eq!(d.warnings.len(), 1, "{:#?}", d.warnings);
}

#[test]
fn a_chosen_dir_on_a_read_only_filesystem_is_warned() {
    let t = Tree::new();
    t.dir("/usr/local")
        .process(1, &["kubelet", "--volume-plugin-dir=/usr/local/flex"]);
    let d = Detector {
        read_only: usr_read_only,
        ..t.detector()
    }
    .detect();
    assert_decided(&d, Rule::KubeletCmdline, "/usr/local/flex");
    assert!(warns(&d, "read-only filesystem"), "{:#?}", d.warnings);
}

#[test]
fn proc_scan_survives_odd_entries_and_bounds_its_reads() {
    let t = Tree::new();
    t.dir("/proc/acpi")
        .symlink("/proc/self", "4242")
        .dir("/proc/12") // exited: no cmdline
        .file("/proc/13/cmdline", b"") // kernel thread
        .file("/proc/+14/cmdline", b"kubelet\0--volume-plugin-dir=/plus\0")
        .process_bytes(15, &[b"\xff\xfe", b"--volume-plugin-dir=/not-kubelet"]);
    // A command line past the bound: the flag beyond 1 MiB is not read.
    let mut huge = b"kubelet\0".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.extend(b"\0--volume-plugin-dir=/beyond\0");
    t.file("/proc/16/cmdline", huge);
    let d = t.detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(explains(&d, "over 1 MiB"), "{:#?}", d.explain);

    // Non-UTF-8 plugin dir: kept as bytes, shown lossily in JSON.
    let t = Tree::new();
    t.process_bytes(20, &[b"kubelet", b"--volume-plugin-dir=/fl\xffex"]);
    let d = t.detect();
    assert_eq!(
        d.plugin_dir,
        PathBuf::from(OsString::from_vec(b"/fl\xffex".to_vec()))
    );
    assert_eq!(d.to_json()["plugin_dir"], "/fl\u{fffd}ex");
    assert!(explains(&d, "not valid UTF-8"));
}

#[test]
fn no_proc_at_all_is_explained() {
    let t = Tree::new();
    let d = t.detect();
    assert_decided(&d, Rule::Default, DEFAULT_PLUGIN_DIR);
    assert!(explains(&d, "cannot list"), "{:#?}", d.explain);
}

#[test]
fn json_has_the_stable_schema() {
    let t = Tree::new();
    t.process(9, &["kubelet", "--volume-plugin-dir=/j"]);
    let j = t.detect().to_json();
    let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["explain", "plugin_dir", "rule", "schema", "warnings"]
    );
    assert_eq!(j["schema"], JSON_SCHEMA);
    assert_eq!(j["rule"], "kubelet-cmdline");
    assert_eq!(j["plugin_dir"], "/j");
    assert!(
        j["explain"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l.is_string())
    );
}

#[test]
fn path_under_joins_the_root_except_for_slash() {
    let d = Detection {
        plugin_dir: "/var/lib/kubelet/volumeplugins".into(),
        rule: Rule::Env,
        explain: vec![],
        warnings: vec![],
    };
    assert_eq!(
        d.path_under(Path::new("/")),
        Path::new("/var/lib/kubelet/volumeplugins")
    );
    assert_eq!(
        d.path_under(Path::new("/host")),
        Path::new("/host/var/lib/kubelet/volumeplugins")
    );
}
