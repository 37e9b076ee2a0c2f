//! `flexwasm plugin-dir` and `flexwasm install` without `--plugin-dir`,
//! run as the operator runs them, against fake node trees (`--root`).
//! The rules themselves are tested one by one in `host/src/plugin_dir/tests.rs`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// The smallest valid component: no imports, no exports. Enough for
/// `install` (it compiles the plugin and lists its imports).
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// A fake node: `/proc/PID/cmdline`s and files under a temp dir.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, path: &str, content: &[u8]) -> &Node {
        let p = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn process(&self, pid: u32, argv: &[&str]) -> &Node {
        let mut bytes = Vec::new();
        for a in argv {
            bytes.extend_from_slice(a.as_bytes());
            bytes.push(0);
        }
        self.file(&format!("/proc/{pid}/cmdline"), &bytes)
    }

    fn flexwasm(&self) -> Command {
        let mut c = Command::new(HOST);
        c.env_remove("FLEXVOLUME_DIR_PATH");
        c
    }

    fn plugin_dir(&self, extra: &[&str]) -> Output {
        self.flexwasm()
            .arg("plugin-dir")
            .arg("--root")
            .arg(self.root())
            .args(extra)
            .output()
            .expect("run flexwasm plugin-dir")
    }

    fn json(&self) -> Value {
        let out = self.plugin_dir(&["--json"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "--json writes nothing to stderr: {out:?}"
        );
        serde_json::from_slice(&out.stdout).expect("plugin-dir --json prints JSON")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plugin_dir_json_names_the_kubelet_flag() {
    let node = Node::new();
    node.process(1, &["/sbin/init"]).process(
        812,
        &[
            "/usr/bin/kubelet",
            "--volume-plugin-dir",
            "/var/lib/kubelet/volumeplugins",
        ],
    );
    let j = node.json();
    assert_eq!(j["schema"], "flexwasm.plugin-dir/v1");
    assert_eq!(j["plugin_dir"], "/var/lib/kubelet/volumeplugins");
    assert_eq!(j["rule"], "kubelet-cmdline");
    assert_eq!(j["warnings"], serde_json::json!([]));
    let explain = j["explain"].as_array().unwrap();
    assert_eq!(explain.len(), 8, "{explain:#?}");
    assert!(
        explain[2].as_str().unwrap().contains("pid 812"),
        "{explain:#?}"
    );
}

#[test]
fn plugin_dir_text_prints_the_dir_alone_and_warnings_on_stderr() {
    let node = Node::new();
    node.process(10, &["kubelet", "--config=/var/lib/kubelet/config.yaml"])
        .file(
            "/var/lib/kubelet/config.yaml",
            b"kind: KubeletConfiguration\nvolumePluginDir: /var/lib/kubelet/volumeplugins\n",
        )
        .process(
            20,
            &[
                "kube-controller-manager",
                "--flex-volume-plugin-dir=/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
            ],
        );
    let out = node.plugin_dir(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "/var/lib/kubelet/volumeplugins\n");
    let err = stderr(&out);
    assert!(
        err.starts_with("WARNING: kube-controller-manager pid 20"),
        "{err}"
    );

    let out = node.plugin_dir(&["--explain"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/var/lib/kubelet/volumeplugins");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rule 4 (kubelet config file)")
                && l.contains("volumePluginDir: /var/lib/kubelet/volumeplugins")),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("  decided by rule 4 (kubelet-config): /var/lib/kubelet/volumeplugins")
    );
}

#[test]
fn plugin_dir_takes_flexvolume_dir_path_from_the_environment() {
    let node = Node::new();
    let out = node
        .flexwasm()
        .env("FLEXVOLUME_DIR_PATH", "/srv/flex")
        .args(["plugin-dir", "--json", "--root"])
        .arg(node.root())
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["rule"].as_str(), j["plugin_dir"].as_str()),
        (Some("env"), Some("/srv/flex"))
    );
}

/// `flexwasm plugin-dir --json | head -c1`: the reader is gone before the
/// write. The command ends quietly (no panic about a broken pipe).
#[test]
fn plugin_dir_exits_quietly_when_its_reader_is_gone() {
    let node = Node::new();
    for extra in [&["--json"][..], &["--explain"], &[]] {
        let mut child = node
            .flexwasm()
            .arg("plugin-dir")
            .arg("--root")
            .arg(node.root())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // close the only read end
        let out = child.wait_with_output().unwrap();
        // Admin commands take SIGPIPE's default, as Unix tools do: the
        // write ends the process quietly (or it finished first: exit 0).
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
            "{extra:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(out.stderr.is_empty(), "{extra:?}: {}", stderr(&out));
    }
    // And through a real `head -c1`.
    let script = format!(
        "{HOST} plugin-dir --json --root '{}' | head -c1 >/dev/null",
        node.root().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

fn install(node: &Node, extra: &[&str]) -> (Output, PathBuf) {
    let wasm = node.root().join("empty.wasm");
    std::fs::write(&wasm, EMPTY_COMPONENT).unwrap();
    let out = node
        .flexwasm()
        .arg("install")
        .arg("--root")
        .arg(node.root())
        .args(["--driver", "acme/empty", "--plugin"])
        .arg(&wasm)
        .args(extra)
        .output()
        .expect("run flexwasm install");
    (out, node.root().to_path_buf())
}

#[test]
fn install_without_plugin_dir_installs_where_kubelet_looks() {
    let node = Node::new();
    node.process(
        812,
        &[
            "kubelet",
            "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        ],
    );
    let (out, root) = install(&node, &[]);
    assert!(out.status.success(), "{out:?}");
    let exe = root.join("var/lib/kubelet/volumeplugins/acme~empty/empty");
    assert!(exe.is_file(), "{}: {out:?}", exe.display());
    assert!(
        stdout(&out)
            .contains("plugin dir: /var/lib/kubelet/volumeplugins (rule 3, kubelet-cmdline"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn install_plugin_dir_is_under_root_and_a_disagreeing_kubelet_is_warned() {
    let node = Node::new();
    node.process(
        812,
        &[
            "kubelet",
            "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        ],
    );
    let (out, root) = install(&node, &["--plugin-dir", "/opt/flex"]);
    assert!(out.status.success(), "{out:?}");
    assert!(root.join("opt/flex/acme~empty/empty").is_file(), "{out:?}");
    assert!(
        stderr(&out).contains("WARNING: kubelet pid 812"),
        "{}",
        stderr(&out)
    );
}

/// Rule 7 with a really read-only `/usr`: a read-only bind mount in a
/// private mount namespace, seen through statvfs by the real binary.
#[test]
fn read_only_usr_falls_back_to_var_lib_kubelet_volumeplugins() {
    if !privileged("read_only_usr_falls_back_to_var_lib_kubelet_volumeplugins") {
        return;
    }
    std::thread::spawn(|| {
        use nix::mount::{MsFlags, mount};
        private_mount_namespace();
        let node = Node::new();
        node.file("/usr/lib/os-release", b"ID=debian\n");
        let usr = node.root().join("usr");
        mount(
            Some(&usr),
            &usr,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind /usr");
        mount(
            None::<&str>,
            &usr,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .expect("remount /usr read-only");

        let j = node.json();
        assert_eq!(j["rule"], "default-read-only-usr", "{j:#}");
        assert_eq!(j["plugin_dir"], "/var/lib/kubelet/volumeplugins");
        let warning = j["warnings"][0].as_str().unwrap();
        for flag in [
            "--volume-plugin-dir=/var/lib/kubelet/volumeplugins",
            "volumePluginDir: /var/lib/kubelet/volumeplugins",
            "--flex-volume-plugin-dir=/var/lib/kubelet/volumeplugins",
        ] {
            assert!(warning.contains(flag), "{flag}: {warning}");
        }
        let (out, root) = install(&node, &[]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            root.join("var/lib/kubelet/volumeplugins/acme~empty/empty")
                .is_file()
        );
        assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    })
    .join()
    .expect("read-only /usr test");
}
