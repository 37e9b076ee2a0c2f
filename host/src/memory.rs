//! Memory a call makes the host spend, on both sides of the sandbox.
//!
//! The guest's linear memory is capped by the runtime's resource limiter.
//! That does not count what a plugin makes the *host* hold for it: every
//! `wasi:http` fields, request, body or stream it creates lives in host
//! memory, referred to from the guest by a 32-bit handle. A plugin keeping
//! 60 000 header maps grew the host past 2 GiB while its own memory stayed
//! at a few pages. So the host counts its own heap too, per call:
//!
//! - **Counted**: the process's global allocator counts every live byte
//!   ([`CountingAlloc`]). This covers wasmtime's and the host's own data,
//!   whatever import a plugin abuses, not a list of known attacks.
//! - **Budget**: [`set_budget`] arms a per-call budget (`[limits]
//!   host_memory_mib`). Crossing it interrupts the guest at once (the same
//!   epoch interruption as the deadline), so the call ends with "the
//!   plugin made the host exceed its memory budget"; the host function that
//!   crossed it finishes, so the overshoot is one host call's worth.
//! - **Last resort**: an allocation that would go past one and a half
//!   budgets (plus what was live when the budget was set) fails; instead of
//!   the default abort, the host answers kubelet `Failure` with a prepared
//!   message and exits: the allocator calls the handler it was made with
//!   ([`CountingAlloc::new`]; the binary gives it
//!   `flexwasm::supervisor::out_of_memory`).
//! - **Node-wide**: before it instantiates a plugin a call reserves its
//!   worst case (guest cap + host budget) from a pool shared by every call
//!   on the node ([`reserve_node_share`]); calls that do not fit wait, up
//!   to their deadline. Reservations are `flock`s, so a killed call frees
//!   its share at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Live heap bytes of this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Highest `LIVE` seen.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Crossing this interrupts the guest.
static SOFT_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Allocations past this fail.
static HARD_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static OVER_BUDGET: AtomicBool = AtomicBool::new(false);
/// Interrupts the guest when the budget is crossed.
static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();

/// The global allocator of the `flexwasm` binary: the system allocator,
/// counted.
pub struct CountingAlloc {
    /// Called, instead of failing the allocation, when one would go past
    /// the last-resort limit; it must not allocate, and does not return.
    out_of_memory: fn() -> !,
}

impl CountingAlloc {
    /// The counting allocator; `out_of_memory` answers and ends the process
    /// when the heap would pass its last-resort limit (see the module docs).
    pub const fn new(out_of_memory: fn() -> !) -> Self {
        CountingAlloc { out_of_memory }
    }

    #[inline]
    fn charge(&self, size: usize) -> bool {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if live > SOFT_LIMIT.load(Ordering::Relaxed) {
            if live > HARD_LIMIT.load(Ordering::Relaxed) {
                LIVE.fetch_sub(size, Ordering::Relaxed);
                (self.out_of_memory)();
            }
            if !OVER_BUDGET.swap(true, Ordering::Relaxed)
                && let Some(engine) = ENGINE.get()
            {
                // One atomic add: safe from inside the allocator.
                engine.increment_epoch();
            }
        }
        PEAK.fetch_max(live, Ordering::Relaxed);
        true
    }
}

// SAFETY: every method forwards to `System` with the same arguments and
// only adds atomic counting around it; a failed allocation is not counted.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: same layout as the caller's, as `GlobalAlloc::alloc` requires.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every
        // allocation of this allocator is).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.charge(new_size - layout.size());
        }
        // SAFETY: `ptr`/`layout` come from this allocator, as the caller
        // guarantees, and `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > layout.size() {
                LIVE.fetch_sub(new_size - layout.size(), Ordering::Relaxed);
            }
        } else if new_size < layout.size() {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Live heap bytes now (0 when the counting allocator is not installed,
/// e.g. in unit tests).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most heap the process held so far.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Arm the per-call budget: `bytes` more than is live now, after which the
/// guest of `engine` is interrupted; allocations fail past half as much
/// again.
pub fn set_budget(engine: &wasmtime::Engine, bytes: usize) {
    let _ = ENGINE.set(engine.clone());
    let base = live();
    let soft = base.saturating_add(bytes);
    HARD_LIMIT.store(soft.saturating_add(bytes / 2), Ordering::Relaxed);
    SOFT_LIMIT.store(soft, Ordering::Relaxed);
}

/// Before a plugin runs: allocations past `bytes` (plus what is live now)
/// fail, answered by the allocator's out-of-memory handler
/// ([`CountingAlloc::new`]).
pub fn set_limit(bytes: usize) {
    HARD_LIMIT.store(live().saturating_add(bytes), Ordering::Relaxed);
}

/// Whether the call's host-side memory went over its budget.
pub fn over_budget() -> bool {
    OVER_BUDGET.load(Ordering::Relaxed)
}

/// Lift the budget: the plugin's turn is over, and the host's own work
/// (mkfs, mount, the answer, the log line) must not fail because of what
/// the plugin spent. What the plugin left behind is freed with the store.
pub fn clear_budget() {
    SOFT_LIMIT.store(usize::MAX, Ordering::Relaxed);
    HARD_LIMIT.store(usize::MAX, Ordering::Relaxed);
}

/// Environment variable: the node-wide pool, in MiB, that concurrent calls
/// reserve their worst case from. Default: a quarter of the node's memory.
pub const NODE_POOL_ENV: &str = "FLEXWASM_NODE_MEMORY_MIB";
/// Granularity of reservations.
const SLOT_MIB: u64 = 16;
/// How long a call that does not fit waits before it looks again.
const RETRY: Duration = Duration::from_millis(20);

/// A call's share of the node-wide pool, held until dropped (or the process
/// dies: the kernel drops its locks).
pub struct NodeShare {
    _slots: Vec<nix::fcntl::Flock<std::fs::File>>,
    pub mib: u64,
}

fn mem_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The pool size in MiB (a whole number of slots): the environment's,
/// else a quarter of the node.
pub fn node_pool_mib() -> u64 {
    std::env::var(NODE_POOL_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| mem_total_mib().map(|m| m / 4))
        .unwrap_or(2048)
        .max(SLOT_MIB)
        / SLOT_MIB
        * SLOT_MIB
}

/// Reserve `mib` from the node-wide pool kept in `dir`, waiting until
/// `deadline` for other calls to finish.
pub fn reserve_node_share(dir: &Path, mib: u64, deadline: Instant) -> Result<NodeShare, String> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let pool = node_pool_mib();
    let slots = pool / SLOT_MIB;
    let need = mib.div_ceil(SLOT_MIB).max(1);
    if need > slots {
        return Err(format!(
            "the call may use up to {mib} MiB (guest memory cap plus host budget), more than the \
             node's whole pool of {pool} MiB for plugin calls ({NODE_POOL_ENV}); lower \
             [limits] memory_mib / host_memory_mib"
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the node memory pool {}: {e}", dir.display()))?;
    // Start at a different slot in each process, so calls do not all
    // contend for the first ones.
    let start = u64::from(std::process::id()) % slots;
    loop {
        let mut held = Vec::with_capacity(need as usize);
        for i in 0..slots {
            let path: PathBuf = dir.join(format!("slot-{:05}", (start + i) % slots));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                held.push(lock);
                if held.len() as u64 == need {
                    return Ok(NodeShare { _slots: held, mib });
                }
            }
        }
        drop(held);
        if Instant::now() + RETRY >= deadline {
            return Err(format!(
                "the node's pool of {pool} MiB for plugin calls stayed too full for this call's \
                 {mib} MiB until its deadline (too many calls at once; {NODE_POOL_ENV} sets the pool)"
            ));
        }
        // Jitter, so waiting calls do not retry in lockstep.
        let jitter = u64::from(std::process::id() % 7) * 3;
        std::thread::sleep(RETRY + Duration::from_millis(jitter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bounded_by_the_pool_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(100);
        // 2048 MiB default pool or the node's quarter: ask for all of it.
        let pool = node_pool_mib();
        let all = reserve_node_share(dir.path(), pool, soon()).unwrap();
        let e = reserve_node_share(dir.path(), SLOT_MIB, soon())
            .err()
            .unwrap();
        assert!(e.contains("stayed too full"), "{e}");
        drop(all);
        assert!(reserve_node_share(dir.path(), SLOT_MIB, soon()).is_ok());
        assert!(
            reserve_node_share(dir.path(), pool + SLOT_MIB, soon())
                .err()
                .unwrap()
                .contains("more than the node's whole pool")
        );
    }
}
