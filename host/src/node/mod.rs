//! Node operations: every privileged act the host performs on the node.
//!
//! This module is the only place in the host that mounts, unmounts, formats,
//! probes, resizes, or attaches loop devices. Plugins never reach it
//! directly: the host validates a plugin's plan first (device under `/dev`,
//! granted fs type, the mount target kubelet gave) and then calls in here.
//!
//! Rules every function follows:
//!
//! - Nothing is printed. kubelet reads our stdout and stderr merged and must
//!   see exactly one JSON object, so child processes get `stdin` = `/dev/null`
//!   and captured `stdout`/`stderr` ([`exec`]).
//! - Every child process has a deadline and is killed when it runs out.
//! - Errors are [`NodeError`]; their `Display` text ends up in
//!   `kubectl describe pod`, so each says what failed, on what, and what a
//!   person can do about it.
//! - Anything read from the system (mountinfo, sysfs, tool output) is parsed
//!   defensively: malformed input is an error, never a panic.
//! - Destructive operations fail closed: `mkfs` runs only when a probe proves
//!   the device blank; an unmount that would need a lazy detach is an error.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

pub mod blockdev;
pub mod exec;
pub mod loopdev;
pub mod mkfs;
pub mod mount;
pub mod mount_options;
pub mod mountinfo;
pub mod resize;

#[cfg(test)]
mod privileged_tests;
#[cfg(test)]
mod testutil;

pub type Result<T> = std::result::Result<T, NodeError>;

/// Everything that can go wrong in a node operation.
///
/// Messages are sentence fragments meant for `kubectl describe`:
/// they name the object (device, path, tool) and, where there is one, the
/// remedy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    // ---- child processes (exec) ----
    #[error("{program} not found in {search_path}; install it on the node")]
    ProgramNotFound {
        program: String,
        search_path: &'static str,
    },

    #[error(
        "refusing to run {program:?}: only a bare tool name is allowed, looked up in {search_path}"
    )]
    InvalidProgramName {
        program: String,
        search_path: &'static str,
    },

    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("`{command}` did not finish within {} and was killed", DisplayDuration(*.timeout))]
    Timeout { command: String, timeout: Duration },

    #[error("`{command}` was killed because the driver was asked to stop")]
    Cancelled { command: String },

    #[error(
        "the call's deadline ran out before `{command}` could start; it was not run (the call needs a longer deadline, or an earlier step took too long)"
    )]
    DeadlineBeforeStart { command: String },

    #[error(
        "`{command}` was killed after {}: the call's deadline ran out (the tool's own limit is {}); the call needs a longer deadline, or the tool is stuck",
        DisplayDuration(*.after), DisplayDuration(*.cap)
    )]
    CallDeadline {
        command: String,
        /// How long the tool ran.
        after: Duration,
        /// The tool's own limit, which the deadline cut short.
        cap: Duration,
    },

    #[error("`{command}` failed ({status}){}", detail_suffix(.detail))]
    CommandFailed {
        command: String,
        /// "exit code 1" or "killed by signal 9".
        status: String,
        /// The last lines of the tool's stderr (or stdout if stderr was empty).
        detail: String,
    },

    // ---- generic system access ----
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("{context}: {errno}")]
    Sys { context: String, errno: Errno },

    #[error("{} does not exist", .path.display())]
    NotFound { path: PathBuf },

    #[error("{} is not valid UTF-8; refusing to pass it to a node tool", .path.display())]
    NonUtf8Path { path: PathBuf },

    // ---- mountinfo ----
    #[error("cannot parse mountinfo line {line}: {reason} (line: {text:?})")]
    MountinfoParse {
        line: usize,
        reason: String,
        text: String,
    },

    // ---- mount / unmount ----
    #[error("mount of {what} on {} (type {fs_type}, options {data:?}) failed: {}{hint}", .target.display(), .errno.desc())]
    Mount {
        /// The mount source (device, directory for bind mounts, …).
        what: String,
        target: PathBuf,
        fs_type: String,
        data: String,
        errno: Errno,
        /// Empty or "; <what to check>".
        hint: &'static str,
    },

    #[error(
        "cannot unmount {}: target is busy (a process still has files or its working directory there, or something is mounted below it; `fuser -vm {}` shows who); not detaching lazily",
        .target.display(), .target.display()
    )]
    UnmountBusy { target: PathBuf },

    #[error("cannot unmount {}: {errno}", .target.display())]
    Unmount { target: PathBuf, errno: Errno },

    #[error("{} is still a mount point after {layers} unmounts; giving up", .target.display())]
    UnmountStuck { target: PathBuf, layers: usize },

    // ---- mkfs / probe / resize ----
    #[error("mkfs refused: {} already holds {holds}; not formatting", .device.display())]
    MkfsRefused {
        device: PathBuf,
        holds: mkfs::Signature,
    },

    #[error(
        "filesystem type {fs_type:?} is not supported for {operation} (supported: {supported})"
    )]
    UnsupportedFs {
        fs_type: String,
        operation: &'static str,
        supported: &'static str,
    },

    #[error("{cause}; {}", interrupted_mkfs_remedy(.device, *.noted))]
    MkfsInterrupted {
        device: PathBuf,
        /// How mkfs was stopped: its own limit, the call's deadline, or a
        /// stop request.
        cause: Box<NodeError>,
        /// Whether the format was noted (`mkfs::format_noted`), so the
        /// next try wipes what it left and formats again.
        noted: bool,
    },

    #[error("mkfs.{fs_type} option {arg:?} rejected: {reason}")]
    MkfsArgRejected {
        fs_type: String,
        arg: String,
        reason: String,
    },

    #[error("cannot tell what {} holds: blkid {status}{}; not treating it as blank", .device.display(), detail_suffix(.detail))]
    ProbeFailed {
        device: PathBuf,
        status: String,
        detail: String,
    },

    #[error("cannot parse blkid output for {}: {reason}", .device.display())]
    ProbeParse { device: PathBuf, reason: String },

    #[error("mkfs.{fs_type} reported success but {} now holds {found}", .device.display())]
    FormatNotVerified {
        device: PathBuf,
        fs_type: String,
        found: mkfs::Signature,
    },

    #[error(
        "{cause}; the filesystem on {} was being resized offline and may be left half resized: run `e2fsck -f {}` before mounting it",
        .device.display(), .device.display()
    )]
    ResizeInterrupted {
        device: PathBuf,
        /// How resize2fs was stopped.
        cause: Box<NodeError>,
    },

    #[error("cannot grow the {fs_type} filesystem: {} is not a mount point (online grow needs the filesystem mounted there)", .mount_path.display())]
    NotMounted {
        fs_type: String,
        mount_path: PathBuf,
    },

    // ---- block devices ----
    #[error("{path} {what}, not a block device")]
    NotBlockDevice {
        /// "/x" or "/x (resolves to /y)".
        path: String,
        /// "is a regular file", "is a character device", …
        what: &'static str,
    },

    #[error("{} resolves to {}, which is outside /dev; refusing to use it as a device", .path.display(), .resolved.display())]
    OutsideDev { path: PathBuf, resolved: PathBuf },

    // ---- loop devices ----
    #[error("{} is not a loop device", .device.display())]
    NotLoopDevice { device: PathBuf },

    #[error("no free loop device: {detail}")]
    NoFreeLoop { detail: String },

    #[error("{op} on {} failed: {errno}", .device.display())]
    Loop {
        op: &'static str,
        device: PathBuf,
        errno: Errno,
    },

    #[error("{} is not attached to a backing file", .device.display())]
    LoopNotAttached { device: PathBuf },

    #[error("cannot detach {}: {reason}", .device.display())]
    LoopBusy { device: PathBuf, reason: String },

    #[error("cannot attach read-write: the backing file was opened read-only")]
    LoopFileReadOnly,
}

impl NodeError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        NodeError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, errno: Errno) -> Self {
        NodeError::Sys {
            context: context.into(),
            errno,
        }
    }
}

/// What to do about the half-made filesystem an interrupted mkfs leaves.
fn interrupted_mkfs_remedy(device: &std::path::Path, noted: bool) -> String {
    let d = device.display();
    if noted {
        format!(
            "{d} may now hold a partly made filesystem, which will not mount; the host noted the \
             format it started, so the next try wipes what it left and formats {d} again"
        )
    } else {
        format!(
            "{d} may now hold a partly made filesystem, which will not mount: check it with \
             `blkid -p {d}` and, if it holds nothing you need, wipe it with `wipefs -a {d}` \
             before retrying"
        )
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.as_millis() < 1000 {
            write!(f, "{} ms", d.as_millis())
        } else if d.subsec_millis() == 0 {
            write!(f, "{} s", d.as_secs())
        } else {
            write!(f, "{:.1} s", d.as_secs_f64())
        }
    }
}
