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
//! When precompiled code is trusted is [`crate::precompiled`]'s business;
//! what a plugin may import is its [`Grant`]'s.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::{
    self,
    config::ConfigView,
    devices::DevicesView,
    http::{Egress, EgressHooks},
    log::PluginLog,
    loop_images::LoopImages,
    output::CappedOutput,
    state::StateCapability,
    wasi_io::BoundedIo,
};
use crate::layout::DriverLayout;
use crate::policy::HttpGrant;
use crate::policy::{Grant, Limits, describe_import};
use crate::precompiled::{self, LoadError, LoadedFrom};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use crate::bindings::{DriverExports, PluginWorld, wit};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// plugin.wasm or its precompiled code could not be had or trusted.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("plugin imports {0}, which flexwasm does not provide")]
    UnknownImport(String),
    #[error("plugin imports {0}, which its grant does not allow{hint}", hint = grant_hint(.1))]
    Ungranted(String, Option<PathBuf>),
    #[error(
        "plugin.wasm has SHA-256 {actual}, which does not match the grant's plugin_sha256 {granted}; refusing to run (reinstall, or update {policy})"
    )]
    PinMismatch {
        actual: String,
        granted: String,
        policy: String,
    },
    #[error("plugin exceeded its memory limit of {limit_mib} MiB in {call} and was stopped")]
    Memory {
        call: &'static str,
        limit_mib: usize,
    },
    #[error(
        "plugin made the host hold more than its host memory budget of {limit_mib} MiB in {call} \
         (e.g. HTTP headers or other resources it kept) and was stopped"
    )]
    HostMemory {
        call: &'static str,
        limit_mib: usize,
    },
    #[error("cannot instantiate plugin: {0}")]
    Instantiate(String),
    #[error("plugin {call} exceeded its {limit:?} deadline and was stopped")]
    Deadline { call: &'static str, limit: Duration },
    #[error("plugin crashed in {call}: {reason}")]
    Trap { call: &'static str, reason: String },
    #[error("engine setup failed: {0}")]
    Engine(String),
}

/// The engine configuration. Install and every call must agree on it, or
/// precompiled code is rejected (and recompiled).
pub fn engine() -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // One linear memory per module is all a plugin needs; fewer features,
    // less to get wrong.
    config.wasm_multi_memory(false);
    config.max_wasm_stack(512 * 1024);
    // `.eh_frame` for compiled code only helps the system unwinder walk
    // through wasm frames (wasmtime's traps and backtraces do not use it);
    // registering it is work at every load.
    config.native_unwind_info(false);
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

fn grant_hint(policy: &Option<PathBuf>) -> String {
    match policy {
        Some(p) => format!(" (see {})", p.display()),
        None => " (the driver was installed without a policy: only the baseline is granted)".into(),
    }
}

/// Caps the guest's memory — the sum over all its linear memories and
/// tables, not each one — and remembers that it hit the cap, so the
/// resulting trap can be explained as what it is.
pub struct MemoryCap {
    max_bytes: usize,
    used: usize,
    hit: bool,
}

impl MemoryCap {
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.hit = true;
            return false;
        }
        self.used = total;
        true
    }
}

/// What one table element is charged (a funcref is a pointer or two).
const TABLE_ELEMENT_BYTES: usize = 16;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// Store data: what the guest's imports act on.
pub struct PluginHost {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    pub log: PluginLog,
    pub state: StateCapability,
    pub loops: LoopImages,
    pub config: ConfigView,
    http_ctx: WasiHttpCtx,
    pub http: EgressHooks,
    /// When the call's deadline passes; host calls that wait bound
    /// themselves by it.
    pub deadline: Instant,
}

/// Most resources (HTTP fields, requests, bodies, streams, pollables…) a
/// plugin may hold at once. A REST call uses about ten.
const MAX_RESOURCES: usize = 4096;
/// Most bytes one HTTP header map may hold (its in-memory size). REST
/// APIs send a few KiB; a JWT or cookie is at most ~8 KiB.
const MAX_HTTP_FIELDS_BYTES: usize = 64 << 10;

impl PluginHost {
    /// What `wasi:io` acts on: the table, bounded by the call's deadline.
    fn bounded_io(&mut self) -> BoundedIo<'_> {
        BoundedIo::new(&mut self.table, self.deadline)
    }

    /// What `flexwasm:driver/devices` acts on.
    fn devices(&mut self) -> DevicesView<'_> {
        DevicesView {
            loops: &mut self.loops,
            deadline: self.deadline,
        }
    }
}

impl WasiHttpView for PluginHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
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
/// Rust's std needs (stdio captured, empty env, clocks, random) and
/// flexwasm's own. Filesystem, sockets, HTTP and anything else are never
/// linked; a component importing them is refused.
fn link_import(linker: &mut Linker<PluginHost>, name: &str) -> Result<(), RuntimeError> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::sync as w;
    use wasmtime_wasi::random::WasiRandom;
    type T = PluginHost;

    let bare = name.split('@').next().unwrap_or(name);
    let l = &mut *linker;
    let r = match bare {
        "wasi:io/error" => w::io::error::add_to_linker::<T, HasTable>(l, |t| &mut t.table),
        // Bounded by the call's deadline: a guest waiting here runs no wasm,
        // so epoch interruption alone would not stop it.
        "wasi:io/poll" => capabilities::wasi_io::add_poll_to_linker(l, T::bounded_io),
        "wasi:io/streams" => capabilities::wasi_io::add_streams_to_linker(l, T::bounded_io),
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
        "flexwasm:driver/types" => Ok(()),
        "flexwasm:driver/log" => capabilities::log::add_to_linker(l, |t| &mut t.log),
        "flexwasm:driver/state" => capabilities::state::add_to_linker(l, |t| &mut t.state),
        "flexwasm:driver/loop" => capabilities::loop_images::add_to_linker(l, |t| &mut t.loops),
        "flexwasm:driver/devices" => capabilities::devices::add_to_linker(l, T::devices),
        "flexwasm:driver/config" => capabilities::config::add_to_linker(l, |t| &mut t.config),
        // One call links both wasi:http interfaces; `link_imports` calls it once.
        "wasi:http/outgoing-handler" | "wasi:http/types" => capabilities::http::add_to_linker(l),
        _ => return Err(RuntimeError::UnknownImport(name.to_string())),
    };
    r.map_err(|e| RuntimeError::Instantiate(format!("linking {name}: {e:#}")))
}

/// Refuse a component that imports anything its grant does not allow, or
/// anything flexwasm does not provide at all; name each such import and
/// what it would allow.
pub fn check_imports(imports: &[String], grant: &Grant) -> Result<(), RuntimeError> {
    let ungranted = grant.ungranted(imports);
    if ungranted.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = ungranted
        .iter()
        .map(|i| format!("{i} ({})", describe_import(i)))
        .collect();
    Err(RuntimeError::Ungranted(
        named.join(", "),
        grant.source.clone(),
    ))
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
    stdout: CappedOutput,
    stderr: CappedOutput,
    engine: Engine,
    deadline: Duration,
    memory_mib: usize,
    host_memory_mib: usize,
    pub loaded_from: LoadedFrom,
    pub phases: Vec<(&'static str, f64)>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl Plugin {
    /// Identify, check against the grant, load, link and instantiate the
    /// driver's plugin. `deadline` ends the call: guest code, and every wait
    /// of the guest in the host.
    pub fn load(
        layout: &DriverLayout,
        grant: &Grant,
        limits: &Limits,
        deadline: Instant,
        secrets: &crate::secrets::SecretSet,
    ) -> Result<Self, RuntimeError> {
        let t = Instant::now();
        let id = precompiled::identify(layout)?;
        if let Some(granted) = &grant.plugin_sha256
            && granted != &id.sha256
        {
            return Err(RuntimeError::PinMismatch {
                actual: id.sha256.clone(),
                granted: granted.clone(),
                policy: grant
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            });
        }
        let mut phases = vec![("identify", ms(t))];

        let t = Instant::now();
        let engine = engine()?;
        phases.push(("engine", ms(t)));

        let t = Instant::now();
        let (component, loaded_from) = precompiled::component(&engine, layout, &id)?;
        phases.push(("load", ms(t)));

        let t = Instant::now();
        let imports = component_imports(&engine, &component);
        check_imports(&imports, grant)?;
        let mut linker = Linker::new(&engine);
        let mut http_linked = false;
        for name in &imports {
            if name.starts_with("wasi:http/") {
                if std::mem::replace(&mut http_linked, true) {
                    continue;
                }
            }
            link_import(&mut linker, name)?;
        }
        phases.push(("link", ms(t)));

        let t = Instant::now();
        let stdout = CappedOutput::new(limits.output_bytes);
        let stderr = CappedOutput::new(limits.output_bytes);
        // Defaults kept on purpose: stdin closed, no env, no args, no
        // preopened directory, sockets denied.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        let host = PluginHost {
            wasi,
            table,
            memory: MemoryCap {
                max_bytes: limits.memory_bytes,
                used: 0,
                hit: false,
            },
            log: PluginLog::new(limits.output_bytes),
            state: StateCapability::new(layout.kv_dir(), grant.state_quota.unwrap_or(0)),
            loops: LoopImages::with_limits(
                grant.loop_image_dir.clone().unwrap_or_default(),
                grant.loop_limits,
            )
            .with_secrets(secrets.clone()),
            config: ConfigView::new(grant.config.clone().unwrap_or_default()),
            http_ctx,
            http: EgressHooks(Egress::new(
                grant.http.clone().unwrap_or_else(HttpGrant::deny_all),
                deadline,
            )),
            deadline,
        };
        let mut store = Store::new(&engine, host);
        store.limiter(|h| &mut h.memory);
        // From here on the plugin can make the host allocate.
        crate::memory::set_budget(&engine, limits.host_memory_bytes);
        // Instantiation runs guest start code: bound it too.
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        arm_deadline(&engine, deadline);
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
            memory_mib: limits.memory_bytes >> 20,
            host_memory_mib: limits.host_memory_bytes >> 20,
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
        // The plugin's turn is over; what it made the host hold is checked
        // just below, and the host's own work goes on without its budget.
        let over = crate::memory::over_budget();
        crate::memory::clear_budget();
        if over {
            // Even if the guest returned before the interruption hit it.
            return Err(RuntimeError::HostMemory {
                call,
                limit_mib: self.host_memory_mib,
            });
        }
        result.map_err(|e| {
            // Checked first: crossing the host budget interrupts the guest
            // the way the deadline does.
            if crate::memory::over_budget() {
                RuntimeError::HostMemory {
                    call,
                    limit_mib: self.host_memory_mib,
                }
            } else if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) || e
                .downcast_ref::<capabilities::wasi_io::DeadlineReached>()
                .is_some()
            {
                RuntimeError::Deadline {
                    call,
                    limit: self.deadline,
                }
            } else if self.store.data().memory.hit {
                RuntimeError::Memory {
                    call,
                    limit_mib: self.memory_mib,
                }
            } else {
                let stderr = String::from_utf8_lossy(&self.stderr.contents()).into_owned();
                RuntimeError::Trap {
                    call,
                    reason: trap_reason(&e, &stderr),
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

/// Why a call trapped, for a person: the trap, and a Rust panic's message
/// when the guest printed one on stderr just before.
fn trap_reason(e: &wasmtime::Error, guest_stderr: &str) -> String {
    // The first line of the chain says what happened; the wasm backtrace
    // that follows is for the log, not for `kubectl describe`.
    // A host function's error (a refused resource, a full table) is the
    // root cause; wasmtime's own first line only says "error while
    // executing".
    let trap = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => {
            let root = e.root_cause().to_string();
            root.lines().next().unwrap_or("unknown error").to_string()
        }
    };
    let panic = guest_stderr
        .rfind("panicked at ")
        .map(|i| &guest_stderr[i..])
        .map(|p| {
            let p: String = p.split_whitespace().collect::<Vec<_>>().join(" ");
            p.chars().take(400).collect::<String>()
        });
    match panic {
        Some(p) => format!("{p} ({trap})"),
        None => trap,
    }
}

/// Interrupt the guest once `deadline` has passed, by bumping the epoch:
/// on the supervisor's watchdog thread when it runs (a driver call), else
/// on a thread of its own.
fn arm_deadline(engine: &Engine, deadline: Instant) {
    let engine = engine.clone();
    let bump: Box<dyn FnOnce() + Send> = Box::new(move || engine.increment_epoch());
    if let Err(bump) = crate::supervisor::at_deadline(deadline, bump) {
        let _ = std::thread::Builder::new()
            .name("flexwasm-deadline".into())
            .spawn(move || {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                bump();
            });
    }
}
