//! Test support: temp dirs, private mount namespaces, cleanup guards.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::{CloneFlags, unshare};

use super::{loopdev, mount};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("flexwasm-node-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    /// A subdirectory, created.
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).expect("create dir");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prepare a privileged test: returns false (after saying why) when not
/// root, and panics instead when `CI` is set, so CI cannot silently skip.
///
/// When root, moves the *calling thread* into a new mount namespace with
/// `/` recursively private: mounts the test makes are invisible to the host
/// and vanish with the test thread. (Mount namespaces belong to tasks, i.e.
/// threads; libtest runs each test on its own thread, and the child
/// processes we spawn inherit the thread's namespace. The code under test
/// reads /proc/thread-self/mountinfo for exactly this reason.)
pub(crate) fn privileged(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        crate::test_skip::skip(test, "needs root (real loop devices, mkfs, mount)");
        return false;
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        // Root without CAP_SYS_ADMIN (an unprivileged container): same
        // treatment as not being root.
        crate::test_skip::skip(test, &format!("cannot create a mount namespace: {e}"));
        return false;
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / rprivate");
    true
}

/// Whether a tool is installed (tests that need optional tools skip without).
pub(crate) fn have(tool: &str) -> bool {
    super::exec::find_program(tool).is_ok()
}

/// A sparse image file of `size` bytes.
pub(crate) fn image(dir: &TempDir, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = File::create(&p).expect("create image");
    f.set_len(size).expect("size image");
    p
}

/// Bytes the file system really holds for a (sparse) image: any write to
/// it, even of zeros, shows up here.
pub(crate) fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat image").blocks() * 512
}

/// Processes whose command line mentions `needle` (e.g. a device path).
pub(crate) fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains(needle))
        .collect()
}

/// Detaches its loop device on drop, even if the test panicked.
pub(crate) struct LoopGuard(pub(crate) PathBuf);

impl LoopGuard {
    pub(crate) fn attach(image: &Path, read_only: bool) -> LoopGuard {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(image)
            .expect("open image");
        LoopGuard(loopdev::attach(&f, read_only).expect("attach"))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if loopdev::detach(&self.0).is_err() {
            // Still mounted or open (the test failed midway): let the kernel
            // detach it as soon as the last user goes away.
            loopdev::detach_eventually(&self.0);
        }
    }
}

/// Unmounts everything at a path on drop.
pub(crate) struct MountGuard(pub(crate) PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if mount::unmount_all(&self.0).is_err() {
            // Test cleanup only: the production code never detaches lazily.
            let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}
