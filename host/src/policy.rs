//! The grant policy: what an operator allows one plugin to do.
//!
//! The file is `<driver-dir>/policy.toml`, placed by
//! `flexwasm install --policy FILE`. It is read in two stages, like
//! ripgrep's low/high args: [`RawPolicy`] is the file as written (every
//! key optional, unknown keys rejected so a typo cannot silently drop a
//! restriction); [`Grant`] is the validated result the host enforces.
//!
//! Deny by default: with no policy file a plugin gets only the baseline,
//! and in a policy every absent key or table means denied. The baseline —
//! linked for every plugin, no grant needed — is
//! `flexwasm:driver/{types,log}`, `wasi:io/*`, `wasi:clocks/*`,
//! `wasi:random/*` and `wasi:cli/*` with an empty environment, stdin
//! closed and stdout/stderr captured into the call log.
//! `wasi:filesystem`, `wasi:sockets` and anything else are never linked.
//!
//! ```toml
//! # Required: SHA-256 (hex) of the plugin.wasm this grant is for. A
//! # different plugin.wasm is refused. `flexwasm install --policy` fills in
//! # the literal "auto" with the installed plugin's hash.
//! plugin_sha256 = "…"
//!
//! [limits]                               # every key optional
//! deadline_seconds = 30                  # per call; default 30, 1..=540
//! wait_for_attach_deadline_seconds = 30  # default: deadline_seconds; at most 540
//!                                        # (9 min, below kubelet's 10 min kill)
//! memory_mib = 64                        # guest memory cap; default 64, 1..=4096
//! host_memory_mib = 64                   # what the plugin may make the host hold
//!                                        # for it (HTTP headers, bodies, other
//!                                        # resources); default 64, 8..=1024
//! output_kib = 64                        # kept of the plugin's log, stdout and
//!                                        # stderr, each; default 64, 1..=16384
//!
//! [state]                                # grants flexwasm:driver/state
//! quota_kib = 4096                       # disk use of the store; default 4096,
//!                                        # 1..=1048576. An entry costs its blocks
//!                                        # (at least one, 4 KiB on most
//!                                        # filesystems) + 2 KiB: ~680 small entries
//!
//! [loop]                                 # grants flexwasm:driver/loop
//! image_dir = "images"                   # required; relative to the driver's
//!                                        # state dir, or absolute
//! max_images = 64                        # images in image_dir; default 64, 1..=65536
//! max_total_gib = 256                    # sum of their sizes (apparent: images are
//!                                        # sparse); default 256, 1..=1048576
//! max_attached = 32                      # loop devices attached from them at
//!                                        # once; default 32, 1..=16384
//! max_attaches_per_call = 1              # new attaches in one call (a call is one
//!                                        # volume); default 1, 1..=64
//!
//! [devices]                              # grants flexwasm:driver/devices (read-only)
//! claim = ["loop-backing-dir:/var/lib/array/images", "by-id:scsi-3600a098",
//!          "serial:ARR", "wwn:600a098"]  # devices beyond its own loop images it may
//!                                        # have formatted or mounted; default none
//!
//! [mount]
//! format = ["ext4", "xfs"]               # fs types the host may mkfs; default none
//! block = ["ext4", "xfs"]                # fs types a block plan may mount; default none
//! filesystem = ["tmpfs"]                 # fs types a filesystem plan may mount; default none.
//!                                        # Only types that need no device: filesystems on
//!                                        # block devices (ext4, xfs, vfat, …, fuseblk) and
//!                                        # kernel views of the node (proc, sysfs, devtmpfs,
//!                                        # cgroup, debugfs, bpf, …; also overlay, which
//!                                        # exposes host paths, and ramfs, which has no size
//!                                        # limit) are refused
//! options = ["noatime", "size", "mode"]  # mount option names (before '='); default none.
//!                                        # "suid", "dev", "exec" only if listed; unless
//!                                        # listed the host adds nosuid,nodev
//!
//! [http]                                 # grants wasi:http (outbound HTTP)
//! allow = ["https://array.example:8443"] # scheme://host[:port]; port defaults by
//!                                        # scheme; "*.example.com" matches any
//!                                        # subdomain (not the apex); empty = deny all
//! allow_loopback = false                 # 127.0.0.0/8, ::1
//! allow_link_local = false               # 169.254.0.0/16, fe80::/10
//! allow_metadata = false                 # 169.254.169.254, fd00:ec2::254 (cloud metadata)
//! ca_bundle = "/etc/flexwasm/acme-ca.pem" # extra trusted CAs (PEM), besides the system's; root-only file
//! max_response_kib = 1024                # response bodies are cut off beyond this
//!
//! [config]                               # values handed to the plugin, typed as written
//! endpoint = "https://array.example:8443"
//! port = 8443                            # also: true/false, ["a", "b"]
//! token = { value = "…", secret = true } # secret: never logged, never in a message
//! credentials = { file = "/etc/acme/creds.json", secret = true }  # read per call, ≤ 64 KiB
//! ```
//!
//! Disk space: a state write, or a loop image created or grown, is refused
//! when it would leave the filesystem holding it with less than max(64 MiB,
//! 10 %) available or 5 % of its inodes free (kubelet's default eviction
//! thresholds; see [`crate::state::space`]). Images are sparse, so creating
//! or growing one is refused unless what all of them could still grow
//! (apparent minus allocated size, summed) fits in the space available above
//! that reserve. For 256 volumes of the `loop` plugin, say, grant
//! `max_images = 256`, `max_attached = 256`, `max_total_gib` at least 256
//! times the volume size, and `[state] quota_kib = 2048`.
//!
//! Addresses are checked after name resolution, on every address a name
//! resolves to, and the connection goes to the address that was checked (no
//! second lookup a DNS answer could change). Unspecified, multicast and
//! broadcast addresses are always refused; IPv4-mapped IPv6 addresses are
//! checked as the IPv4 address they carry.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::blockdev::normalise_wwn;

pub const POLICY_FILE: &str = "policy.toml";
/// kubelet kills `waitforattach` after 10 minutes; stay well below.
pub const MAX_DEADLINE_SECS: u64 = 540;
const MAX_POLICY_BYTES: u64 = 256 * 1024;

/// The policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub plugin_sha256: Option<String>,
    pub limits: Option<RawLimits>,
    pub state: Option<RawState>,
    #[serde(rename = "loop")]
    pub loop_images: Option<RawLoop>,
    pub devices: Option<RawDevices>,
    pub mount: Option<RawMount>,
    pub http: Option<RawHttp>,
    pub config: Option<BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub allow: Option<Vec<String>>,
    pub allow_loopback: Option<bool>,
    pub allow_link_local: Option<bool>,
    pub allow_metadata: Option<bool>,
    pub ca_bundle: Option<String>,
    pub max_response_kib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigValue {
    value: Option<toml::Value>,
    file: Option<String>,
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub deadline_seconds: Option<u64>,
    pub wait_for_attach_deadline_seconds: Option<u64>,
    pub memory_mib: Option<u64>,
    pub host_memory_mib: Option<u64>,
    pub output_kib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub quota_kib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoop {
    pub image_dir: Option<String>,
    pub max_images: Option<u64>,
    pub max_total_gib: Option<u64>,
    pub max_attached: Option<u64>,
    pub max_attaches_per_call: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    pub claim: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub format: Option<Vec<String>>,
    pub block: Option<Vec<String>>,
    pub filesystem: Option<Vec<String>>,
    pub options: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("policy {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What the host enforces for one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Where it came from; `None` for the baseline (no policy file).
    pub source: Option<PathBuf>,
    pub plugin_sha256: Option<String>,
    pub limits: GrantLimits,
    /// Quota in bytes, when `state` is granted.
    pub state_quota: Option<u64>,
    /// Absolute image dir, when `loop` is granted.
    pub loop_image_dir: Option<PathBuf>,
    /// How far `loop` may go (the defaults when it is not granted).
    pub loop_limits: LoopLimits,
    pub devices: bool,
    /// Devices beyond its own loop images the plugin may have formatted,
    /// mounted or handed to kubelet (see [`crate::device_claim`]).
    pub device_claims: Vec<ClaimPattern>,
    pub format: Vec<String>,
    pub block: Vec<String>,
    pub filesystem: Vec<String>,
    pub mount_options: Vec<String>,
    /// Outbound HTTP, when `[http]` is granted.
    pub http: Option<HttpGrant>,
    /// `[config]`, when present (even empty): grants flexwasm:driver/config.
    pub config: Option<BTreeMap<String, ConfigValue>>,
}

/// The `[loop]` bounds on one driver's images and loop devices.
///
/// Defaults — what `[loop]` with only `image_dir` grants: 64 images,
/// 256 GiB in all, 32 attached at once, 1 new attach per call. Enough for a
/// small node and for the reference `loop` plugin's 1 GiB volumes, and a
/// runaway plugin can neither fill the image filesystem (sparse growth is
/// also checked against its free space) nor use up the node's loop devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopLimits {
    pub max_images: u64,
    /// Sum of the images' apparent sizes.
    pub max_total_bytes: u64,
    /// Loop devices attached from the images at once.
    pub max_attached: u64,
    /// Loop devices one call may attach.
    pub max_attaches_per_call: u64,
}

impl Default for LoopLimits {
    fn default() -> Self {
        LoopLimits {
            max_images: 64,
            max_total_bytes: 256 << 30,
            max_attached: 32,
            max_attaches_per_call: 1,
        }
    }
}

/// One `[devices] claim` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPattern {
    /// A loop device whose backing file lies inside this directory.
    LoopBackingDir(PathBuf),
    /// A device with a `/dev/disk/by-id/` link whose name starts with this.
    ById(String),
    Serial(String),
    /// Compared without `naa.` / `0x` and case.
    Wwn(String),
}

impl ClaimPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("devices.claim entry '{s}' must look like kind:value"))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("devices.claim entry '{s}' has an empty value"));
        }
        match kind {
            "loop-backing-dir" => {
                let p = Path::new(value);
                if !p.is_absolute() || p == Path::new("/") || value.contains("..") {
                    return Err(format!(
                        "devices.claim '{s}': the directory must be absolute, not /, without '..'"
                    ));
                }
                Ok(ClaimPattern::LoopBackingDir(p.to_path_buf()))
            }
            "by-id" => Ok(ClaimPattern::ById(value.to_string())),
            "serial" => Ok(ClaimPattern::Serial(value.to_string())),
            "wwn" => Ok(ClaimPattern::Wwn(normalise_wwn(value))),
            other => Err(format!(
                "devices.claim entry '{s}': unknown kind '{other}' (use loop-backing-dir, by-id, serial or wwn)"
            )),
        }
    }

    pub fn render(&self) -> String {
        match self {
            ClaimPattern::LoopBackingDir(d) => format!("loop-backing-dir:{}", d.display()),
            ClaimPattern::ById(p) => format!("by-id:{p}"),
            ClaimPattern::Serial(p) => format!("serial:{p}"),
            ClaimPattern::Wwn(p) => format!("wwn:{p}"),
        }
    }
}

/// One `[http] allow` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedOrigin {
    pub https: bool,
    /// Lowercase host or IP literal; `*.` prefix for a subdomain wildcard.
    pub host: String,
    pub port: u16,
}

impl AllowedOrigin {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("http.allow entry '{entry}' {why}; expected scheme://host[:port]");
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("has no scheme"))?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad("has a scheme other than http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad("must be an origin only (no path, query or user info)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed ["))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("has an invalid port"))?,
            None if https => 443,
            None => 80,
        };
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && (name.parse::<std::net::IpAddr>().is_ok()
                || name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid || (host.starts_with("*.") && name.parse::<std::net::IpAddr>().is_ok()) {
            return Err(bad("has an invalid host"));
        }
        Ok(AllowedOrigin { https, host, port })
    }

    /// Whether a request to `https`/`host`/`port` is covered by this entry.
    pub fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        if self.https != https || self.port != port {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpGrant {
    pub allow: Vec<AllowedOrigin>,
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    pub allow_metadata: bool,
    pub ca_bundle: Option<PathBuf>,
    pub max_response_bytes: u64,
}

impl HttpGrant {
    /// Nothing allowed (what a plugin without `[http]` would get, were
    /// wasi:http linked at all — it is not).
    pub fn deny_all() -> Self {
        HttpGrant {
            allow: Vec::new(),
            allow_loopback: false,
            allow_link_local: false,
            allow_metadata: false,
            ca_bundle: None,
            max_response_bytes: 0,
        }
    }
}

/// A `[config]` value as the operator typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigData {
    Text(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<String>),
}

/// A `[config]` value: given inline or read (as text) from a file at call
/// time.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    Value(ConfigData),
    File(PathBuf),
    /// In a call's snapshot ([`crate::capabilities::config::snapshot`]): a
    /// file that could not be read, and why.
    Unreadable(String),
}

/// The typed value of `config.<key>`.
fn config_data(key: &str, value: toml::Value) -> Result<ConfigData, String> {
    Ok(match value {
        toml::Value::String(s) => ConfigData::Text(s),
        toml::Value::Integer(i) => ConfigData::Integer(i),
        toml::Value::Boolean(b) => ConfigData::Boolean(b),
        toml::Value::Array(items) => ConfigData::List(
            items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(format!(
                        "config.{key}: a list must hold strings only, not {}",
                        other.type_str()
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "config.{key} must be a string, a whole number, true/false, a list of strings, \
                 {{ value = …, secret = true }} or {{ file = \"/path\", secret = true }}, not {}",
                other.type_str()
            ));
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigValue {
    pub source: ConfigSource,
    pub secret: bool,
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

/// A WIT interface a plugin may import, and whether a grant allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Always linked (types, log, WASI stdio/clocks/random).
    Baseline,
    State,
    Loop,
    Devices,
    Config,
    Http,
    /// Never linked (filesystem, sockets, unknown).
    Never,
}

impl Capability {
    /// Classify an import by name (`ns:pkg/iface@version`).
    pub fn of_import(name: &str) -> Capability {
        let bare = name.split('@').next().unwrap_or(name);
        match bare {
            "flexwasm:driver/types" | "flexwasm:driver/log" => Capability::Baseline,
            "flexwasm:driver/state" => Capability::State,
            "flexwasm:driver/loop" => Capability::Loop,
            "flexwasm:driver/devices" => Capability::Devices,
            "flexwasm:driver/config" => Capability::Config,
            "wasi:http/outgoing-handler" | "wasi:http/types" => Capability::Http,
            b if b.starts_with("wasi:io/")
                || b.starts_with("wasi:clocks/")
                || b.starts_with("wasi:random/")
                || b.starts_with("wasi:cli/") =>
            {
                Capability::Baseline
            }
            _ => Capability::Never,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Baseline => "baseline",
            Capability::State => "state",
            Capability::Loop => "loop",
            Capability::Devices => "devices",
            Capability::Config => "config",
            Capability::Http => "http",
            Capability::Never => "never granted",
        }
    }
}

/// What an import lets a plugin do, in plain words.
pub fn describe_import(name: &str) -> &'static str {
    let bare = name.split('@').next().unwrap_or(name);
    match bare {
        "flexwasm:driver/types" => "shared type definitions (no functions)",
        "flexwasm:driver/log" => "may write log lines to the driver's call log",
        "flexwasm:driver/state" => {
            "may keep durable key/value state (quota-bound) in the driver's state dir"
        }
        "flexwasm:driver/loop" => {
            "may create, grow, attach and detach loop devices backed by image files in one directory"
        }
        "flexwasm:driver/devices" => {
            "may list this node's block devices (read-only: paths, sizes, serials, WWNs, loop backing files)"
        }
        b if b.starts_with("wasi:cli/std") => {
            "standard streams: stdin closed, stdout/stderr captured to the call log"
        }
        "wasi:cli/environment" => "environment variables and arguments: always empty",
        "wasi:cli/exit" => "may end its own instance",
        b if b.starts_with("wasi:cli/terminal") => "terminal queries: always 'not a terminal'",
        b if b.starts_with("wasi:io/") => "stream and poll plumbing for its own stdio",
        b if b.starts_with("wasi:clocks/") => "may read the clock",
        b if b.starts_with("wasi:random/") => "may draw random numbers",
        b if b.starts_with("wasi:filesystem/") => {
            "host files: never granted, no host file is visible to plugins"
        }
        b if b.starts_with("wasi:sockets/") => "network sockets: never granted",
        "flexwasm:driver/config" => "may read the values the operator configured for this driver",
        "wasi:http/outgoing-handler" => "may send HTTP requests to the hosts the grant allows",
        "wasi:http/types" => "HTTP request and response types (for outbound HTTP)",
        _ => "unknown interface: never granted",
    }
}

impl Grant {
    /// The grant of a plugin installed without a policy: baseline only.
    pub fn baseline() -> Self {
        Grant {
            source: None,
            plugin_sha256: None,
            limits: GrantLimits::default(),
            state_quota: None,
            loop_image_dir: None,
            loop_limits: LoopLimits::default(),
            devices: false,
            device_claims: Vec::new(),
            format: Vec::new(),
            block: Vec::new(),
            filesystem: Vec::new(),
            mount_options: Vec::new(),
            http: None,
            config: None,
        }
    }

    pub fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::Baseline => true,
            Capability::State => self.state_quota.is_some(),
            Capability::Loop => self.loop_image_dir.is_some(),
            Capability::Devices => self.devices,
            Capability::Config => self.config.is_some(),
            Capability::Http => self.http.is_some(),
            Capability::Never => false,
        }
    }

    /// The imports this grant does not allow.
    pub fn ungranted<'a>(&self, imports: &'a [String]) -> Vec<&'a str> {
        imports
            .iter()
            .filter(|i| !self.allows(Capability::of_import(i)))
            .map(String::as_str)
            .collect()
    }

    /// Load the grant of a driver: its `policy.toml`, or the baseline when
    /// there is none. `state_dir` anchors a relative loop image dir.
    pub fn load(driver_dir: &Path, state_dir: &Path) -> Result<Grant, PolicyError> {
        let path = driver_dir.join(POLICY_FILE);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Grant::baseline()),
            _ => {}
        }
        // What the policy grants is what the host does as root: only root
        // may be able to change it (see `crate::trust`).
        let bytes =
            crate::trust::read(&path, false, MAX_POLICY_BYTES).map_err(|e| PolicyError::Read {
                path: path.clone(),
                reason: format!("it is not trusted: {e}"),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| PolicyError::Invalid {
            path: path.clone(),
            reason: "it is not UTF-8 text".into(),
        })?;
        Self::parse(&text, &path, state_dir)
    }

    /// Stage one and two: text → [`RawPolicy`] → [`Grant`].
    pub fn parse(text: &str, path: &Path, state_dir: &Path) -> Result<Grant, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;
        let mut grant = Grant::baseline();
        grant.source = Some(path.to_path_buf());

        let sha = raw.plugin_sha256.ok_or_else(|| {
            invalid(
                "plugin_sha256 is required: the SHA-256 of the plugin.wasm this grant is for"
                    .into(),
            )
        })?;
        let sha = sha.trim().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "plugin_sha256 '{}' is not 64 hex digits",
                sha.chars().take(80).collect::<String>()
            )));
        }
        grant.plugin_sha256 = Some(sha);

        if let Some(l) = raw.limits {
            let range = |key: &str, v: Option<u64>, lo: u64, hi: u64, default: u64| match v {
                None => Ok(default),
                Some(v) if (lo..=hi).contains(&v) => Ok(v),
                Some(v) => Err(invalid(format!(
                    "limits.{key} = {v} is out of range {lo}..={hi}"
                ))),
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
            grant.limits = GrantLimits {
                deadline: Duration::from_secs(deadline),
                wait_for_attach_deadline: Duration::from_secs(wfa),
                memory_bytes: (range("memory_mib", l.memory_mib, 1, 4096, 64)? << 20) as usize,
                output_bytes: (range("output_kib", l.output_kib, 1, 16384, 64)? << 10) as usize,
                host_memory_bytes: (range("host_memory_mib", l.host_memory_mib, 8, 1024, 64)? << 20)
                    as usize,
            };
        }

        if let Some(s) = raw.state {
            let kib = s.quota_kib.unwrap_or(4096);
            if !(1..=1 << 20).contains(&kib) {
                return Err(invalid(format!(
                    "state.quota_kib = {kib} is out of range 1..=1048576"
                )));
            }
            grant.state_quota = Some(kib << 10);
        }

        if let Some(l) = raw.loop_images {
            let dir = l.image_dir.ok_or_else(|| {
                invalid("loop.image_dir is required when [loop] is granted".into())
            })?;
            grant.loop_image_dir = Some(image_dir(&dir, state_dir).map_err(invalid)?);
            let defaults = LoopLimits::default();
            let bound = |key: &str, v: Option<u64>, hi: u64, default: u64| match v {
                None => Ok(default),
                Some(v) if (1..=hi).contains(&v) => Ok(v),
                Some(v) => Err(invalid(format!(
                    "loop.{key} = {v} is out of range 1..={hi}"
                ))),
            };
            grant.loop_limits = LoopLimits {
                max_images: bound("max_images", l.max_images, 65536, defaults.max_images)?,
                max_total_bytes: bound(
                    "max_total_gib",
                    l.max_total_gib,
                    1 << 20,
                    defaults.max_total_bytes >> 30,
                )? << 30,
                max_attached: bound("max_attached", l.max_attached, 16384, defaults.max_attached)?,
                max_attaches_per_call: bound(
                    "max_attaches_per_call",
                    l.max_attaches_per_call,
                    64,
                    defaults.max_attaches_per_call,
                )?,
            };
        }

        if let Some(d) = raw.devices {
            grant.devices = true;
            grant.device_claims = d
                .claim
                .unwrap_or_default()
                .iter()
                .map(|c| ClaimPattern::parse(c))
                .collect::<Result<_, _>>()
                .map_err(invalid)?;
        }

        if let Some(m) = raw.mount {
            let fs_list = |key: &str, v: Option<Vec<String>>| -> Result<Vec<String>, PolicyError> {
                let v = v.unwrap_or_default();
                for t in &v {
                    if t.is_empty()
                        || t.len() > 32
                        || !t
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    {
                        return Err(invalid(format!(
                            "mount.{key}: '{t}' is not a filesystem type name"
                        )));
                    }
                }
                Ok(v)
            };
            grant.format = fs_list("format", m.format)?;
            grant.block = fs_list("block", m.block)?;
            grant.filesystem = fs_list("filesystem", m.filesystem)?;
            for f in &grant.filesystem {
                check_filesystem_plan_type(f)
                    .map_err(|why| invalid(format!("mount.filesystem: {why}")))?;
            }
            for f in &grant.format {
                if !crate::node::mkfs::is_supported_fs(f) {
                    return Err(invalid(format!(
                        "mount.format: flexwasm cannot format '{f}' (supported: ext2, ext3, ext4, xfs, btrfs)"
                    )));
                }
            }
            let options = m.options.unwrap_or_default();
            for o in &options {
                if o.is_empty() || o.contains('=') || o.contains(',') || o.len() > 64 {
                    return Err(invalid(format!(
                        "mount.options: '{o}' must be an option name such as \"noatime\" or \"size\" (no '=' or ',')"
                    )));
                }
            }
            grant.mount_options = options;
        }

        if let Some(h) = raw.http {
            let allow = h
                .allow
                .unwrap_or_default()
                .iter()
                .map(|e| AllowedOrigin::parse(e))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let kib = h.max_response_kib.unwrap_or(1024);
            if !(1..=1 << 20).contains(&kib) {
                return Err(invalid(format!(
                    "http.max_response_kib = {kib} is out of range 1..=1048576"
                )));
            }
            let ca_bundle = match h.ca_bundle {
                Some(p) if Path::new(&p).is_absolute() => Some(PathBuf::from(p)),
                Some(p) => {
                    return Err(invalid(format!(
                        "http.ca_bundle '{p}' must be an absolute path"
                    )));
                }
                None => None,
            };
            grant.http = Some(HttpGrant {
                allow,
                allow_loopback: h.allow_loopback.unwrap_or(false),
                allow_link_local: h.allow_link_local.unwrap_or(false),
                allow_metadata: h.allow_metadata.unwrap_or(false),
                ca_bundle,
                max_response_bytes: kib << 10,
            });
        }

        if let Some(config) = raw.config {
            let mut values = BTreeMap::new();
            for (k, v) in config {
                let value = match v {
                    toml::Value::Table(t) => {
                        let raw: RawConfigValue =
                            toml::Value::Table(t)
                                .try_into()
                                .map_err(|e: toml::de::Error| {
                                    invalid(format!("config.{k}: {}", one_line(&e.to_string())))
                                })?;
                        let source = match (raw.value, raw.file) {
                            (Some(toml::Value::Table(_)), None) => {
                                return Err(invalid(format!("config.{k}.value cannot be a table")));
                            }
                            (Some(v), None) => {
                                ConfigSource::Value(config_data(&k, v).map_err(invalid)?)
                            }
                            (None, Some(f)) if Path::new(&f).is_absolute() => {
                                ConfigSource::File(PathBuf::from(f))
                            }
                            (None, Some(f)) => {
                                return Err(invalid(format!(
                                    "config.{k}.file '{f}' must be an absolute path"
                                )));
                            }
                            _ => {
                                return Err(invalid(format!(
                                    "config.{k} needs exactly one of value = … or file = \"/path\""
                                )));
                            }
                        };
                        ConfigValue {
                            source,
                            secret: raw.secret,
                        }
                    }
                    other => ConfigValue {
                        source: ConfigSource::Value(config_data(&k, other).map_err(invalid)?),
                        secret: false,
                    },
                };
                values.insert(k, value);
            }
            grant.config = Some(values);
        }
        Ok(grant)
    }
}

/// Filesystems that live on a block device: a filesystem plan (no device
/// checks, no claim) must never mount one.
const BLOCK_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "ext4dev", "xfs", "btrfs", "vfat", "msdos", "fat", "exfat", "ntfs",
    "ntfs3", "iso9660", "udf", "squashfs", "erofs", "f2fs", "jfs", "reiserfs", "hfs", "hfsplus",
    "minix", "nilfs2", "ocfs2", "gfs2", "zonefs", "fuseblk", "cramfs", "romfs", "ufs", "qnx4",
    "qnx6", "sysv", "affs", "befs", "bfs", "efs", "hpfs", "omfs", "vxfs", "xenix", "bcachefs",
    "jffs2", "ubifs",
];

/// Kernel views of the node, filesystems that would expose host paths or
/// descriptors or have no size limit, and network filesystems (the kernel
/// would reach servers no `[http]` rule checks): a pod must never get one
/// of these through a filesystem plan.
const NODE_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "hugetlbfs",
    "mqueue",
    "binfmt_misc",
    "fusectl",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "nsfs",
    "pipefs",
    "sockfs",
    "selinuxfs",
    "smackfs",
    "apparmorfs",
    "bdev",
    "anon_inodefs",
    "dax",
    "cpuset",
    "resctrl",
    "rootfs",
    "functionfs",
    "usbfs",
    "binder",
    "ramfs",
    "overlay",
    "aufs",
    "ecryptfs",
    "shiftfs",
    "9p",
    "none",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "afs",
    "coda",
    "virtiofs",
    "lustre",
    "orangefs",
    "gfs2meta",
    "zonefs",
];

/// Whether `fs_type` may be granted to, and mounted by, a filesystem plan
/// (by name: see [`check_kernel_needs_no_device`] for the kernel's word).
pub fn check_filesystem_plan_type(fs_type: &str) -> Result<(), String> {
    let base = fs_type.split('.').next().unwrap_or(fs_type);
    if BLOCK_FILESYSTEMS.contains(&base) {
        return Err(format!(
            "'{fs_type}' lives on a block device; mount it with a block plan (which checks the \
             device), not a filesystem plan"
        ));
    }
    if NODE_FILESYSTEMS.contains(&base) {
        return Err(format!(
            "'{fs_type}' would give a pod a view of the node, host paths, unbounded memory or a \
             network no grant checks; it is never allowed"
        ));
    }
    Ok(())
}

/// At mount time: the kernel must list `fs_type` in `/proc/filesystems` as
/// `nodev` — it then never looks a mount source up as a device. An
/// allowlist by the kernel's own word, not a list of ours that a new
/// filesystem could be missing from. (A type whose module is not loaded
/// yet is refused until it is.)
pub fn check_kernel_needs_no_device(fs_type: &str) -> Result<(), String> {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    for line in known.lines() {
        let mut fields = line.split_whitespace().rev();
        if fields.next() == Some(fs_type) {
            return if fields.next() == Some("nodev") {
                Ok(())
            } else {
                Err(format!(
                    "'{fs_type}' needs a block device (so says /proc/filesystems); mount it \
                     with a block plan, not a filesystem plan"
                ))
            };
        }
    }
    Err(format!(
        "'{fs_type}' is not a filesystem this kernel knows (/proc/filesystems); load its module \
         first"
    ))
}

/// Replace `plugin_sha256 = "auto"` with the given plugin's hash (what
/// `flexwasm install --policy` and `flexwasm inspect --policy` do).
pub fn fill_auto_pin(text: &str, sha: &str) -> String {
    let mut out: String = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("plugin_sha256") && t.contains("\"auto\"") {
                line.replacen("\"auto\"", &format!("\"{sha}\""), 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// Where and what, without the quoted source line toml's `Display` adds:
/// that line may hold a `[config]` secret.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn image_dir(dir: &str, state_dir: &Path) -> Result<PathBuf, String> {
    let p = Path::new(dir);
    if dir.is_empty()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "loop.image_dir '{dir}' must be a directory path without '..'"
        ));
    }
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        state_dir.join(p)
    };
    if full == Path::new("/") {
        return Err("loop.image_dir must not be /".into());
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "437fb2e3142303b8c62f99aa87e55685eabcd04e6cc7146ece3557a694cbefe3";

    fn parse(text: &str) -> Result<Grant, PolicyError> {
        Grant::parse(
            text,
            Path::new("/d/policy.toml"),
            Path::new("/var/lib/flexwasm/a~b"),
        )
    }

    #[test]
    fn full_policy_validates() {
        let g = parse(&format!(
            r#"plugin_sha256 = "{SHA}"
            [limits]
            deadline_seconds = 10
            memory_mib = 32
            [state]
            [loop]
            image_dir = "images"
            [devices]
            [mount]
            format = ["ext4"]
            block = ["ext4", "xfs"]
            options = ["noatime"]
            [config]
            endpoint = "https://x"
            port = 8443
            thin = true
            arrays = ["a1", "a2"]
            token = {{ value = "t", secret = true }}
            pin = {{ value = 1234, secret = true }}
            "#
        ))
        .unwrap();
        assert_eq!(g.limits.deadline, Duration::from_secs(10));
        assert_eq!(g.limits.wait_for_attach_deadline, Duration::from_secs(10));
        assert_eq!(g.limits.memory_bytes, 32 << 20);
        assert_eq!(g.state_quota, Some(4 << 20));
        assert_eq!(
            g.loop_image_dir.as_deref(),
            Some(Path::new("/var/lib/flexwasm/a~b/images"))
        );
        assert!(g.devices);
        assert_eq!(
            g.config.as_ref().unwrap()["endpoint"].source,
            ConfigSource::Value(ConfigData::Text("https://x".into()))
        );
        let c = g.config.as_ref().unwrap();
        assert_eq!(
            c["port"].source,
            ConfigSource::Value(ConfigData::Integer(8443))
        );
        assert_eq!(
            c["thin"].source,
            ConfigSource::Value(ConfigData::Boolean(true))
        );
        assert_eq!(
            c["arrays"].source,
            ConfigSource::Value(ConfigData::List(vec!["a1".into(), "a2".into()]))
        );
        assert!(c["token"].secret && c["pin"].secret && !c["port"].secret);
        assert_eq!(
            c["pin"].source,
            ConfigSource::Value(ConfigData::Integer(1234))
        );
    }

    #[test]
    fn absent_means_denied() {
        let g = parse(&format!("plugin_sha256 = \"{SHA}\"")).unwrap();
        assert!(!g.allows(Capability::State));
        assert!(!g.allows(Capability::Loop));
        assert!(!g.allows(Capability::Devices));
        assert!(g.format.is_empty() && g.block.is_empty() && g.mount_options.is_empty());
        let imports = vec![
            "wasi:cli/stdout@0.2.6".to_string(),
            "flexwasm:driver/devices@0.1.0".to_string(),
            "wasi:filesystem/preopens@0.2.6".to_string(),
        ];
        assert_eq!(
            g.ungranted(&imports),
            vec![
                "flexwasm:driver/devices@0.1.0",
                "wasi:filesystem/preopens@0.2.6"
            ]
        );
    }

    #[test]
    fn http_allow_entries_match_origins() {
        let a = AllowedOrigin::parse("https://array.example.com").unwrap();
        assert!(a.allows(true, "ARRAY.example.com", 443));
        assert!(!a.allows(false, "array.example.com", 443));
        assert!(!a.allows(true, "array.example.com", 8443));
        assert!(!a.allows(true, "evil-array.example.com", 443));
        let w = AllowedOrigin::parse("http://*.example.com:8080").unwrap();
        assert!(w.allows(false, "a.b.example.com", 8080));
        assert!(!w.allows(false, "example.com", 8080));
        assert!(!w.allows(false, "badexample.com", 8080));
        let v6 = AllowedOrigin::parse("http://[::1]:9").unwrap();
        assert!(v6.allows(false, "::1", 9));
        let g = parse(&format!(
            "plugin_sha256 = \"{SHA}\"\n[http]\nallow = [\"https://x.example\"]\n[config]\nt = {{ value = \"v\", secret = true }}"
        ))
        .unwrap();
        assert!(g.allows(Capability::Http) && g.allows(Capability::Config));
        assert!(g.config.unwrap()["t"].secret);
    }

    #[test]
    fn bad_policies_are_named() {
        for (text, needle) in [
            ("", "plugin_sha256 is required"),
            ("plugin_sha256 = \"abc\"", "not 64 hex digits"),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[limits]\ndeadline_seconds = 600"),
                "out of range",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[lop]\n"),
                "unknown field",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[loop]\n"),
                "image_dir is required",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"../x\""),
                "without '..'",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nformat = [\"ntfs\"]"),
                "cannot format 'ntfs'",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[mount]\noptions = [\"size=1\"]"),
                "option name",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"ext4\"]"),
                "block plan",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"devtmpfs\"]"),
                "view of the node",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"proc\"]"),
                "view of the node",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = 1.5"),
                "must be a string, a whole number",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = [\"a\", 2]"),
                "strings only",
            ),
            (
                &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = {{ value = 1, file = \"/f\" }}"),
                "exactly one of",
            ),
            ("plugin_sha256 = ", "line 1, column"),
            (
                &format!(
                    "plugin_sha256 = \"{SHA}\"\n[config]\ntoken = {{ value = \"hunter2\\q\", secret = true }}"
                ),
                "line 3",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(
                !e.contains("hunter2"),
                "a config value is in the message: {e}"
            );
        }
    }

    #[test]
    fn loop_limits_have_safe_defaults_and_room_for_256_volumes() {
        let g = parse(&format!(
            "plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"images\""
        ))
        .unwrap();
        assert_eq!(
            g.loop_limits,
            LoopLimits {
                max_images: 64,
                max_total_bytes: 256 << 30,
                max_attached: 32,
                max_attaches_per_call: 1,
            }
        );
        // Not granted: the same defaults, never used.
        assert_eq!(Grant::baseline().loop_limits, LoopLimits::default());
        let g = parse(&format!(
            "plugin_sha256 = \"{SHA}\"\n[state]\nquota_kib = 2048\n[loop]\nimage_dir = \"images\"\n\
             max_images = 256\nmax_total_gib = 2560\nmax_attached = 256\nmax_attaches_per_call = 2"
        ))
        .unwrap();
        assert_eq!(
            g.loop_limits,
            LoopLimits {
                max_images: 256,
                max_total_bytes: 2560 << 30,
                max_attached: 256,
                max_attaches_per_call: 2,
            }
        );
        assert_eq!(g.state_quota, Some(2 << 20));
        for (key, bad) in [
            ("max_images", "0"),
            ("max_images", "65537"),
            ("max_total_gib", "0"),
            ("max_total_gib", "1048577"),
            ("max_attached", "16385"),
            ("max_attaches_per_call", "65"),
        ] {
            let e = parse(&format!(
                "plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"images\"\n{key} = {bad}"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(&format!("loop.{key} = {bad} is out of range")),
                "{e}"
            );
        }
    }

    #[test]
    fn claim_patterns_parse() {
        assert_eq!(
            ClaimPattern::parse("loop-backing-dir:/var/lib/array").unwrap(),
            ClaimPattern::LoopBackingDir("/var/lib/array".into())
        );
        assert_eq!(
            ClaimPattern::parse("wwn:naa.600A").unwrap(),
            ClaimPattern::Wwn("600a".into())
        );
        for bad in [
            "x",
            "loop-backing-dir:rel",
            "loop-backing-dir:/",
            "by-id:",
            "nope:x",
            "loop-backing-dir:/a/../b",
        ] {
            assert!(ClaimPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
