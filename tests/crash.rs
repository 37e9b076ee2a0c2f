//! The host SIGKILLed at every step of a volume's lifecycle, as root, in a
//! private mount namespace, with the `loop` reference plugin: kubelet's
//! retry must converge, and data written before the kill must be there
//! after the next mountdevice.
//!
//! SIGKILL goes to the host process only, as the OOM killer sends it; its
//! mounts, loop devices and files stay as they were at that instant.
//! Where the host was is chosen three ways, none of which needs a hook in
//! the production binary:
//!
//! - **Before each state change.** The host runs under ptrace once per
//!   step (the census) and every system call that changes something a
//!   later call can see is noted: files created, written, synced, renamed
//!   or removed, directories made, loop ioctls, mount and umount, a tool
//!   spawned, the answer written. Then, for each of them, a fresh volume
//!   is brought to that step and the host is killed at the entry of that
//!   call: it has made exactly the changes before it. This is "between
//!   probe and mkfs" (before mkfs is spawned), "between mkfs and mount",
//!   "mid state write" (after the temp file, after its write, after the
//!   fsync, after the rename), "mid attach" (after the state record, after
//!   the image is created, before it is sized, before LOOP_CONFIGURE) and
//!   every other such point. The call log (written after the answer) and
//!   the node memory pool's lock files are left out.
//! - **While a tool runs.** Stopped right after it spawned blkid or mkfs,
//!   the host is killed some time into the tool's run (spread over its
//!   measured duration). The tool either keeps running, orphaned (what a
//!   SIGKILL of one process leaves: it has its own process group), while
//!   kubelet retries at once; or dies with the host, as when kubelet's
//!   whole cgroup is killed (a restart of kubelet.service with
//!   KillMode=control-group, an OOM kill of the group), leaving mkfs's work
//!   half done.
//! - **At a random moment**, untraced: a delay spread over the step's
//!   measured duration.
//!
//! After the kill, kubelet's retry (the same argv; again after any orphan
//! has finished, up to three times) must succeed, the rest of the lifecycle
//! must too, data written before the kill must be there after the next
//! mountdevice, and the volume must end detached with nothing left: no
//! mount, no loop device, no record in the plugin's state or the host's.
//! Rounds per kill point are printed.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::lifecycle::*;
use support::*;

/// The steps every round walks, in kubelet's order: a volume formatted,
/// used, released; then attached and mounted again (no format this time)
/// and released again.
const LIFECYCLE: [(LifeOp, &str); 12] = [
    (LifeOp::Attach, "attach"),
    (LifeOp::WaitForAttach, "waitforattach"),
    (LifeOp::MountDevice, "mountdevice (formats)"),
    (LifeOp::Mount, "mount"),
    (LifeOp::Unmount, "unmount"),
    (LifeOp::UnmountDevice, "unmountdevice"),
    (LifeOp::Detach, "detach"),
    (LifeOp::Attach, "attach again"),
    (LifeOp::WaitForAttach, "waitforattach again"),
    (LifeOp::MountDevice, "mountdevice again"),
    (LifeOp::UnmountDevice, "unmountdevice again"),
    (LifeOp::Detach, "detach again"),
];

/// Index of the first mountdevice in [`LIFECYCLE`] (the one that formats).
const FORMAT_STEP: usize = 2;
/// Index of the mountdevice after re-attaching.
const REMOUNT_STEP: usize = 9;

/// How many times kubelet's retry is tried before the round counts as not
/// converging.
const RETRIES: usize = 3;
/// Rounds per tool spawn while it runs: mkfs (whose half-done work
/// matters), and probes.
const MKFS_ROUNDS: usize = 6;
const PROBE_ROUNDS: usize = 1;
/// Untraced rounds per step at a random moment.
const RANDOM_ROUNDS: usize = 2;
/// Rounds run at once (each on its own volume).
const PARALLEL_ROUNDS: usize = 3;

/// Where the host is killed.
#[derive(Clone, Debug)]
enum Kill {
    /// Not at all (the census).
    Never,
    /// At the entry of the first state-changing call after `n` effective
    /// ones: the host has made exactly `n` changes.
    BeforeEffect(usize),
    /// `delay` after it spawned its `spawn`-th tool; the tool keeps running
    /// unless `tool_dies_too`.
    DuringTool {
        spawn: usize,
        delay: Duration,
        tool_dies_too: bool,
    },
    /// `delay` after exec, untraced.
    AfterDelay(Duration),
}

// ---------------------------------------------------------------------------
// Running one call under ptrace, killing it where asked.

/// A state change the host made (seen at the exit of a successful call).
#[derive(Clone, Debug)]
struct Effect {
    label: String,
    /// Since exec.
    at: Duration,
    /// For a spawn: the tool's pid.
    tool: Option<i32>,
}

/// What a traced call did.
struct Traced {
    /// The answer, if the host was not killed.
    answer: Option<Answer>,
    effects: Vec<Effect>,
    /// What the host was about to do (or which tool ran) when killed.
    killed_at: Option<String>,
    /// Tools still running when the host was killed.
    orphans: Vec<i32>,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// `ptrace(request, tid, addr, data)`.
fn ptrace(request: libc::c_uint, tid: i32, addr: usize, data: usize) -> std::io::Result<i64> {
    // SAFETY: the requests used here (SETOPTIONS, SYSCALL, GET_SYSCALL_INFO)
    // take a tid of our own tracee and, for GET_SYSCALL_INFO, a pointer to
    // a buffer of `addr` bytes that the caller owns.
    let r = unsafe { libc::ptrace(request, tid, addr, data) };
    if r == -1 { Err(errno()) } else { Ok(r) }
}

/// The syscall a stopped tracee is entering or leaving.
fn syscall_info(tid: i32) -> std::io::Result<libc::ptrace_syscall_info> {
    // SAFETY: all-zero is a valid ptrace_syscall_info (plain integers).
    let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GET_SYSCALL_INFO,
        tid,
        std::mem::size_of::<libc::ptrace_syscall_info>(),
        &mut info as *mut _ as usize,
    )?;
    Ok(info)
}

/// Reads a stopped tracee's memory.
struct Memory(Option<File>);

impl Memory {
    fn of(tid: i32) -> Memory {
        Memory(File::open(format!("/proc/{tid}/mem")).ok())
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        match &self.0 {
            Some(f) => match f.read_at(&mut buf, addr) {
                Ok(n) => {
                    buf.truncate(n);
                    buf
                }
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    fn u64_at(&self, addr: u64) -> u64 {
        let b = self.bytes(addr, 8);
        b.try_into().map(u64::from_ne_bytes).unwrap_or(0)
    }

    /// A NUL-terminated string (read in small pieces: it may end just
    /// before an unmapped page).
    fn string(&self, addr: u64) -> String {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < 4096 {
            let chunk = self.bytes(at, 64);
            if chunk.is_empty() {
                break;
            }
            if let Some(end) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            out.extend_from_slice(&chunk);
            at += chunk.len() as u64;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What a state-changing syscall entry is, if it is one worth killing
/// before.
struct Classifier<'a> {
    pid: i32,
    /// Paths to leave out: the call log and the node memory pool.
    ignore: &'a [PathBuf],
    root: &'a Path,
}

const LOOP_IOCTLS: [(u64, &str); 5] = [
    (0x4C0A, "LOOP_CONFIGURE"),
    (0x4C00, "LOOP_SET_FD"),
    (0x4C01, "LOOP_CLR_FD"),
    (0x4C04, "LOOP_SET_STATUS64"),
    (0x4C07, "LOOP_SET_CAPACITY"),
];

impl Classifier<'_> {
    fn fd_path(&self, fd: u64) -> String {
        std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `path` as seen from directory descriptor `dirfd`.
    fn at(&self, dirfd: u64, path: String) -> String {
        if path.starts_with('/') || dirfd as i32 == libc::AT_FDCWD {
            path
        } else {
            format!("{}/{path}", self.fd_path(dirfd))
        }
    }

    fn ignored(&self, path: &str) -> bool {
        self.ignore
            .iter()
            .any(|p| path.starts_with(&*p.to_string_lossy()))
    }

    /// A short, stable name for a path: the sandbox root and pids dropped,
    /// hashes cut.
    fn short(&self, path: &str) -> String {
        let mut s = path.replace(&*self.root.to_string_lossy(), "…");
        if let Some(at) = s.find(".tmp-") {
            // `.tmp-<pid>` (state store), `.tmp-<pid namespace>-<pid>`
            // (records): the writer.
            let digits = s[at + 5..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .count();
            s.replace_range(at + 5..at + 5 + digits, "PID");
        }
        s.split('/')
            .map(|part| {
                let hex = part.trim_start_matches('.');
                if hex.len() >= 64 && hex[..64].bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("{}{}…", &part[..part.len() - hex.len()], &hex[..8])
                } else {
                    part.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn classify(&self, tid: i32, nr: i64, args: [u64; 6]) -> Option<String> {
        let mem = Memory::of(tid);
        let s = |addr: u64| mem.string(addr);
        let opened = |path: String, flags: u64| -> Option<String> {
            let creates = flags & libc::O_CREAT as u64 != 0;
            let truncates = flags & libc::O_TRUNC as u64 != 0;
            if self.ignored(&path) || !(creates || truncates) {
                return None;
            }
            // Opening what exists without truncating it changes nothing.
            if !truncates && Path::new(&path).exists() {
                return None;
            }
            Some(format!("create {}", self.short(&path)))
        };
        let label = match nr {
            libc::SYS_openat => opened(self.at(args[0], s(args[1])), args[2])?,
            libc::SYS_openat2 => opened(self.at(args[0], s(args[1])), mem.u64_at(args[2]))?,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_open => opened(s(args[0]), args[1])?,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_creat => opened(s(args[0]), libc::O_CREAT as u64 | libc::O_TRUNC as u64)?,
            libc::SYS_write | libc::SYS_pwrite64 | libc::SYS_writev | libc::SYS_pwritev => {
                let target = self.fd_path(args[0]);
                if target.starts_with("pipe:") {
                    "write the answer".to_string()
                } else if target.starts_with('/') && !target.starts_with("/dev/") {
                    if self.ignored(&target) {
                        return None;
                    }
                    format!("write {}", self.short(&target))
                } else {
                    return None;
                }
            }
            libc::SYS_fsync | libc::SYS_fdatasync => {
                let target = self.fd_path(args[0]);
                if self.ignored(&target) {
                    return None;
                }
                format!("fsync {}", self.short(&target))
            }
            // A lock taken or given up is seen by other calls; and a lock is
            // not always released by the process's death (a loop device
            // keeps the open file it was given, and that file's lock).
            libc::SYS_flock => {
                let target = self.fd_path(args[0]);
                if self.ignored(&target) {
                    return None;
                }
                let op = match args[1] as i32 & !libc::LOCK_NB {
                    libc::LOCK_UN => "unlock",
                    libc::LOCK_SH => "lock (shared)",
                    _ => "lock",
                };
                format!("{op} {}", self.short(&target))
            }
            libc::SYS_ftruncate => format!("truncate {}", self.short(&self.fd_path(args[0]))),
            libc::SYS_fallocate => format!("fallocate {}", self.short(&self.fd_path(args[0]))),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_rename => format!(
                "rename {} → {}",
                self.short(&s(args[0])),
                self.short(&s(args[1]))
            ),
            libc::SYS_renameat | libc::SYS_renameat2 => format!(
                "rename {} → {}",
                self.short(&self.at(args[0], s(args[1]))),
                self.short(&self.at(args[2], s(args[3])))
            ),
            libc::SYS_linkat => format!("link {}", self.short(&self.at(args[2], s(args[3])))),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_unlink | libc::SYS_rmdir => format!("remove {}", self.short(&s(args[0]))),
            libc::SYS_unlinkat => format!("remove {}", self.short(&self.at(args[0], s(args[1])))),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_mkdir => format!("mkdir {}", self.short(&s(args[0]))),
            libc::SYS_mkdirat => format!("mkdir {}", self.short(&self.at(args[0], s(args[1])))),
            libc::SYS_ioctl => {
                let (_, name) = LOOP_IOCTLS
                    .iter()
                    .find(|(r, _)| *r == args[1] & 0xffff_ffff)?;
                format!("{name} {}", self.short(&self.fd_path(args[0])))
            }
            libc::SYS_mount => {
                let (source, target) = (s(args[0]), s(args[1]));
                let flags = args[3];
                if flags & libc::MS_REMOUNT != 0 {
                    format!("mount (remount flags) {}", self.short(&target))
                } else if flags & libc::MS_BIND != 0 {
                    format!(
                        "mount (bind) {} → {}",
                        self.short(&source),
                        self.short(&target)
                    )
                } else {
                    format!("mount {} {} → {}", s(args[2]), source, self.short(&target))
                }
            }
            libc::SYS_umount2 => format!("umount {}", self.short(&s(args[0]))),
            libc::SYS_clone3 => {
                let flags = mem.u64_at(args[0]);
                if flags & libc::CLONE_THREAD as u64 != 0 {
                    return None;
                }
                "spawn".to_string()
            }
            libc::SYS_clone => {
                if args[0] & libc::CLONE_THREAD as u64 != 0 {
                    return None;
                }
                "spawn".to_string()
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_vfork | libc::SYS_fork => "spawn".to_string(),
            _ => return None,
        };
        Some(label)
    }
}

/// Run the driver with `args` under ptrace, as [`Sandbox::call`] runs it,
/// and kill it as `kill` says. `Kill::AfterDelay` is not traced.
fn traced_call(sb: &Sandbox, args: &[String], kill: &Kill) -> Traced {
    let mut cmd = Command::new(sb.driver_exe(DRIVER));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(sb.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let traced = !matches!(kill, Kill::AfterDelay(_));
    if traced {
        // SAFETY: between fork and exec the closure makes one
        // async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = spawn(&mut cmd).expect("exec the driver");
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    let stdout = child.stdout.take().map(|p| drain(Box::new(p)));
    let stderr = child.stderr.take().map(|p| drain(Box::new(p)));

    let mut effects = Vec::new();
    let mut killed_at = None;
    let mut orphans = Vec::new();
    let kill_host = |orphans: &mut Vec<i32>| {
        orphans.extend(children_of(pid));
        // SAFETY: `pid` is our child, not yet reaped (so not reused).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    let status: libc::c_int;
    if let Kill::AfterDelay(delay) = kill {
        std::thread::sleep(*delay);
        if !process_ended(pid) {
            kill_host(&mut orphans);
            killed_at = Some(format!("{delay:.0?} in"));
        }
        status = wait_for(pid, 0);
    } else {
        let log_dir = sb.log_dir.clone();
        let pool = sb.state_dir.join(".node");
        let ignore = [log_dir, pool];
        let classifier = Classifier {
            pid,
            ignore: &ignore,
            root: sb.root.path(),
        };
        // The stop at exec.
        let first = wait_for(pid, libc::__WALL);
        assert!(
            libc::WIFSTOPPED(first),
            "the traced driver did not stop at exec: status {first:#x}"
        );
        ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            (libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL)
                as usize,
        )
        .expect("PTRACE_SETOPTIONS");
        let _ = ptrace(libc::PTRACE_SYSCALL, pid, 0, 0);
        // Per thread: the label of the state-changing call it is in.
        let mut pending: HashMap<i32, Option<String>> = HashMap::new();
        let mut spawns = 0usize;
        let mut dead = false;
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: plain waitpid on our own tracees (this thread's only).
            let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::__WNOTHREAD) };
            if tid == -1 {
                let e = errno();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("waitpid for the traced driver: {e}");
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                if tid == pid {
                    status = st;
                    break;
                }
                continue;
            }
            if !libc::WIFSTOPPED(st) {
                continue;
            }
            let mut inject = 0usize;
            let sig = libc::WSTOPSIG(st);
            if !dead && sig == (libc::SIGTRAP | 0x80) {
                if let Ok(info) = syscall_info(tid) {
                    if info.op == libc::PTRACE_SYSCALL_INFO_ENTRY {
                        // SAFETY: op ENTRY: the entry member is the valid one.
                        let entry = unsafe { info.u.entry };
                        let label = classifier.classify(tid, entry.nr as i64, entry.args);
                        if let (Some(l), Kill::BeforeEffect(n)) = (&label, kill)
                            && effects.len() == *n
                        {
                            killed_at = Some(format!("before {l}"));
                            kill_host(&mut orphans);
                            dead = true;
                        }
                        pending.insert(tid, label);
                    } else if info.op == libc::PTRACE_SYSCALL_INFO_EXIT {
                        // SAFETY: op EXIT: the exit member is the valid one.
                        let exit = unsafe { info.u.exit };
                        if let Some(Some(label)) = pending.remove(&tid)
                            && exit.is_error == 0
                        {
                            let mut effect = Effect {
                                label,
                                at: started.elapsed(),
                                tool: None,
                            };
                            if effect.label == "spawn" {
                                let spawned = Instant::now();
                                let tool = exit.sval as i32;
                                // vfork returns once the tool's exec has
                                // begun; its argv shows a moment later.
                                let mut line = cmdline(tool);
                                while line.is_empty()
                                    && !process_ended(tool)
                                    && spawned.elapsed() < Duration::from_millis(500)
                                {
                                    std::thread::sleep(Duration::from_micros(200));
                                    line = cmdline(tool);
                                }
                                effect.label = format!("spawn {line}");
                                effect.tool = Some(tool);
                                if let Kill::DuringTool {
                                    spawn,
                                    delay,
                                    tool_dies_too,
                                } = kill
                                    && *spawn == spawns
                                {
                                    std::thread::sleep(delay.saturating_sub(spawned.elapsed()));
                                    killed_at = Some(format!(
                                        "{delay:.0?} into {line}{}",
                                        if *tool_dies_too {
                                            ", killed with it"
                                        } else {
                                            ", left running"
                                        }
                                    ));
                                    kill_host(&mut orphans);
                                    if *tool_dies_too {
                                        // Its own process group (exec.rs).
                                        // SAFETY: the tool is unreaped (its
                                        // parent is stopped), so its pid
                                        // and group id are still its own.
                                        unsafe { libc::kill(-tool, libc::SIGKILL) };
                                        // By the time kubelet is back, it is
                                        // gone.
                                        wait_until_ended(&[tool]);
                                    }
                                    dead = true;
                                }
                                spawns += 1;
                            }
                            effects.push(effect);
                        }
                    }
                }
            } else if sig != libc::SIGTRAP && sig != libc::SIGSTOP && sig != (libc::SIGTRAP | 0x80)
            {
                // A real signal (wasmtime's trap handling, SIGCHLD, …).
                inject = sig as usize;
            }
            let _ = ptrace(libc::PTRACE_SYSCALL, tid, 0, inject);
        }
    }
    // std's handle is never waited on: the pid was reaped above.
    drop(child);
    let answer = if killed_at.is_none() {
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: stdout
                .map(|h| h.join().expect("stdout reader"))
                .unwrap_or_default(),
            stderr: stderr
                .map(|h| h.join().expect("stderr reader"))
                .unwrap_or_default(),
        };
        Some(Answer::from_output(args.to_vec(), &out))
    } else {
        // What a killed driver printed is not an answer (kubelet sees the
        // exec fail). Leave the readers: an orphan may hold a pipe.
        None
    };
    Traced {
        answer,
        effects,
        killed_at,
        orphans: orphans.into_iter().filter(|p| !process_ended(*p)).collect(),
    }
}

/// waitpid for `pid`, retrying on EINTR; its wait status.
fn wait_for(pid: i32, flags: libc::c_int) -> libc::c_int {
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r == pid {
            return st;
        }
        let e = errno();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "waitpid {pid}: {e}"
        );
    }
}

/// Wait (polling: an orphan is not our child) until `pids` have ended.
fn wait_until_ended(pids: &[i32]) {
    let until = Instant::now() + Duration::from_secs(300);
    while pids.iter().any(|p| !process_ended(*p)) {
        assert!(
            Instant::now() < until,
            "orphaned tools {pids:?} still run after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// One volume through the lifecycle.

/// A volume walking [`LIFECYCLE`], with what kubelet knows of it.
struct Walk {
    vol: LoopVolume,
    attach_device: String,
    device: String,
    /// Written after the first mountdevice; must survive everything after.
    marker: Option<String>,
    /// Written (not synced) just before a kill while the volume was
    /// mounted: must survive too.
    fresh: Option<(String, String)>,
}

impl Walk {
    fn new(vol: LoopVolume) -> Walk {
        Walk {
            vol,
            attach_device: String::new(),
            device: String::new(),
            marker: None,
            fresh: None,
        }
    }

    fn argv(&self, step: usize) -> Vec<String> {
        let (op, _) = LIFECYCLE[step];
        let device = match op {
            LifeOp::WaitForAttach => &self.attach_device,
            _ => &self.device,
        };
        self.vol.argv(op, device)
    }

    /// The data checks after a successful mountdevice or mount.
    fn check_data(&self, dir: &Path) -> Result<(), String> {
        if let Some(text) = &self.marker
            && read_marker(dir).as_ref() != Some(text)
        {
            return Err(format!(
                "the marker written after the first format is gone from {} (found {:?}): \
                 formatted again?",
                dir.display(),
                read_marker(dir)
            ));
        }
        if let Some((name, text)) = &self.fresh {
            let found = in_mounts(|| std::fs::read_to_string(dir.join(name)).ok());
            if found.as_ref() != Some(text) {
                return Err(format!(
                    "{name}, written before the kill, is {found:?} in {}",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// Bookkeeping and checks after `step` answered Success.
    fn succeeded(&mut self, step: usize, answer: &Answer) -> Result<(), String> {
        match LIFECYCLE[step].0 {
            LifeOp::Attach => self.attach_device = answered_device(answer),
            LifeOp::WaitForAttach => self.device = answered_device(answer),
            LifeOp::MountDevice => {
                let dmp = &self.vol.device_mount_path;
                if mounted_device_numbers(dmp) != device_numbers(Path::new(&self.device)) {
                    return Err(format!(
                        "mountdevice answered Success, but {} is not mounted from {}",
                        dmp.display(),
                        self.device
                    ));
                }
                match &self.marker {
                    None => {
                        let text = format!("{} formatted once", self.vol.name);
                        write_marker(dmp, &self.device, &text)?;
                        self.marker = Some(text);
                    }
                    Some(_) => self.check_data(dmp)?,
                }
            }
            LifeOp::Mount => self.check_data(&self.vol.pod_dir)?,
            _ => {}
        }
        Ok(())
    }

    /// Run `step` as kubelet would; it must succeed.
    fn run(&mut self, sb: &Sandbox, step: usize) -> Result<(), String> {
        let answer = self.call(sb, step);
        if answer.status() != "Success" {
            return Err(format!(
                "{} {}: {}",
                LIFECYCLE[step].1,
                self.vol.name,
                answer.stdout.trim()
            ));
        }
        self.succeeded(step, &answer)
    }

    fn call(&self, sb: &Sandbox, step: usize) -> Answer {
        let argv = self.argv(step);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let answer = sb.call(DRIVER, &args);
        check_contract(&self.vol, LIFECYCLE[step].0, &answer);
        answer
    }

    /// Everything about the volume once it is detached.
    fn check_down(&self, sb: &Sandbox) -> Result<(), String> {
        let vol = &self.vol;
        let mut wrong = Vec::new();
        if !vol.loop_devices(sb).is_empty() {
            wrong.push(format!(
                "its image is still attached at {:?}",
                vol.loop_devices(sb)
            ));
        }
        for dir in [&vol.device_mount_path, &vol.pod_dir] {
            if is_mounted(dir) {
                wrong.push(format!("{} is still mounted", dir.display()));
            }
        }
        if let Some(record) = vol.state_record(sb) {
            wrong.push(format!("the plugin's state still records {record:?}"));
        }
        if let Some(record) = vol.host_record(sb) {
            wrong.push(format!("the host still records a device mount {record:?}"));
        }
        if vol.is_attached(sb) {
            wrong.push("isattached answers true".into());
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("after detach: {}", wrong.join("; ")))
        }
    }
}

// ---------------------------------------------------------------------------
// Rounds.

#[derive(Clone, Debug)]
struct Round {
    step: usize,
    /// "census label" of the kill point, for the table.
    point: String,
    kill: Kill,
    fs_type: &'static str,
    size: &'static str,
}

/// How a round went.
struct RoundResult {
    round: Round,
    /// Where the host really was killed (None: it answered first).
    killed_at: Option<String>,
    /// The retries' answers, first to last (the last is Success if the
    /// round converged).
    retries: Vec<String>,
    /// What the volume's device held right after the kill (mountdevice).
    left: Option<String>,
    /// Why the round did not converge or lost data, if it did.
    problem: Option<String>,
}

/// What `device` holds, as the host's probe would name it: a filesystem
/// type, "blank", or "unrecognised data" (blkid finds nothing, but the
/// first 64 KiB are not all zero).
fn what_device_holds(device: &str) -> String {
    let out = output(Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE", device]));
    match out {
        Ok(out) if out.status.code() == Some(0) => {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
        Ok(out) if out.status.code() == Some(2) => {
            let mut start = vec![0u8; 64 << 10];
            let n = File::open(device)
                .and_then(|f| f.read_at(&mut start, 0))
                .unwrap_or(0);
            if n > 0 && start[..n].iter().all(|b| *b == 0) {
                "blank".into()
            } else {
                "unrecognised data".into()
            }
        }
        Ok(out) => format!("blkid {}", out.status),
        Err(e) => format!("blkid: {e}"),
    }
}

fn run_round(sb: &Sandbox, round: &Round, n: usize) -> RoundResult {
    let name = format!("crash-{n:03}");
    let vol = LoopVolume::new(sb, &name, round.fs_type, round.size);
    let mut walk = Walk::new(vol);
    let mut result = RoundResult {
        round: round.clone(),
        killed_at: None,
        retries: Vec::new(),
        left: None,
        problem: None,
    };
    let outcome = (|| -> Result<(), String> {
        for step in 0..round.step {
            walk.run(sb, step)?;
        }
        // Data written while mounted, not synced, just before the kill.
        if is_mounted(&walk.vol.device_mount_path) {
            let file = format!("fresh-{n}");
            let text = format!("written just before the kill in round {n}");
            in_mounts(|| std::fs::write(walk.vol.device_mount_path.join(&file), &text))
                .map_err(|e| format!("writing {file}: {e}"))?;
            walk.fresh = Some((file, text));
        }
        let argv = walk.argv(round.step);
        let traced = traced_call(sb, &argv, &round.kill);
        result.killed_at = traced.killed_at.clone();
        match traced.answer {
            // It finished before the kill point came: as good as not
            // killed, but say so.
            Some(answer) => {
                check_contract(&walk.vol, LIFECYCLE[round.step].0, &answer);
                if answer.status() != "Success" {
                    return Err(format!("unkilled call failed: {}", answer.stdout.trim()));
                }
                walk.succeeded(round.step, &answer)?;
            }
            None => {
                if LIFECYCLE[round.step].0 == LifeOp::MountDevice {
                    result.left = Some(what_device_holds(&walk.device));
                }
                let orphans = traced.orphans;
                let mut converged = false;
                for attempt in 0..RETRIES {
                    if attempt > 0 {
                        // kubelet backs off; by then an orphan is done.
                        wait_until_ended(&orphans);
                    }
                    let answer = walk.call(sb, round.step);
                    result.retries.push(if answer.status() == "Success" {
                        "Success".to_string()
                    } else {
                        format!("{}: {}", answer.status(), answer.message())
                    });
                    if answer.status() == "Success" {
                        walk.succeeded(round.step, &answer)?;
                        converged = true;
                        break;
                    }
                }
                wait_until_ended(&orphans);
                if !converged {
                    return Err(format!(
                        "{} never succeeded again after the kill ({}): {}",
                        LIFECYCLE[round.step].1,
                        result.killed_at.as_deref().unwrap_or("?"),
                        result.retries.join(" | ")
                    ));
                }
            }
        }
        for step in round.step + 1..LIFECYCLE.len() {
            walk.run(sb, step)?;
        }
        walk.check_down(sb)?;
        if round.step >= REMOUNT_STEP {
            // The data is checked at the next mountdevice: one more cycle.
            for step in 7..LIFECYCLE.len() {
                walk.run(sb, step)?;
            }
            walk.check_down(sb)?;
        }
        Ok(())
    })();
    if let Err(problem) = outcome {
        result.problem = Some(problem);
    } else {
        // A PV deleted: its image goes, so rounds do not pile images up.
        let _ = std::fs::remove_file(walk.vol.image(sb));
    }
    result
}

/// The census: one volume through the lifecycle, every step traced; what
/// each step changed, and how long it took untraced.
fn census(
    sb: &Sandbox,
    name: &str,
    fs_type: &'static str,
    size: &'static str,
) -> (Vec<Vec<Effect>>, Vec<Duration>) {
    let mut walk = Walk::new(LoopVolume::new(sb, name, fs_type, size));
    let mut effects = Vec::new();
    for step in 0..LIFECYCLE.len() {
        let traced = traced_call(sb, &walk.argv(step), &Kill::Never);
        let answer = traced.answer.expect("not killed");
        answer.assert_success();
        walk.succeeded(step, &answer)
            .unwrap_or_else(|e| panic!("census: {e}"));
        effects.push(traced.effects);
    }
    walk.check_down(sb)
        .unwrap_or_else(|e| panic!("census: {e}"));
    let _ = std::fs::remove_file(walk.vol.image(sb));
    // Untraced durations, for the random kills.
    let mut walk = Walk::new(LoopVolume::new(sb, &format!("{name}-timed"), fs_type, size));
    let mut durations = Vec::new();
    for step in 0..LIFECYCLE.len() {
        let t = Instant::now();
        let answer = walk.call(sb, step);
        durations.push(t.elapsed());
        answer.assert_success();
        walk.succeeded(step, &answer)
            .unwrap_or_else(|e| panic!("timing run: {e}"));
    }
    let _ = std::fs::remove_file(walk.vol.image(sb));
    (effects, durations)
}

/// The rounds for one census: a kill before every effect of every step in
/// `steps`, kills while each tool runs, random kills.
fn rounds_for(
    effects: &[Vec<Effect>],
    durations: &[Duration],
    steps: &[usize],
    fs_type: &'static str,
    size: &'static str,
    rng: &mut Rng,
) -> Vec<Round> {
    let mut rounds = Vec::new();
    let round = |step, point: String, kill| Round {
        step,
        point,
        kill,
        fs_type,
        size,
    };
    for &step in steps {
        let effs = &effects[step];
        for (n, e) in effs.iter().enumerate() {
            rounds.push(round(
                step,
                format!("before {}", e.label),
                Kill::BeforeEffect(n),
            ));
        }
        let mut spawn = 0;
        for (n, e) in effs.iter().enumerate() {
            if e.tool.is_none() {
                continue;
            }
            // The tool ran until the host's next change (or its answer).
            let end = effs
                .get(n + 1)
                .map_or(e.at + Duration::from_millis(20), |next| next.at);
            let span = end.saturating_sub(e.at);
            let tool = e
                .label
                .trim_start_matches("spawn ")
                .split(' ')
                .next()
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or("");
            let per = if tool.starts_with("mkfs") {
                MKFS_ROUNDS
            } else {
                PROBE_ROUNDS
            };
            for tool_dies_too in [false, true] {
                for j in 0..per {
                    let delay = span.mul_f64((j as f64 + 0.5) / per as f64);
                    let how = if tool_dies_too {
                        "killed with the host"
                    } else {
                        "left running"
                    };
                    rounds.push(round(
                        step,
                        format!("while {tool} runs, {how}"),
                        Kill::DuringTool {
                            spawn,
                            delay,
                            tool_dies_too,
                        },
                    ));
                }
            }
            spawn += 1;
        }
        for _ in 0..RANDOM_ROUNDS {
            let delay = durations[step].mul_f64((rng.next_u64() % 1000) as f64 / 1000.0);
            rounds.push(round(
                step,
                "at a random moment".into(),
                Kill::AfterDelay(delay),
            ));
        }
    }
    rounds
}

#[test]
fn host_killed_at_every_step_of_the_lifecycle_converges_and_keeps_data() {
    let test = "host_killed_at_every_step_of_the_lifecycle_converges_and_keeps_data";
    if !privileged(test) {
        return;
    }
    private_mount_namespace();
    let started = Instant::now();
    let sb = Sandbox::new();
    sb.install(DRIVER);
    let seed = Rng::seed_from_env(test);
    let mut rng = Rng::new(seed);

    // Once through, so first-call-ever work (the state dirs) is done and
    // the census sees what every later volume's calls do.
    let mut warm = Walk::new(LoopVolume::new(&sb, "warm-up", "ext4", "16Mi"));
    for step in 0..LIFECYCLE.len() {
        warm.run(&sb, step)
            .unwrap_or_else(|e| panic!("warm-up: {e}"));
    }

    let all: Vec<usize> = (0..LIFECYCLE.len()).collect();
    let (ext4, ext4_times) = census(&sb, "census-ext4", "ext4", "16Mi");
    let mut rounds = rounds_for(&ext4, &ext4_times, &all, "ext4", "16Mi", &mut rng);
    // xfs: its mkfs is another tool, and a killed one leaves other traces.
    let (xfs, xfs_times) = census(&sb, "census-xfs", "xfs", "320Mi");
    rounds.extend(rounds_for(
        &xfs,
        &xfs_times,
        &[FORMAT_STEP],
        "xfs",
        "320Mi",
        &mut rng,
    ));
    for (fs, effects) in [("ext4", &ext4), ("xfs", &xfs)] {
        eprintln!("census ({fs}): state changes per step");
        for (step, effs) in effects.iter().enumerate() {
            let labels: Vec<&str> = effs.iter().map(|e| e.label.as_str()).collect();
            eprintln!("  {:<22} {}", LIFECYCLE[step].1, labels.join(" · "));
        }
    }

    // The rounds, a few at a time.
    let queue: Mutex<std::vec::IntoIter<(usize, Round)>> = Mutex::new(
        rounds
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let results: Mutex<Vec<RoundResult>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_ROUNDS {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some((n, round)) = next else { break };
                    let result = run_round(&sb, &round, n);
                    results.lock().unwrap().push(result);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| (r.round.fs_type, r.round.step));

    // The table: rounds per kill point.
    #[derive(Default)]
    struct Row {
        rounds: usize,
        killed: usize,
        converged: usize,
        first_failures: Vec<String>,
        left: BTreeMap<String, usize>,
    }
    let mut table: BTreeMap<(&str, usize, String), Row> = BTreeMap::new();
    for r in &results {
        let row = table
            .entry((r.round.fs_type, r.round.step, r.round.point.clone()))
            .or_default();
        row.rounds += 1;
        if r.killed_at.is_some() {
            row.killed += 1;
        }
        if r.problem.is_none() {
            row.converged += 1;
        }
        if let Some(first) = r.retries.first()
            && first != "Success"
            && !row.first_failures.contains(first)
        {
            row.first_failures.push(first.clone());
        }
        if let Some(left) = &r.left {
            *row.left.entry(left.clone()).or_default() += 1;
        }
    }
    eprintln!(
        "{:<5} {:<22} {:<78} {:>6} {:>6} {:>9}",
        "fs", "step", "kill point", "rounds", "killed", "converged"
    );
    for ((fs, step, point), row) in &table {
        let point: String = point.chars().take(78).collect();
        eprintln!(
            "{fs:<5} {:<22} {point:<78} {:>6} {:>6} {:>9}",
            LIFECYCLE[*step].1, row.rounds, row.killed, row.converged
        );
        if row.left.keys().any(|l| l != "blank") {
            let left: Vec<String> = row.left.iter().map(|(l, n)| format!("{l} ×{n}")).collect();
            eprintln!(
                "{:>29} device right after the kill: {}",
                "",
                left.join(", ")
            );
        }
        for f in &row.first_failures {
            eprintln!(
                "{:>29} first retry: {}",
                "",
                f.chars().take(200).collect::<String>()
            );
        }
    }
    let problems: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.problem.as_ref().map(|p| {
                format!(
                    "[{} {} {}; killed {}] {p}",
                    r.round.fs_type,
                    LIFECYCLE[r.round.step].1,
                    r.round.point,
                    r.killed_at.as_deref().unwrap_or("never")
                )
            })
        })
        .collect();
    let leftover: Vec<PathBuf> = paths_under(&sb.driver_state_dir(DRIVER))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    eprintln!(
        "{test}: {} rounds in {:.1?}",
        results.len(),
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} of {} rounds did not converge or lost data:\n{}",
        problems.len(),
        results.len(),
        problems.join("\n")
    );
    // A killed writer's temp file is removed by a later write of its kind
    // (every round writes again after its kill).
    assert!(
        leftover.is_empty(),
        "temp files of killed writers were left behind: {leftover:?}"
    );
}
