//! The `flexwasm` binary.
//!
//! Run as `<plugin-dir>/<vendor>~<driver>/<driver> <op> …` it is a
//! FlexVolume driver: it answers kubelet with exactly one JSON object on
//! stdout and nothing else on stdout or stderr. Run as `flexwasm …` it is
//! the operator's tool (`install`).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use flexwasm::calllog::{self, CallRecord};
use flexwasm::contract::{DriverStatus, Status};
use flexwasm::driver_call;
use flexwasm::layout::{DriverLayout, DriverName};
use flexwasm::options::RawOptions;
use flexwasm::runtime::Limits;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let exe = args.first().cloned().unwrap_or_default();
    match DriverLayout::from_exe_path(Path::new(&exe)) {
        Some(layout) => std::process::exit(driver_main(layout, &args[1..])),
        None => std::process::exit(admin_main()),
    }
}

/// Point fds 1 and 2 at /dev/null and return a private handle on the real
/// stdout. From here on no library, panic message or stray print can reach
/// kubelet; only [`answer`] writes, once, to the handle.
fn silence_stdio() -> Option<std::fs::File> {
    let saved: OwnedFd = nix::unistd::dup(std::io::stdout()).ok()?;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    Some(std::fs::File::from(saved))
}

fn answer(out: Option<std::fs::File>, status: &DriverStatus) {
    let mut line = status.to_json();
    line.push('\n');
    match out {
        Some(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stdout().write_all(line.as_bytes());
        }
    }
}

fn driver_main(layout: DriverLayout, raw_args: &[OsString]) -> i32 {
    let started = Instant::now();
    let out = silence_stdio();
    std::panic::set_hook(Box::new(|_| {}));

    let args: Result<Vec<String>, _> = raw_args.iter().map(|a| a.clone().into_string()).collect();
    let (status, report) = match args {
        Err(_) => (
            DriverStatus::failure(format!(
                "flexwasm driver {}: an argument is not valid UTF-8",
                layout.name
            )),
            driver_call::CallReport::default(),
        ),
        Ok(ref args) => {
            let limits = Limits::default();
            std::panic::catch_unwind(|| driver_call::run(&layout, args, &limits)).unwrap_or_else(
                |_| {
                    (
                        DriverStatus::failure(format!(
                            "flexwasm driver {}: internal error (a bug in flexwasm; see the call log)",
                            layout.name
                        )),
                        driver_call::CallReport::default(),
                    )
                },
            )
        }
    };
    let args = args.unwrap_or_default();
    let code = status.exit_code();
    answer(out, &status);
    log_call(&layout, &args, &status, code, report, started);
    code
}

fn log_call(
    layout: &DriverLayout,
    args: &[String],
    status: &DriverStatus,
    exit_code: i32,
    report: driver_call::CallReport,
    started: Instant,
) {
    // Secrets may sit in any argument that parses as options; collect them
    // all and scrub the whole record.
    let mut secrets = Vec::new();
    let logged_args: Vec<String> = args
        .iter()
        .map(|a| match RawOptions::parse(a) {
            Ok(o) if a.trim_start().starts_with('{') => {
                secrets.extend(o.secret_values());
                o.redacted_json()
            }
            _ => a.clone(),
        })
        .collect();
    let mut phases = report.phases;
    if let Some(from) = report.loaded_from {
        phases.insert(0, (from.as_str(), 0.0));
    }
    let driver = layout.name.to_string();
    let record = CallRecord {
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
        driver: &driver,
        pid: std::process::id(),
        op: args.first().map(String::as_str).unwrap_or(""),
        args: logged_args,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        status: match status.status {
            Status::Success => "Success",
            Status::Failure => "Failure",
            Status::NotSupported => "Not supported",
        },
        message: status.message.as_deref(),
        exit_code,
        plugin_log: report.plugin_log,
        plugin_stdout: report.plugin_stdout,
        plugin_stderr: report.plugin_stderr,
        phases,
    };
    calllog::append(&layout.log_file, &record, &secrets);
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
    /// Install a driver: stage `.VENDOR~NAME/` (this binary, the plugin, its
    /// precompiled code) in the plugin dir, then rename it into place.
    Install {
        /// kubelet's --volume-plugin-dir, e.g. /usr/libexec/kubernetes/kubelet-plugins/volume/exec
        #[arg(long)]
        plugin_dir: PathBuf,
        /// Driver name as used in a PV's `flexVolume.driver`: VENDOR/NAME.
        #[arg(long)]
        driver: String,
        /// The plugin component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// Host binary to install instead of this one.
        #[arg(long)]
        host_binary: Option<PathBuf>,
    },
}

fn admin_main() -> i32 {
    let cli = Cli::parse();
    match run_admin(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("flexwasm: {e:#}");
            1
        }
    }
}

fn run_admin(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Install {
            plugin_dir,
            driver,
            plugin,
            host_binary,
        } => {
            let driver = DriverName::parse(&driver)?;
            let installed = flexwasm::install::install(&flexwasm::install::InstallRequest {
                plugin_dir,
                driver: driver.clone(),
                plugin,
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
            Ok(())
        }
    }
}
