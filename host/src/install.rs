//! `flexwasm install`: put a driver in place atomically.
//!
//! kubelet watches the plugin dir and re-probes a driver on any event in
//! its directory, ignoring names that begin with `.`. So the new driver is
//! staged in `.<vendor>~<driver>/` (binary, plugin.wasm, precompiled
//! `.plugin.cwasm` and its key) and renamed into place in one step; an
//! existing driver is swapped with `renameat2(RENAME_EXCHANGE)` so kubelet
//! never sees a half-written driver or a missing one.
//!
//! The plugin is compiled here, once, so no kubelet call runs Cranelift;
//! the key written beside `.plugin.cwasm` records what it was built from
//! and the file's stamp (see [`crate::precompiled`]). A policy given with
//! `--policy` is validated and placed as `policy.toml`, with
//! `plugin_sha256 = "auto"` pinned to the plugin being installed.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::digest::sha256_hex;
use crate::layout::{
    DriverLayout, DriverName, PLUGIN_FILE, PRECOMPILED_FILE, PRECOMPILED_KEY_FILE,
};
use crate::policy::{Grant, POLICY_FILE, fill_auto_pin};
use crate::precompiled::{self, FileStamp, PrecompiledKey, engine_key};
use crate::runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install, or replace what is there (keeping its policy unless a new
    /// one is given).
    Install,
    /// Replace what is there; refused when the driver is not installed.
    Upgrade,
}

#[derive(Debug)]
pub struct InstallRequest {
    pub plugin_dir: PathBuf,
    pub driver: DriverName,
    pub plugin: PathBuf,
    /// The grant policy to place as `policy.toml`. None: keep the installed
    /// driver's policy (re-pinned to the new plugin), or baseline only for
    /// a new driver.
    pub policy: Option<PathBuf>,
    /// The host binary to install; default: this executable.
    pub host_binary: Option<PathBuf>,
    pub mode: Mode,
    /// Check and report everything; write nothing.
    pub dry_run: bool,
    /// Install even when the grant refuses imports the plugin needs (every
    /// call will then be refused). Default: such an install fails.
    pub allow_ungranted: bool,
}

/// What an install did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new driver.
    Installed,
    /// A different plugin, host binary or policy replaced the installed one.
    Upgraded { previous_sha256: Option<String> },
    /// Everything is as asked already: nothing was written.
    Unchanged,
}

/// Where the policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Given(PathBuf),
    /// The installed driver's policy, re-pinned to the new plugin.
    Kept,
    None,
}

#[derive(Debug)]
pub struct Installed {
    pub driver_dir: PathBuf,
    pub executable: PathBuf,
    pub outcome: Outcome,
    pub dry_run: bool,
    pub wasm_sha256: String,
    pub wasm_bytes: u64,
    pub cwasm_bytes: u64,
    pub imports: Vec<String>,
    /// Imports the grant does not allow (only with `allow_ungranted`:
    /// every call will be refused until the policy grants them).
    pub ungranted: Vec<String>,
    pub policy: Option<PathBuf>,
    pub policy_source: PolicySource,
    pub compile_ms: f64,
}

/// The policy text to install: `plugin_sha256 = "auto"` filled in with
/// `sha`, then validated as a whole.
fn prepared_policy(
    path: &Path,
    sha: &str,
    layout: &DriverLayout,
) -> anyhow::Result<(String, Grant)> {
    let text = ctx(fs::read_to_string(path), || {
        format!("reading {}", path.display())
    })?;
    let text = fill_auto_pin(&text, sha);
    let grant = Grant::parse(&text, path, &layout.state_dir)?;
    if grant.plugin_sha256.as_deref() != Some(sha) {
        anyhow::bail!(
            "{}: plugin_sha256 does not match {} (sha256 {sha}); use plugin_sha256 = \"auto\" to pin the plugin being installed",
            path.display(),
            PLUGIN_FILE
        );
    }
    Ok((text, grant))
}

fn ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{}: {e}", what()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    ctx(fs::File::open(path).and_then(|d| d.sync_all()), || {
        format!("syncing {}", path.display())
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = ctx(
        fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(path),
        || format!("creating {}", path.display()),
    )?;
    ctx(f.write_all(bytes).and_then(|_| f.sync_all()), || {
        format!("writing {}", path.display())
    })?;
    // The umask may have narrowed the mode; set it exactly.
    ctx(
        fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        || format!("chmod {}", path.display()),
    )
}

/// The driver installed at `target`, as far as an upgrade cares.
struct Existing {
    wasm_sha256: Option<String>,
    host_sha256: Option<String>,
    policy_text: Option<String>,
    /// The precompiled code's key, if it is ours and matches this engine.
    precompiled_sha256: Option<String>,
}

fn read_existing(target: &Path, driver: &DriverName, engine_key: &str) -> Option<Existing> {
    let meta = fs::symlink_metadata(target).ok()?;
    if !meta.is_dir() {
        return None;
    }
    let sha_of = |name: &str| fs::read(target.join(name)).ok().map(|b| sha256_hex(&b));
    Some(Existing {
        wasm_sha256: sha_of(PLUGIN_FILE),
        host_sha256: sha_of(&driver.driver),
        policy_text: fs::read_to_string(target.join(POLICY_FILE)).ok(),
        // Only while the code its key describes is there unchanged: a
        // removed or altered `.plugin.cwasm` makes a re-install write it
        // again (the runtime-only host cannot compile it at call time).
        precompiled_sha256: PrecompiledKey::read_trusted(&target.join(PRECOMPILED_KEY_FILE))
            .filter(|k| {
                k.engine == engine_key
                    && FileStamp::read(&target.join(PRECOMPILED_FILE))
                        .ok()
                        .as_ref()
                        == Some(&k.cwasm)
            })
            .map(|k| k.wasm_sha256),
    })
}

/// `text` with its `plugin_sha256` pin moved from `old` to `new`; `None`
/// when it pins something else (the operator's policy is for another
/// plugin: it is not carried over silently).
fn repin(text: &str, old: &str, new: &str) -> Option<String> {
    let mut found = false;
    let mut out: String = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("plugin_sha256") && line.contains(&format!("\"{old}\"")) {
                found = true;
                line.replacen(old, new, 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    found.then_some(out)
}

pub fn install(req: &InstallRequest) -> anyhow::Result<Installed> {
    let engine = runtime::engine()?;
    let engine_key = engine_key(&engine);
    let wasm = ctx(fs::read(&req.plugin), || {
        format!("reading {}", req.plugin.display())
    })?;
    let sha = sha256_hex(&wasm);

    // Compile now, so no kubelet call ever has to; this also proves the
    // file is a valid component and that we can link every import.
    let t = Instant::now();
    let cwasm = precompiled::precompile(&engine, &wasm, &req.plugin, || {
        "installing compiles it".into()
    })?;
    let compile_ms = t.elapsed().as_secs_f64() * 1000.0;
    // SAFETY: `cwasm` was produced by this engine a moment ago.
    let component = unsafe { wasmtime::component::Component::deserialize(&engine, &cwasm) }
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", req.plugin.display()))?;
    let imports = runtime::component_imports(&engine, &component);

    let host = match &req.host_binary {
        Some(p) => p.clone(),
        None => ctx(std::env::current_exe(), || {
            "locating this executable".into()
        })?,
    };
    let host_bytes = ctx(fs::read(&host), || format!("reading {}", host.display()))?;

    if !req.dry_run {
        ctx(
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&req.plugin_dir),
            || format!("creating {}", req.plugin_dir.display()),
        )?;
    }
    let plugin_dir = fs::canonicalize(&req.plugin_dir).unwrap_or_else(|_| req.plugin_dir.clone());
    let dir_name = req.driver.dir_name();
    let staging = plugin_dir.join(format!(".{dir_name}"));
    let target = plugin_dir.join(&dir_name);
    let layout = DriverLayout::for_driver(req.driver.clone(), target.clone());
    let existing = read_existing(&target, &req.driver, &engine_key);
    if req.mode == Mode::Upgrade && existing.is_none() {
        anyhow::bail!(
            "{} is not installed in {}: nothing to upgrade (use flexwasm install)",
            req.driver,
            plugin_dir.display()
        );
    }

    let (policy_text, grant, policy_source) = match (&req.policy, &existing) {
        (Some(p), _) => {
            let (text, grant) = prepared_policy(p, &sha, &layout)?;
            (Some(text), grant, PolicySource::Given(p.clone()))
        }
        (
            None,
            Some(Existing {
                policy_text: Some(old),
                wasm_sha256,
                ..
            }),
        ) => {
            let path = target.join(POLICY_FILE);
            let text = match wasm_sha256 {
                Some(old_sha) if old_sha == &sha => old.clone(),
                Some(old_sha) => repin(old, old_sha, &sha).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: its plugin_sha256 does not pin the installed plugin, so it cannot be \
                         carried over to the new one; pass --policy",
                        path.display()
                    )
                })?,
                None => anyhow::bail!(
                    "{} has a policy but no {PLUGIN_FILE}: pass --policy",
                    target.display()
                ),
            };
            let grant = Grant::parse(&text, &path, &layout.state_dir)?;
            (Some(text), grant, PolicySource::Kept)
        }
        (None, _) => (None, Grant::baseline(), PolicySource::None),
    };
    let ungranted: Vec<String> = grant
        .ungranted(&imports)
        .into_iter()
        .map(str::to_string)
        .collect();
    if !ungranted.is_empty() && !req.allow_ungranted {
        let whose = match &policy_source {
            PolicySource::Given(p) => format!("the policy {}", p.display()),
            PolicySource::Kept => format!(
                "the installed policy {} (the new plugin asks for more than the old grant gives)",
                target.join(POLICY_FILE).display()
            ),
            PolicySource::None => "the baseline grant (no --policy)".to_string(),
        };
        anyhow::bail!(
            "{} needs imports {whose} does not grant, so every call would be refused: {}. \
             Grant them (`flexwasm inspect {} --policy P.toml` maps each to a policy key) and \
             pass --policy, or pass --allow-ungranted to install anyway",
            req.plugin.display(),
            ungranted.join(", "),
            req.plugin.display()
        );
    }

    let outcome = match &existing {
        None => Outcome::Installed,
        Some(e)
            if e.wasm_sha256.as_deref() == Some(sha.as_str())
                && e.host_sha256.as_deref() == Some(sha256_hex(&host_bytes).as_str())
                && e.policy_text == policy_text
                && e.precompiled_sha256.as_deref() == Some(sha.as_str()) =>
        {
            Outcome::Unchanged
        }
        Some(e) => Outcome::Upgraded {
            previous_sha256: e.wasm_sha256.clone(),
        },
    };
    let installed = Installed {
        executable: target.join(&req.driver.driver),
        driver_dir: layout.driver_dir.clone(),
        outcome: outcome.clone(),
        dry_run: req.dry_run,
        wasm_sha256: sha.clone(),
        wasm_bytes: wasm.len() as u64,
        cwasm_bytes: cwasm.len() as u64,
        imports,
        ungranted,
        policy: policy_text
            .as_ref()
            .map(|_| layout.driver_dir.join(POLICY_FILE)),
        policy_source,
        compile_ms,
    };
    if req.dry_run || outcome == Outcome::Unchanged {
        return Ok(installed);
    }

    if fs::symlink_metadata(&staging).is_ok() {
        ctx(fs::remove_dir_all(&staging), || {
            format!("removing stale {}", staging.display())
        })?;
    }
    ctx(fs::DirBuilder::new().mode(0o755).create(&staging), || {
        format!("creating {}", staging.display())
    })?;
    ctx(
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755)),
        || format!("chmod {}", staging.display()),
    )?;
    let staged = (|| {
        write_file(&staging.join(&req.driver.driver), &host_bytes, 0o755)?;
        if let Some(text) = &policy_text {
            // 0600: [config] may hold credentials.
            write_file(&staging.join(POLICY_FILE), text.as_bytes(), 0o600)?;
        }
        write_file(&staging.join(PLUGIN_FILE), &wasm, 0o644)?;
        write_file(&staging.join(PRECOMPILED_FILE), &cwasm, 0o644)?;
        // Stamp both files as they are now, after their last change.
        let stamp = |name: &str| {
            let p = staging.join(name);
            ctx(FileStamp::read(&p), || format!("stat {}", p.display()))
        };
        let key = PrecompiledKey {
            engine: engine_key.clone(),
            wasm_sha256: sha.clone(),
            wasm: stamp(PLUGIN_FILE)?,
            cwasm: stamp(PRECOMPILED_FILE)?,
        };
        write_file(
            &staging.join(PRECOMPILED_KEY_FILE),
            key.render().as_bytes(),
            0o644,
        )?;
        sync_dir(&staging)
    })();
    if let Err(e) = staged {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }

    if existing.is_some() {
        // Swap old and new in one step, then drop the old one (now at `staging`).
        rename_exchange(&staging, &target)
            .map_err(|e| anyhow::anyhow!("swapping {} into place: {e}", target.display()))?;
        ctx(fs::remove_dir_all(&staging), || {
            format!("removing the previous driver at {}", staging.display())
        })?;
    } else {
        ctx(fs::rename(&staging, &target), || {
            format!("renaming into {}", target.display())
        })?;
    }
    sync_dir(&plugin_dir)?;

    // The compile cache of the previous plugin is stale now; leave it (it
    // is keyed by SHA-256 and never matches a different wasm).
    Ok(installed)
}

#[derive(Debug)]
pub struct UninstallRequest {
    pub plugin_dir: PathBuf,
    pub driver: DriverName,
    /// Remove it even while volumes of the driver are in use.
    pub force: bool,
    pub dry_run: bool,
    /// The mount table to check (default: this process's).
    pub mountinfo: Option<PathBuf>,
    /// The driver's state dir, when not the default (e.g. under a host
    /// root mounted in a container).
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Uninstalled {
    pub driver_dir: PathBuf,
    /// Whether there was a driver to remove.
    pub was_installed: bool,
    /// What still used the driver (removed anyway only with `force`).
    pub in_use: Vec<String>,
    /// The driver's state, kept: volumes' data and bookkeeping.
    pub state_dir: PathBuf,
}

/// What of `driver` is still in use on this node: its mounts in kubelet's
/// pod and device-mount dirs (from `mountinfo_text`), the device mounts the
/// host recorded, and loop devices attached from its images.
pub fn in_use(layout: &DriverLayout, mountinfo_text: &str) -> Vec<String> {
    use crate::kubelet_paths::{is_device_mount_path, parse_pod_volume_dir};
    let mut found = Vec::new();
    if let Ok(entries) = crate::node::mountinfo::parse(mountinfo_text) {
        for e in entries {
            if parse_pod_volume_dir(&e.mount_point, &layout.name).is_some() {
                found.push(format!("pod volume mounted at {}", e.mount_point.display()));
            } else if is_device_mount_path(&e.mount_point, &layout.name) {
                found.push(format!(
                    "device {} mounted at {}",
                    e.source,
                    e.mount_point.display()
                ));
            }
        }
    }
    if let Ok(dir) = fs::read_dir(layout.state_dir.join("host/device-mounts")) {
        let records = dir
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        if records > 0 && found.is_empty() {
            found.push(format!(
                "{records} device mount(s) recorded in {} (mountdevice without unmountdevice)",
                layout.state_dir.join("host/device-mounts").display()
            ));
        }
    }
    let image_dir = Grant::load(&layout.driver_dir, &layout.state_dir)
        .ok()
        .and_then(|g| g.loop_image_dir)
        .unwrap_or_else(|| layout.loop_image_dir());
    if let Ok(devices) = crate::node::loopdev::attached() {
        for (dev, status) in devices {
            let backing = crate::node::loopdev::backing_file(&dev).ok().flatten();
            let ours = backing
                .as_deref()
                .is_some_and(|b| b.starts_with(&image_dir))
                || fs::read_dir(&image_dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| {
                        use std::os::unix::fs::MetadataExt;
                        f.metadata().is_ok_and(|m| {
                            m.ino() == status.backing_inode
                                && m.dev()
                                    == libc::makedev(status.backing_major, status.backing_minor)
                        })
                    });
            if ours {
                found.push(format!(
                    "loop device {} attached from {}",
                    dev.display(),
                    backing.map(|b| b.display().to_string()).unwrap_or_default()
                ));
            }
        }
    }
    found
}

pub fn uninstall(req: &UninstallRequest) -> anyhow::Result<Uninstalled> {
    let plugin_dir = fs::canonicalize(&req.plugin_dir).unwrap_or_else(|_| req.plugin_dir.clone());
    let dir_name = req.driver.dir_name();
    let target = plugin_dir.join(&dir_name);
    let mut layout = DriverLayout::for_driver(req.driver.clone(), target.clone());
    if let Some(dir) = &req.state_dir {
        layout.state_dir = dir.clone();
    }
    let mountinfo_path = req
        .mountinfo
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/thread-self/mountinfo"));
    let mountinfo = ctx(fs::read_to_string(&mountinfo_path), || {
        format!("reading {}", mountinfo_path.display())
    })?;
    let in_use = in_use(&layout, &mountinfo);
    let was_installed = fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
    let done = Uninstalled {
        driver_dir: target.clone(),
        was_installed,
        in_use,
        state_dir: layout.state_dir.clone(),
    };
    if !done.in_use.is_empty() && !req.force {
        anyhow::bail!(
            "{} is in use on this node; kubelet needs it to unmount and detach these, so it stays \
             installed (delete the pods and PVs first, or pass --force):\n  {}",
            req.driver,
            done.in_use.join("\n  ")
        );
    }
    if req.dry_run || !was_installed {
        return Ok(done);
    }
    // Out of kubelet's sight in one step (it ignores dot entries), then
    // removed.
    let doomed = plugin_dir.join(format!(".{dir_name}.removing"));
    if fs::symlink_metadata(&doomed).is_ok() {
        ctx(fs::remove_dir_all(&doomed), || {
            format!("removing stale {}", doomed.display())
        })?;
    }
    ctx(fs::rename(&target, &doomed), || {
        format!("moving {} out of the plugin dir", target.display())
    })?;
    sync_dir(&plugin_dir)?;
    ctx(fs::remove_dir_all(&doomed), || {
        format!("removing {}", doomed.display())
    })?;
    Ok(done)
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swap two paths atomically. Through
/// the raw syscall, because neither musl (the static host) nor nix's musl
/// build wraps it.
fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte")
        })
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call; renameat2 only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::c_long::from(libc::AT_FDCWD),
            a.as_ptr(),
            libc::c_long::from(libc::AT_FDCWD),
            b.as_ptr(),
            libc::c_long::from(libc::RENAME_EXCHANGE),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
