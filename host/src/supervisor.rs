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
//!   The signals are blocked in every thread and taken by the watchdog
//!   thread with `sigtimedwait`, so no code runs in signal context.
//! - **Watchdog.** Every call has one deadline (the grant's
//!   `deadline_seconds`): the guest is interrupted at it, its waits in the
//!   host end at it, node tools are killed at it. The watchdog is the
//!   backstop for anything that still runs: at the deadline plus
//!   [`ANSWER_GRACE`] the call is answered `Failure`, child processes are
//!   killed, and the process exits. So no call answers later than its
//!   deadline plus [`ANSWER_GRACE`].
//! - **Out of memory.** When the host's own heap goes past its last-resort
//!   limit ([`crate::memory`]), [`out_of_memory`] writes an answer prepared
//!   at start (no allocation) and exits.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::contract::DriverStatus;

static ANSWERED: AtomicBool = AtomicBool::new(false);
/// Set by [`out_of_memory`] when an answer was already out.
static ANSWERED_BY_CALL: AtomicBool = AtomicBool::new(false);
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
/// The real stdout, as a raw descriptor, for [`out_of_memory`].
static RAW_STDOUT: AtomicI32 = AtomicI32::new(1);
/// The answer [`out_of_memory`] writes, rendered at start.
static OOM_ANSWER: OnceLock<Vec<u8>> = OnceLock::new();

/// How long past its deadline a call may take to answer: time to stop the
/// guest or a tool, write the answer and the log line.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// What the watchdog waits for: `deadline + ANSWER_GRACE`, and what to say.
struct Watch {
    deadline: Instant,
    limit: Duration,
    what: String,
}
static WATCH: Mutex<Option<Watch>> = Mutex::new(None);
/// How often the watchdog looks at the clock (and at a moved deadline).
const WATCH_TICK: Duration = Duration::from_millis(50);
/// Before the grant is read, a call is bounded by the longest deadline any
/// grant may set.
const FIRST_DEADLINE: Duration = Duration::from_secs(crate::policy::MAX_DEADLINE_SECS);
/// Before a plugin runs, the host's heap is bounded by this (argv is at
/// most a few MiB; everything else is small).
const FIRST_HEAP_LIMIT: usize = 256 << 20;

pub struct Supervisor;

impl Supervisor {
    /// Take over stdio, signals, the clock and the heap. Call first thing,
    /// before any thread is started (so every later thread inherits the
    /// blocked signal mask) and before any work on argv: from here on the
    /// process answers kubelet exactly once, within its deadline, whatever
    /// happens.
    pub fn start(prefix: String) -> Supervisor {
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
        if let Some(f) = &saved {
            use std::os::fd::AsRawFd;
            RAW_STDOUT.store(f.as_raw_fd(), Ordering::SeqCst);
        }
        let mut oom = DriverStatus::failure(format!(
            "{prefix}: the plugin made the host use more memory than its budget allows \
             ([limits] host_memory_mib); stopped"
        ))
        .to_json()
        .into_bytes();
        oom.push(b'\n');
        let _ = OOM_ANSWER.set(oom);
        let _ = PREFIX.set(prefix);
        if let Ok(mut slot) = STDOUT.lock() {
            *slot = saved;
        }
        std::panic::set_hook(Box::new(|_| {}));
        crate::memory::set_limit(FIRST_HEAP_LIMIT);

        let mut signals = SigSet::empty();
        signals.add(Signal::SIGTERM);
        signals.add(Signal::SIGINT);
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).is_ok();
        let supervisor = Supervisor;
        supervisor.arm_watchdog(
            Instant::now() + FIRST_DEADLINE,
            FIRST_DEADLINE,
            "the call".into(),
        );
        // One thread for signals, the watchdog and the guest's deadline:
        // every thread costs a clone and a stack at every call.
        if std::thread::Builder::new()
            .name("flexwasm-watchdog".into())
            .spawn(move || watchdog(blocked.then_some(signals)))
            .is_ok()
        {
            WATCHDOG_RUNS.store(true, Ordering::SeqCst);
        }
        supervisor
    }

    /// Log an abort's answer with this (once; later calls are ignored).
    pub fn on_abort(&self, log: Box<dyn Fn(&DriverStatus, i32) + Send + Sync>) {
        let _ = ON_ABORT.set(log);
    }

    /// Bound the whole process: [`ANSWER_GRACE`] after `deadline`, answer
    /// `Failure` and exit. Moves the one watchdog (earlier or later).
    /// `limit` is the deadline as configured, for the message.
    pub fn arm_watchdog(&self, deadline: Instant, limit: Duration, what: String) {
        let mut w = WATCH.lock().unwrap_or_else(|p| p.into_inner());
        *w = Some(Watch {
            deadline,
            limit,
            what,
        });
    }
}

/// A deadline hook for the watchdog thread (see [`at_deadline`]).
type DeadlineHook = (Instant, Box<dyn FnOnce() + Send>);
static AT_DEADLINE: Mutex<Option<DeadlineHook>> = Mutex::new(None);
static WATCHDOG_RUNS: AtomicBool = AtomicBool::new(false);

/// Run `f` on the watchdog thread once `at` has passed (the runtime
/// interrupts the guest this way), replacing a hook not yet run. `Err(f)`
/// when no watchdog runs in this process (no [`Supervisor::start`]): the
/// caller must time it itself.
pub fn at_deadline(
    at: Instant,
    f: Box<dyn FnOnce() + Send>,
) -> Result<(), Box<dyn FnOnce() + Send>> {
    if !WATCHDOG_RUNS.load(Ordering::SeqCst) {
        return Err(f);
    }
    *AT_DEADLINE.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, f));
    Ok(())
}

/// The watchdog thread: takes SIGTERM/SIGINT (blocked in every thread) with
/// `sigtimedwait`, runs the deadline hook when due, and aborts the call at
/// its deadline plus [`ANSWER_GRACE`].
fn watchdog(signals: Option<SigSet>) {
    loop {
        let due = {
            let w = WATCH.lock().unwrap_or_else(|p| p.into_inner());
            w.as_ref().map(|w| {
                (
                    w.deadline + ANSWER_GRACE,
                    format!(
                        "{} did not finish within its {:?} deadline; stopped",
                        w.what, w.limit
                    ),
                )
            })
        };
        let now = Instant::now();
        if let Some((at, message)) = &due
            && now >= *at
        {
            abort(message);
        }
        let hook_at = {
            let mut hook = AT_DEADLINE.lock().unwrap_or_else(|p| p.into_inner());
            match hook.as_ref().map(|(at, _)| *at) {
                Some(at) if now >= at => {
                    if let Some((_, f)) = hook.take() {
                        drop(hook);
                        f();
                    }
                    None
                }
                other => other,
            }
        };
        let mut wait = WATCH_TICK;
        for at in [due.map(|(at, _)| at), hook_at].into_iter().flatten() {
            wait = wait.min(at.saturating_duration_since(now));
        }
        match &signals {
            Some(set) => {
                if let Some(sig) = wait_for_signal(set, wait) {
                    abort(&format!("interrupted by {sig}; the operation was stopped"));
                }
            }
            None => std::thread::sleep(wait),
        }
    }
}

/// One of `set` (blocked in this thread) if it arrives within `timeout`.
fn wait_for_signal(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: `set` is a valid, initialised sigset_t owned by the caller;
    // a null siginfo pointer is allowed (the info is not wanted); `ts` is
    // a valid timespec that outlives the call.
    let n = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if n > 0 {
        Signal::try_from(n).ok()
    } else {
        None
    }
}

/// Hide argv past the op from other processes: `/proc/PID/cmdline` is
/// world-readable for the whole call, and kubelet puts a volume's secrets
/// in `mount`'s options. The arguments must already have been copied
/// (`std::env::args_os` is not to be called again afterwards: it reads the
/// same bytes).
pub fn hide_arguments() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which may hold spaces and parens; the
    // first of them is field 3 (proc(5)): arg_start is field 48, arg_end 49.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        fields.get(48 - 3).and_then(|f| f.parse::<usize>().ok()),
        fields.get(49 - 3).and_then(|f| f.parse::<usize>().ok()),
    ) else {
        return;
    };
    if start == 0 || end <= start || end - start > 1 << 24 {
        return;
    }
    // SAFETY: [start, end) is this process's own argument area, as the
    // kernel reports it: the argv strings on the initial stack, mapped
    // readable and writable for the process's whole life. `main` copied
    // argv before calling this, and nothing reads these bytes again.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    // Keep argv[0] and the op (for `ps`): skip two NUL-terminated strings.
    let mut kept = 0;
    let mut nuls = 0;
    while kept < area.len() && nuls < 2 {
        if area[kept] == 0 {
            nuls += 1;
        }
        kept += 1;
    }
    area[kept..].fill(0);
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

/// The host's heap went past its last-resort limit: answer with the
/// prepared message and exit, allocating nothing (this runs inside the
/// global allocator).
pub fn out_of_memory() -> ! {
    crate::node::exec::cancel_all();
    if ANSWERED.swap(true, Ordering::SeqCst) {
        ANSWERED_BY_CALL.store(true, Ordering::SeqCst);
    } else if let Some(line) = OOM_ANSWER.get() {
        // SAFETY: `line` is a live, immutable buffer of `line.len()` bytes;
        // write(2) only reads it. The descriptor is our saved stdout (or 1).
        unsafe {
            libc::write(
                RAW_STDOUT.load(Ordering::SeqCst),
                line.as_ptr().cast(),
                line.len(),
            )
        };
    }
    let code = if ANSWERED_BY_CALL.load(Ordering::SeqCst) {
        // The call had answered already: exit as that answer says.
        ANSWER_CODE.load(Ordering::SeqCst)
    } else if QUIET.load(Ordering::SeqCst) {
        0
    } else {
        1
    };
    // SAFETY: _exit(2) ends the process without running destructors or
    // atexit handlers, which could allocate; that is the point here.
    unsafe { libc::_exit(code) }
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
