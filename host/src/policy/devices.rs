//! `[devices]`: grants `flexwasm:driver/devices`, and which devices beyond
//! its own loop images a plugin may claim ([`ClaimPattern`]; the claim
//! itself is checked in [`crate::device_claim`]).

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::node::blockdev::normalise_wwn;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    pub claim: Option<Vec<String>>,
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
            // Checked once normalised: `wwn:0x` or `wwn:naa.` would
            // otherwise be the empty prefix, which every WWN starts with.
            "wwn" => match normalise_wwn(value) {
                w if w.is_empty() => Err(format!(
                    "devices.claim entry '{s}' has an empty WWN (after its naa. / 0x prefix): \
                     it would claim every device that has one"
                )),
                w => Ok(ClaimPattern::Wwn(w)),
            },
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

/// `[devices]`, checked: its claim patterns.
pub(super) fn validate(d: RawDevices) -> Result<Vec<ClaimPattern>, String> {
    d.claim
        .unwrap_or_default()
        .iter()
        .map(|c| ClaimPattern::parse(c))
        .collect()
}
