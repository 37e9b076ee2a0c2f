//! The `flexwasm` binary.
//!
//! Run as `<plugin-dir>/<vendor>~<driver>/<driver> <op> …` it is a
//! FlexVolume driver: it answers kubelet with exactly one JSON object on
//! stdout and nothing else on stdout or stderr. Run as `flexwasm …` it is
//! the operator's tool (`install`, `inspect`, `plugin-dir`).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use flexwasm::calllog::{self, CallRecord};
use flexwasm::contract::{DriverStatus, Status};
use flexwasm::driver_call;
use flexwasm::layout::{DriverLayout, DriverName};
use flexwasm::options::RawOptions;
use flexwasm::plugin_dir::Detector;
use flexwasm::secrets::SecretSet;
use flexwasm::supervisor::{self, Supervisor};

/// Every heap byte is counted, so a call can be held to its host memory
/// budget (see `flexwasm::memory`).
#[global_allocator]
static ALLOCATOR: flexwasm::memory::CountingAlloc = flexwasm::memory::CountingAlloc;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let exe = args.first().cloned().unwrap_or_default();
    match DriverLayout::from_exe_path(Path::new(&exe)) {
        Some(layout) => std::process::exit(driver_main(layout, &args[1..])),
        // Called like a driver but from a path we cannot read an identity
        // from: kubelet still gets one JSON object.
        None if args
            .get(1)
            .and_then(|a| a.to_str())
            .is_some_and(is_flexvolume_op) =>
        {
            let status = DriverStatus::failure(format!(
                "flexwasm: cannot tell which driver this is from {}: the executable must be <plugin-dir>/<vendor>~<driver>/<driver>",
                Path::new(&exe).display()
            ));
            println!("{}", status.to_json());
            std::process::exit(status.exit_code());
        }
        None => std::process::exit(admin_main()),
    }
}

fn is_flexvolume_op(op: &str) -> bool {
    matches!(
        op,
        "init"
            | "getvolumename"
            | "attach"
            | "waitforattach"
            | "detach"
            | "isattached"
            | "mountdevice"
            | "unmountdevice"
            | "mount"
            | "unmount"
            | "expandvolume"
            | "expandfs"
    )
}

fn driver_main(layout: DriverLayout, raw_args: &[OsString]) -> i32 {
    let started = Instant::now();
    // The op only (bounded): the prefix of every message.
    let op: String = raw_args
        .first()
        .map(|a| a.to_string_lossy().chars().take(64).collect())
        .unwrap_or_default();
    let prefix = format!("{} {op}", layout.name).trim_end().to_string();
    // First, before any work on argv: the one answer, the clock, the heap.
    let supervisor = Supervisor::start(prefix.clone());
    // Decided from argv as kubelet sent it, before anything can fail: every
    // Failure of a call that may carry secrets exits 0 (see
    // `may_carry_secrets`), and its argv is hidden from other processes.
    let quiet = may_carry_secrets(raw_args);
    supervisor::set_quiet(quiet);
    if quiet {
        supervisor::hide_arguments();
    }
    let lossy: Vec<String> = raw_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv_secrets = secrets_of(&lossy);
    {
        let (layout, args, secrets) = (layout.clone(), lossy.clone(), argv_secrets.clone());
        supervisor.on_abort(Box::new(move |status: &DriverStatus, code: i32| {
            log_call(
                &layout,
                &args,
                status,
                code,
                driver_call::CallReport::default(),
                &secrets,
                started,
            )
        }));
    }

    let args: Result<Vec<String>, _> = raw_args.iter().map(|a| a.clone().into_string()).collect();
    let (mut status, report) = match args {
        Err(_) => (
            DriverStatus::failure(format!(
                "flexwasm driver {}: an argument is not valid UTF-8",
                layout.name
            )),
            driver_call::CallReport::default(),
        ),
        Ok(ref args) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            driver_call::run(&layout, args, &supervisor)
        }))
        .unwrap_or_else(|_| {
            (
                DriverStatus::failure(format!(
                    "flexwasm driver {}: internal error (a bug in flexwasm)",
                    layout.name
                )),
                driver_call::CallReport::default(),
            )
        }),
    };
    status.quiet_failure = quiet;
    // Whatever path produced the answer, it leaves through here: bounded,
    // cleaned, and never carrying a secret the call was given or configured.
    let mut secrets = argv_secrets;
    secrets.extend(&report.secrets);
    let status = status.sanitized(&secrets, &prefix);
    let code = status.exit_code();
    if supervisor::answer(&status) {
        log_call(&layout, &lossy, &status, code, report, &secrets, started);
    }
    code
}

/// Whether argv may carry a Kubernetes secret, in which case a `Failure`
/// exits 0: kubelet ignores the exit code of a Failure answer but logs the
/// whole argv when it is not 0 (contract page §3). kubelet passes secrets
/// only to `mount`, as `kubernetes.io/secret/<key>` options (Go's JSON
/// encoder writes the key as is); any argv mentioning `secret`, in any
/// case, is treated the same way — decided on the raw bytes, before any
/// parsing that could fail.
fn may_carry_secrets(raw_args: &[OsString]) -> bool {
    let mentions_secret = raw_args.iter().any(|a| {
        a.as_encoded_bytes()
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"secret"))
    });
    raw_args.first().is_some_and(|a| a == "mount") || mentions_secret
}

/// Every secret value in any argument that parses as options.
fn secrets_of(args: &[String]) -> SecretSet {
    let mut secrets = SecretSet::new();
    for options in args
        .iter()
        .filter(|a| a.trim_start().starts_with('{'))
        .filter_map(|a| RawOptions::parse(a).ok())
    {
        options.add_secrets_to(&mut secrets);
    }
    secrets
}

fn log_call(
    layout: &DriverLayout,
    args: &[String],
    status: &DriverStatus,
    exit_code: i32,
    report: driver_call::CallReport,
    secrets: &SecretSet,
    started: Instant,
) {
    // Options are logged with their secrets replaced; an argument that looks
    // like options but does not parse is not logged at all (its secrets
    // cannot be found in it).
    let logged_args: Vec<String> = args
        .iter()
        .map(|a| {
            if !a.trim_start().starts_with('{') {
                return a.clone();
            }
            match RawOptions::parse(a) {
                Ok(o) => o.redacted_json(),
                Err(_) => format!("<options that do not parse, {} bytes, not logged>", a.len()),
            }
        })
        .collect();
    let mut phases = report.phases;
    if let Some(from) = report.loaded_from {
        phases.insert(0, (from.as_str(), 0.0));
    }
    let driver = layout.name.to_string();
    // An unknown op is logged, but not at any length.
    let op: String = args
        .first()
        .map(|a| a.chars().take(64).collect())
        .unwrap_or_default();
    let record = CallRecord {
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
        driver: &driver,
        pid: std::process::id(),
        op: &op,
        args: logged_args,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        status: match status.status {
            Status::Success => "Success",
            Status::Failure => "Failure",
            Status::NotSupported => "Not supported",
        },
        message: status.message.clone(),
        exit_code,
        http: report.http,
        plugin_log: report.plugin_log,
        plugin_stdout: report.plugin_stdout,
        plugin_stderr: report.plugin_stderr,
        phases,
    };
    calllog::append(&layout.log_file, record, secrets);
}

#[derive(Parser)]
#[command(
    name = "flexwasm",
    version,
    about = "Kubernetes FlexVolume driver host for sandboxed WebAssembly storage plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a plugin can do: its imports mapped to capabilities, the
    /// grant beside it, and what it asks for that is not granted. Exits 2
    /// when it asks for more than its grant gives.
    Inspect {
        /// A driver directory (`<plugin-dir>/<vendor>~<driver>`) or a plugin .wasm.
        target: PathBuf,
        /// The policy to check against (default: the driver dir's policy.toml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print the stable JSON report (schema flexwasm.inspect/v1).
        #[arg(long)]
        json: bool,
    },
    /// Install a driver: stage `.VENDOR~NAME/` (this binary, the plugin, its
    /// precompiled code) in the plugin dir, then rename it into place.
    Install {
        /// kubelet's --volume-plugin-dir, e.g. /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
        /// Default: detected as `flexwasm plugin-dir` does.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// The node's `/` (e.g. /host in a DaemonSet): detection reads files
        /// and /proc under it, and the plugin dir (given or detected, as the
        /// node sees it) is written under it.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Driver name as used in a PV's `flexVolume.driver`: VENDOR/NAME.
        #[arg(long)]
        driver: String,
        /// The plugin component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// The grant policy (TOML) to place beside the plugin. Without one
        /// the plugin gets only the baseline. `plugin_sha256 = "auto"` is
        /// filled in with the plugin's hash.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Host binary to install instead of this one.
        #[arg(long)]
        host_binary: Option<PathBuf>,
    },
    /// Start a plugin crate for driver VENDOR/NAME: Cargo.toml, a small
    /// node-only driver with native tests, policy.toml, README.md.
    New {
        /// Driver name as used in a PV's `flexVolume.driver`: VENDOR/NAME.
        driver: String,
        /// Where to create the crate (default: ./NAME); must be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The flexwasm checkout (or its sdk/) to depend on. Default: the
        /// checkout around the new crate or the current dir, else the one
        /// this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print the FlexVolume plugin dir of this node: from
    /// $FLEXVOLUME_DIR_PATH, the running kubelet (flags, k3s/rke2
    /// kubelet-arg, config file), kube-controller-manager, platform
    /// defaults, or kubelet's default. Warnings go to stderr.
    PluginDir {
        /// Treat DIR as `/` for every file and for /proc.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Say which rule decided and what every rule found.
        #[arg(long)]
        explain: bool,
        /// Print the stable JSON report (schema flexwasm.plugin-dir/v1).
        #[arg(long)]
        json: bool,
    },
}

fn admin_main() -> i32 {
    let cli = Cli::parse();
    match run_admin(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flexwasm: {e:#}");
            1
        }
    }
}

/// Exit codes of `inspect`: 0 everything requested is granted, 2 the plugin
/// asks for more than its grant gives (or the grant pins another plugin),
/// 1 the inspection itself failed.
const INSPECT_DENIED: i32 = 2;

fn run_admin(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Inspect {
            target,
            policy,
            json,
        } => {
            let report = flexwasm::inspect::inspect(&target, policy.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", flexwasm::inspect::render_text(&report));
            }
            Ok(if report.ok { 0 } else { INSPECT_DENIED })
        }
        Command::PluginDir {
            root,
            explain,
            json,
        } => {
            let detection = Detector::new(&root).with_process_env().detect();
            if json {
                let text = serde_json::to_string_pretty(&detection.to_json())?;
                write_stdout(format!("{text}\n").as_bytes())?;
            } else {
                let mut out = detection.plugin_dir.as_os_str().as_bytes().to_vec();
                out.push(b'\n');
                if explain {
                    for line in &detection.explain {
                        out.extend_from_slice(format!("  {line}\n").as_bytes());
                    }
                }
                write_stdout(&out)?;
                for w in &detection.warnings {
                    write_stderr(&format!("WARNING: {w}\n"));
                }
            }
            Ok(0)
        }
        Command::Install {
            plugin_dir,
            root,
            driver,
            plugin,
            policy,
            host_binary,
        } => {
            let driver = DriverName::parse(&driver)?;
            let given = plugin_dir.is_some();
            let detection = Detector {
                plugin_dir_flag: plugin_dir,
                ..Detector::new(&root).with_process_env()
            }
            .detect();
            for w in &detection.warnings {
                write_stderr(&format!("WARNING: {w}\n"));
            }
            let plugin_dir = detection.path_under(&root);
            if !given {
                println!(
                    "plugin dir: {} (rule {}, {}; `flexwasm plugin-dir --explain` says why)",
                    detection.plugin_dir.display(),
                    detection.rule.number(),
                    detection.rule.as_str()
                );
            }
            let installed = flexwasm::install::install(&flexwasm::install::InstallRequest {
                plugin_dir,
                driver: driver.clone(),
                plugin,
                policy,
                host_binary,
            })?;
            println!("installed {driver} at {}", installed.executable.display());
            println!(
                "  plugin.wasm  {} bytes, sha256 {}",
                installed.wasm_bytes, installed.wasm_sha256
            );
            println!(
                "  .plugin.cwasm {} bytes (compiled in {:.0} ms)",
                installed.cwasm_bytes, installed.compile_ms
            );
            println!("  imports: {}", installed.imports.join(", "));
            if !installed.ungranted.is_empty() {
                println!(
                    "  WARNING: the grant does not allow these imports, so every call will be refused: {}",
                    installed.ungranted.join(", ")
                );
            }
            match &installed.policy {
                Some(p) => println!("  policy: {}", p.display()),
                None => println!(
                    "  policy: none (baseline only: no state, loop, devices, formats or mounts)"
                ),
            }
            Ok(0)
        }
        Command::New { driver, dir, sdk } => {
            let driver = DriverName::parse(&driver)?;
            let made = flexwasm::scaffold::scaffold(&driver, dir.as_deref(), sdk.as_deref())?;
            print!("{}", made.summary());
            Ok(0)
        }
    }
}

/// Write to stdout; a reader that went away (`flexwasm plugin-dir | head
/// -c1`) is not an error: the answer was not wanted any more.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Write to stderr, ignoring failure (there is nowhere left to report it).
fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
