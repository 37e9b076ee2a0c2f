//! The admin commands end to end, through the real binary: install
//! (strict, dry-run, idempotent, atomic as kubelet's prober sees it),
//! upgrade (keeps policy and state, refuses new imports), uninstall
//! (refused while in use), logs, call, options, state, doctor, and quiet
//! exits on a closed pipe.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

fn admin(sb: &Sandbox, args: &[&str]) -> Output {
    Command::new(HOST)
        .args(args)
        .envs(sb.env())
        .env("FLEXWASM_CALL_DIR", sb.root.path().join("call"))
        .output()
        .expect("run flexwasm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    text(o)
}

#[track_caller]
fn failed(o: &Output, parts: &[&str]) {
    assert!(!o.status.success(), "succeeded: {}", text(o));
    for p in parts {
        assert!(text(o).contains(p), "{p:?} not in {}", text(o));
    }
}

fn install_args<'a>(sb: &'a Sandbox, driver: &'a str, wasm: &'a Path) -> Vec<String> {
    vec![
        "install".into(),
        "--plugin-dir".into(),
        sb.plugin_dir.display().to_string(),
        "--driver".into(),
        driver.into(),
        "--plugin".into(),
        wasm.display().to_string(),
    ]
}

fn run(sb: &Sandbox, args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    admin(sb, &a)
}

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// `wasm` with a custom section appended: another plugin (another SHA-256)
/// with the same imports.
fn variant(sb: &Sandbox, wasm: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"flexwasm-test";
    let payload = tag.as_bytes();
    let len = 1 + name.len() + payload.len();
    assert!(len < 128);
    bytes.extend_from_slice(&[0, len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let out = sb.root.path().join(format!("variant-{tag}.wasm"));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn tmpfs_policy(sb: &Sandbox) -> PathBuf {
    let p = sb.root.path().join("tmpfs-policy.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/tmpfs/policy.toml"),
        &p,
    )
    .unwrap();
    p
}

#[test]
fn install_is_strict_dry_runs_and_is_idempotent() {
    let sb = Sandbox::new();
    let wasm = plugin_wasm("tmpfs");
    let dir = sb.plugin_dir.join("acme~tmpfs");
    let args = install_args(&sb, "acme/tmpfs", &wasm);

    // A plugin importing the state store, without a policy: the baseline
    // does not grant it; nothing is installed.
    let state = install_args(&sb, "acme/state", &hostile_wasm("state_disk_fill"));
    failed(
        &run(&sb, &state),
        &[
            "does not grant",
            "flexwasm:driver/state",
            "--allow-ungranted",
        ],
    );
    assert!(!sb.plugin_dir.join("acme~state").exists());
    let out = ok(&run(&sb, &with(state, &["--allow-ungranted"])));
    assert!(out.contains("WARNING: the grant does not allow"), "{out}");

    let policy = tmpfs_policy(&sb);
    let p = policy.display().to_string();
    let out = ok(&run(
        &sb,
        &with(args.clone(), &["--policy", &p, "--dry-run"]),
    ));
    assert!(out.contains("would install acme/tmpfs"), "{out}");
    assert!(!dir.exists(), "a dry run wrote {}", dir.display());

    let out = ok(&run(&sb, &with(args.clone(), &["--policy", &p])));
    assert!(out.starts_with("installed acme/tmpfs"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&dir).unwrap().ino();
    let out = ok(&run(&sb, &with(args.clone(), &["--policy", &p])));
    assert!(out.starts_with("unchanged"), "{out}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().ino(),
        inode,
        "an unchanged install swapped the dir"
    );
    // And without --policy the installed one is kept: still unchanged.
    let out = ok(&run(&sb, &args));
    assert!(out.starts_with("unchanged"), "{out}");
}

#[test]
fn upgrade_keeps_policy_and_state_and_refuses_new_imports() {
    let sb = Sandbox::new();
    let driver = "flexwasm/state_disk_fill";
    let wasm = hostile_wasm("state_disk_fill");
    let policy = sb.root.path().join("p.toml");
    std::fs::write(
        &policy,
        "plugin_sha256 = \"auto\"\n# the operator's comment\n[state]\nquota_kib = 16\n",
    )
    .unwrap();
    let p = policy.display().to_string();
    ok(&run(
        &sb,
        &with(install_args(&sb, driver, &wasm), &["--policy", &p]),
    ));
    // Upgrade of something not installed: refused.
    let mut up = install_args(&sb, "acme/none", &wasm);
    up[0] = "upgrade".into();
    failed(&run(&sb, &up), &["not installed", "nothing to upgrade"]);

    // State written by the old plugin.
    let opts = kubelet_options(
        Op::GetVolumeName,
        &VolumeSpec::new("v", "", &[("bytes", "1")]),
        None,
    );
    sb.call("state_disk_fill", &["getvolumename", &opts]);
    let keys = ok(&admin(&sb, &["state", "ls", driver]));
    assert!(keys.contains("fill/0000000\t1 bytes"), "{keys}");

    let new = variant(&sb, &wasm, "v2");
    let mut up = install_args(&sb, driver, &new);
    up[0] = "upgrade".into();
    let out = ok(&run(&sb, &up));
    assert!(out.contains("upgraded"), "{out}");
    assert!(out.contains("kept, pinned to the new plugin"), "{out}");
    let kept =
        std::fs::read_to_string(sb.driver_dir("state_disk_fill").join("policy.toml")).unwrap();
    assert!(kept.contains("# the operator's comment"), "{kept}");
    assert!(kept.contains(&file_sha256(&new)), "{kept}");
    assert_eq!(
        ok(&admin(&sb, &["state", "ls", driver])),
        keys,
        "state lost"
    );
    let get = ok(&admin(&sb, &["state", "get", driver, "fill/0000000"]));
    assert!(get.contains("not UTF-8; hex> a5"), "{get}");
    sb.call("state_disk_fill", &["init"]).assert_success();

    // A plugin needing more than the kept grant: refused, the old stays.
    let mut up = install_args(&sb, driver, &plugin_wasm("loop"));
    up[0] = "upgrade".into();
    failed(
        &run(&sb, &up),
        &["the new plugin asks for more than the old grant gives"],
    );
    let still = std::fs::read(sb.driver_dir("state_disk_fill").join("plugin.wasm")).unwrap();
    assert_eq!(still, std::fs::read(&new).unwrap());
}

#[test]
fn kubelets_prober_never_sees_a_partial_driver() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.plugin_dir).unwrap();
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(&sb.plugin_dir, AddWatchFlags::IN_ALL_EVENTS)
        .unwrap();
    let dir = sb.plugin_dir.join("acme~tmpfs");
    let complete = |dir: &Path| {
        [
            "tmpfs",
            "plugin.wasm",
            ".plugin.cwasm",
            ".plugin.cwasm.key",
            "policy.toml",
        ]
        .iter()
        .all(|f| dir.join(f).is_file())
    };
    let policy = tmpfs_policy(&sb);
    let p = policy.display().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A prober in a tight loop: whenever the driver dir is there, it is whole.
    let prober = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut seen, mut partial) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    seen += 1;
                    let names: Vec<String> = entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    if !complete(&dir) {
                        partial.push(names);
                    }
                }
            }
            (seen, partial)
        })
    };
    let wasm = plugin_wasm("tmpfs");
    ok(&run(
        &sb,
        &with(install_args(&sb, "acme/tmpfs", &wasm), &["--policy", &p]),
    ));
    for tag in ["a", "b", "c"] {
        let mut up = install_args(&sb, "acme/tmpfs", &variant(&sb, &wasm, tag));
        up[0] = "upgrade".into();
        ok(&run(&sb, &up));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, partial) = prober.join().unwrap();
    assert!(seen > 10, "the prober looked only {seen} times");
    assert!(partial.is_empty(), "partial driver seen: {partial:?}");
    // What kubelet's watch sees: every non-dot name appears whole, by a
    // rename, never by a create.
    let mut buf = Vec::new();
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        buf.extend(events);
    }
    let visible: Vec<_> = buf
        .iter()
        .filter(|e| {
            e.name
                .as_ref()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(!visible.is_empty());
    for e in &visible {
        assert!(
            !e.mask.contains(AddWatchFlags::IN_CREATE),
            "{:?} was created in place: {:?}",
            e.name,
            e.mask
        );
    }
    assert!(complete(&dir));
}

#[test]
fn uninstall_refuses_while_in_use() {
    if !privileged("uninstall_refuses_while_in_use") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    let policy = tmpfs_policy(&sb);
    let p = policy.display().to_string();
    ok(&run(
        &sb,
        &with(
            install_args(&sb, "flexwasm/tmpfs", &plugin_wasm("tmpfs")),
            &["--policy", &p],
        ),
    ));
    let pod = sb
        .kubelet_root
        .join("pods/uid-1/volumes/flexwasm~tmpfs/vol-1");
    let opts = kubelet_options(
        Op::Mount,
        &VolumeSpec::new("vol-1", "", &[]),
        Some(&PodMount::new("uid-1")),
    );
    std::fs::create_dir_all(&pod).unwrap();
    sb.call("tmpfs", &["mount", pod.to_str().unwrap(), &opts])
        .assert_success();
    let pd = sb.plugin_dir.display().to_string();
    let un = [
        "uninstall",
        "--plugin-dir",
        &pd,
        "--driver",
        "flexwasm/tmpfs",
    ];
    failed(
        &admin(&sb, &un),
        &["in use", "pod volume mounted at", "vol-1", "--force"],
    );
    assert!(sb.driver_dir("tmpfs").exists());
    sb.call("tmpfs", &["unmount", pod.to_str().unwrap()])
        .assert_success();
    let mut dry = un.to_vec();
    dry.push("--dry-run");
    assert!(ok(&admin(&sb, &dry)).contains("would remove"));
    assert!(sb.driver_dir("tmpfs").exists());
    let out = ok(&admin(&sb, &un));
    assert!(out.contains("removed flexwasm/tmpfs"), "{out}");
    assert!(out.contains("state kept"), "{out}");
    assert!(!sb.driver_dir("tmpfs").exists());
    assert!(
        std::fs::read_dir(&sb.plugin_dir).unwrap().next().is_none(),
        "left behind in the plugin dir"
    );
}

#[test]
fn logs_call_options_and_doctor() {
    let sb = Sandbox::new();
    let policy = tmpfs_policy(&sb);
    let p = policy.display().to_string();
    let wasm = plugin_wasm("tmpfs");
    let w = wasm.display().to_string();

    // options: exactly what kubelet sends, per op.
    let o = ok(&admin(
        &sb,
        &[
            "options",
            "getvolumename",
            "--volume",
            "pv-1",
            "-o",
            "size=1Gi",
        ],
    ));
    assert_eq!(
        o.trim(),
        kubelet_options(
            Op::GetVolumeName,
            &VolumeSpec::new("pv-1", "", &[("size", "1Gi")]),
            None
        )
    );
    failed(
        &admin(
            &sb,
            &["options", "attach", "--volume", "v", "--secret", "k=v"],
        ),
        &["reach only mount"],
    );

    // call, uninstalled: a scratch install, then exactly kubelet's exec.
    let out = ok(&admin(
        &sb,
        &[
            "call",
            "--plugin",
            &w,
            "--policy",
            &p,
            "--driver",
            "acme/t",
            "getvolumename",
            o.trim(),
        ],
    ));
    assert!(out.contains("\"status\": \"Success\""), "{out}");
    assert!(out.contains("exit 0"), "{out}");
    assert!(sb.root.path().join("call/plugins/acme~t/t").is_file());

    // call, installed; logs of it.
    ok(&run(
        &sb,
        &with(
            install_args(&sb, "flexwasm/tmpfs", &wasm),
            &["--policy", &p],
        ),
    ));
    let pd = sb.plugin_dir.display().to_string();
    let out = ok(&admin(
        &sb,
        &[
            "call",
            "--plugin-dir",
            &pd,
            "flexwasm/tmpfs",
            "getvolumename",
            o.trim(),
        ],
    ));
    assert!(out.contains("\"status\": \"Success\""), "{out}");
    let out = admin(
        &sb,
        &["call", "--plugin-dir", &pd, "flexwasm/tmpfs", "bogus"],
    );
    assert!(
        text(&out).contains("\"status\": \"Not supported\""),
        "{}",
        text(&out)
    );
    let logs = ok(&admin(&sb, &["logs", "flexwasm/tmpfs"]));
    assert!(
        logs.contains("getvolumename") && logs.contains("volume pv-1"),
        "{logs}"
    );
    let only = ok(&admin(&sb, &["logs", "flexwasm/tmpfs", "--volume", "nope"]));
    assert!(only.trim().is_empty(), "{only}");

    // doctor: the driver is sound; a policy pinning another plugin is an error.
    let d = admin(&sb, &["doctor", "--plugin-dir", &pd, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&d.stdout).expect("doctor --json");
    let findings = report["findings"].as_array().unwrap();
    let of = |check: &str| {
        findings
            .iter()
            .find(|f| f["scope"] == "flexwasm/tmpfs" && f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} finding: {report}"))["level"]
            .clone()
    };
    for check in ["binary", "plugin", "policy", "grant", "precompiled", "init"] {
        assert_eq!(of(check), "ok", "{check}: {report}");
    }
    let pol = sb.driver_dir("tmpfs").join("policy.toml");
    let t = std::fs::read_to_string(&pol).unwrap();
    std::fs::write(&pol, t.replace(&file_sha256(&wasm), &"0".repeat(64))).unwrap();
    let d = admin(&sb, &["doctor", "--plugin-dir", &pd]);
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    assert!(
        text(&d).contains("ERROR flexwasm/tmpfs policy"),
        "{}",
        text(&d)
    );
}

#[test]
fn admin_output_into_a_closed_pipe_exits_quietly() {
    let sb = Sandbox::new();
    let wasm = plugin_wasm("tmpfs").display().to_string();
    // `flexwasm inspect --json | head -c1`: the reader goes away early.
    let mut child = Command::new(HOST)
        .args(["inspect", &wasm, "--json"])
        .envs(sb.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    // Ended by the pipe, or done before it noticed: never a panic (101).
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || matches!(out.status.code(), Some(0 | 2)),
        "{:?}",
        out.status
    );
}

/// The runtime-only host (the host built without Cranelift,
/// `--no-default-features`; tests/test.sh builds it and names it in
/// FLEXWASM_RUNTIME_ONLY_BIN) installed as the driver executable: it serves
/// kubelet's calls from the code the full host precompiled at install; with
/// that code gone it says so rather than compile, and a re-install writes
/// the code again.
#[test]
fn runtime_only_host_serves_precompiled_calls_and_never_compiles() {
    let test = "runtime_only_host_serves_precompiled_calls_and_never_compiles";
    let Some(runtime_only) = std::env::var_os("FLEXWASM_RUNTIME_ONLY_BIN") else {
        flexwasm::test_skip::skip(
            test,
            "FLEXWASM_RUNTIME_ONLY_BIN is not set (tests/test.sh builds the runtime-only host \
             and sets it)",
        );
        return;
    };
    let runtime_only = PathBuf::from(runtime_only);
    let sb = Sandbox::new();
    let policy = tmpfs_policy(&sb);
    let args = with(
        install_args(&sb, "acme/tmpfs", &plugin_wasm("tmpfs")),
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--host-binary",
            runtime_only.to_str().unwrap(),
        ],
    );
    ok(&run(&sb, &args));
    let dir = sb.plugin_dir.join("acme~tmpfs");
    let driver = dir.join("tmpfs");
    assert!(
        std::fs::read(&driver).unwrap() == std::fs::read(&runtime_only).unwrap(),
        "the driver executable is not the runtime-only host"
    );
    let call = || {
        Command::new(&driver)
            .arg("init")
            .envs(sb.env())
            .output()
            .expect("run the driver")
    };
    let out = ok(&call());
    assert!(out.contains("\"status\":\"Success\""), "{out}");

    // Without the install-time code: a clear Failure, nothing compiled.
    std::fs::remove_file(dir.join(".plugin.cwasm")).unwrap();
    let out = call();
    failed(
        &out,
        &[
            "runtime-only build (no compiler)",
            "flexwasm install",
            ".plugin.cwasm is missing",
        ],
    );
    assert!(
        text(&out).starts_with("{\"status\":\"Failure\""),
        "{}",
        text(&out)
    );
    let cached: Vec<PathBuf> = paths_under(sb.root.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(
        cached.is_empty(),
        "the runtime-only host compiled: {cached:?}"
    );

    // The same install again is not "unchanged": the code is written again.
    let out = ok(&run(&sb, &args));
    assert!(!out.starts_with("unchanged"), "{out}");
    assert!(dir.join(".plugin.cwasm").is_file());
    let out = ok(&call());
    assert!(out.contains("\"status\":\"Success\""), "{out}");

    // Changed after install (even by root): not loaded, and said why.
    let cwasm = dir.join(".plugin.cwasm");
    let mut code = std::fs::read(&cwasm).unwrap();
    code.truncate(code.len() / 2);
    std::fs::write(&cwasm, &code).unwrap();
    failed(
        &call(),
        &["runtime-only build", "changed after it was written"],
    );
    // Its key rewritten to vouch for the damaged file: wasmtime's own
    // check refuses it, and the Failure carries its reason.
    let key_file = dir.join(".plugin.cwasm.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let meta = std::fs::metadata(&cwasm).unwrap();
    let stamp = {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        format!(
            "cwasm-stat {} {} {} {}",
            meta.ino(),
            meta.size(),
            ns(meta.mtime(), meta.mtime_nsec()),
            ns(meta.ctime(), meta.ctime_nsec())
        )
    };
    let key: String = key
        .lines()
        .map(|l| {
            if l.starts_with("cwasm-stat ") {
                stamp.clone()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&key_file, &key).unwrap();
    failed(&call(), &["runtime-only build", "wasmtime cannot load"]);
    // A key of another flexwasm version: said so.
    std::fs::write(&key_file, key.replace("precompiled v3", "precompiled v2")).unwrap();
    failed(
        &call(),
        &["written by another flexwasm version (flexwasm-precompiled v2)"],
    );
}
