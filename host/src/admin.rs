//! Operator and plugin-author commands that are not install: reading a
//! driver's state store, calling a driver as kubelet does, and stopping
//! cleanly on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::layout::{DriverLayout, DriverName, PLUGIN_FILE};
use crate::policy::Grant;
use crate::secrets::SecretSet;
use crate::state::StateStore;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From now on SIGTERM and SIGINT only set a flag [`stop_requested`]
/// reports: a following command (`logs -f`, `daemon`) ends its loop and
/// exits 0 (or uninstalls first).
pub fn catch_stop_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The secrets a driver's `[config]` marks, to keep them out of what an
/// admin command prints.
pub fn config_secrets(layout: &DriverLayout) -> SecretSet {
    Grant::load(&layout.driver_dir, &layout.state_dir)
        .ok()
        .and_then(|g| g.config)
        .map(|c| crate::capabilities::config::secrets(&c))
        .unwrap_or_default()
}

/// One entry of a driver's store, for `flexwasm state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: String,
    pub bytes: usize,
}

/// The keys (with `prefix`) of a driver's store and their sizes; empty
/// when it has no store.
pub fn state_list(layout: &DriverLayout, prefix: &str) -> anyhow::Result<Vec<StateEntry>> {
    let dir = layout.kv_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let store = StateStore::open(&dir, 0)?;
    let mut out = Vec::new();
    for key in store.list_keys(prefix)? {
        let bytes = store.get(&key)?.map_or(0, |v| v.len());
        out.push(StateEntry { key, bytes });
    }
    Ok(out)
}

/// A value of a driver's store as text: UTF-8 as is, anything else as
/// hex; `[config]` secrets the driver stored are shown as `<redacted>`.
pub fn state_get(layout: &DriverLayout, key: &str) -> anyhow::Result<Option<String>> {
    let dir = layout.kv_dir();
    if !dir.is_dir() {
        return Ok(None);
    }
    let store = StateStore::open(&dir, 0)?;
    let Some(value) = store.get(key)? else {
        return Ok(None);
    };
    let text = match String::from_utf8(value) {
        Ok(t) => t,
        Err(e) => {
            let bytes = e.into_bytes();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("<{} bytes, not UTF-8; hex> {hex}", bytes.len())
        }
    };
    Ok(Some(config_secrets(layout).redact(&text)))
}

/// What one call of a driver printed and how it exited, as kubelet would
/// see it (stdout and stderr together: kubelet reads `CombinedOutput`).
#[derive(Debug)]
pub struct CallOutput {
    pub executable: PathBuf,
    pub args: Vec<String>,
    pub output: String,
    pub exit_code: Option<i32>,
    pub duration_ms: f64,
}

impl CallOutput {
    /// The answer kubelet would parse: exactly one JSON object, else an
    /// error saying what kubelet would say.
    pub fn answer(&self) -> Result<serde_json::Value, String> {
        let v: serde_json::Value = serde_json::from_str(self.output.trim()).map_err(|e| {
            format!("kubelet could not parse this output as the driver's answer: {e}")
        })?;
        if v.is_object() {
            Ok(v)
        } else {
            Err("the answer is JSON but not an object".into())
        }
    }
}

/// Run the installed driver at `driver_dir` exactly as kubelet does: its
/// executable, `op` and `args` as separate argv entries, kubelet's
/// environment (ours), output read whole.
pub fn call_driver(
    driver_dir: &Path,
    driver: &DriverName,
    op: &str,
    args: &[String],
    env: &[(&str, PathBuf)],
) -> anyhow::Result<CallOutput> {
    let executable = driver_dir.join(&driver.driver);
    if !driver_dir.join(PLUGIN_FILE).is_file() {
        anyhow::bail!(
            "{driver} is not installed at {} (no {PLUGIN_FILE})",
            driver_dir.display()
        );
    }
    let started = std::time::Instant::now();
    let out = Command::new(&executable)
        .arg(op)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", executable.display()))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    let mut all = vec![op.to_string()];
    all.extend(args.iter().cloned());
    Ok(CallOutput {
        executable,
        args: all,
        output,
        exit_code: out.status.code(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Where `flexwasm call --plugin` installs an uninstalled plugin, and keeps
/// its state and log between calls: `$FLEXWASM_CALL_DIR`, else
/// `<tmp>/flexwasm-call`.
pub fn scratch_dir() -> PathBuf {
    std::env::var_os("FLEXWASM_CALL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("flexwasm-call"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_kubelet_could_not_parse_are_named() {
        let out = |s: &str| CallOutput {
            executable: PathBuf::new(),
            args: vec![],
            output: s.into(),
            exit_code: Some(0),
            duration_ms: 0.0,
        };
        assert!(out("{\"status\":\"Success\"}\n").answer().is_ok());
        assert!(out("{\"status\":\"Success\"} extra").answer().is_err());
        assert!(out("[1]").answer().is_err());
        assert!(out("").answer().is_err());
    }
}
