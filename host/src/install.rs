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

use crate::layout::{
    DriverLayout, DriverName, PLUGIN_FILE, PRECOMPILED_FILE, PRECOMPILED_KEY_FILE,
};
use crate::policy::{Grant, POLICY_FILE, fill_auto_pin};
use crate::precompiled::{self, FileStamp, PrecompiledKey, engine_key, sha256_hex};
use crate::runtime;

#[derive(Debug)]
pub struct InstallRequest {
    pub plugin_dir: PathBuf,
    pub driver: DriverName,
    pub plugin: PathBuf,
    /// The grant policy to place as `policy.toml`; none = baseline only.
    pub policy: Option<PathBuf>,
    /// The host binary to install; default: this executable.
    pub host_binary: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Installed {
    pub driver_dir: PathBuf,
    pub executable: PathBuf,
    pub wasm_sha256: String,
    pub wasm_bytes: u64,
    pub cwasm_bytes: u64,
    pub imports: Vec<String>,
    /// Imports the grant does not allow: every call will be refused until
    /// the policy grants them (`flexwasm inspect` shows the same).
    pub ungranted: Vec<String>,
    pub policy: Option<PathBuf>,
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

pub fn install(req: &InstallRequest) -> anyhow::Result<Installed> {
    let engine = runtime::engine()?;
    let wasm = ctx(fs::read(&req.plugin), || {
        format!("reading {}", req.plugin.display())
    })?;
    let sha = sha256_hex(&wasm);

    // Compile now, so no kubelet call ever has to; this also proves the
    // file is a valid component and that we can link every import.
    let t = Instant::now();
    let cwasm = precompiled::precompile(&engine, &wasm, &req.plugin)?;
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

    ctx(
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&req.plugin_dir),
        || format!("creating {}", req.plugin_dir.display()),
    )?;
    let plugin_dir = ctx(fs::canonicalize(&req.plugin_dir), || {
        format!("resolving {}", req.plugin_dir.display())
    })?;
    let dir_name = req.driver.dir_name();
    let staging = plugin_dir.join(format!(".{dir_name}"));
    let target = plugin_dir.join(&dir_name);
    let layout = DriverLayout::for_driver(req.driver.clone(), target.clone());

    let (policy_text, grant) = match &req.policy {
        Some(p) => {
            let (text, grant) = prepared_policy(p, &sha, &layout)?;
            (Some(text), grant)
        }
        None => (None, Grant::baseline()),
    };
    let ungranted: Vec<String> = grant
        .ungranted(&imports)
        .into_iter()
        .map(str::to_string)
        .collect();

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
            engine: engine_key(&engine),
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

    if fs::symlink_metadata(&target).is_ok() {
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
    Ok(Installed {
        executable: target.join(&req.driver.driver),
        driver_dir: layout.driver_dir.clone(),
        wasm_sha256: sha,
        wasm_bytes: wasm.len() as u64,
        cwasm_bytes: cwasm.len() as u64,
        imports,
        ungranted,
        policy: policy_text.map(|_| layout.driver_dir.join(POLICY_FILE)),
        compile_ms,
    })
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
