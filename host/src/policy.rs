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
//!
//! The code follows the file: [`Grant`] and the two stages are here, each
//! table is checked in its own module (`limits`, `loop_images`, `devices`,
//! `mount`, `http`, `config`), and `imports` says which interfaces a grant
//! allows.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod config;
mod devices;
mod http;
mod imports;
mod limits;
mod loop_images;
mod mount;
#[cfg(test)]
mod tests;

pub use config::{ConfigData, ConfigSource, ConfigValue};
pub use devices::{ClaimPattern, RawDevices};
pub use http::{AllowedOrigin, HttpGrant, RawHttp};
pub use imports::{Capability, describe_import};
pub use limits::{GrantLimits, Limits, RawLimits};
pub use loop_images::{LoopLimits, RawLoop};
pub use mount::{RawMount, check_filesystem_plan_type, check_kernel_needs_no_device};

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
pub struct RawState {
    pub quota_kib: Option<u64>,
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
            grant.limits = limits::validate(l).map_err(invalid)?;
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
            let (dir, bounds) = loop_images::validate(l, state_dir).map_err(invalid)?;
            grant.loop_image_dir = Some(dir);
            grant.loop_limits = bounds;
        }

        if let Some(d) = raw.devices {
            grant.devices = true;
            grant.device_claims = devices::validate(d).map_err(invalid)?;
        }

        if let Some(m) = raw.mount {
            mount::validate(m, &mut grant).map_err(invalid)?;
        }

        if let Some(h) = raw.http {
            grant.http = Some(http::validate(h).map_err(invalid)?);
        }

        if let Some(c) = raw.config {
            grant.config = Some(config::validate(c).map_err(invalid)?);
        }
        Ok(grant)
    }
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
