//! `[limits]`: the deadline, guest memory, host memory and output bounds
//! of one call, and the runtime [`Limits`] a call gets from them.

use serde::Deserialize;
use std::time::Duration;

use super::MAX_DEADLINE_SECS;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub deadline_seconds: Option<u64>,
    pub wait_for_attach_deadline_seconds: Option<u64>,
    pub memory_mib: Option<u64>,
    pub host_memory_mib: Option<u64>,
    pub output_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantLimits {
    pub deadline: Duration,
    pub wait_for_attach_deadline: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
    pub host_memory_bytes: usize,
}

impl Default for GrantLimits {
    fn default() -> Self {
        GrantLimits {
            deadline: Duration::from_secs(30),
            wait_for_attach_deadline: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 10,
            host_memory_bytes: 64 << 20,
        }
    }
}

/// Limits of one call. Defaults are deliberately small.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of the guest for this call.
    pub deadline: Duration,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_bytes: usize,
    /// How much of the guest's stdout, stderr and log is kept (each).
    pub output_bytes: usize,
    /// What the plugin may make the host hold for it (see [`crate::memory`]).
    pub host_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(30),
            memory_bytes: 64 * 1024 * 1024,
            output_bytes: 64 * 1024,
            host_memory_bytes: 64 * 1024 * 1024,
        }
    }
}

impl GrantLimits {
    /// The runtime limits of one call.
    pub fn for_op(&self, op: &str) -> Limits {
        Limits {
            deadline: if op == "waitforattach" {
                self.wait_for_attach_deadline
            } else {
                self.deadline
            },
            memory_bytes: self.memory_bytes,
            output_bytes: self.output_bytes,
            host_memory_bytes: self.host_memory_bytes,
        }
    }
}

/// `[limits]`, checked: every key in its range, absent ones the defaults.
pub(super) fn validate(l: RawLimits) -> Result<GrantLimits, String> {
    let range = |key: &str, v: Option<u64>, lo: u64, hi: u64, default: u64| match v {
        None => Ok(default),
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        Some(v) => Err(format!("limits.{key} = {v} is out of range {lo}..={hi}")),
    };
    let deadline = range(
        "deadline_seconds",
        l.deadline_seconds,
        1,
        MAX_DEADLINE_SECS,
        30,
    )?;
    let wfa = range(
        "wait_for_attach_deadline_seconds",
        l.wait_for_attach_deadline_seconds,
        1,
        MAX_DEADLINE_SECS,
        deadline,
    )?;
    Ok(GrantLimits {
        deadline: Duration::from_secs(deadline),
        wait_for_attach_deadline: Duration::from_secs(wfa),
        memory_bytes: (range("memory_mib", l.memory_mib, 1, 4096, 64)? << 20) as usize,
        output_bytes: (range("output_kib", l.output_kib, 1, 16384, 64)? << 10) as usize,
        host_memory_bytes: (range("host_memory_mib", l.host_memory_mib, 8, 1024, 64)? << 20)
            as usize,
    })
}
