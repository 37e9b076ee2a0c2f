//! The one answer of a driver call, and what makes sure it is given in time.
//!
//! kubelet reads stdout and stderr merged and expects exactly one JSON
//! object, so [`Supervisor::start`] points fds 1 and 2 at /dev/null and
//! keeps a private handle on the real stdout; [`answer`] writes to it once.
//! Whoever answers first wins: the call itself, the watchdog, or a signal.
//!
//! - **Signals.** kubelet sends SIGTERM to a `waitforattach` that runs past
//!   10 minutes and SIGKILL 10 s later; a driver still alive then can crash
//!   kubelet (kubernetes/utils#291). On SIGTERM or SIGINT the host kills its
//!   child processes, answers `Failure` ("interrupted") and exits at once.
//!   The signals are blocked in every thread and taken by one thread with
//!   `sigwait`, so no code runs in signal context.
//! - **Watchdog.** The guest's deadline is enforced by epoch interruption,
//!   which cannot interrupt a host function in progress. The watchdog bounds
//!   the whole process: when it fires, the call is answered `Failure` and the
//!   process exits.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::contract::DriverStatus;

static ANSWERED: AtomicBool = AtomicBool::new(false);
/// The exit code of the answer given (for an abort that comes after it).
static ANSWER_CODE: AtomicI32 = AtomicI32::new(1);
/// The call carries secrets: a Failure must exit 0 so kubelet does not
/// log its argv (contract page §3), on every path.
static QUIET: AtomicBool = AtomicBool::new(false);
static STDOUT: Mutex<Option<std::fs::File>> = Mutex::new(None);
/// Called once with the answer an abort (signal, watchdog) gave, so it can
/// be logged.
static ON_ABORT: OnceLock<Box<dyn Fn(&DriverStatus, i32) + Send + Sync>> = OnceLock::new();
/// Names the driver and op in an abort's message.
static PREFIX: OnceLock<String> = OnceLock::new();

pub struct Supervisor;

impl Supervisor {
    /// Take over stdio and signals. Call first thing, before any thread is
    /// started, so every later thread inherits the blocked signal mask.
    pub fn start(
        prefix: String,
        on_abort: Box<dyn Fn(&DriverStatus, i32) + Send + Sync>,
    ) -> Supervisor {
        // CLOEXEC: kubelet's pipe must not leak into mkfs, blkid, … (a child
        // that outlived us would keep kubelet waiting).
        let saved = nix::fcntl::fcntl(std::io::stdout(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .ok()
            .map(|fd| {
                // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor;
                // nothing else owns it.
                std::fs::File::from(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                })
            });
        // Without a private handle, fd 1 must stay the real stdout.
        if saved.is_some()
            && let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
        }
        let _ = PREFIX.set(prefix);
        if let Ok(mut slot) = STDOUT.lock() {
            *slot = saved;
        }
        let _ = ON_ABORT.set(on_abort);
        std::panic::set_hook(Box::new(|_| {}));

        let mut signals = SigSet::empty();
        signals.add(Signal::SIGTERM);
        signals.add(Signal::SIGINT);
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).is_ok() {
            let _ = std::thread::Builder::new()
                .name("flexwasm-signals".into())
                .spawn(move || {
                    if let Ok(sig) = signals.wait() {
                        abort(&format!("interrupted by {sig}; the operation was stopped"));
                    }
                });
        }
        Supervisor
    }

    /// Bound the whole process: after `limit`, answer `Failure` and exit.
    pub fn arm_watchdog(&self, limit: Duration, what: String) {
        let _ = std::thread::Builder::new()
            .name("flexwasm-watchdog".into())
            .spawn(move || {
                std::thread::sleep(limit);
                abort(&format!("{what} did not finish within {limit:?}; stopped"));
            });
    }
}

/// Mark the call as carrying secrets (see [`QUIET`]).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::SeqCst);
}

/// Answer (if nobody has yet), log, kill children, exit with the code of
/// whatever answer was given.
fn abort(message: &str) -> ! {
    crate::node::exec::cancel_all();
    // The tool runner polls the cancel flag every few tens of milliseconds
    // and kills the child's whole process group; give it that time so no
    // mkfs outlives us.
    std::thread::sleep(Duration::from_millis(150));
    let prefix = PREFIX.get().map(String::as_str).unwrap_or("flexwasm");
    let mut status = DriverStatus::failure(format!("{prefix}: {message}"));
    status.quiet_failure = QUIET.load(Ordering::SeqCst);
    if answer(&status)
        && let Some(log) = ON_ABORT.get()
    {
        log(&status, status.exit_code());
    }
    std::process::exit(ANSWER_CODE.load(Ordering::SeqCst));
}

/// Write the one answer; false if an answer was already given.
pub fn answer(status: &DriverStatus) -> bool {
    if ANSWERED.swap(true, Ordering::SeqCst) {
        return false;
    }
    ANSWER_CODE.store(status.exit_code(), Ordering::SeqCst);
    let mut line = status.to_json();
    line.push('\n');
    let mut slot = match STDOUT.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    match slot.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
            let _ = f.flush();
        }
        // No private handle (dup failed): fd 1 is still the real stdout.
        None => {
            let _ = std::io::stdout().write_all(line.as_bytes());
        }
    }
    true
}
