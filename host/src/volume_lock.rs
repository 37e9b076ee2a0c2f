//! One attach, detach or expand of a volume at a time, across processes.
//!
//! The attach/detach and expand controllers never run two such operations
//! of one volume at once, but nothing else on the node stops them from
//! overlapping (an operator running the driver by hand, a script, a test;
//! the lock is in this node's state dir, so it says nothing about calls on
//! other nodes): a plugin keeping a record beside the
//! device — the `loop` reference plugin records which image a volume was
//! attached from — would then see its record and the device go out of step
//! (an attach racing a detach left the device attached and its record
//! deleted). The host serializes them per volume, so a plugin's attach,
//! detach and expand each run alone for their volume.
//!
//! A lock is an exclusive `flock` of a file named after the volume's
//! SHA-256 in the driver's state dir; a killed holder's lock goes with its
//! process. The holder removes the file when done, so the dir holds only
//! the volumes being worked on (and those whose holder was killed, until
//! their next call); a waiter that locked a file since removed tries again.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::sha256_hex;

/// How often a waiting call tries again.
const RETRY: Duration = Duration::from_millis(10);

/// A held volume lock; released (and its file removed) on drop.
pub struct VolumeLock {
    path: PathBuf,
    file: Option<Flock<File>>,
}

impl Drop for VolumeLock {
    fn drop(&mut self) {
        // Removed while still held: a waiter that opened it then finds its
        // path gone (or another file there) and locks anew.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// The lock file of `volume` in `dir`.
fn lock_path(dir: &Path, volume: &str) -> PathBuf {
    dir.join(format!("{}.lock", &sha256_hex(volume.as_bytes())[..32]))
}

/// Take `volume`'s lock in `dir`, waiting for the call holding it until
/// `deadline`.
pub fn lock(dir: &Path, volume: &str, deadline: Instant) -> Result<VolumeLock, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the volume lock dir {}: {e}", dir.display()))?;
    let path = lock_path(dir, volume);
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            // Non-blocking: a FIFO put in its place must not hang the call.
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("cannot open the volume lock {}: {e}", path.display()))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(format!(
                "the volume lock {} is not a regular file",
                path.display()
            ));
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                let held = locked.metadata().map(|m| (m.dev(), m.ino()));
                let there = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
                if let (Ok(held), Ok(there)) = (held, there)
                    && held == there
                {
                    return Ok(VolumeLock {
                        path,
                        file: Some(locked),
                    });
                }
                // Its holder removed it before we locked it: again, at once.
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() + RETRY >= deadline {
                    return Err(format!(
                        "another attach, detach or expand of volume {volume:?} was still running \
                         at this call's deadline (the host runs one at a time per volume)"
                    ));
                }
                let jitter = u64::from(std::process::id() % 5);
                std::thread::sleep(RETRY + Duration::from_millis(jitter));
            }
            Err((_, e)) => {
                return Err(format!(
                    "cannot lock the volume lock {}: {e}",
                    path.display()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_volume_and_the_file_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(60);
        let a = lock(dir.path(), "pv-a", soon()).unwrap();
        // Another volume: not held up.
        let b = lock(dir.path(), "pv-b", soon()).unwrap();
        let e = lock(dir.path(), "pv-a", soon()).err().unwrap();
        assert!(e.contains("volume \"pv-a\" was still running"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        drop(a);
        drop(b);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A killed holder leaves its file, unlocked: taken, then removed.
        File::create(lock_path(dir.path(), "pv-a")).unwrap();
        drop(lock(dir.path(), "pv-a", soon()).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_waiter_gets_the_lock_when_its_holder_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path(), "pv", Instant::now()).unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let lock = lock(&path, "pv", Instant::now() + Duration::from_secs(10));
            (lock.is_ok(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let (locked, waited) = waiter.join().unwrap();
        assert!(locked);
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
    }
}
