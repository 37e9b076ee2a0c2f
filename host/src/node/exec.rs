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
//! - **Deadline.** The child runs in its own process group; when the timeout
//!   passes, or [`cancel_all`] is called (e.g. from a SIGTERM handler), the
//!   whole group gets SIGKILL and the call returns an error.
//! - **Bounded memory.** At most [`CAPTURE_LIMIT`] bytes of each stream are
//!   kept: the *head* of stdout (tools print their parseable answer first)
//!   and the *tail* of stderr (tools print the reason for failing last).
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

/// How often the wait loop wakes up to check the deadline and the cancel flag.
const TICK: Duration = Duration::from_millis(50);

/// How much of a failing tool's output goes into an error message.
const DETAIL_LINES: usize = 8;
const DETAIL_CHARS: usize = 1000;

static CANCEL_ALL: AtomicBool = AtomicBool::new(false);

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

    /// The last few lines of stderr (or of stdout when stderr is empty),
    /// joined with "; " so they fit in one error message.
    pub fn detail(&self) -> String {
        let source = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        tail_lines(source, DETAIL_LINES, DETAIL_CHARS)
    }
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
/// capture its output, and kill it after `timeout`. A non-zero exit is *not*
/// an error here; see [`run_checked`].
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
    let mut child = cmd.spawn().map_err(|source| NodeError::Spawn {
        program: program.to_string(),
        source,
    })?;
    // From here on the child must not outlive an error return.
    let mut guard = ChildGuard {
        child: &mut child,
        armed: true,
    };
    let out = supervise(guard.child, start, timeout, cancel, &command)?; // guard kills + reaps
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
            let _ = self.child.wait();
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
    timeout: Duration,
    cancel: &AtomicBool,
    command: &str,
) -> Result<Output> {
    let deadline = start + timeout;
    let mut stdout = Stream::new(child.stdout.take().map(Box::new), Keep::Head)?;
    let mut stderr = Stream::new(child.stderr.take().map(Box::new), Keep::Tail)?;
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
            return Err(NodeError::Timeout {
                command: command.to_string(),
                timeout,
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
    Head,
    Tail,
}

/// One captured pipe, non-blocking.
struct Stream {
    pipe: Option<Box<dyn ReadFd>>,
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
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => {
                    self.pipe = None;
                    return Ok(());
                }
                Ok(n) => push(&mut self.buf, &mut self.dropped, self.keep, &chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(NodeError::io("reading a child's output", e)),
            }
        }
    }

    fn into_string(self) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped == 0 {
            return text;
        }
        match self.keep {
            Keep::Head => format!("{text}\n[… {} more bytes not captured]", self.dropped),
            Keep::Tail => format!("[… {} earlier bytes not captured]\n{text}", self.dropped),
        }
    }
}

fn push(buf: &mut Vec<u8>, dropped: &mut usize, keep: Keep, data: &[u8]) {
    match keep {
        Keep::Head => {
            let room = CAPTURE_LIMIT.saturating_sub(buf.len());
            let take = room.min(data.len());
            buf.extend_from_slice(&data[..take]);
            *dropped += data.len() - take;
        }
        Keep::Tail => {
            buf.extend_from_slice(data);
            if buf.len() > CAPTURE_LIMIT {
                let excess = buf.len() - CAPTURE_LIMIT;
                buf.drain(..excess);
                *dropped += excess;
            }
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

/// The last `max_lines` non-empty lines of `text`, joined with "; ", and at
/// most `max_chars` characters (cut at the front).
pub(crate) fn tail_lines(text: &str, max_lines: usize, max_chars: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(max_lines);
    let joined = lines[start..].join("; ");
    let count = joined.chars().count();
    if count <= max_chars {
        joined
    } else {
        let skip = count - max_chars;
        format!("…{}", joined.chars().skip(skip + 1).collect::<String>())
    }
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
            eprintln!("skipping: setsid not installed");
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
    fn tail_lines_keeps_the_end() {
        let text = "a\n\nb\nc\nd\n";
        assert_eq!(tail_lines(text, 2, 100), "c; d");
        assert_eq!(tail_lines(text, 10, 100), "a; b; c; d");
        assert_eq!(tail_lines("abcdefghij", 1, 5), "…ghij");
        assert_eq!(tail_lines("", 3, 10), "");
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

/// TEMPORARY stub: replaced by the `mkfs` branch's deadline plumbing.
pub fn set_call_deadline(_deadline: std::time::Instant) {}
