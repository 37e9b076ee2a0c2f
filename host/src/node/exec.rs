//! Running node tools (blkid, mkfs.*, resize2fs, …) safely.
//!
//! Defaults, all deliberate:
//!
//! - **No shell.** The program is exec'd directly with an argv.
//! - **Fixed search path.** A bare tool name is looked up in
//!   [`SEARCH_PATH`] only; kubelet's own `PATH` may be minimal or hostile.
//!   Names containing `/` are rejected.
//! - **Clean environment.** The child gets `PATH=`[`SEARCH_PATH`] and
//!   `LC_ALL=C` (so its messages are in English and stable) and nothing else.
//! - **Captured stdio.** stdin is `/dev/null`; stdout and stderr are pipes we
//!   drain. Nothing can reach kubelet, which reads our own stdout+stderr.
//! - **Deadline.** Each run has its own cap (the `timeout` argument), and
//!   once the caller has set the call's deadline ([`set_call_deadline`]) no
//!   run outlives that either: a tool gets `min(cap, time left)`, and none
//!   is started when no time is left. The child runs in its own process
//!   group; when its time is up, or [`cancel_all`] is called (e.g. from a
//!   SIGTERM handler), the whole group gets SIGKILL and the run returns an
//!   error that says which limit ended it.
//! - **Killing does not hang us.** A killed tool that is stuck in the kernel
//!   (mke2fs flushing gigabytes to a slow device took 80 s to die after
//!   SIGKILL) is waited for at most [`KILL_GRACE`], then left to exit on its
//!   own, so the error still reaches kubelet in time.
//! - **Bounded memory.** At most [`CAPTURE_LIMIT`] bytes of each stream are
//!   kept: the *head* of stdout (tools print their parseable answer first)
//!   and the head and tail of stderr (tools print why they failed either
//!   first, before a usage text, or last).
//! - **Detached grandchildren don't hang us.** If the child exits but
//!   something it started keeps the pipes open, we stop reading after
//!   [`PIPE_GRACE`] instead of waiting for EOF.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{NodeError, Result};

/// Where tools are looked up, in order.
pub const SEARCH_PATH: &str = "/usr/sbin:/sbin:/usr/bin:/bin";

/// Bytes kept per stream (see the module docs for head/tail).
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// How long we keep reading after the child exited while its pipes are
/// still held open by a process it left behind.
pub const PIPE_GRACE: Duration = Duration::from_millis(200);

/// How long a killed tool may take to exit before we return without it.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How often the wait loop wakes up to check the deadline and the cancel flag.
const TICK: Duration = Duration::from_millis(50);

/// How much of a failing tool's output goes into an error message.
const DETAIL_LINES: usize = 8;
/// Of those, how many from the start when the output is longer.
const DETAIL_HEAD_LINES: usize = 2;
const DETAIL_CHARS: usize = 1000;

/// Bytes of the start of stderr kept however much follows (part of
/// [`CAPTURE_LIMIT`]).
const STDERR_HEAD: usize = 16 * 1024;

static CANCEL_ALL: AtomicBool = AtomicBool::new(false);

/// The call's deadline, if the caller set one; see [`set_call_deadline`].
static CALL_DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);

/// What a finished child produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `Some(code)` if the child exited, `None` if a signal killed it.
    pub status_code: Option<i32>,
    /// The signal that killed the child, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status_code == Some(0)
    }

    /// "exit code 2" / "killed by signal 9".
    pub fn status_text(&self) -> String {
        match (self.status_code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown exit status".to_string(),
        }
    }

    /// Why the tool failed, from stderr (or stdout when stderr is empty),
    /// in one bounded line; see [`failure_detail`].
    pub fn detail(&self) -> String {
        let source = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        failure_detail(source)
    }
}

/// Bound every later [`run`] of this process by `deadline`, the moment the
/// current call must have answered by. Set it once per call, before the
/// first tool runs; a later call replaces it.
pub fn set_call_deadline(deadline: Instant) {
    *call_deadline_slot() = Some(deadline);
}

/// Forget the call's deadline: tools get their own caps only again.
pub fn clear_call_deadline() {
    *call_deadline_slot() = None;
}

/// The deadline [`set_call_deadline`] set, if any.
pub fn call_deadline() -> Option<Instant> {
    *call_deadline_slot()
}

fn call_deadline_slot() -> MutexGuard<'static, Option<Instant>> {
    // The slot is a plain value: a panic elsewhere cannot leave it torn.
    CALL_DEADLINE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ask every running and future [`run`] to kill its child and return
/// [`NodeError::Cancelled`]. Async-signal-safe (one atomic store): call it
/// from a SIGTERM handler so kubelet's kill timer never finds us alive.
pub fn cancel_all() {
    CANCEL_ALL.store(true, Ordering::SeqCst);
}

/// Whether [`cancel_all`] has been called.
pub fn is_cancelled() -> bool {
    CANCEL_ALL.load(Ordering::SeqCst)
}

/// Run `program` (a bare name, looked up in [`SEARCH_PATH`]) with `args`,
/// capture its output, and kill it after `timeout` or at the call's
/// deadline, whichever comes first. A non-zero exit is *not* an error here;
/// see [`run_checked`].
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    run_cancellable(program, args, timeout, &CANCEL_ALL)
}

/// [`run`], but a non-zero exit (or death by signal) is a
/// [`NodeError::CommandFailed`] carrying the tail of the tool's stderr.
pub fn run_checked(program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let out = run(program, args, timeout)?;
    if out.success() {
        Ok(out)
    } else {
        Err(NodeError::CommandFailed {
            command: command_line(program, args),
            status: out.status_text(),
            detail: out.detail(),
        })
    }
}

/// [`run`] with a caller-owned cancel flag instead of the process-wide one.
pub fn run_cancellable(
    program: &str,
    args: &[&str],
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<Output> {
    run_until(program, args, timeout, cancel, call_deadline())
}

/// When a run must end, and which limit that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    until: Instant,
    /// The tool's own cap.
    cap: Duration,
    /// Whether `until` is the call's deadline (earlier than the cap).
    by_call: bool,
}

/// The limit for a run starting `now`, or `None` when the call's deadline
/// has already passed.
fn limit_for(now: Instant, cap: Duration, call_deadline: Option<Instant>) -> Option<Limit> {
    // A cap too large to add is "no cap of its own".
    let own = now.checked_add(cap);
    match (call_deadline, own) {
        (Some(d), _) if d <= now => None,
        (Some(d), Some(o)) if d >= o => Some(Limit {
            until: o,
            cap,
            by_call: false,
        }),
        (Some(d), _) => Some(Limit {
            until: d,
            cap,
            by_call: true,
        }),
        (None, Some(o)) => Some(Limit {
            until: o,
            cap,
            by_call: false,
        }),
        // Only reachable with an absurd cap and no deadline: a century.
        (None, None) => Some(Limit {
            until: now + Duration::from_secs(100 * 365 * 24 * 3600),
            cap,
            by_call: false,
        }),
    }
}

/// [`run_cancellable`] with an explicit call deadline (tests use this so
/// they need not touch the process-wide one).
pub(crate) fn run_until(
    program: &str,
    args: &[&str],
    timeout: Duration,
    cancel: &AtomicBool,
    call_deadline: Option<Instant>,
) -> Result<Output> {
    let command = command_line(program, args);
    if cancel.load(Ordering::SeqCst) {
        return Err(NodeError::Cancelled { command });
    }
    let path = find_program(program)?;
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .env_clear()
        .env("PATH", SEARCH_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout kills helpers the tool started too.
        .process_group(0);
    let start = Instant::now();
    let Some(limit) = limit_for(start, timeout, call_deadline) else {
        return Err(NodeError::DeadlineBeforeStart { command });
    };
    let mut child = cmd.spawn().map_err(|source| NodeError::Spawn {
        program: program.to_string(),
        source,
    })?;
    // From here on the child must not outlive an error return.
    let mut guard = ChildGuard {
        child: &mut child,
        armed: true,
    };
    let out = supervise(guard.child, start, limit, cancel, &command)?; // guard kills + reaps
    guard.armed = false; // supervise reaped the child
    Ok(out)
}

/// Kills the child's process group and reaps the child if dropped while
/// armed (every error path of `supervise`).
struct ChildGuard<'a> {
    child: &'a mut Child,
    armed: bool,
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.child);
            reap_within(self.child, KILL_GRACE);
        }
    }
}

/// Reap a killed child, waiting at most `grace`. A process blocked in the
/// kernel dies only when its I/O is done; rather than hang the call, leave
/// it unreaped (it keeps its pid as a zombie, so nothing else is ever
/// signalled by mistake; init reaps it after we exit).
fn reap_within(child: &mut Child, grace: Duration) {
    let until = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= until => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn kill_group(child: &mut Child) {
    // The group id is the child's pid (process_group(0)). The child has not
    // been reaped yet (we only ever look at it with WNOWAIT before this), so
    // the id still names our group. ESRCH (group already empty) is fine.
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
}

/// Whether the child has exited, *without reaping it*: as long as it is an
/// unreaped zombie its pid, which is also its process-group id, cannot be
/// recycled, so killing the group afterwards cannot hit a stranger.
fn has_exited(pid: u32, command: &str) -> Result<bool> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value and is
    // what waitid(2) expects for the WNOHANG "nothing happened" case.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; `pid` is our own child.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc < 0 {
        let errno = nix::errno::Errno::last();
        if errno == nix::errno::Errno::EINTR {
            return Ok(false);
        }
        return Err(NodeError::sys(format!("waiting for `{command}`"), errno));
    }
    // SAFETY: waitid filled `info` (or left it zeroed under WNOHANG); reading
    // si_pid of a SIGCHLD-style siginfo is what the accessor is for.
    Ok(unsafe { info.si_pid() } != 0)
}

fn supervise(
    child: &mut Child,
    start: Instant,
    limit: Limit,
    cancel: &AtomicBool,
    command: &str,
) -> Result<Output> {
    let deadline = limit.until;
    let mut stdout = Stream::new(child.stdout.take().map(Box::new), Keep::Head)?;
    let mut stderr = Stream::new(child.stderr.take().map(Box::new), Keep::HeadTail)?;
    // When the child exited (seen without reaping it, see `has_exited`).
    let mut exited: Option<Instant> = None;
    let pid = child.id();

    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(NodeError::Cancelled {
                command: command.to_string(),
            });
        }
        let now = Instant::now();
        if exited.is_none() && now >= deadline {
            return Err(if limit.by_call {
                NodeError::CallDeadline {
                    command: command.to_string(),
                    after: now.saturating_duration_since(start),
                    cap: limit.cap,
                }
            } else {
                NodeError::Timeout {
                    command: command.to_string(),
                    timeout: limit.cap,
                }
            });
        }
        if let Some(at) = exited {
            let pipes_done = stdout.is_closed() && stderr.is_closed();
            if pipes_done || now >= at + PIPE_GRACE || now >= deadline {
                break;
            }
        }

        let wait = deadline.saturating_duration_since(now).min(TICK);
        poll_streams(&mut [&mut stdout, &mut stderr], wait)?;
        stdout.drain()?;
        stderr.drain()?;

        if exited.is_none() && has_exited(pid, command)? {
            exited = Some(Instant::now());
        }
    }

    // Don't leave anything from the tool's process group behind. The child
    // is still an unreaped zombie here, so its pid (= the group id) cannot
    // have been reused by an unrelated process.
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let status: ExitStatus = child
        .wait()
        .map_err(|e| NodeError::io(format!("waiting for `{command}`"), e))?;
    Ok(Output {
        status_code: status.code(),
        signal: status.signal(),
        stdout: stdout.into_string(),
        stderr: stderr.into_string(),
    })
}

#[derive(Clone, Copy)]
enum Keep {
    /// The first [`CAPTURE_LIMIT`] bytes.
    Head,
    /// The first [`STDERR_HEAD`] bytes and the last ones, [`CAPTURE_LIMIT`]
    /// in all.
    HeadTail,
}

/// One captured pipe, non-blocking.
struct Stream {
    pipe: Option<Box<dyn ReadFd>>,
    /// [`Keep::HeadTail`] only: the start of the stream.
    head: Vec<u8>,
    buf: Vec<u8>,
    keep: Keep,
    dropped: usize,
}

trait ReadFd: Read + AsRawFd {}
impl<T: Read + AsRawFd> ReadFd for T {}

impl Stream {
    fn new<T: ReadFd + 'static>(pipe: Option<Box<T>>, keep: Keep) -> Result<Self> {
        if let Some(p) = &pipe {
            let fd = p.as_raw_fd();
            set_nonblocking(fd)?;
        }
        Ok(Stream {
            pipe: pipe.map(|p| p as Box<dyn ReadFd>),
            head: Vec::new(),
            buf: Vec::new(),
            keep,
            dropped: 0,
        })
    }

    fn is_closed(&self) -> bool {
        self.pipe.is_none()
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|p| p.as_raw_fd())
    }

    /// Read everything currently available; close on EOF.
    fn drain(&mut self) -> Result<()> {
        let Some(mut pipe) = self.pipe.take() else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => return Ok(()), // EOF: the pipe stays closed
                Ok(n) => self.push(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.pipe = Some(pipe);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.pipe = Some(pipe);
                    return Err(NodeError::io("reading a child's output", e));
                }
            }
        }
    }

    fn push(&mut self, data: &[u8]) {
        match self.keep {
            Keep::Head => {
                let room = CAPTURE_LIMIT.saturating_sub(self.buf.len());
                let take = room.min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                self.dropped += data.len() - take;
            }
            Keep::HeadTail => {
                let room = STDERR_HEAD.saturating_sub(self.head.len());
                let (first, rest) = data.split_at(room.min(data.len()));
                self.head.extend_from_slice(first);
                self.buf.extend_from_slice(rest);
                let tail_limit = CAPTURE_LIMIT - STDERR_HEAD;
                if self.buf.len() > tail_limit {
                    let excess = self.buf.len() - tail_limit;
                    self.buf.drain(..excess);
                    self.dropped += excess;
                }
            }
        }
    }

    fn into_string(self) -> String {
        let head = String::from_utf8_lossy(&self.head);
        let text = String::from_utf8_lossy(&self.buf);
        match (self.keep, self.dropped) {
            (_, 0) => format!("{head}{text}"),
            (Keep::Head, n) => format!("{text}\n[… {n} more bytes not captured]"),
            (Keep::HeadTail, n) => format!("{head}\n[… {n} bytes not captured]\n{text}"),
        }
    }
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: `fd` belongs to a pipe owned by a `ChildStdout`/`ChildStderr`
    // that outlives this call; we only borrow it for the fcntl.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = fcntl(borrowed, FcntlArg::F_GETFL)
        .map_err(|e| NodeError::sys("fcntl(F_GETFL) on a child pipe", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(borrowed, FcntlArg::F_SETFL(flags))
        .map_err(|e| NodeError::sys("fcntl(F_SETFL) on a child pipe", e))?;
    Ok(())
}

/// Wait up to `wait` for any open stream to become readable (or hang up).
/// With no open stream this is a plain sleep.
fn poll_streams(streams: &mut [&mut Stream], wait: Duration) -> Result<()> {
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .filter_map(|s| s.raw_fd())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // `nfds_t` is an unsigned long on glibc and musl; two entries at most.
    let nfds = fds.len() as libc::nfds_t;
    // SAFETY: `fds` is a live, exclusively borrowed array of `nfds` pollfd
    // structs; poll only writes their `revents` fields. An empty array with a
    // null-ish pointer is allowed when nfds == 0.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
    if rc < 0 {
        let errno = nix::errno::Errno::last();
        if errno != nix::errno::Errno::EINTR {
            return Err(NodeError::sys("poll on a child's output pipes", errno));
        }
    }
    Ok(())
}

/// Resolve a bare tool name against [`SEARCH_PATH`].
pub fn find_program(program: &str) -> Result<PathBuf> {
    if program.is_empty() || program.contains('/') || program == "." || program == ".." {
        return Err(NodeError::InvalidProgramName {
            program: program.to_string(),
            search_path: SEARCH_PATH,
        });
    }
    for dir in SEARCH_PATH.split(':') {
        let candidate = Path::new(dir).join(OsStr::new(program));
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(NodeError::ProgramNotFound {
        program: program.to_string(),
        search_path: SEARCH_PATH,
    })
}

/// A readable rendering of a command for messages. Arguments with spaces
/// or quotes are Debug-quoted so the message is unambiguous.
pub fn command_line(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty()
            || a.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// The lines of a failed tool's output that say why, joined with "; ",
/// at most [`DETAIL_LINES`] lines and about [`DETAIL_CHARS`] characters.
///
/// Tools put the reason in different places: mkfs.xfs prints "Filesystem
/// must be larger than 300MB." and then 25 lines of usage; mke2fs prints
/// "Bad option(s) specified" and then the list of valid ones; most tools
/// print the reason last. So a usage or help block and everything after it
/// is dropped when something precedes it, and of what remains a long text
/// keeps its first lines and its last ones.
pub(crate) fn failure_detail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let lines = match lines.iter().position(|l| starts_help(l)) {
        Some(at) if at > 0 => &lines[..at],
        _ => &lines[..],
    };
    let joined = if lines.len() <= DETAIL_LINES {
        lines.join("; ")
    } else {
        let tail = DETAIL_LINES - DETAIL_HEAD_LINES;
        format!(
            "{}; …; {}",
            lines[..DETAIL_HEAD_LINES].join("; "),
            lines[lines.len() - tail..].join("; ")
        )
    };
    let count = joined.chars().count();
    if count <= DETAIL_CHARS {
        return joined;
    }
    // Keep both ends: the reason may be at either.
    let half = DETAIL_CHARS / 2;
    let start: String = joined.chars().take(half).collect();
    let end: String = joined.chars().skip(count - half).collect();
    format!("{start} … {end}")
}

/// The first line of a usage or help text.
fn starts_help(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.starts_with("usage:") || lower.starts_with("valid extended options are")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_exit_code() {
        let out = run("echo", &["hello", "world"], Duration::from_secs(10)).expect("echo runs");
        assert_eq!(out.status_code, Some(0));
        assert_eq!(out.stdout, "hello world\n");
        assert_eq!(out.stderr, "");
    }

    #[test]
    fn nonzero_exit_is_not_an_error_for_run() {
        let out = run("false", &[], Duration::from_secs(10)).expect("false runs");
        assert_eq!(out.status_code, Some(1));
        assert!(!out.success());
    }

    #[test]
    fn run_checked_reports_stderr_tail() {
        let err = run_checked(
            "ls",
            &["/nonexistent-flexwasm-test-path"],
            Duration::from_secs(10),
        )
        .expect_err("ls of a missing path fails");
        let msg = err.to_string();
        assert!(
            msg.starts_with("`ls /nonexistent-flexwasm-test-path` failed (exit code 2)"),
            "{msg}"
        );
        assert!(msg.contains("No such file or directory"), "{msg}");
    }

    #[test]
    fn timeout_kills_the_child() {
        let start = Instant::now();
        let err = run("sleep", &["30"], Duration::from_millis(300)).expect_err("must time out");
        assert!(matches!(err, NodeError::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            "`sleep 30` did not finish within 300 ms and was killed"
        );
    }

    #[test]
    fn cancel_flag_kills_the_child() {
        let flag = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                flag.store(true, Ordering::SeqCst);
            });
            let err = run_cancellable("sleep", &["30"], Duration::from_secs(60), &flag)
                .expect_err("must be cancelled");
            assert!(matches!(err, NodeError::Cancelled { .. }), "{err:?}");
        });
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let err = run("flexwasm-no-such-tool", &[], Duration::from_secs(1)).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "flexwasm-no-such-tool not found in /usr/sbin:/sbin:/usr/bin:/bin; install it on the node"
        );
    }

    #[test]
    fn paths_are_not_accepted_as_program_names() {
        for bad in ["/bin/echo", "./echo", "..", "", "sbin/blkid"] {
            let err = run(bad, &[], Duration::from_secs(1)).expect_err(bad);
            assert!(
                matches!(err, NodeError::InvalidProgramName { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn environment_is_clean() {
        let out = run("env", &[], Duration::from_secs(10)).expect("env runs");
        let mut vars: Vec<&str> = out.stdout.lines().collect();
        vars.sort();
        assert_eq!(vars, vec!["LC_ALL=C", "PATH=/usr/sbin:/sbin:/usr/bin:/bin"]);
    }

    #[test]
    fn stdin_is_null() {
        // `cat` with /dev/null as stdin ends at once with no output.
        let out = run("cat", &[], Duration::from_secs(10)).expect("cat runs");
        assert_eq!(out.status_code, Some(0));
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn large_output_is_bounded_and_does_not_deadlock() {
        let out = run(
            "head",
            &["-c", "5000000", "/dev/zero"],
            Duration::from_secs(30),
        )
        .expect("head runs");
        assert_eq!(out.status_code, Some(0));
        assert!(out.stdout.len() < CAPTURE_LIMIT + 100);
        assert!(out.stdout.ends_with("more bytes not captured]"));
    }

    #[test]
    fn detached_grandchild_holding_the_pipes_does_not_hang_us() {
        // `setsid -f` forks `sleep` into a new session (so our process-group
        // kill cannot reach it) with our pipes as its stdout/stderr, then exits.
        if find_program("setsid").is_err() {
            crate::test_skip::skip(
                "detached_grandchild_holding_the_pipes_does_not_hang_us",
                "setsid (util-linux) not installed",
            );
            return;
        }
        let start = Instant::now();
        let out = run("setsid", &["-f", "sleep", "3"], Duration::from_secs(20)).expect("runs");
        assert_eq!(out.status_code, Some(0));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn failure_detail_keeps_short_output_whole() {
        assert_eq!(failure_detail("a\n\nb\nc\nd\n"), "a; b; c; d");
        assert_eq!(failure_detail(""), "");
    }

    #[test]
    fn failure_detail_drops_a_usage_text_after_the_reason() {
        // What mkfs.xfs 6.1 prints for a 100 MiB device (usage shortened).
        let text = "Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n\
                    /* blocksize */\t\t[-b size=num]\n/* config file */\t[-c options=xxx]\n\
                    /* metadata */\t\t[-m crc=0|1,finobt=0|1,uuid=xxx,rmapbt=0|1,reflink=0|1,\n\
                    \t\t\t    inobtcount=0|1,bigtime=0|1]\n/* data subvol */\t[-d agcount=n]\n\
                    /* force overwrite */\t[-f]\n/* inode size */\t[-i perblock=n]\n\
                    <value> is xxx (512 byte blocks).\n";
        assert_eq!(
            failure_detail(text),
            "Filesystem must be larger than 300MB."
        );
        // mke2fs: the reason, then a list of the valid extended options.
        let text = "\nBad option(s) specified: bogus\n\nExtended options are separated by commas.\n\n\
                    Valid extended options are:\n\tmmp_update_interval=<interval>\n\tstride=<n>\n";
        assert_eq!(
            failure_detail(text),
            "Bad option(s) specified: bogus; Extended options are separated by commas."
        );
        // A usage text with nothing before it is all there is: keep it.
        assert_eq!(failure_detail("usage: x [-a]\n"), "usage: x [-a]");
    }

    #[test]
    fn failure_detail_keeps_the_first_and_last_lines_of_long_output() {
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            failure_detail(&text),
            "line 1; line 2; …; line 15; line 16; line 17; line 18; line 19; line 20"
        );
    }

    #[test]
    fn failure_detail_is_bounded_and_keeps_both_ends() {
        let text = format!("START {} END", "x".repeat(5000));
        let d = failure_detail(&text);
        assert!(d.chars().count() <= DETAIL_CHARS + 3, "{}", d.len());
        assert!(d.starts_with("START "), "{d}");
        assert!(d.ends_with(" END"), "{d}");
    }

    #[test]
    fn stderr_keeps_its_head_when_a_long_text_follows() {
        // Over CAPTURE_LIMIT on stderr: the first line survives with the end.
        let script = "echo 'the reason' >&2; head -c 3000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'last line' >&2";
        let out = run("sh", &["-c", script], Duration::from_secs(30)).expect("sh runs");
        assert!(
            out.stderr.starts_with("the reason\n"),
            "{:?}",
            &out.stderr[..40]
        );
        assert!(out.stderr.ends_with("last line\n"));
        assert!(out.stderr.contains(" bytes not captured]"));
        assert!(out.stderr.len() < CAPTURE_LIMIT + 100);
        let d = out.detail();
        assert!(d.starts_with("the reason; "), "{}", &d[..40]);
        assert!(d.ends_with("last line"), "{d}");
    }

    #[test]
    fn limit_is_the_cap_without_a_call_deadline() {
        let now = Instant::now();
        let cap = Duration::from_secs(300);
        assert_eq!(
            limit_for(now, cap, None),
            Some(Limit {
                until: now + cap,
                cap,
                by_call: false
            })
        );
        // A later call deadline changes nothing either.
        let late = now + Duration::from_secs(900);
        assert_eq!(
            limit_for(now, cap, Some(late)).map(|l| l.by_call),
            Some(false)
        );
    }

    #[test]
    fn limit_is_the_call_deadline_when_it_comes_first() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(7);
        assert_eq!(
            limit_for(now, Duration::from_secs(300), Some(soon)),
            Some(Limit {
                until: soon,
                cap: Duration::from_secs(300),
                by_call: true
            })
        );
        // An absurd cap does not overflow.
        let l = limit_for(now, Duration::MAX, Some(soon)).expect("time left");
        assert_eq!((l.until, l.by_call), (soon, true));
        assert!(limit_for(now, Duration::MAX, None).is_some());
    }

    #[test]
    fn no_time_left_means_no_limit() {
        let now = Instant::now();
        assert_eq!(limit_for(now, Duration::from_secs(30), Some(now)), None);
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        assert_eq!(limit_for(now, Duration::from_secs(30), Some(past)), None);
    }

    #[test]
    fn a_tool_is_not_started_after_the_call_deadline() {
        let flag = AtomicBool::new(false);
        let past = Instant::now();
        // `touch` would leave a trace if it ran.
        let dir = super::super::testutil::TempDir::new("deadline-no-start");
        let marker = dir.join("ran");
        let marker_str = marker.to_str().expect("utf-8");
        let err = run_until(
            "touch",
            &[marker_str],
            Duration::from_secs(30),
            &flag,
            Some(past),
        )
        .expect_err("must not start");
        assert!(
            matches!(err, NodeError::DeadlineBeforeStart { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the call's deadline ran out before `touch {marker_str}` could start; it was not run (the call needs a longer deadline, or an earlier step took too long)"
            )
        );
        assert!(!marker.exists());
    }

    #[test]
    fn the_call_deadline_kills_a_slow_tool_and_says_so() {
        let flag = AtomicBool::new(false);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(400);
        let err = run_until(
            "sleep",
            &["30"],
            Duration::from_secs(300),
            &flag,
            Some(deadline),
        )
        .expect_err("killed at the deadline");
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        let NodeError::CallDeadline {
            ref command,
            after,
            cap,
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(command, "sleep 30");
        assert_eq!(cap, Duration::from_secs(300));
        assert!(
            after >= Duration::from_millis(300) && after < Duration::from_secs(3),
            "{after:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("`sleep 30` was killed after ")
                && msg.contains(" ms: the call's deadline ran out (the tool's own limit is 300 s)"),
            "{msg}"
        );
    }

    #[test]
    fn the_own_cap_still_applies_under_a_later_call_deadline() {
        let flag = AtomicBool::new(false);
        let far = Instant::now() + Duration::from_secs(600);
        let err = run_until(
            "sleep",
            &["30"],
            Duration::from_millis(300),
            &flag,
            Some(far),
        )
        .expect_err("own cap");
        assert_eq!(
            err.to_string(),
            "`sleep 30` did not finish within 300 ms and was killed"
        );
    }

    #[test]
    fn process_wide_deadline_is_stored_and_cleared() {
        // Only this test touches the process-wide slot, and it sets a far
        // deadline, so tools other tests run concurrently are unaffected.
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        set_call_deadline(far);
        assert_eq!(call_deadline(), Some(far));
        clear_call_deadline();
        assert_eq!(call_deadline(), None);
    }

    #[test]
    fn command_line_quotes_ambiguous_args() {
        assert_eq!(
            command_line("mkfs.ext4", &["-L", "my label", "/dev/loop0"]),
            "mkfs.ext4 -L \"my label\" /dev/loop0"
        );
        assert_eq!(command_line("x", &[""]), "x \"\"");
    }
}
