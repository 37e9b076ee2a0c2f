//! The kubelet contract on bad input: each case gets the right status, a
//! message a person can act on, and the right exit code — and, like every
//! call, exactly one JSON object on stdout and nothing on stderr.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use support::*;

struct Case {
    name: &'static str,
    args: Vec<String>,
    status: &'static str,
    message: &'static str,
    code: i32,
}

fn case(
    name: &'static str,
    args: &[&str],
    status: &'static str,
    message: &'static str,
    code: i32,
) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        message,
        code,
    }
}

#[test]
fn bad_inputs_get_clear_answers() {
    let sb = Sandbox::new();
    sb.install("loop");
    // Where a case is not about the options' shape, they are kubelet's for
    // that op; a bad value arrives as the volume's own option (merged last,
    // it overwrites kubelet's key), as it would from a PV.
    let volume = VolumeSpec::new("pv-bad", "ext4", &[]);
    let good = |op| kubelet_options(op, &volume, None);
    let with = |op: Op, key: &'static str, value: &'static str| {
        let odd = VolumeSpec {
            options: vec![(key, value)],
            ..volume.clone()
        };
        let pod = PodMount::new("u");
        kubelet_options(op, &odd, (op == Op::Mount).then_some(&pod))
    };
    let pod = PodMount::new("u");
    let mount_opts = kubelet_options(Op::Mount, &volume, Some(&pod));
    let dmp = sb.device_mount_path("loop", "pv-bad");
    let dmp = dmp.to_str().unwrap();
    let missing = format!("{}/nope/nowhere", sb.root.path().display());
    let md = good(Op::MountDevice);
    let etc_passwd_plan = ["mountdevice", dmp, "/etc/passwd", md.as_str()];
    let pod_dir = sb.pod_volume_dir("u", "loop", "pv-bad");
    let pod_dir = pod_dir.to_str().unwrap();

    let cases = vec![
        case("no op", &[], "Failure", "no operation given", 1),
        case(
            "unknown op",
            &["provision", &good(Op::GetVolumeName)],
            "Not supported",
            "'provision' is not supported",
            1,
        ),
        case(
            "init with an extra arg",
            &["init", "x"],
            "Failure",
            "expected 0 argument(s)",
            1,
        ),
        case(
            "mount without json",
            &["mount", pod_dir],
            "Failure",
            "expected 2 argument(s) `mount <podVolumeDir> <json>`",
            // Every Failure of `mount` exits 0 (it may carry secrets).
            0,
        ),
        case(
            "attach with extra args",
            &["attach", &good(Op::Attach), "node", "x"],
            "Failure",
            "expected 2 argument(s)",
            1,
        ),
        case(
            "detach with options (old docs)",
            &["detach", "/dev/loop0", &good(Op::Attach), "node"],
            "Failure",
            "expected 2 argument(s)",
            1,
        ),
        case(
            "non-JSON options",
            &["getvolumename", "{nope"],
            "Failure",
            "is not JSON",
            1,
        ),
        case(
            "options are a JSON array",
            &["getvolumename", "[1,2]"],
            "Failure",
            "JSON an array, not an object",
            1,
        ),
        case(
            "options are a JSON string",
            &["getvolumename", "\"ext4\""],
            "Failure",
            "not an object",
            1,
        ),
        case(
            "empty options",
            &["isattached", "", "node"],
            "Failure",
            "it is empty",
            1,
        ),
        case(
            "number value",
            &["getvolumename", r#"{"size":10}"#],
            "Failure",
            "\"size\" is a number",
            1,
        ),
        case(
            "object value",
            &["getvolumename", r#"{"a":{"b":"c"}}"#],
            "Failure",
            "\"a\" is an object",
            1,
        ),
        case(
            "bad readwrite",
            &[
                "getvolumename",
                &with(Op::GetVolumeName, "kubernetes.io/readwrite", "maybe"),
            ],
            "Failure",
            "expected \"ro\" or \"rw\"",
            1,
        ),
        case(
            "bad fsGroup",
            &[
                "mount",
                pod_dir,
                &with(Op::Mount, "kubernetes.io/mounterArgs.FsGroup", "wheel"),
            ],
            "Failure",
            "expected a group id",
            0,
        ),
        // A Failure of a call carrying secrets exits 0 so kubelet does not log argv.
        case(
            "secret not base64",
            &[
                "mount",
                pod_dir,
                &with(Op::Mount, "kubernetes.io/secret/token", "not base64!"),
            ],
            "Failure",
            "secret \"token\" is not valid base64",
            0,
        ),
        case(
            "relative deviceMountPath",
            &["mountdevice", "mounts/x", "/dev/loop0", &md],
            "Failure",
            "is not an absolute path",
            1,
        ),
        case(
            "deviceMountPath does not exist",
            &["mountdevice", &missing, "/dev/loop0", &md],
            "Failure",
            "does not exist",
            1,
        ),
        case(
            "pod volume dir does not exist",
            &["mount", &missing, &mount_opts],
            "Failure",
            "does not exist",
            0,
        ),
        // Secrets in options that do not parse: found on the raw argv, and
        // the Failure still exits 0.
        case(
            "mount options that do not parse, with a secret",
            &[
                "mount",
                pod_dir,
                "{\"kubernetes.io/secret/token\":\"aHVudGVyMi1zZWNyZXQ=\",",
            ],
            "Failure",
            "is not JSON",
            0,
        ),
        case(
            "unknown op with a secret",
            &["provision", "{\"kubernetes.io/SECRET/x\":\"eA==\"}"],
            "Not supported",
            "'provision' is not supported",
            1,
        ),
        case(
            "empty device",
            &["mountdevice", dmp, "", &md],
            "Failure",
            "device is empty",
            1,
        ),
        // The loop plugin mounts the device its volume's image is attached
        // at, never the one kubelet passed (it may be stale: another
        // volume's after a detach and re-attach); the host's own refusals
        // of a plan's device and fsType are in tests/hostile.rs
        // (mount_non_device, fs_type_not_granted).
        case(
            "mountdevice of a volume that is not attached, kubelet passing a regular file",
            &etc_passwd_plan,
            "Failure",
            "is not attached",
            1,
        ),
        case(
            "size not a number",
            &["expandvolume", &good(Op::ExpandVolume), "", "big", "1"],
            "Failure",
            "'big' is not a size",
            1,
        ),
        case(
            "negative size",
            &[
                "expandfs",
                &good(Op::ExpandFs),
                "/dev/loop0",
                dmp,
                "-1",
                "1",
            ],
            "Failure",
            "'-1' is not a size",
            1,
        ),
        case(
            "empty detach name",
            &["detach", "", "node"],
            "Failure",
            "volume name is empty",
            1,
        ),
        case(
            "empty node name",
            &["isattached", &good(Op::IsAttached), ""],
            "Failure",
            "node name is empty",
            1,
        ),
        case(
            "waitforattach of a volume never attached",
            &["waitforattach", "/dev/loop0", &good(Op::WaitForAttach)],
            "Failure",
            "not attached",
            1,
        ),
        // A secret key spelled with JSON escapes: not in argv's raw bytes,
        // still a secret once parsed (found by fuzz/ argv).
        case(
            "escaped secret key",
            &[
                "waitforattach",
                "/dev/loop0",
                &good(Op::WaitForAttach).replacen(
                    '{',
                    r#"{"kubernetes.io/\u0073ecret/token":"c2VjcmV0LXZhbHVl","#,
                    1,
                ),
            ],
            "Failure",
            "not attached",
            0,
        ),
    ];
    assert!(cases.len() >= 20);
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let a = sb.call("loop", &args);
        assert_eq!(a.status(), c.status, "{}: {}", c.name, a.stdout);
        assert!(
            a.message().contains(c.message),
            "{}: message {:?} should contain {:?}",
            c.name,
            a.message(),
            c.message
        );
        assert!(
            a.message().contains("flexwasm/loop"),
            "{}: message names the driver: {}",
            c.name,
            a.message()
        );
        assert_eq!(a.code, c.code, "{}: exit code", c.name);
    }
    // Nothing was mounted by any of it.
    assert!(!is_mounted(std::path::Path::new(dmp)));
}

/// The options the tests send are kubelet's, byte for byte: the expected
/// lines are what Go's encoding/json printed (go1.19; kubelet v1.20 is
/// built with go1.15, which escapes the same) for the map kubelet v1.20's
/// `NewOptionsForDriver` and mounter build from the same volume, pod and
/// secret.
#[test]
fn kubelet_options_are_kubelets_bytes() {
    let volume = VolumeSpec {
        name: "pv-a&b",
        options: vec![
            ("size", "1Gi"),
            (
                "note",
                "<a&b> \u{2028}\u{2029}\t\n\r\u{8}\u{c}\u{1}\u{7f} \"q\" \\ é€😀",
            ),
            // The volume's own options overwrite kubelet's keys.
            ("kubernetes.io/readwrite", "ro"),
        ],
        ..Default::default()
    };
    assert_eq!(
        kubelet_options(Op::Attach, &volume, None),
        concat!(
            r#"{"kubernetes.io/fsType":"","kubernetes.io/pvOrVolumeName":"pv-a\u0026b","#,
            r#""kubernetes.io/readwrite":"ro","note":"\u003ca\u0026b\u003e \u2028\u2029\t\n\r\u0008\u000c\u0001"#,
            // DEL passes unescaped.
            "\u{7f}",
            r#" \"q\" \\ é€😀","size":"1Gi"}"#,
        )
    );
    let volume = VolumeSpec {
        name: "pv-a&b",
        fs_type: "xfs",
        read_only: true,
        options: vec![("size", "1Gi")],
    };
    let pod = PodMount {
        fs_group: Some(2000),
        secret: vec![("token", "s3cr3t<&>"), ("ca.crt", "\0binary")],
        ..PodMount::new("uid-1")
    };
    assert_eq!(
        kubelet_options(Op::Mount, &volume, Some(&pod)),
        r#"{"kubernetes.io/fsType":"xfs","kubernetes.io/mounterArgs.FsGroup":"2000","kubernetes.io/pod.name":"web-0","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"uid-1","kubernetes.io/pvOrVolumeName":"pv-a\u0026b","kubernetes.io/readwrite":"ro","kubernetes.io/secret/ca.crt":"AGJpbmFyeQ==","kubernetes.io/secret/token":"czNjcjN0PCY+","kubernetes.io/serviceAccount.name":"default","size":"1Gi"}"#
    );
}

#[test]
#[should_panic(expected = "kubelet sends pod keys, fsGroup and secrets only to mount")]
fn kubelet_options_refuse_a_secret_for_attach() {
    let pod = PodMount {
        secret: vec![("token", "t")],
        ..PodMount::new("uid-1")
    };
    let volume = VolumeSpec::new("pv-1", "", &[]);
    kubelet_options(Op::Attach, &volume, Some(&pod));
}

#[test]
#[should_panic(expected = "which kubelet sets for mount only")]
fn kubelet_options_refuse_a_secret_option_for_isattached() {
    let volume = VolumeSpec::new("pv-1", "", &[("kubernetes.io/secret/token", "dA==")]);
    kubelet_options(Op::IsAttached, &volume, None);
}

#[test]
#[should_panic(expected = "kubelet always sends mount the pod's keys")]
fn kubelet_options_refuse_a_mount_without_its_pod() {
    let volume = VolumeSpec::new("pv-1", "", &[]);
    kubelet_options(Op::Mount, &volume, None);
}

#[test]
fn non_utf8_argument_is_a_failure() {
    let sb = Sandbox::new();
    sb.install("loop");
    let out = Command::new(sb.driver_exe("loop"))
        .arg("getvolumename")
        .arg(std::ffi::OsStr::from_bytes(b"{\"a\":\"\xff\"}"))
        .envs(sb.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = check_output_discipline(
        &[],
        &stdout,
        &String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1),
    );
    assert_eq!(json["status"], "Failure");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8")
    );
}

#[test]
fn missing_plugin_wasm_is_a_clear_failure() {
    let sb = Sandbox::new();
    sb.install("loop");
    std::fs::remove_file(sb.driver_dir("loop").join("plugin.wasm")).unwrap();
    let a = sb.call("loop", &["init"]);
    a.assert_failure("plugin.wasm is missing");
    assert!(a.message().contains("flexwasm install"), "{}", a.message());
    assert_eq!(a.code, 1);
}

#[test]
fn corrupt_plugin_wasm_is_a_clear_failure() {
    let sb = Sandbox::new();
    // No policy, so no pin: the corrupt file reaches the loader.
    sb.install_file("loop", &plugin_wasm("loop"));
    std::fs::write(sb.driver_dir("loop").join("plugin.wasm"), b"\0asm garbage").unwrap();
    let a = sb.call("loop", &["init"]);
    a.assert_failure("is not a valid WebAssembly component");
    assert_eq!(a.code, 1);
}

#[test]
fn corrupt_precompiled_file_is_recompiled_not_trusted() {
    let sb = Sandbox::new();
    sb.install("loop");
    let cwasm = sb.driver_dir("loop").join(".plugin.cwasm");
    let mut bytes = std::fs::read(&cwasm).unwrap();
    // Keep the ELF header, smash the rest.
    for b in bytes.iter_mut().skip(64) {
        *b = 0xcc;
    }
    std::fs::write(&cwasm, &bytes).unwrap();
    sb.call("loop", &["init"]).assert_success();
    // The second call uses the compile cache in the state dir.
    sb.call("loop", &["init"]).assert_success();
    let log = sb.log_lines("loop");
    let sources: Vec<&str> = log
        .iter()
        .filter_map(|l| l["phases"][0][0].as_str())
        .collect();
    assert_eq!(sources.first(), Some(&"compiled"), "{sources:?}");
    if is_root() {
        assert_eq!(sources.get(1), Some(&"cache"), "{sources:?}");
    }
}

#[test]
fn installed_driver_uses_precompiled_code() {
    if !privileged("installed_driver_uses_precompiled_code") {
        return;
    }
    let sb = Sandbox::new();
    sb.install("loop");
    sb.call("loop", &["init"]).assert_success();
    let log = sb.log_lines("loop");
    assert_eq!(log[0]["phases"][0][0], "precompiled", "{:?}", log[0]);
    // Nothing is written inside the driver dir on a call (kubelet would re-probe).
    let names: Vec<String> = std::fs::read_dir(sb.driver_dir("loop"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        vec![
            ".plugin.cwasm",
            ".plugin.cwasm.key",
            "loop",
            "plugin.wasm",
            "policy.toml"
        ]
    );
}

#[test]
fn install_replaces_a_driver_atomically() {
    let sb = Sandbox::new();
    sb.install("loop");
    // Install tmpfs's plugin under the same driver name: the swap must
    // leave no staging dir behind and the new plugin in place.
    sb.install_file("loop", &plugin_wasm("tmpfs"));
    let entries: Vec<String> = std::fs::read_dir(&sb.plugin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["flexwasm~loop"]);
    let init = sb.call("loop", &["init"]);
    init.assert_success();
    assert_eq!(init.json["capabilities"]["attach"], false);
}

#[test]
fn secrets_never_reach_the_log() {
    let sb = Sandbox::new();
    sb.install("tmpfs");
    // The volume's secret: kubelet sends it to mount, base64-encoded
    // ("aHVudGVyMi1zZWNyZXQ=").
    let pod = PodMount {
        secret: vec![("password", "hunter2-secret")],
        ..PodMount::new("uid-s")
    };
    let volume = VolumeSpec::new("s", "", &[]);
    let opts = kubelet_options(Op::Mount, &volume, Some(&pod));
    assert!(opts.contains("\"kubernetes.io/secret/password\":\"aHVudGVyMi1zZWNyZXQ=\""));
    let missing = format!("{}/missing", sb.root.path().display());
    // Fails (dir missing) with a secret in argv: exit 0 keeps kubelet quiet.
    let a = sb.call("tmpfs", &["mount", &missing, &opts]);
    a.assert_failure("does not exist");
    assert_eq!(a.code, 0);
    // Options that do not parse cannot have their secrets found: the
    // argument is not logged at all.
    let broken = "{\"kubernetes.io/secret/password\":\"aHVudGVyMi1zZWNyZXQ=\"";
    let a = sb.call("tmpfs", &["mount", &missing, broken]);
    a.assert_failure("is not JSON");
    assert_eq!(a.code, 0);
    let log = std::fs::read_to_string(sb.log_dir.join("flexwasm~tmpfs.log")).unwrap();
    assert!(!log.contains("aHVudGVyMi1zZWNyZXQ="), "{log}");
    assert!(!log.contains("hunter2-secret"), "{log}");
    assert!(log.contains("<redacted>"));
    assert!(log.contains("options that do not parse"), "{log}");
}

fn inspect_json(args: &[&str]) -> (serde_json::Value, i32) {
    let out = Command::new(HOST)
        .arg("inspect")
        .args(args)
        .arg("--json")
        .output()
        .expect("run flexwasm inspect");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code().unwrap_or(-1))
}

#[test]
fn inspect_reference_plugins_in_their_driver_dirs() {
    let sb = Sandbox::new();
    for name in ["loop", "tmpfs"] {
        sb.install(name);
        let dir = sb.driver_dir(name);
        let (r, code) = inspect_json(&[dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {r:#}");
        assert_eq!(r["schema"], "flexwasm.inspect/v1");
        assert_eq!(r["ok"], true);
        assert_eq!(r["plugin"]["package"], "flexwasm:driver@0.1.0");
        assert_eq!(r["grant"]["pin_matches"], true);
        assert_eq!(r["ungranted"].as_array().unwrap().len(), 0);
        let sha = r["plugin"]["sha256"].as_str().unwrap().to_string();
        assert_eq!(sha.len(), 64);
        let exports = r["plugin"]["exports"].as_array().unwrap();
        assert_eq!(exports[0]["name"], "flexwasm:driver/driver@0.1.0");
        assert_eq!(exports[0]["functions"].as_array().unwrap().len(), 12);
        let imports = r["plugin"]["imports"].as_array().unwrap();
        assert!(
            imports
                .iter()
                .all(|i| i["granted"] == true && i["description"].is_string())
        );
        // Nothing but the baseline is visible as wasi:*; no filesystem, no sockets.
        assert!(!imports.iter().any(|i| {
            let n = i["name"].as_str().unwrap();
            n.starts_with("wasi:filesystem") || n.starts_with("wasi:sockets")
        }));
    }
    // The loop plugin's imports map to the capabilities its grant gives.
    let (r, _) = inspect_json(&[sb.driver_dir("loop").to_str().unwrap()]);
    let loop_import = r["plugin"]["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["capability"] == "loop")
        .expect("loop import")
        .clone();
    assert!(
        loop_import["description"]
            .as_str()
            .unwrap()
            .contains("flexwasm~loop/images"),
        "{loop_import}"
    );
    assert!(
        loop_import["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "attach")
    );
    assert_eq!(r["grant"]["format"], serde_json::json!(["ext4", "xfs"]));
    // tmpfs needs no host capability at all.
    let (r, _) = inspect_json(&[sb.driver_dir("tmpfs").to_str().unwrap()]);
    assert!(
        r["plugin"]["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["capability"] == "baseline")
    );
}

#[test]
fn inspect_gates_a_plugin_that_asks_for_more_than_its_grant() {
    let root = workspace_root();
    let loop_wasm = plugin_wasm("loop");
    // The loop plugin against the tmpfs grant (no state, no loop): over-asks.
    let tmpfs_policy = root.join("plugins/tmpfs/policy.toml");
    let (r, code) = inspect_json(&[
        loop_wasm.to_str().unwrap(),
        "--policy",
        tmpfs_policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(r["ok"], false);
    let ungranted: Vec<&str> = r["ungranted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        ungranted,
        vec!["flexwasm:driver/loop@0.1.0", "flexwasm:driver/state@0.1.0"]
    );
    // No policy at all: baseline only, the same two are denied.
    let (r, code) = inspect_json(&[loop_wasm.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(r["grant"]["policy"], serde_json::Value::Null);
    // A grant pinned to another plugin is also a denial.
    let sb = Sandbox::new();
    sb.install("loop");
    let dir = sb.driver_dir("loop");
    std::fs::copy(plugin_wasm("tmpfs"), dir.join("plugin.wasm")).unwrap();
    let (r, code) = inspect_json(&[dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(r["grant"]["pin_matches"], false);
}

/// Change a file's mode.
fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn files_the_host_trusts_must_be_root_only() {
    if !privileged("files_the_host_trusts_must_be_root_only") {
        return;
    }
    let sb = Sandbox::new();
    // Let `nobody` reach the driver dir (not write it).
    chmod(sb.root.path(), 0o755);
    sb.install("tmpfs");
    let dir = sb.driver_dir("tmpfs");
    let policy = dir.join("policy.toml");
    sb.call("tmpfs", &["init"]).assert_success();

    // A policy anyone can write: whatever `nobody` wrote into it must not
    // take effect; the call is refused and says how to fix it.
    chmod(&policy, 0o666);
    let granted = std::fs::read_to_string(&policy).unwrap();
    let status = Command::new("sh")
        .args([
            "-c",
            "printf '\\n[limits]\\ndeadline_seconds = 540\\n' >> \"$0\"",
        ])
        .arg(&policy)
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(status.success(), "nobody could not write the policy");
    let a = sb.call("tmpfs", &["init"]);
    a.assert_failure("is not trusted");
    assert!(
        a.message().contains("writable by anyone"),
        "{}",
        a.message()
    );
    std::fs::write(&policy, &granted).unwrap();
    chmod(&policy, 0o600);
    sb.call("tmpfs", &["init"]).assert_success();

    // The plugin: owned by someone else.
    let wasm = dir.join("plugin.wasm");
    std::os::unix::fs::chown(&wasm, Some(65534), None).unwrap();
    let a = sb.call("tmpfs", &["init"]);
    a.assert_failure("owned by uid 65534");
    std::os::unix::fs::chown(&wasm, Some(0), None).unwrap();

    // The driver dir: group-writable, so its group could swap the plugin.
    chmod(&dir, 0o775);
    let a = sb.call("tmpfs", &["init"]);
    a.assert_failure("writable by others");
    chmod(&dir, 0o755);
    sb.call("tmpfs", &["init"]).assert_success();
}

#[test]
fn config_files_must_be_root_only_regular_files() {
    if !privileged("config_files_must_be_root_only_regular_files") {
        return;
    }
    let sb = Sandbox::new();
    let d = "answer_leaks_secret";
    let fifo = sb.root.path().join("token-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let file = sb.root.path().join("token");
    std::fs::write(&file, "a-token-value").unwrap();
    chmod(&file, 0o600);
    for (path, why) in [
        (&fifo, "is not a regular file"),
        (&file, "owned by uid 65534"),
    ] {
        if path == &file {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        }
        sb.install_with_grant(
            d,
            &hostile_wasm(d),
            &format!(
                "[config]\ntoken = {{ file = \"{}\", secret = true }}\n\
                 [loop]\nimage_dir = \"images\"\n",
                path.display()
            ),
        );
        let started = std::time::Instant::now();
        let volume = VolumeSpec::new("v", "", &[]);
        let a = sb.call(
            d,
            &[
                "getvolumename",
                &kubelet_options(Op::GetVolumeName, &volume, None),
            ],
        );
        a.assert_failure(why);
        assert!(
            a.message().contains(&path.display().to_string()),
            "{}",
            a.message()
        );
        // A FIFO would block a reader forever: refused at once.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
