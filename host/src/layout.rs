//! Where things are on a node: the driver's identity (from its own path),
//! its directory, its state and its log.
//!
//! ```text
//! <plugin-dir>/<vendor>~<driver>/<driver>        this binary
//! <plugin-dir>/<vendor>~<driver>/plugin.wasm     the vendor's component
//! <plugin-dir>/<vendor>~<driver>/.plugin.cwasm   precompiled at install
//! $FLEXWASM_STATE_DIR/<vendor>~<driver>/         state, compile cache, loop images
//!     (default /var/lib/flexwasm)
//! $FLEXWASM_LOG_DIR/<vendor>~<driver>.log        JSON-lines call log
//!     (default /var/log/flexwasm)
//! ```
//!
//! Nothing is written inside the driver directory on a call: every write
//! there makes kubelet re-probe the driver.

use std::path::{Path, PathBuf};

pub const PLUGIN_FILE: &str = "plugin.wasm";
pub const PRECOMPILED_FILE: &str = ".plugin.cwasm";
/// Sidecar of [`PRECOMPILED_FILE`]: which wasm and engine it was built for.
pub const PRECOMPILED_KEY_FILE: &str = ".plugin.cwasm.key";

pub const STATE_DIR_ENV: &str = "FLEXWASM_STATE_DIR";
pub const LOG_DIR_ENV: &str = "FLEXWASM_LOG_DIR";
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/flexwasm";
pub const DEFAULT_LOG_DIR: &str = "/var/log/flexwasm";

/// `vendor/driver`, as kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverName {
    pub vendor: String,
    pub driver: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NameError {
    #[error("driver name '{0}' must look like VENDOR/NAME")]
    Shape(String),
    #[error(
        "'{0}' is not a valid vendor or driver name: use letters, digits, '.', '_' and '-', not starting with '.' or '-'"
    )]
    Part(String),
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl DriverName {
    pub fn new(vendor: &str, driver: &str) -> Result<Self, NameError> {
        for part in [vendor, driver] {
            if !valid_part(part) {
                return Err(NameError::Part(part.chars().take(100).collect()));
            }
        }
        Ok(DriverName {
            vendor: vendor.to_string(),
            driver: driver.to_string(),
        })
    }

    /// From `vendor/driver`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (vendor, driver) = s
            .split_once('/')
            .ok_or_else(|| NameError::Shape(s.chars().take(100).collect()))?;
        Self::new(vendor, driver)
    }

    /// `vendor~driver`, the directory name kubelet expects.
    pub fn dir_name(&self) -> String {
        format!("{}~{}", self.vendor, self.driver)
    }
}

impl std::fmt::Display for DriverName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vendor, self.driver)
    }
}

/// Everything a call needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct DriverLayout {
    pub name: DriverName,
    /// `<plugin-dir>/<vendor>~<driver>`
    pub driver_dir: PathBuf,
    /// `<state root>/<vendor>~<driver>`
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
}

impl DriverLayout {
    /// Identity from the path this binary was executed as
    /// (`<plugin-dir>/<vendor>~<driver>/<driver>`). `None` when the path does
    /// not have that shape, i.e. the binary was run as `flexwasm`.
    pub fn from_exe_path(exe: &Path) -> Option<Self> {
        let file = exe.file_name()?.to_str()?;
        let dir = exe.parent()?;
        let dir_name = dir.file_name()?.to_str()?;
        // kubelet: `~` stands for `/`; the executable is the part after the last `~`.
        let (vendor, driver) = dir_name.rsplit_once('~')?;
        if driver != file {
            return None;
        }
        let name = DriverName::new(vendor, driver).ok()?;
        let driver_dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(dir)
        };
        Some(Self::for_driver(name, driver_dir))
    }

    pub fn for_driver(name: DriverName, driver_dir: PathBuf) -> Self {
        let state_root = std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT));
        let log_dir = std::env::var_os(LOG_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR));
        let dir_name = name.dir_name();
        DriverLayout {
            state_dir: state_root.join(&dir_name),
            log_file: log_dir.join(format!("{dir_name}.log")),
            name,
            driver_dir,
        }
    }

    pub fn plugin_wasm(&self) -> PathBuf {
        self.driver_dir.join(PLUGIN_FILE)
    }

    pub fn precompiled(&self) -> PathBuf {
        self.driver_dir.join(PRECOMPILED_FILE)
    }

    pub fn precompiled_key(&self) -> PathBuf {
        self.driver_dir.join(PRECOMPILED_KEY_FILE)
    }

    /// Compiled code cached when the install-time file is missing or stale.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// The durable key/value store of the `state` import.
    pub fn kv_dir(&self) -> PathBuf {
        self.state_dir.join("kv")
    }

    /// The node-wide pool concurrent calls reserve memory from (beside the
    /// drivers' state dirs, shared by all of them).
    pub fn node_memory_pool_dir(&self) -> PathBuf {
        self.state_dir
            .parent()
            .unwrap_or(&self.state_dir)
            .join(".node/memory")
    }

    /// The one directory the `loop` import may keep images in.
    pub fn loop_image_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    /// Where the host notes a format it has started until it has verified
    /// it (`node::mkfs::format_noted`).
    pub fn formats_dir(&self) -> PathBuf {
        self.state_dir.join("host/formats")
    }

    /// Where calls that attach, detach or expand a volume take its lock
    /// (`volume_lock`).
    pub fn volume_locks_dir(&self) -> PathBuf {
        self.state_dir.join("host/volume-locks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_path() {
        let l = DriverLayout::from_exe_path(Path::new("/plugins/acme~loop/loop")).unwrap();
        assert_eq!(l.name.to_string(), "acme/loop");
        assert_eq!(l.driver_dir, Path::new("/plugins/acme~loop"));
        assert!(DriverLayout::from_exe_path(Path::new("/usr/bin/flexwasm")).is_none());
        assert!(DriverLayout::from_exe_path(Path::new("/p/acme~loop/other")).is_none());
        // The executable is the part after the last `~`; a `~` in the vendor is refused.
        assert!(DriverLayout::from_exe_path(Path::new("/p/a~b~c/c")).is_none());
    }

    #[test]
    fn names_are_checked() {
        assert!(DriverName::parse("acme/loop").is_ok());
        assert!(DriverName::parse("acme").is_err());
        assert!(DriverName::parse("../x/y").is_err());
        assert!(DriverName::parse("acme/.hidden").is_err());
    }
}
