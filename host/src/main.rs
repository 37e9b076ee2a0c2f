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
/// budget (see `flexwasm::memory`); past the last resort, the supervisor
/// answers kubelet and exits.
#[global_allocator]
static ALLOCATOR: flexwasm::memory::CountingAlloc =
    flexwasm::memory::CountingAlloc::new(supervisor::out_of_memory);

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
    // A secret key spelled with JSON escapes (`\u0073ecret`) is not in the
    // raw bytes; the parsed options still name it (found by fuzz/ argv).
    if !quiet && !argv_secrets.is_empty() {
        supervisor::set_quiet(true);
        supervisor::hide_arguments();
    }
    let quiet = quiet || !argv_secrets.is_empty();
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

    // Supervisor threads, argv checks: before the call proper.
    let start_ms = started.elapsed().as_secs_f64() * 1000.0;
    let args: Result<Vec<String>, _> = raw_args.iter().map(|a| a.clone().into_string()).collect();
    let (mut status, mut report) = match args {
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
    report.phases.insert(0, ("start", start_ms));
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
    /// precompiled code) in the plugin dir, then rename it into place. An
    /// installed driver is replaced (as `upgrade` does); installing what is
    /// installed changes nothing.
    Install {
        #[command(flatten)]
        args: InstallArgs,
    },
    /// Replace an installed driver's plugin (and host binary) in one step,
    /// keeping its policy (re-pinned) unless --policy is given, and its state.
    /// Refused when the new plugin needs imports the kept policy does not grant.
    Upgrade {
        #[command(flatten)]
        args: InstallArgs,
    },
    /// Remove a driver from the plugin dir; refused while its volumes are
    /// mounted or its loop devices attached on this node (kubelet needs it
    /// to unmount and detach them), unless --force. Its state is kept.
    Uninstall {
        /// kubelet's --volume-plugin-dir (default: detected, as
        /// `flexwasm plugin-dir` does).
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// VENDOR/NAME.
        #[arg(long)]
        driver: String,
        /// Remove it even while in use.
        #[arg(long)]
        force: bool,
        /// Check and report; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The host's root as mounted in this container (e.g. /host):
        /// --plugin-dir, the state dir and the mount table are taken under it.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// A driver's call log, for people: one line per kubelet call, with
    /// what the plugin logged and its HTTP requests below it.
    Logs {
        /// VENDOR/NAME.
        driver: String,
        /// Keep printing calls as they happen (until SIGTERM/SIGINT, exit 0).
        #[arg(short, long)]
        follow: bool,
        /// Only calls since: 90s, 15m, 2h, 3d, or a Unix time.
        #[arg(long)]
        since: Option<String>,
        /// Only calls about this volume (PV or inline volume name).
        #[arg(long)]
        volume: Option<String>,
        /// The log dir (default: $FLEXWASM_LOG_DIR, else /var/log/flexwasm).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// The host's root as mounted in this container (e.g. /host).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Read a driver's state store (its files are named by hash).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Call a driver exactly as kubelet does (its executable, op and
    /// arguments) and show the answer kubelet would read. With --plugin,
    /// an uninstalled plugin is installed into a scratch plugin dir first
    /// ($FLEXWASM_CALL_DIR, else /tmp/flexwasm-call, which also keeps its
    /// state and log between calls).
    Call {
        /// kubelet's --volume-plugin-dir, for an installed driver.
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
        plugin_dir: PathBuf,
        /// An uninstalled plugin to call (with --driver, and --policy).
        #[arg(long, requires = "driver")]
        plugin: Option<PathBuf>,
        #[arg(long, requires = "plugin")]
        policy: Option<PathBuf>,
        /// VENDOR/NAME (else the first argument).
        #[arg(long)]
        driver: Option<String>,
        /// [VENDOR/NAME] OP ARGS…: what kubelet passes, e.g.
        /// `acme/loop attach "$(flexwasm options attach --volume pv1)" node-1`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Print the options JSON kubelet passes with OP for a volume, byte for
    /// byte (per-op keys: pod keys, fsGroup and secrets reach only mount).
    Options {
        /// getvolumename, attach, waitforattach, isattached, mountdevice,
        /// mount, expandvolume or expandfs.
        op: String,
        /// The PV name, or the pod's inline volume name.
        #[arg(long)]
        volume: String,
        /// The volume's flexVolume.fsType.
        #[arg(long, default_value = "")]
        fs_type: String,
        /// The volume is read-only.
        #[arg(long)]
        read_only: bool,
        /// One of the volume's flexVolume.options: KEY=VALUE (repeatable).
        #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// mount only: the pod, NAMESPACE/NAME/UID.
        #[arg(long, value_name = "NAMESPACE/NAME/UID")]
        pod: Option<String>,
        /// mount only: the pod's service account.
        #[arg(long, default_value = "default")]
        service_account: String,
        /// mount only: the pod's securityContext.fsGroup.
        #[arg(long)]
        fs_group: Option<i64>,
        /// mount only: an entry of the volume's secretRef, KEY=VALUE (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        secret: Vec<String>,
    },
    /// Is this node ready, and is each installed driver sound? Each finding
    /// says what to do. Exits 1 when any finding is an error.
    Doctor {
        /// kubelet's --volume-plugin-dir.
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
        plugin_dir: PathBuf,
        /// Print schema flexwasm.doctor/v1.
        #[arg(long)]
        json: bool,
    },
    /// For a DaemonSet: install (or upgrade) the driver, copy its config
    /// files into place (0600), then print its call log as calls happen;
    /// on SIGTERM uninstall it unless its volumes are still in use.
    Daemon {
        #[command(flatten)]
        install: InstallArgs,
        /// On SIGTERM, leave the driver installed.
        #[arg(long)]
        keep_installed: bool,
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

#[derive(Subcommand)]
enum StateCommand {
    /// List a driver's keys and their sizes.
    Ls {
        /// VENDOR/NAME.
        driver: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Print one value (UTF-8 as is, else hex; the driver's [config]
    /// secrets redacted).
    Get {
        /// VENDOR/NAME.
        driver: String,
        key: String,
    },
}

const DEFAULT_PLUGIN_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";

#[derive(clap::Args)]
struct InstallArgs {
    /// KEY=FILE: write FILE's bytes (0600, root only, dirs 0700) where the
    /// policy's `[config] KEY = { file = "…" }` names, under --root, before
    /// the driver goes into place. The value is never printed. Repeatable.
    #[arg(long, value_name = "KEY=FILE")]
    config_file: Vec<String>,
    /// kubelet's --volume-plugin-dir, e.g. /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
    /// Default: detected as `flexwasm plugin-dir` does.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// The node's `/` (e.g. /host in a DaemonSet): detection reads files
    /// and /proc under it, and the plugin dir (given or detected, as the
    /// node sees it), the state and log dirs are taken under it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Driver name as used in a PV's `flexVolume.driver`: VENDOR/NAME.
    #[arg(long)]
    driver: String,
    /// The plugin component (.wasm).
    #[arg(long)]
    plugin: PathBuf,
    /// The grant policy (TOML) to place beside the plugin. Without one an
    /// installed driver keeps its policy (re-pinned to the new plugin) and
    /// a new one gets only the baseline. `plugin_sha256 = "auto"` is
    /// filled in with the plugin's hash.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Host binary to install instead of this one.
    #[arg(long)]
    host_binary: Option<PathBuf>,
    /// Check and report everything; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Install even when the grant refuses imports the plugin needs (every
    /// call is then refused until the policy grants them).
    #[arg(long)]
    allow_ungranted: bool,
    /// Fail when the grant refuses an import the plugin needs (the default;
    /// accepted for scripts that say so).
    #[arg(long, conflicts_with = "allow_ungranted")]
    strict: bool,
}

fn admin_main() -> i32 {
    // An admin command piped into `head` ends quietly when the reader
    // goes away, as Unix tools do, instead of panicking on EPIPE. (Driver
    // calls never get here: their one answer goes to kubelet.)
    // SAFETY: setting a signal disposition to its default is
    // async-signal-safe and happens before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
        Command::Install { args } => install_command(args, flexwasm::install::Mode::Install),
        Command::Upgrade { args } => install_command(args, flexwasm::install::Mode::Upgrade),
        Command::Uninstall {
            plugin_dir,
            driver,
            force,
            dry_run,
            root,
        } => {
            let driver = DriverName::parse(&driver)?;
            let under_root = root != Path::new("/");
            let host_layout = DriverLayout::for_driver(driver.clone(), PathBuf::new());
            let done = flexwasm::install::uninstall(&flexwasm::install::UninstallRequest {
                plugin_dir: plugin_dir_of(plugin_dir, &root, true).1,
                driver: driver.clone(),
                force,
                dry_run,
                // The host's mount table: its init's, seen through hostPID.
                mountinfo: under_root.then(|| host_mountinfo(&root)).flatten(),
                state_dir: under_root.then(|| rooted(&root, &host_layout.state_dir)),
            })?;
            let would = if dry_run { "would remove" } else { "removed" };
            if !done.in_use.is_empty() {
                println!(
                    "WARNING: {driver} is still in use (--force):\n  {}",
                    done.in_use.join("\n  ")
                );
            }
            if done.was_installed {
                println!("{would} {driver} from {}", done.driver_dir.display());
            } else {
                println!("{driver} is not installed at {}", done.driver_dir.display());
            }
            println!(
                "  state kept at {} (volumes' data and bookkeeping; remove it yourself when no volume needs it)",
                done.state_dir.display()
            );
            Ok(0)
        }
        Command::Logs {
            driver,
            follow,
            since,
            volume,
            log_dir,
            root,
        } => {
            let driver = DriverName::parse(&driver)?;
            let layout = DriverLayout::for_driver(driver.clone(), PathBuf::new());
            let log = rooted(
                &root,
                &match log_dir {
                    Some(d) => d.join(format!("{}.log", driver.dir_name())),
                    None => layout.log_file,
                },
            );
            let filter = flexwasm::logview::Filter {
                since: since
                    .map(|s| flexwasm::logview::parse_since(&s, SystemTime::now()))
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                volume,
            };
            if !follow && flexwasm::logview::files(&log).is_empty() {
                anyhow::bail!("no call log at {} (no call yet?)", log.display());
            }
            if follow {
                flexwasm::admin::catch_stop_signals();
            }
            let stdout = std::io::stdout();
            flexwasm::logview::show(&log, &filter, follow, &mut stdout.lock(), &|| {
                flexwasm::admin::stop_requested()
            })?;
            Ok(0)
        }
        Command::State { command } => {
            let (driver, key, prefix) = match command {
                StateCommand::Ls { driver, prefix } => (driver, None, prefix),
                StateCommand::Get { driver, key } => (driver, Some(key), String::new()),
            };
            let driver = DriverName::parse(&driver)?;
            let layout = DriverLayout::for_driver(
                driver.clone(),
                PathBuf::from(DEFAULT_PLUGIN_DIR).join(driver.dir_name()),
            );
            match key {
                None => {
                    let entries = flexwasm::admin::state_list(&layout, &prefix)?;
                    if entries.is_empty() {
                        eprintln!("{driver}: no keys in {}", layout.kv_dir().display());
                    }
                    for e in entries {
                        println!("{}\t{} bytes", e.key, e.bytes);
                    }
                    Ok(0)
                }
                Some(key) => match flexwasm::admin::state_get(&layout, &key)? {
                    Some(text) => {
                        println!("{text}");
                        Ok(0)
                    }
                    None => {
                        eprintln!("{driver}: no key {key:?} in {}", layout.kv_dir().display());
                        Ok(1)
                    }
                },
            }
        }
        Command::Doctor { plugin_dir, json } => {
            let exe = std::env::current_exe()?;
            let report = flexwasm::doctor::run(&plugin_dir, &exe);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", flexwasm::doctor::render_text(&report));
            }
            Ok(if report.ok { 0 } else { 1 })
        }
        Command::Daemon {
            install,
            keep_installed,
        } => daemon_command(install, keep_installed),
        Command::Call {
            plugin_dir,
            plugin,
            policy,
            driver,
            rest,
        } => call_command(plugin_dir, plugin, policy, driver, rest),
        Command::Options {
            op,
            volume,
            fs_type,
            read_only,
            options,
            pod,
            service_account,
            fs_group,
            secret,
        } => {
            use flexwasm::kubelet_options::{Op, PodMount, VolumeSpec, build};
            let op: Op = op.parse().map_err(anyhow::Error::msg)?;
            let pairs = |items: &[String], what: &str| -> anyhow::Result<Vec<(String, String)>> {
                items
                    .iter()
                    .map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| anyhow::anyhow!("{what} {kv:?}: use KEY=VALUE"))
                    })
                    .collect()
            };
            let options = pairs(&options, "--option")?;
            let secret = pairs(&secret, "--secret")?;
            let mut spec = VolumeSpec::new(&volume, &fs_type, &[]);
            spec.read_only = read_only;
            spec.options = options
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let pod_parts: Option<Vec<&str>> = pod.as_deref().map(|p| p.splitn(3, '/').collect());
            let pod_mount = match (op, &pod_parts) {
                (_, Some(parts)) if parts.len() != 3 => {
                    anyhow::bail!("--pod: use NAMESPACE/NAME/UID")
                }
                (_, Some(parts)) => Some(PodMount {
                    namespace: parts[0],
                    name: parts[1],
                    uid: parts[2],
                    service_account: &service_account,
                    fs_group,
                    secret: secret
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                }),
                (Op::Mount, None) => Some(PodMount {
                    fs_group,
                    service_account: &service_account,
                    secret: secret
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    ..PodMount::new("00000000-0000-0000-0000-000000000000")
                }),
                (_, None) if fs_group.is_some() || !secret.is_empty() => anyhow::bail!(
                    "--fs-group and --secret reach only mount: kubelet sends them to no other op"
                ),
                (_, None) => None,
            };
            println!(
                "{}",
                build(op, &spec, pod_mount.as_ref()).map_err(anyhow::Error::msg)?
            );
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

fn install_command(a: InstallArgs, mode: flexwasm::install::Mode) -> anyhow::Result<i32> {
    use flexwasm::install::{Outcome, PolicySource};
    let driver = DriverName::parse(&a.driver)?;
    // Config first: the driver never runs without the files its policy names.
    write_config_files(&a)?;
    let req = flexwasm::install::InstallRequest {
        plugin_dir: plugin_dir_of(a.plugin_dir, &a.root, true).1,
        driver: driver.clone(),
        plugin: a.plugin,
        policy: a.policy,
        host_binary: a.host_binary,
        mode,
        dry_run: a.dry_run,
        allow_ungranted: a.allow_ungranted && !a.strict,
    };
    let installed = flexwasm::install::install(&req)?;
    let what = match (&installed.outcome, installed.dry_run) {
        (Outcome::Unchanged, _) => "unchanged (already installed as asked):".to_string(),
        (Outcome::Installed, false) => "installed".to_string(),
        (Outcome::Installed, true) => "would install".to_string(),
        (Outcome::Upgraded { previous_sha256 }, dry) => format!(
            "{} (was plugin sha256 {})",
            if dry { "would upgrade" } else { "upgraded" },
            previous_sha256.as_deref().unwrap_or("unknown")
        ),
    };
    println!("{what} {driver} at {}", installed.executable.display());
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
    match (&installed.policy, &installed.policy_source) {
        (Some(p), PolicySource::Kept) => {
            println!("  policy: {} (kept, pinned to the new plugin)", p.display())
        }
        (Some(p), _) => println!("  policy: {}", p.display()),
        (None, _) => {
            println!("  policy: none (baseline only: no state, loop, devices, formats or mounts)")
        }
    }
    Ok(0)
}

fn call_command(
    plugin_dir: PathBuf,
    plugin: Option<PathBuf>,
    policy: Option<PathBuf>,
    driver: Option<String>,
    mut rest: Vec<String>,
) -> anyhow::Result<i32> {
    let driver = match driver {
        Some(d) => d,
        None if rest.len() >= 2 => rest.remove(0),
        None => anyhow::bail!("usage: flexwasm call VENDOR/NAME OP [ARGS…]"),
    };
    let driver = DriverName::parse(&driver)?;
    let op = rest.remove(0);
    let mut env = Vec::new();
    let plugin_dir = match &plugin {
        Some(wasm) => {
            // An uninstalled plugin: installed (or found unchanged) in a
            // scratch plugin dir whose state and log persist between calls.
            let scratch = flexwasm::admin::scratch_dir();
            let dir = scratch.join("plugins");
            flexwasm::install::install(&flexwasm::install::InstallRequest {
                plugin_dir: dir.clone(),
                driver: driver.clone(),
                plugin: wasm.clone(),
                policy: policy.clone(),
                host_binary: None,
                mode: flexwasm::install::Mode::Install,
                dry_run: false,
                allow_ungranted: false,
            })?;
            env = vec![
                (flexwasm::layout::STATE_DIR_ENV, scratch.join("state")),
                (flexwasm::layout::LOG_DIR_ENV, scratch.join("log")),
            ];
            eprintln!(
                "(scratch install: {}; state {}, log {})",
                dir.display(),
                scratch.join("state").display(),
                scratch.join("log").display()
            );
            dir
        }
        None => plugin_dir,
    };
    let out = flexwasm::admin::call_driver(
        &plugin_dir.join(driver.dir_name()),
        &driver,
        &op,
        &rest,
        &env,
    )?;
    println!(
        "$ {} {}",
        out.executable.display(),
        out.args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let code = out
        .exit_code
        .map_or("killed by a signal".to_string(), |c| c.to_string());
    println!("exit {code}, {:.1} ms", out.duration_ms);
    match out.answer() {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            let status = v.get("status").and_then(|s| s.as_str()).unwrap_or("");
            Ok(if status == "Failure" { 1 } else { 0 })
        }
        Err(e) => {
            println!("{e}\noutput as kubelet read it:\n{}", out.output);
            Ok(1)
        }
    }
}

/// `path` (absolute, as the host sees it) inside `root`.
fn rooted(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn daemon_command(mut a: InstallArgs, keep_installed: bool) -> anyhow::Result<i32> {
    flexwasm::admin::catch_stop_signals();
    let root = a.root.clone();
    let driver = DriverName::parse(&a.driver)?;
    let (host_plugin_dir, plugin_dir) = plugin_dir_of(a.plugin_dir.take(), &root, true);
    // Decided once: install below uses the same dir.
    a.plugin_dir = Some(host_plugin_dir.clone());
    let host_layout =
        DriverLayout::for_driver(driver.clone(), host_plugin_dir.join(driver.dir_name()));
    let mut layout = host_layout.clone();
    layout.driver_dir = plugin_dir.join(driver.dir_name());
    layout.state_dir = rooted(&root, &host_layout.state_dir);
    layout.log_file = rooted(&root, &host_layout.log_file);

    // The installed driver finds its state and log at its defaults on the
    // host; only this process looks at them under `root`.
    let written = config_targets(&a)?;
    let code = install_command(a, flexwasm::install::Mode::Install)?;
    if code != 0 {
        return Ok(code);
    }
    println!(
        "following {} (SIGTERM ends this)",
        host_layout.log_file.display()
    );
    let stdout = std::io::stdout();
    flexwasm::logview::show(
        &layout.log_file,
        &flexwasm::logview::Filter {
            since: flexwasm::logview::parse_since("0s", SystemTime::now()).ok(),
            volume: None,
        },
        true,
        &mut stdout.lock(),
        &flexwasm::admin::stop_requested,
    )?;
    if keep_installed {
        println!("stopping; {driver} stays installed (--keep-installed)");
        return Ok(0);
    }
    let mountinfo = [
        rooted(&root, Path::new("/proc/1/mountinfo")),
        PathBuf::from("/proc/1/mountinfo"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    match flexwasm::install::uninstall(&flexwasm::install::UninstallRequest {
        plugin_dir: layout
            .driver_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf(),
        driver: driver.clone(),
        force: false,
        dry_run: false,
        mountinfo,
        state_dir: Some(layout.state_dir.clone()),
    }) {
        Ok(_) => {
            // Its config files go with it (they may hold credentials).
            for f in &written {
                let _ = std::fs::remove_file(f);
            }
            println!("stopping; uninstalled {driver}");
        }
        // In use: kubelet still needs it to unmount and detach.
        Err(e) => println!("stopping; {driver} stays installed: {e:#}"),
    }
    Ok(0)
}

/// The host's mount table from a container with the host's root at `root`
/// and the host's PID namespace: its init's.
fn host_mountinfo(root: &Path) -> Option<PathBuf> {
    [
        PathBuf::from("/proc/1/mountinfo"),
        rooted(root, Path::new("/proc/1/mountinfo")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The plugin dir as the node sees it, and where to reach it from here
/// (under `root`): `given`, else detected as `flexwasm plugin-dir` does.
/// Detection runs either way, so a kubelet or controller-manager using
/// another dir is warned about.
fn plugin_dir_of(given: Option<PathBuf>, root: &Path, announce: bool) -> (PathBuf, PathBuf) {
    let was_given = given.is_some();
    let detection = Detector {
        plugin_dir_flag: given,
        ..Detector::new(root).with_process_env()
    }
    .detect();
    for w in &detection.warnings {
        write_stderr(&format!("WARNING: {w}\n"));
    }
    if announce && !was_given {
        println!(
            "plugin dir: {} (rule {}, {}; `flexwasm plugin-dir --explain` says why)",
            detection.plugin_dir.display(),
            detection.rule.number(),
            detection.rule.as_str()
        );
    }
    (detection.plugin_dir.clone(), detection.path_under(root))
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

/// Each `--config-file KEY=FILE`: its key, the file to read, and the host
/// path the policy names for it (`[config] KEY = { file = "/etc/flexwasm/…/KEY", secret = true }`).
/// The policy is parsed once, here, for install and daemon alike.
fn config_files(a: &InstallArgs) -> anyhow::Result<Vec<(String, String, PathBuf)>> {
    if a.config_file.is_empty() {
        return Ok(Vec::new());
    }
    let policy = a
        .policy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--config-file needs --policy (it names each file)"))?;
    let text = std::fs::read_to_string(policy)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", policy.display()))?;
    let grant = flexwasm::policy::Grant::parse(
        &flexwasm::policy::fill_auto_pin(&text, &"0".repeat(64)),
        policy,
        Path::new(flexwasm::layout::DEFAULT_STATE_ROOT),
    )?;
    let config = grant.config.unwrap_or_default();
    a.config_file
        .iter()
        .map(|item| {
            let (key, src) = item
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--config-file {item:?}: use KEY=FILE"))?;
            let Some(flexwasm::policy::ConfigValue {
                source: flexwasm::policy::ConfigSource::File(path),
                ..
            }) = config.get(key)
            else {
                anyhow::bail!(
                    "--config-file {key}: the policy has no [config] {key} = {{ file = \"…\" }} \
                     naming where it goes"
                );
            };
            Ok((key.to_string(), src.to_string(), path.clone()))
        })
        .collect()
}

/// Write the `--config-file` values where the policy names them (under
/// `--root`); the files written (or, dry, to be written).
fn write_config_files(a: &InstallArgs) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut written = Vec::new();
    for (key, src, path) in config_files(a)? {
        let bytes = std::fs::read(&src).map_err(|e| anyhow::anyhow!("reading {src}: {e}"))?;
        let target = rooted(&a.root, &path);
        if !a.dry_run {
            if let Some(dir) = target.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            flexwasm::precompiled::write_atomic(&target, &bytes, 0o600)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
        written.push(target);
        // The value never reaches the pod log: only where it went.
        println!(
            "config {key}: {} bytes {} {} (0600)",
            bytes.len(),
            if a.dry_run {
                "would be written to"
            } else {
                "written to"
            },
            path.display()
        );
    }
    Ok(written)
}

/// Where `--config-file` values go, without writing them.
fn config_targets(a: &InstallArgs) -> anyhow::Result<Vec<PathBuf>> {
    Ok(config_files(a)?
        .into_iter()
        .map(|(_, _, path)| rooted(&a.root, &path))
        .collect())
}
