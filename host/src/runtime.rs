//! The wasm runtime: engine, loading the plugin component (precompiled when
//! possible), linking exactly the interfaces it imports, and calling one
//! export under a deadline and a memory cap.
//!
//! Per-call cost matters: kubelet execs the host once per call. The fast
//! path is `deserialize_file` of the `.plugin.cwasm` written at install
//! (an mmap, no compilation), then linking only the imports the component
//! declares. Cranelift runs only when no trusted precompiled file matches
//! the wasm's SHA-256 and this engine; the result is then cached in the
//! state dir (never in the driver dir: kubelet would re-probe).
//!
//! Precompiled code is native code. It is loaded only from regular files
//! owned by root, not writable by group or others, in a directory with the
//! same property — files the host wrote and that only root can change.

use sha2::{Digest, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::{
    devices::DeviceView, log::PluginLog, loop_images::LoopImages, state::StateCapability,
};
use crate::layout::DriverLayout;

/// Host-side bindings of the WIT world (`wit/flexwasm.wit`).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
    });
}

pub use bindings::Plugin as PluginWorld;
pub use bindings::exports::flexwasm::driver::driver::Guest as DriverExports;
pub use bindings::flexwasm::driver::types as wit;

/// Limits of one call. Defaults are deliberately small.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of the guest for this call.
    pub deadline: Duration,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_bytes: usize,
    /// How much of the guest's stdout, stderr and log is kept (each).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(30),
            memory_bytes: 64 * 1024 * 1024,
            output_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
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
    #[error("plugin imports {0}, which flexwasm does not provide")]
    UnknownImport(String),
    #[error("cannot instantiate plugin: {0}")]
    Instantiate(String),
    #[error("plugin {call} exceeded its {limit:?} deadline and was stopped")]
    Deadline { call: &'static str, limit: Duration },
    #[error("plugin crashed in {call}: {reason}")]
    Trap { call: &'static str, reason: String },
    #[error("engine setup failed: {0}")]
    Engine(String),
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

/// The engine configuration. Install and every call must agree on it, or
/// precompiled code is rejected (and recompiled).
pub fn engine() -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(512 * 1024);
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// A stable hex digest of what makes precompiled code compatible with `engine`.
pub fn engine_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The content of the `.plugin.cwasm.key` sidecar.
pub fn precompiled_key(wasm_sha256: &str, engine: &Engine) -> String {
    format!(
        "flexwasm-cwasm-v1 wasm-sha256={wasm_sha256} engine={}\n",
        engine_key(engine)
    )
}

/// Whether `path` is a regular file only root can change, in a directory
/// only root can change. Symlinks are not followed.
pub fn only_root_can_change(path: &Path) -> bool {
    let safe = |meta: &fs::Metadata| meta.uid() == 0 && meta.mode() & 0o022 == 0;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file() || !safe(&meta) {
        return false;
    }
    let Some(dir) = path.parent() else {
        return false;
    };
    matches!(fs::symlink_metadata(dir), Ok(d) if d.file_type().is_dir() && safe(&d))
}

/// Read `plugin.wasm`; the bytes and their SHA-256.
pub fn read_plugin(path: &Path) -> Result<(Vec<u8>, String), RuntimeError> {
    let wasm = fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::MissingPlugin {
                path: path.to_path_buf(),
            }
        } else {
            RuntimeError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let sha = sha256_hex(&wasm);
    Ok((wasm, sha))
}

/// Compile `wasm` to a precompiled artifact for `engine`.
pub fn precompile(engine: &Engine, wasm: &[u8], path: &Path) -> Result<Vec<u8>, RuntimeError> {
    engine
        .precompile_component(wasm)
        .map_err(|e| RuntimeError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })
}

fn try_deserialize(engine: &Engine, path: &Path) -> Option<Component> {
    if !only_root_can_change(path) {
        return None;
    }
    // SAFETY: `path` is a regular file that only root can change, in a
    // directory only root can change (checked just above), and it was
    // written by this host (`flexwasm install` or the compile cache below).
    // wasmtime checks its header, version and engine configuration.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

/// Write `bytes` to `path` atomically (temp file in the same dir, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Load the driver's component: precompiled file, else cache, else compile.
pub fn load_component(
    engine: &Engine,
    layout: &DriverLayout,
) -> Result<(Component, LoadedFrom), RuntimeError> {
    let wasm_path = layout.plugin_wasm();
    let (wasm, sha) = read_plugin(&wasm_path)?;
    let key = precompiled_key(&sha, engine);

    let key_path = layout.precompiled_key();
    if only_root_can_change(&key_path)
        && fs::read_to_string(&key_path).is_ok_and(|k| k == key)
        && let Some(c) = try_deserialize(engine, &layout.precompiled())
    {
        return Ok((c, LoadedFrom::Precompiled));
    }

    let cache_file = layout
        .compile_cache_dir()
        .join(format!("{sha}-{}.cwasm", engine_key(engine)));
    if let Some(c) = try_deserialize(engine, &cache_file) {
        return Ok((c, LoadedFrom::Cache));
    }

    let bytes = precompile(engine, &wasm, &wasm_path)?;
    // Best effort: a read-only state dir must not fail the call.
    {
        use std::os::unix::fs::DirBuilderExt;
        let dir = layout.compile_cache_dir();
        if fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .is_ok()
        {
            let _ = write_atomic(&cache_file, &bytes, 0o600);
        }
    }
    // SAFETY: `bytes` was produced by `precompile_component` of this very
    // engine a moment ago, in this process.
    let component =
        unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| RuntimeError::Invalid {
            path: wasm_path.clone(),
            reason: format!("{e:#}"),
        })?;
    Ok((component, LoadedFrom::Compiled))
}

/// Store data: what the guest's imports act on.
pub struct PluginHost {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub log: PluginLog,
    pub state: StateCapability,
    pub loops: LoopImages,
    pub devices: DeviceView,
}

impl WasiView for PluginHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct HasTable;
impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Link one import by name (`namespace:package/interface`, version
/// stripped). Only these interfaces exist for a plugin: the WASI baseline
/// Rust's std needs (stdio captured, empty env, no preopens, clocks,
/// random) and flexwasm's own. Sockets, HTTP and anything else are not
/// linked; a component importing them is refused.
fn link_import(linker: &mut Linker<PluginHost>, name: &str) -> Result<(), RuntimeError> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::sync as w;
    use wasmtime_wasi::random::WasiRandom;
    type T = PluginHost;

    let bare = name.split('@').next().unwrap_or(name);
    let l = &mut *linker;
    let r = match bare {
        "wasi:io/error" => w::io::error::add_to_linker::<T, HasTable>(l, |t| &mut t.table),
        "wasi:io/poll" => w::io::poll::add_to_linker::<T, HasTable>(l, |t| &mut t.table),
        "wasi:io/streams" => w::io::streams::add_to_linker::<T, HasTable>(l, |t| &mut t.table),
        "wasi:clocks/wall-clock" => {
            w::clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)
        }
        "wasi:clocks/monotonic-clock" => {
            w::clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)
        }
        "wasi:random/random" => {
            w::random::random::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())
        }
        "wasi:random/insecure" => {
            w::random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())
        }
        "wasi:random/insecure-seed" => {
            w::random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())
        }
        "wasi:cli/exit" => w::cli::exit::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/environment" => w::cli::environment::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/stdin" => w::cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/stdout" => w::cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/stderr" => w::cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/terminal-input" => w::cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/terminal-output" => {
            w::cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)
        }
        "wasi:cli/terminal-stdin" => w::cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli),
        "wasi:cli/terminal-stdout" => {
            w::cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)
        }
        "wasi:cli/terminal-stderr" => {
            w::cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)
        }
        // No directory is ever preopened: the guest sees an empty filesystem.
        "wasi:filesystem/preopens" => {
            w::filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)
        }
        "wasi:filesystem/types" => {
            w::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)
        }
        "flexwasm:driver/types" => Ok(()),
        "flexwasm:driver/log" => crate::capabilities::log::add_to_linker(l),
        "flexwasm:driver/state" => crate::capabilities::state::add_to_linker(l),
        "flexwasm:driver/loop" => crate::capabilities::loop_images::add_to_linker(l),
        "flexwasm:driver/devices" => crate::capabilities::devices::add_to_linker(l),
        _ => return Err(RuntimeError::UnknownImport(name.to_string())),
    };
    r.map_err(|e| RuntimeError::Instantiate(format!("linking {name}: {e:#}")))
}

/// Refuse a component importing anything flexwasm does not provide.
pub fn check_imports(engine: &Engine, imports: &[String]) -> Result<(), RuntimeError> {
    let mut linker = Linker::new(engine);
    let unknown: Vec<&str> = imports
        .iter()
        .filter(|name| link_import(&mut linker, name).is_err())
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::UnknownImport(unknown.join(", ")))
    }
}

/// The names of the interfaces a component imports.
pub fn component_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// One instantiated plugin, ready for one call.
pub struct Plugin {
    store: Store<PluginHost>,
    bindings: PluginWorld,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    engine: Engine,
    deadline: Duration,
    pub loaded_from: LoadedFrom,
    pub phases: Vec<(&'static str, f64)>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl Plugin {
    pub fn load(layout: &DriverLayout, limits: &Limits) -> Result<Self, RuntimeError> {
        let t = Instant::now();
        let engine = engine()?;
        let mut phases = vec![("engine", ms(t))];

        let t = Instant::now();
        let (component, loaded_from) = load_component(&engine, layout)?;
        phases.push(("load", ms(t)));

        let t = Instant::now();
        let mut linker = Linker::new(&engine);
        for name in component_imports(&engine, &component) {
            link_import(&mut linker, &name)?;
        }
        phases.push(("link", ms(t)));

        let t = Instant::now();
        let stdout = MemoryOutputPipe::new(limits.output_bytes);
        let stderr = MemoryOutputPipe::new(limits.output_bytes);
        // Defaults kept on purpose: stdin closed, no env, no args, no
        // preopened directory, sockets denied.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let host = PluginHost {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .tables(64)
                .memories(16)
                .build(),
            log: PluginLog::new(limits.output_bytes),
            state: StateCapability::new(layout.kv_dir()),
            loops: LoopImages::new(layout.loop_image_dir()),
            devices: DeviceView,
        };
        let mut store = Store::new(&engine, host);
        store.limiter(|h| &mut h.limits);
        // Instantiation runs guest start code: bound it too.
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        arm_deadline(&engine, limits.deadline);
        let bindings = PluginWorld::instantiate(&mut store, &component, &linker)
            .map_err(|e| RuntimeError::Instantiate(format!("{e:#}")))?;
        phases.push(("instantiate", ms(t)));
        Ok(Plugin {
            store,
            bindings,
            stdout,
            stderr,
            engine,
            deadline: limits.deadline,
            loaded_from,
            phases,
        })
    }

    /// Run one export. `f` gets the exports and the store.
    pub fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&DriverExports, &mut Store<PluginHost>) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        let t = Instant::now();
        let result = f(self.bindings.flexwasm_driver_driver(), &mut self.store);
        self.phases.push(("call", ms(t)));
        result.map_err(|e| {
            if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) {
                RuntimeError::Deadline {
                    call,
                    limit: self.deadline,
                }
            } else {
                RuntimeError::Trap {
                    call,
                    reason: trap_reason(&e),
                }
            }
        })
    }

    pub fn host(&mut self) -> &mut PluginHost {
        self.store.data_mut()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What the guest printed on its stdout and stderr (kept, bounded).
    pub fn captured_output(&self) -> (String, String) {
        (
            String::from_utf8_lossy(&self.stdout.contents()).into_owned(),
            String::from_utf8_lossy(&self.stderr.contents()).into_owned(),
        )
    }
}

fn trap_reason(e: &wasmtime::Error) -> String {
    // The first line of the chain says what happened; the wasm backtrace
    // that follows is for the log, not for `kubectl describe`.
    let full = format!("{e:#}");
    let first = full.lines().next().unwrap_or("unknown error").to_string();
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => first,
    }
}

/// Interrupt the guest once `deadline` has passed, by bumping the epoch.
fn arm_deadline(engine: &Engine, deadline: Duration) {
    let engine = engine.clone();
    let _ = std::thread::Builder::new()
        .name("flexwasm-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            engine.increment_epoch();
        });
}
