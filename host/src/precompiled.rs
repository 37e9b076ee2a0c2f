//! Precompiled plugin code: the `.plugin.cwasm` written at install, the
//! compile cache in the state dir, and when each may be trusted.
//!
//! Precompiled code is native code that wasmtime maps and runs; loading a
//! tampered file would run anything. So it is loaded only when:
//! - it is a regular file owned by root, not writable by group or others,
//!   in a directory with the same property (only root can change it);
//! - its key file (same rules) says it was built from a plugin.wasm with
//!   this SHA-256, by an engine with this compatibility hash;
//! - its inode, size, mtime and ctime are the ones the host recorded right
//!   after writing it. Any later write, even by root, changes the ctime
//!   (which no syscall can set back), so a modified file is never loaded:
//!   the plugin is recompiled instead.
//!
//! The key also records plugin.wasm's inode, size, mtime and ctime. When
//! they still match, the recorded SHA-256 is the file's SHA-256 without
//! reading and hashing it on every call (the per-call fast path).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::digest::sha256_hex;
use crate::layout::DriverLayout;
use crate::trust::only_root_can_change;

const KEY_MAGIC: &str = "flexwasm-precompiled v3";

/// Why the plugin's code could not be loaded: plugin.wasm is missing,
/// unreadable, untrusted or not a component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {path} is missing: install the driver with `flexwasm install`")]
    MissingPlugin { path: PathBuf },
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("refusing to run the plugin: {0}")]
    Untrusted(String),
    #[error(
        "{path} has no precompiled code this host can load ({why}), and this flexwasm is the \
         runtime-only build (no compiler): install the driver again with the full `flexwasm \
         install`"
    )]
    NoCompiler { path: PathBuf, why: String },
}

/// A stable hex digest of what makes precompiled code compatible with `engine`.
#[cfg(feature = "compiler")]
pub fn engine_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The runtime-only build cannot compute the compiler's digest (wasmtime
/// offers it only with a compiler). It does not need to: it never writes
/// precompiled code, and what it loads is checked by wasmtime itself at
/// deserialization (its version, target, compiler flags, tunables and wasm
/// features against this engine's), besides our own trust and pin checks.
#[cfg(not(feature = "compiler"))]
pub fn engine_key(_engine: &Engine) -> String {
    "runtime-only".into()
}

/// What identifies one version of a file's content for our purposes: of
/// the file at a known path, so no device number (`st_dev` of a btrfs
/// subvolume or an overlay is given out at mount time and changes across
/// reboots, which would make every install-time file look changed; a file
/// of another filesystem mounted over the path still differs in ctime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        fs::symlink_metadata(path).map(|m| Self::of(&m))
    }

    fn render(&self) -> String {
        format!(
            "{} {} {} {}",
            self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }

    fn parse(s: &str) -> Option<Self> {
        let mut it = s.split(' ');
        let stamp = FileStamp {
            ino: it.next()?.parse().ok()?,
            size: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
            ctime_ns: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(stamp)
    }
}

/// The sidecar key of a precompiled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecompiledKey {
    pub engine: String,
    pub wasm_sha256: String,
    pub wasm: FileStamp,
    pub cwasm: FileStamp,
}

impl PrecompiledKey {
    pub fn render(&self) -> String {
        format!(
            "{KEY_MAGIC}\nengine {}\nwasm-sha256 {}\nwasm-stat {}\ncwasm-stat {}\n",
            self.engine,
            self.wasm_sha256,
            self.wasm.render(),
            self.cwasm.render()
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != KEY_MAGIC {
            return None;
        }
        let mut field = |name: &str| -> Option<String> {
            lines
                .next()?
                .strip_prefix(name)?
                .strip_prefix(' ')
                .map(str::to_string)
        };
        Some(PrecompiledKey {
            engine: field("engine")?,
            wasm_sha256: field("wasm-sha256")?,
            wasm: FileStamp::parse(&field("wasm-stat")?)?,
            cwasm: FileStamp::parse(&field("cwasm-stat")?)?,
        })
    }

    /// Read a key file that only root can change; `None` otherwise.
    pub fn read_trusted(path: &Path) -> Option<Self> {
        if !only_root_can_change(path) {
            return None;
        }
        Self::parse(&fs::read_to_string(path).ok()?)
    }
}

/// Write `bytes` to `path` atomically (temp file in the same dir, fsync,
/// rename) and return the new file's stamp.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<FileStamp> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}{}", temp_suffix()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // rename updates the ctime: stamp the file as it now is.
        FileStamp::read(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What [`write_atomic`] appends to a temp file's name: its writer, as
/// `.tmp-<pid namespace inode>-<pid>`. A pid alone names no process across
/// pid namespaces (kubelet in a container and a DaemonSet on the host share
/// these dirs): two writers could share a temp file, and a live writer in
/// another namespace could look gone.
fn temp_suffix() -> String {
    format!(
        ".tmp-{}-{}",
        pid_namespace().unwrap_or(0),
        std::process::id()
    )
}

fn pid_namespace() -> Option<u64> {
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// No call outlives its deadline (at most [`crate::policy::MAX_DEADLINE_SECS`])
/// by more than the answer grace: a temp file this old has no live writer,
/// whichever namespace it ran in.
const TEMP_FILE_MAX_AGE: std::time::Duration =
    std::time::Duration::from_secs(crate::policy::MAX_DEADLINE_SECS + 60);

/// Whether `name` (in a dir [`write_atomic`] writes to) is a temp file
/// whose writer is gone: killed before its rename, so nothing will ever
/// read or rename it. Its writer is gone when it ran in this pid namespace
/// and its pid is no more, or whatever its namespace, when the file is
/// older than any call lives.
pub fn is_orphaned_temp_file(name: &str, meta: &fs::Metadata) -> bool {
    let Some((_, writer)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else {
        return false;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > TEMP_FILE_MAX_AGE);
    let gone_here = match writer.split_once('-') {
        Some((ns, pid)) => {
            ns.parse::<u64>()
                .ok()
                .is_some_and(|ns| Some(ns) == pid_namespace())
                && pid.parse::<u32>().is_ok()
                && !Path::new("/proc").join(pid).exists()
        }
        // Written before temp names carried the namespace: by age only.
        None => false,
    };
    gone_here || (old && writer.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
}

/// plugin.wasm, identified: its SHA-256, and its bytes if they had to be read.
pub struct PluginIdentity {
    pub sha256: String,
    pub size: u64,
    wasm: Option<Vec<u8>>,
    stamp: FileStamp,
    key: Option<PrecompiledKey>,
}

fn read_error(path: &Path, source: std::io::Error) -> LoadError {
    if source.kind() == std::io::ErrorKind::NotFound {
        LoadError::MissingPlugin {
            path: path.to_path_buf(),
        }
    } else {
        LoadError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Identify plugin.wasm, hashing it only when the install-time key does not
/// vouch for it.
pub fn identify(layout: &DriverLayout) -> Result<PluginIdentity, LoadError> {
    let path = layout.plugin_wasm();
    let meta = fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
    // What runs as the plugin is what its file says: only root may be able
    // to change it (the grant's SHA-256 pin is checked by the caller).
    crate::trust::check(&path).map_err(|e| LoadError::Untrusted(e.to_string()))?;
    let stamp = FileStamp::of(&meta);
    let key = PrecompiledKey::read_trusted(&layout.precompiled_key());
    if let Some(k) = &key
        && k.wasm == stamp
    {
        return Ok(PluginIdentity {
            sha256: k.wasm_sha256.clone(),
            size: stamp.size,
            wasm: None,
            stamp,
            key,
        });
    }
    let wasm = fs::read(&path).map_err(|e| read_error(&path, e))?;
    Ok(PluginIdentity {
        sha256: sha256_hex(&wasm),
        size: wasm.len() as u64,
        wasm: Some(wasm),
        stamp,
        key,
    })
}

/// How the component was obtained, for the call log and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// `.plugin.cwasm` written at install.
    Precompiled,
    /// The compile cache in the state dir.
    Cache,
    /// Compiled now with Cranelift (slow; then cached).
    Compiled,
}

impl LoadedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedFrom::Precompiled => "precompiled",
            LoadedFrom::Cache => "cache",
            LoadedFrom::Compiled => "compiled",
        }
    }
}

fn try_deserialize(
    engine: &Engine,
    key: &PrecompiledKey,
    sha: &str,
    path: &Path,
) -> Result<Component, String> {
    let shown = path.display();
    if cfg!(feature = "compiler") && key.engine != engine_key(engine) {
        return Err(format!("{shown} was compiled by another engine"));
    }
    if key.wasm_sha256 != sha {
        return Err(format!("{shown} was compiled from another plugin.wasm"));
    }
    if !only_root_can_change(path) {
        return Err(format!(
            "{shown} is missing, or not a file only root can change"
        ));
    }
    if FileStamp::read(path).map_err(|e| format!("{shown}: {e}"))? != key.cwasm {
        return Err(format!("{shown} changed after it was written"));
    }
    // SAFETY: `path` is a regular file only root can change, in a directory
    // only root can change; its key (itself only root-changeable) says this
    // host wrote it from this plugin's SHA-256 with this engine, and its
    // inode/size/mtime/ctime are unchanged since (so it was not modified).
    // wasmtime checks its header, version and engine configuration too.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|e| format!("wasmtime cannot load {shown}: {e:#}"))
}

/// Compile `wasm` (read from `path`) for `engine`: Cranelift, in the full
/// build; the runtime-only build says it cannot, and `why` there was
/// nothing precompiled to load.
pub fn precompile(
    engine: &Engine,
    wasm: &[u8],
    path: &Path,
    why: impl FnOnce() -> String,
) -> Result<Vec<u8>, LoadError> {
    #[cfg(feature = "compiler")]
    {
        let _ = why;
        engine
            .precompile_component(wasm)
            .map_err(|e| LoadError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{e:#}"),
            })
    }
    #[cfg(not(feature = "compiler"))]
    {
        let _ = (engine, wasm);
        Err(LoadError::NoCompiler {
            path: path.to_path_buf(),
            why: why(),
        })
    }
}

/// [`precompile`] and load: a component of `wasm` for `engine`.
pub fn compile(engine: &Engine, wasm: &[u8], path: &Path) -> Result<Component, LoadError> {
    let bytes = precompile(engine, wasm, path, || "asked to compile".into())?;
    // SAFETY: `bytes` was produced by `precompile_component` of this very
    // engine a moment ago, in this process.
    unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    })
}

/// The component: install-time file, else the cache, else compile (and cache).
pub fn component(
    engine: &Engine,
    layout: &DriverLayout,
    id: &PluginIdentity,
) -> Result<(Component, LoadedFrom), LoadError> {
    let installed = match &id.key {
        Some(key) => try_deserialize(engine, key, &id.sha256, &layout.precompiled()),
        None => Err(why_no_key(&layout.precompiled_key())),
    };
    let why_not_installed = match installed {
        Ok(c) => return Ok((c, LoadedFrom::Precompiled)),
        Err(why) => why,
    };
    let cache_file = cache_path(layout, &id.sha256, engine);
    let cache_key_file = cache_file.with_extension("key");
    if let Some(key) = PrecompiledKey::read_trusted(&cache_key_file)
        && let Ok(c) = try_deserialize(engine, &key, &id.sha256, &cache_file)
    {
        return Ok((c, LoadedFrom::Cache));
    }

    let wasm_path = layout.plugin_wasm();
    let read;
    let wasm = match &id.wasm {
        Some(w) => w,
        None => {
            read = fs::read(&wasm_path).map_err(|e| read_error(&wasm_path, e))?;
            &read
        }
    };
    let bytes = precompile(engine, wasm, &wasm_path, || why_not_installed)?;
    // Best effort: a read-only state dir must not fail the call.
    {
        use std::os::unix::fs::DirBuilderExt;
        let dir = layout.compile_cache_dir();
        if fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .is_ok()
            && let Ok(cwasm) = write_atomic(&cache_file, &bytes, 0o600)
        {
            let key = PrecompiledKey {
                engine: engine_key(engine),
                wasm_sha256: id.sha256.clone(),
                wasm: id.stamp.clone(),
                cwasm,
            };
            let _ = write_atomic(&cache_key_file, key.render().as_bytes(), 0o600);
        }
    }
    // SAFETY: `bytes` was produced by `precompile_component` of this very
    // engine a moment ago, in this process.
    let component =
        unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| LoadError::Invalid {
            path: wasm_path.clone(),
            reason: format!("{e:#}"),
        })?;
    Ok((component, LoadedFrom::Compiled))
}

/// Why the key file at `path` was not read (only asked on failure).
fn why_no_key(path: &Path) -> String {
    let shown = path.display();
    match fs::read_to_string(path) {
        Err(e) => format!("its key file {shown}: {e}"),
        Ok(_) if !only_root_can_change(path) => {
            format!("its key file {shown} is not a file only root can change")
        }
        Ok(text) => match text.lines().next() {
            Some(first) if first != KEY_MAGIC && first.starts_with("flexwasm-precompiled ") => {
                format!("its key file {shown} was written by another flexwasm version ({first})")
            }
            _ => format!("its key file {shown} is malformed"),
        },
    }
}

pub fn cache_path(layout: &DriverLayout, sha: &str, engine: &Engine) -> PathBuf {
    layout
        .compile_cache_dir()
        .join(format!("{sha}-{}.cwasm", engine_key(engine)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_rejects_junk() {
        let stamp = FileStamp {
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: -5,
        };
        let key = PrecompiledKey {
            engine: "ab".into(),
            wasm_sha256: "cd".into(),
            wasm: stamp.clone(),
            cwasm: stamp,
        };
        assert_eq!(PrecompiledKey::parse(&key.render()), Some(key.clone()));
        assert_eq!(PrecompiledKey::parse("flexwasm-precompiled v1\n"), None);
        // v2 keys had a device number in each stamp: not read (the driver
        // is installed again, or its code compiled again).
        let v2 = key
            .render()
            .replace("v3", "v2")
            .replace("wasm-stat ", "wasm-stat 7 ");
        assert_eq!(PrecompiledKey::parse(&v2), None);
        assert_eq!(
            PrecompiledKey::parse(&key.render().replace("cwasm-stat 2", "cwasm-stat x")),
            None
        );
    }
}
