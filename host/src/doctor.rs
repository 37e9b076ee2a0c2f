//! `flexwasm doctor`: is this node ready, and is each installed driver
//! sound? Every finding says what was checked, what was found and, when
//! something is wrong, what to do.
//!
//! Node: the plugin dir exists and root can write it; the running kubelet
//! and kube-controller-manager use it (and agree); the node tools the
//! host runs are on `PATH`; loop devices work (`/dev/loop-control`).
//! Per driver (each `<vendor>~<name>/` in the plugin dir): its executable
//! is this flexwasm build (a stale copy keeps old behaviour and old
//! fixes); its `plugin.wasm` is trusted (only root can change it); its
//! policy parses and pins that plugin; the plugin's imports are all
//! granted; its precompiled code is fresh (else every call compiles it,
//! ~100× slower); and `init` through its executable, exactly as kubelet
//! calls it, answers `Success`.
//!
//! `--json` prints schema `flexwasm.doctor/v1`:
//! `{schema, plugin_dir, ok, findings: [{scope, check, level, detail, fix?}]}`
//! with `level` one of `ok`, `warn`, `error`; `ok` is false when any
//! finding is an error (exit 1).

use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::sha256_hex;
use crate::layout::{DriverLayout, DriverName, PLUGIN_FILE, PRECOMPILED_KEY_FILE};
use crate::policy::{Grant, POLICY_FILE};
use crate::precompiled::{FileStamp, PrecompiledKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `node`, or the driver (`VENDOR/NAME`).
    pub scope: String,
    pub check: &'static str,
    pub level: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub plugin_dir: PathBuf,
    pub ok: bool,
    pub findings: Vec<Finding>,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn ok(&mut self, scope: &str, check: &'static str, detail: String) {
        self.push(scope, check, Level::Ok, detail, None);
    }
    fn bad(&mut self, scope: &str, check: &'static str, level: Level, detail: String, fix: String) {
        self.push(scope, check, level, detail, Some(fix));
    }
    fn push(
        &mut self,
        scope: &str,
        check: &'static str,
        level: Level,
        detail: String,
        fix: Option<String>,
    ) {
        self.0.push(Finding {
            scope: scope.to_string(),
            check,
            level,
            detail,
            fix,
        });
    }
}

/// Tools the host runs, and what needs each.
const TOOLS: &[(&str, &str)] = &[
    ("mount", "every mount"),
    ("umount", "every unmount"),
    ("blkid", "probing a device before mkfs or mount"),
    ("mkfs.ext4", "formatting ext4 volumes"),
    ("mkfs.xfs", "formatting xfs volumes"),
    ("resize2fs", "growing ext4 volumes"),
    ("xfs_growfs", "growing xfs volumes"),
];

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Check the node and every driver installed in `plugin_dir`. `this_exe`
/// is the flexwasm binary drivers should be copies of.
pub fn run(plugin_dir: &Path, this_exe: &Path) -> Report {
    let mut f = Findings(Vec::new());
    let node = "node";
    if plugin_dir.is_dir() {
        if writable(plugin_dir) {
            f.ok(
                node,
                "plugin-dir",
                format!("{} exists and is writable", plugin_dir.display()),
            );
        } else {
            f.bad(
                node,
                "plugin-dir",
                Level::Error,
                format!(
                    "{} is not writable (read-only filesystem?)",
                    plugin_dir.display()
                ),
                "point kubelet's --volume-plugin-dir (config: volumePluginDir) and the \
                 controller-manager's --flex-volume-plugin-dir at a writable dir, e.g. \
                 /var/lib/kubelet/volumeplugins, and install there"
                    .into(),
            );
        }
    } else {
        f.bad(
            node,
            "plugin-dir",
            Level::Error,
            format!("{} does not exist", plugin_dir.display()),
            "install a driver there (flexwasm install creates it), or pass the dir kubelet \
             uses with --plugin-dir"
                .into(),
        );
    }
    // Does this dir agree with what kubelet and kube-controller-manager
    // use (and with each other)?
    let detection = crate::plugin_dir::Detector {
        plugin_dir_flag: Some(plugin_dir.to_path_buf()),
        ..crate::plugin_dir::Detector::new("/").with_process_env()
    }
    .detect();
    if detection.warnings.is_empty() {
        f.ok(
            node,
            "agreement",
            "no running kubelet or controller-manager uses another plugin dir".into(),
        );
    }
    for w in detection.warnings {
        f.bad(
            node,
            "agreement",
            Level::Warn,
            w,
            "`flexwasm plugin-dir --explain` shows what each uses; point kubelet's \
             --volume-plugin-dir and the controller-manager's --flex-volume-plugin-dir at one dir"
                .into(),
        );
    }
    for (tool, why) in TOOLS {
        match on_path(tool) {
            Some(p) => f.ok(node, "tool", format!("{tool}: {}", p.display())),
            None => f.bad(
                node,
                "tool",
                Level::Warn,
                format!("{tool} not found on PATH (needed for {why})"),
                format!(
                    "install it (Debian: apt-get install {})",
                    match *tool {
                        "mkfs.xfs" | "xfs_growfs" => "xfsprogs",
                        "mkfs.ext4" | "resize2fs" => "e2fsprogs",
                        "blkid" => "util-linux",
                        _ => "mount",
                    }
                ),
            ),
        }
    }
    if Path::new("/dev/loop-control").exists() {
        f.ok(node, "loop", "/dev/loop-control present".into());
    } else {
        f.bad(
            node,
            "loop",
            Level::Warn,
            "/dev/loop-control is missing: drivers with [loop] cannot attach images".into(),
            "modprobe loop (or give the node loop devices)".into(),
        );
    }

    let this_sha = fs::read(this_exe).ok().map(|b| sha256_hex(&b));
    let mut drivers: Vec<(DriverName, PathBuf)> = fs::read_dir(plugin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') {
                return None;
            }
            let (vendor, driver) = name.rsplit_once('~')?;
            Some((DriverName::new(vendor, driver).ok()?, e.path()))
        })
        .filter(|(_, dir)| dir.join(PLUGIN_FILE).exists())
        .collect();
    drivers.sort_by_key(|(n, _)| n.to_string());
    for (name, dir) in drivers {
        check_driver(&mut f, &name, &dir, this_sha.as_deref());
    }
    let ok = f.0.iter().all(|x| x.level != Level::Error);
    Report {
        schema: "flexwasm.doctor/v1",
        plugin_dir: plugin_dir.to_path_buf(),
        ok,
        findings: f.0,
    }
}

fn check_driver(f: &mut Findings, name: &DriverName, dir: &Path, this_sha: Option<&str>) {
    let scope = name.to_string();
    let s = scope.as_str();
    let layout = DriverLayout::for_driver(name.clone(), dir.to_path_buf());
    let exe = dir.join(&name.driver);
    let reinstall = format!(
        "flexwasm upgrade --plugin-dir {} --driver {name} --plugin <plugin.wasm>",
        dir.parent().unwrap_or(dir).display()
    );
    match (fs::read(&exe).ok().map(|b| sha256_hex(&b)), this_sha) {
        (Some(a), Some(b)) if a == b => {
            f.ok(s, "binary", "the same flexwasm build as this one".into())
        }
        (Some(_), _) => f.bad(
            s,
            "binary",
            Level::Warn,
            format!("{} is another flexwasm build than this one", exe.display()),
            format!("if this one is newer: {reinstall}"),
        ),
        (None, _) => f.bad(
            s,
            "binary",
            Level::Error,
            format!(
                "{} is missing or unreadable: kubelet cannot call the driver",
                exe.display()
            ),
            reinstall.clone(),
        ),
    }
    let wasm_path = layout.plugin_wasm();
    let Ok(wasm) = fs::read(&wasm_path) else {
        f.bad(
            s,
            "plugin",
            Level::Error,
            format!("cannot read {}", wasm_path.display()),
            reinstall,
        );
        return;
    };
    let sha = sha256_hex(&wasm);
    match crate::trust::check(&wasm_path) {
        Ok(()) => f.ok(
            s,
            "plugin",
            format!("{PLUGIN_FILE} sha256 {sha}, only root can change it"),
        ),
        Err(e) => f.bad(
            s,
            "plugin",
            Level::Error,
            format!("{e}: every call is refused"),
            format!(
                "chown root and chmod go-w {} (and its dirs)",
                wasm_path.display()
            ),
        ),
    }
    let policy_path = dir.join(POLICY_FILE);
    match Grant::load(dir, &layout.state_dir) {
        Ok(g) if !policy_path.exists() => {
            let _ = g;
            f.ok(s, "policy", "no policy.toml: baseline grant only".into());
        }
        Ok(g) if g.plugin_sha256.as_deref() == Some(sha.as_str()) => {
            f.ok(
                s,
                "policy",
                format!("{} is valid and pins this plugin", policy_path.display()),
            );
        }
        Ok(g) => f.bad(
            s,
            "policy",
            Level::Error,
            format!(
                "{} pins plugin {} but {PLUGIN_FILE} is {sha}: every call is refused",
                policy_path.display(),
                g.plugin_sha256.unwrap_or_default()
            ),
            format!("{reinstall} --policy <policy.toml with plugin_sha256 = \"auto\">"),
        ),
        Err(e) => f.bad(
            s,
            "policy",
            Level::Error,
            format!("{e}"),
            "fix the policy (the message names the key), then reinstall".into(),
        ),
    }
    match crate::inspect::inspect(dir, None) {
        Ok(r) if r.ok => f.ok(
            s,
            "grant",
            "every import the plugin needs is granted".into(),
        ),
        Ok(_) => f.bad(
            s,
            "grant",
            Level::Error,
            "the plugin imports something its grant does not allow: every call is refused".into(),
            format!(
                "flexwasm inspect {} shows what and the policy key for each",
                dir.display()
            ),
        ),
        Err(e) => f.bad(
            s,
            "grant",
            Level::Error,
            format!("cannot inspect: {e:#}"),
            reinstall.clone(),
        ),
    }
    let fresh = crate::runtime::engine().ok().is_some_and(|engine| {
        PrecompiledKey::read_trusted(&dir.join(PRECOMPILED_KEY_FILE)).is_some_and(|k| {
            k.engine == crate::precompiled::engine_key(&engine)
                && k.wasm_sha256 == sha
                && FileStamp::read(&wasm_path).is_ok_and(|st| st == k.wasm)
                && FileStamp::read(&layout.precompiled()).is_ok_and(|st| st == k.cwasm)
        })
    });
    if fresh {
        f.ok(s, "precompiled", "precompiled code is fresh".into());
    } else {
        f.bad(
            s,
            "precompiled",
            Level::Warn,
            "precompiled code is missing or stale: calls compile the plugin (once, then cached \
             in the state dir)"
                .into(),
            reinstall.clone(),
        );
    }
    match crate::admin::call_driver(dir, name, "init", &[], &[]) {
        Ok(out) => match out.answer() {
            Ok(v) if v.get("status").and_then(|x| x.as_str()) == Some("Success") => f.ok(
                s,
                "init",
                format!("init answered Success in {:.1} ms", out.duration_ms),
            ),
            Ok(v) => f.bad(
                s,
                "init",
                Level::Error,
                format!("init answered {v}: kubelet will not use this driver"),
                format!("flexwasm logs {name} shows the call"),
            ),
            Err(e) => f.bad(
                s,
                "init",
                Level::Error,
                format!("{e}: {}", out.output.chars().take(300).collect::<String>()),
                format!("flexwasm logs {name} shows the call"),
            ),
        },
        Err(e) => f.bad(s, "init", Level::Error, format!("{e:#}"), reinstall),
    }
}

/// The report for people: one line per finding, fixes indented.
pub fn render_text(r: &Report) -> String {
    let mut out = format!("plugin dir {}\n", r.plugin_dir.display());
    for x in &r.findings {
        let mark = match x.level {
            Level::Ok => "ok   ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
        };
        out.push_str(&format!(
            "{mark} {:<12} {:<12} {}\n",
            x.scope, x.check, x.detail
        ));
        if let Some(fix) = &x.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    out.push_str(if r.ok {
        "no errors\n"
    } else {
        "errors found: see ERROR lines\n"
    });
    out
}
