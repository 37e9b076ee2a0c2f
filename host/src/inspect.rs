//! `flexwasm inspect`: what can this plugin do on my nodes?
//!
//! For a driver directory (or a bare `plugin.wasm`, with an optional
//! policy) it reports the plugin's SHA-256 and size, the WIT package it
//! implements, its exports, every import with the capability it maps to and
//! what that allows in plain words, the grant beside it, and what is
//! requested but not granted. The exit code is non-zero when the plugin asks
//! for more than its grant gives (or the grant pins another plugin), so a
//! security pipeline can gate on it.
//!
//! `--json` prints one object whose schema is stable and versioned
//! (`"schema": "flexwasm.inspect/v1"`):
//!
//! ```text
//! {
//!   "schema": "flexwasm.inspect/v1",
//!   "plugin": {
//!     "path": str, "sha256": str, "size_bytes": int,
//!     "package": str | null,          // e.g. "flexwasm:driver@0.1.0"
//!     "exports": [ { "name": str, "functions": [str] } ],
//!     "imports": [ { "name": str, "capability": "baseline"|"state"|"loop"|"devices"|"never granted",
//!                    "description": str, "functions": [str], "granted": bool } ]
//!   },
//!   "grant": {
//!     "policy": str | null,           // null: no policy file, baseline only
//!     "plugin_sha256": str | null,
//!     "pin_matches": bool | null,     // null when the grant pins nothing
//!     "limits": { "deadline_seconds": int, "wait_for_attach_deadline_seconds": int,
//!                 "memory_mib": int, "output_kib": int },
//!     "state_quota_kib": int | null, "loop_image_dir": str | null, "devices": bool,
//!     "format": [str], "block": [str], "filesystem": [str], "mount_options": [str],
//!     "config_keys": [str],           // values are never printed
//!     "http_allow": [str]             // origins outbound HTTP may reach
//!   },
//!   "ungranted": [str],               // imports the grant does not allow
//!   "ok": bool                        // no ungranted import and the pin matches
//! }
//! ```

use serde::Serialize;
use std::path::{Path, PathBuf};
use wasmtime::component::types::ComponentItem;

use crate::digest::sha256_hex;
use crate::layout::{DriverLayout, PLUGIN_FILE};
use crate::policy::{Capability, Grant, POLICY_FILE, describe_import, fill_auto_pin};
use crate::runtime;

pub const SCHEMA: &str = "flexwasm.inspect/v1";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub plugin: PluginReport,
    pub grant: GrantReport,
    pub ungranted: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct PluginReport {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    pub package: Option<String>,
    pub exports: Vec<Interface>,
    pub imports: Vec<Import>,
}

#[derive(Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub functions: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Import {
    pub name: String,
    pub capability: &'static str,
    pub description: String,
    pub functions: Vec<String>,
    pub granted: bool,
}

#[derive(Debug, Serialize)]
pub struct GrantReport {
    pub policy: Option<PathBuf>,
    pub plugin_sha256: Option<String>,
    pub pin_matches: Option<bool>,
    pub limits: LimitsReport,
    pub state_quota_kib: Option<u64>,
    pub loop_image_dir: Option<PathBuf>,
    pub devices: bool,
    pub format: Vec<String>,
    pub block: Vec<String>,
    pub filesystem: Vec<String>,
    pub mount_options: Vec<String>,
    pub config_keys: Vec<String>,
    /// Origins outbound HTTP may reach (empty: no HTTP).
    pub http_allow: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LimitsReport {
    pub deadline_seconds: u64,
    pub wait_for_attach_deadline_seconds: u64,
    pub memory_mib: usize,
    pub output_kib: usize,
}

fn functions(engine: &wasmtime::Engine, item: &ComponentItem) -> Vec<String> {
    match item {
        ComponentItem::ComponentInstance(inst) => inst
            .exports(engine)
            .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
            .map(|(n, _)| n.to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// Inspect a driver directory, or a plugin file with an optional policy.
pub fn inspect(target: &Path, policy: Option<&Path>) -> anyhow::Result<Report> {
    let (wasm_path, policy_path, state_dir) = if target.is_dir() {
        // `<vendor>~<driver>/`: the layout tells where its state lives,
        // which anchors a relative loop image dir.
        let state_dir = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('~'))
            .and_then(|(_, driver)| DriverLayout::from_exe_path(&target.join(driver)))
            .map(|l| l.state_dir)
            .unwrap_or_else(|| PathBuf::from("<state dir>"));
        let policy = policy
            .map(Path::to_path_buf)
            .unwrap_or_else(|| target.join(POLICY_FILE));
        (target.join(PLUGIN_FILE), Some(policy), state_dir)
    } else {
        (
            target.to_path_buf(),
            policy.map(Path::to_path_buf),
            PathBuf::from("<state dir>"),
        )
    };

    let wasm = std::fs::read(&wasm_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", wasm_path.display()))?;
    let sha256 = sha256_hex(&wasm);
    let grant = match &policy_path {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
            Grant::parse(&fill_auto_pin(&text, &sha256), p, &state_dir)?
        }
        Some(p) if policy.is_some() => anyhow::bail!("policy {} does not exist", p.display()),
        _ => Grant::baseline(),
    };

    let engine = runtime::engine()?;
    let component =
        crate::precompiled::compile(&engine, &wasm, &wasm_path).map_err(|e| match e {
            crate::precompiled::LoadError::Invalid { reason, .. } => {
                anyhow::anyhow!("{} is not a valid component: {reason}", wasm_path.display())
            }
            other => other.into(),
        })?;
    let ty = component.component_type();

    let exports: Vec<Interface> = ty
        .exports(&engine)
        .map(|(name, e)| Interface {
            name: name.to_string(),
            functions: functions(&engine, &e.ty),
        })
        .collect();
    let package = exports.iter().find_map(|e| package_of(&e.name));
    let mut imports: Vec<Import> = ty
        .imports(&engine)
        .map(|(name, e)| {
            let cap = Capability::of_import(name);
            Import {
                name: name.to_string(),
                capability: cap.name(),
                description: describe(name, cap, &grant),
                functions: functions(&engine, &e.ty),
                granted: grant.allows(cap),
            }
        })
        .collect();
    imports.sort_by(|a, b| a.name.cmp(&b.name));
    let ungranted: Vec<String> = imports
        .iter()
        .filter(|i| !i.granted)
        .map(|i| i.name.clone())
        .collect();
    let pin_matches = grant.plugin_sha256.as_ref().map(|p| p == &sha256);
    let ok = ungranted.is_empty() && pin_matches != Some(false);

    Ok(Report {
        schema: SCHEMA,
        plugin: PluginReport {
            path: wasm_path,
            sha256,
            size_bytes: wasm.len() as u64,
            package,
            exports,
            imports,
        },
        grant: GrantReport {
            policy: grant.source.clone(),
            plugin_sha256: grant.plugin_sha256.clone(),
            pin_matches,
            limits: LimitsReport {
                deadline_seconds: grant.limits.deadline.as_secs(),
                wait_for_attach_deadline_seconds: grant.limits.wait_for_attach_deadline.as_secs(),
                memory_mib: grant.limits.memory_bytes >> 20,
                output_kib: grant.limits.output_bytes >> 10,
            },
            state_quota_kib: grant.state_quota.map(|q| q >> 10),
            loop_image_dir: grant.loop_image_dir.clone(),
            devices: grant.devices,
            format: grant.format.clone(),
            block: grant.block.clone(),
            filesystem: grant.filesystem.clone(),
            mount_options: grant.mount_options.clone(),
            config_keys: grant
                .config
                .as_ref()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default(),
            http_allow: grant
                .http
                .as_ref()
                .map(|h| {
                    h.allow
                        .iter()
                        .map(|a| {
                            let scheme = if a.https { "https" } else { "http" };
                            format!("{scheme}://{}:{}", a.host, a.port)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        ungranted,
        ok,
    })
}

/// The plain-words description, made concrete with the grant's values.
fn describe(name: &str, cap: Capability, grant: &Grant) -> String {
    match (cap, grant) {
        (
            Capability::Loop,
            Grant {
                loop_image_dir: Some(d),
                ..
            },
        ) => format!(
            "may create, grow, attach and detach loop devices backed by image files in {}",
            d.display()
        ),
        (
            Capability::State,
            Grant {
                state_quota: Some(q),
                ..
            },
        ) => format!(
            "may keep up to {} KiB of durable key/value state in the driver's state dir",
            q >> 10
        ),
        _ => describe_import(name).to_string(),
    }
}

/// `flexwasm:driver/driver@0.1.0` → `flexwasm:driver@0.1.0`.
fn package_of(export: &str) -> Option<String> {
    let (path, version) = export.split_once('@')?;
    let (package, _interface) = path.split_once('/')?;
    Some(format!("{package}@{version}"))
}

/// The human-readable report.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let p = &r.plugin;
    let _ = writeln!(s, "plugin   {}", p.path.display());
    let _ = writeln!(s, "sha256   {}", p.sha256);
    let _ = writeln!(s, "size     {} bytes", p.size_bytes);
    let _ = writeln!(
        s,
        "package  {}",
        p.package.as_deref().unwrap_or("(no flexwasm export)")
    );
    for e in &p.exports {
        let _ = writeln!(s, "exports  {} ({} functions)", e.name, e.functions.len());
    }
    let g = &r.grant;
    let _ = writeln!(
        s,
        "\ngrant    {}",
        g.policy
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none: baseline only".into())
    );
    match g.pin_matches {
        Some(true) => {
            let _ = writeln!(s, "pin      plugin_sha256 matches");
        }
        Some(false) => {
            let _ = writeln!(
                s,
                "pin      MISMATCH: the grant is for {}",
                g.plugin_sha256.as_deref().unwrap_or("")
            );
        }
        None => {}
    }
    let _ = writeln!(
        s,
        "limits   {} s per call ({} s waitforattach), {} MiB memory, {} KiB output kept",
        g.limits.deadline_seconds,
        g.limits.wait_for_attach_deadline_seconds,
        g.limits.memory_mib,
        g.limits.output_kib
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(s, "format   {}", list(&g.format));
    let _ = writeln!(
        s,
        "mount    block: {}; filesystem: {}",
        list(&g.block),
        list(&g.filesystem)
    );
    let _ = writeln!(s, "options  {}", list(&g.mount_options));
    let _ = writeln!(s, "config   {}", list(&g.config_keys));
    let _ = writeln!(s, "http     {}", list(&g.http_allow));
    let _ = writeln!(s, "\nimports");
    for i in &p.imports {
        let mark = if i.granted { "  ok " } else { "  NO " };
        let _ = writeln!(
            s,
            "{mark} {:<40} [{}] {}",
            i.name, i.capability, i.description
        );
    }
    if r.ok {
        let _ = writeln!(s, "\nOK: everything the plugin imports is granted");
    } else if !r.ungranted.is_empty() {
        let _ = writeln!(
            s,
            "\nDENIED: the plugin asks for more than its grant gives: {}",
            r.ungranted.join(", ")
        );
    } else {
        let _ = writeln!(s, "\nDENIED: the grant pins a different plugin.wasm");
    }
    s
}
