//! One kubelet call, end to end: typed call → plugin → plan → host
//! validation → node operation → [`DriverStatus`].
//!
//! The plugin decides *what* (which device, which fs type, which options);
//! the host decides whether that is acceptable and does it. Whatever the
//! plugin returns, the host:
//! - mounts only at the path kubelet passed;
//! - accepts only block devices under `/dev` (symlinks resolved);
//! - never runs mkfs on a device holding a filesystem or a partition
//!   table, nor on a read-only volume;
//! - formats and mounts only the filesystem types the grant lists, and
//!   only the mount options it lists (`suid`, `dev`, `exec` included);
//!   `bind`, `remount` and propagation changes are never allowed; adds
//!   `nosuid,nodev` unless `suid` / `dev` were granted and asked for;
//! - treats repeating a call that already succeeded as success.

use std::path::{Path, PathBuf};

use crate::calllog::PluginLogLine;
use crate::capabilities::http::HttpLogEntry;
use crate::contract::{ArgvError, Call, CapabilitiesJson, DriverStatus, parse_call};
use crate::device_claim;
use crate::layout::DriverLayout;
use crate::node::{self, NodeError, blockdev, mkfs, mountinfo};
use crate::options::{RawOptions, VolumeOptions};
use crate::policy::{Grant, PolicyError};
use crate::precompiled::LoadedFrom;
use crate::runtime::{Plugin, RuntimeError, wit};
use crate::supervisor::Supervisor;

/// Mount options no grant can allow: they change what kind of mount this
/// is (a bind of some other host path, a remount of something else, mount
/// propagation).
const NEVER_MOUNT_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "remount",
    "move",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
    "runbindable",
];

/// Options that only take power away; always allowed.
const RESTRICTIVE_MOUNT_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "noexec"];

/// Everything about a call that goes to the call log.
#[derive(Default)]
pub struct CallReport {
    /// Values that must not appear anywhere (secret config values).
    pub secrets: Vec<String>,
    pub http: Vec<crate::capabilities::http::HttpLogEntry>,
    pub plugin_log: Vec<PluginLogLine>,
    pub plugin_stdout: String,
    pub plugin_stderr: String,
    pub phases: Vec<(&'static str, f64)>,
    pub loaded_from: Option<LoadedFrom>,
}

/// Why a call failed, turned into the `message` kubelet shows.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Node(#[from] NodeError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Plugin(String),
    #[error("not supported")]
    NotSupported,
}

type CallResult = Result<DriverStatus, CallError>;

fn refused(msg: impl Into<String>) -> CallError {
    CallError::Refused(msg.into())
}

/// Turn a plugin's answer into ours.
fn plugin_answer<T>(r: Result<T, wit::DriverError>) -> Result<T, CallError> {
    r.map_err(|e| match e {
        wit::DriverError::NotSupported => CallError::NotSupported,
        wit::DriverError::Failure(msg) => CallError::Plugin(msg),
    })
}

/// Run the call described by `args` (argv without the executable).
pub fn run(
    layout: &DriverLayout,
    args: &[String],
    supervisor: &Supervisor,
) -> (DriverStatus, CallReport) {
    let call = match parse_call(args) {
        Ok(call) => call,
        Err(ArgvError::UnknownOp(op)) => {
            return (
                DriverStatus::not_supported(format!(
                    "flexwasm driver {}: operation '{op}' is not supported",
                    layout.name
                )),
                CallReport::default(),
            );
        }
        Err(e) => {
            return (
                DriverStatus::failure(format!("flexwasm driver {}: {e}", layout.name)),
                CallReport::default(),
            );
        }
    };
    let quiet = call.options().is_some_and(RawOptions::has_secrets);
    let mut report = CallReport::default();
    let result = run_call(layout, &call, supervisor, &mut report);
    let mut status = match result {
        Ok(status) => status,
        Err(CallError::NotSupported) => DriverStatus::not_supported(format!(
            "driver {} does not support {}",
            layout.name,
            call.op()
        )),
        Err(e) => {
            // A plugin sees a refused or failed request only as an error
            // code; say what the host refused, or saw fail, and why.
            let said = |pick: fn(&HttpLogEntry) -> Option<&String>, what: &str| {
                let lines: Vec<String> = report
                    .http
                    .iter()
                    .filter_map(|h| pick(h).map(|why| format!("{} {}: {why}", h.method, h.url)))
                    .collect();
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(" ({what}: {})", lines.join("; "))
                }
            };
            let denied = said(|h| h.denied.as_ref(), "outbound HTTP refused by the host");
            let failed = said(|h| h.error.as_ref(), "outbound HTTP failed");
            DriverStatus::failure(format!(
                "{} {}: {e}{denied}{failed}",
                layout.name,
                call.op()
            ))
        }
    };
    status.quiet_failure = quiet;
    (status, report)
}

fn resolve_options(raw: &RawOptions) -> Result<VolumeOptions, CallError> {
    raw.resolve()
        .map_err(|e| refused(format!("the options argument is not valid: {e}")))
}

fn to_wit_options(o: &VolumeOptions) -> wit::VolumeOptions {
    wit::VolumeOptions {
        fs_type: o.fs_type.clone(),
        read_only: o.read_only,
        volume_name: o.volume_name.clone(),
        pod: o.pod.as_ref().map(|p| wit::PodInfo {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: p.uid.clone(),
            service_account: p.service_account.clone(),
        }),
        fs_group: o.fs_group,
        secrets: o
            .secrets
            .iter()
            .map(|(k, v)| wit::Secret {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        extra: o
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn run_call(
    layout: &DriverLayout,
    call: &Call,
    supervisor: &Supervisor,
    report: &mut CallReport,
) -> CallResult {
    // Validate everything kubelet gave us before starting the plugin.
    let options = call.options().map(resolve_options).transpose()?;
    let wopts = options.as_ref().map(to_wit_options);
    let mut grant = Grant::load(&layout.driver_dir, &layout.state_dir)?;
    if let Some(config) = grant.config.as_mut() {
        // Config files are read once: the plugin sees, and the log is
        // scrubbed of, the same contents even if a file changes mid-call.
        *config = crate::capabilities::config::snapshot(config);
        report.secrets = crate::capabilities::config::secret_values(config);
    }
    let limits = grant.limits.for_op(call.op());
    // The guest's deadline is enforced inside the runtime; this bounds the
    // whole process, host work included (the tools have their own timeouts;
    // the watchdog must never cut one short and leave a half-made mkfs).
    // Worst case of the tools a call may run: two probes, mkfs and a
    // verifying probe (30 + 30 + 300 + 30 s), or a resize (600 s).
    let host_work = match call {
        Call::MountDevice { .. } | Call::Mount { .. } | Call::ExpandFs { .. } => {
            std::time::Duration::from_secs(660)
        }
        _ => std::time::Duration::from_secs(15),
    };
    supervisor.arm_watchdog(
        limits.deadline + host_work,
        format!("the {} call", call.op()),
    );

    let mut plugin = Plugin::load(layout, &grant, &limits)?;
    report.loaded_from = Some(plugin.loaded_from);
    let result = dispatch(&mut plugin, &grant, call, options.as_ref(), wopts);
    let host = plugin.host();
    report.http = host.http.0.log();
    report.plugin_log = std::mem::take(&mut host.log.lines);
    if host.log.dropped > 0 {
        report.plugin_log.push(PluginLogLine {
            level: "warn",
            message: format!(
                "{} plugin log lines dropped (over the limit)",
                host.log.dropped
            ),
        });
    }
    (report.plugin_stdout, report.plugin_stderr) = plugin.captured_output();
    report.phases = std::mem::take(&mut plugin.phases);
    result
}

fn dispatch(
    plugin: &mut Plugin,
    grant: &Grant,
    call: &Call,
    options: Option<&VolumeOptions>,
    wopts: Option<wit::VolumeOptions>,
) -> CallResult {
    // `options()` is Some exactly for the calls that carry options.
    let wopts = move || wopts.ok_or_else(|| refused("internal: options missing"));
    match call {
        Call::Init => {
            let caps = plugin_answer(plugin.call("init", |g, s| g.call_init(s))?)?;
            let mut status = DriverStatus::success();
            status.capabilities = Some(CapabilitiesJson {
                attach: caps.attach,
                selinux_relabel: caps.selinux_relabel,
                supports_metrics: caps.supports_metrics,
                fs_group: caps.fs_group,
                requires_fs_resize: caps.requires_fs_resize,
            });
            Ok(status)
        }
        Call::GetVolumeName { .. } => {
            let o = wopts()?;
            let name =
                plugin_answer(plugin.call("getvolumename", |g, s| g.call_get_volume_name(s, &o))?)?;
            let mut status = DriverStatus::success();
            status.volume_name = Some(name);
            Ok(status)
        }
        Call::Attach { node, .. } => {
            let o = wopts()?;
            let device = plugin_answer(plugin.call("attach", |g, s| g.call_attach(s, &o, node))?)?;
            if device.is_empty() {
                return Err(CallError::Plugin(
                    "plugin returned an empty device path".into(),
                ));
            }
            let mut status = DriverStatus::success();
            status.device = Some(device);
            Ok(status)
        }
        Call::WaitForAttach { device, .. } => {
            let o = wopts()?;
            let locator = plugin_answer(plugin.call("waitforattach", |g, s| {
                g.call_wait_for_attach(s, device, &o)
            })?)?;
            let dev = resolve_locator(plugin, grant, &locator)?;
            let mut status = DriverStatus::success();
            status.device = Some(path_str(&dev));
            Ok(status)
        }
        Call::Detach { volume, node } => {
            plugin_answer(plugin.call("detach", |g, s| g.call_detach(s, volume, node))?)?;
            Ok(DriverStatus::success())
        }
        Call::IsAttached { node, .. } => {
            let o = wopts()?;
            let attached =
                plugin_answer(plugin.call("isattached", |g, s| g.call_is_attached(s, &o, node))?)?;
            let mut status = DriverStatus::success();
            status.attached = Some(attached);
            Ok(status)
        }
        Call::MountDevice {
            mount_path, device, ..
        } => {
            let read_only = options.is_some_and(|o| o.read_only);
            let target = existing_dir(mount_path, "device mount path")?;
            let o = wopts()?;
            let mp = path_str(mount_path);
            let plan = plugin_answer(plugin.call("mountdevice", |g, s| {
                g.call_mount_device(s, &mp, device, &o)
            })?)?;
            mount_block(grant, &plan, &target, read_only)?;
            Ok(DriverStatus::success())
        }
        Call::UnmountDevice { mount_path } => {
            unmount_then_hook(plugin, mount_path, "unmountdevice", |g, s, p| {
                g.call_unmount_device(s, p)
            })
        }
        Call::Mount { dir, .. } => {
            let read_only = options.is_some_and(|o| o.read_only);
            let target = existing_dir(dir, "pod volume dir")?;
            let o = wopts()?;
            let d = path_str(dir);
            let plan = plugin_answer(plugin.call("mount", |g, s| g.call_mount(s, &d, &o))?)?;
            match &plan {
                wit::MountPlan::Block(block) => mount_block(grant, block, &target, read_only)?,
                wit::MountPlan::Filesystem(fs) => mount_filesystem(grant, fs, &target, read_only)?,
            }
            Ok(DriverStatus::success())
        }
        Call::Unmount { dir } => {
            unmount_then_hook(plugin, dir, "unmount", |g, s, p| g.call_unmount(s, p))
        }
        Call::ExpandVolume {
            mount_path,
            new_size,
            old_size,
            ..
        } => {
            let o = wopts()?;
            plugin_answer(plugin.call("expandvolume", |g, s| {
                g.call_expand_volume(s, &o, mount_path, *new_size, *old_size)
            })?)?;
            Ok(DriverStatus::success())
        }
        Call::ExpandFs {
            device,
            mount_path,
            new_size,
            old_size,
            ..
        } => {
            let o = wopts()?;
            let mp = path_str(mount_path);
            plugin_answer(plugin.call("expandfs", |g, s| {
                g.call_expand_fs(s, &o, device, &mp, *new_size, *old_size)
            })?)?;
            grow_mounted_filesystem(grant, device, mount_path)?;
            Ok(DriverStatus::success())
        }
    }
}

/// `unmount` / `unmountdevice`: the host unmounts whatever is at `path`,
/// then the plugin's hook runs for its bookkeeping; a hook answering
/// `not-supported` just means "nothing to do".
fn unmount_then_hook(
    plugin: &mut Plugin,
    path: &Path,
    op: &'static str,
    hook: impl FnOnce(
        &crate::runtime::DriverExports,
        &mut wasmtime::Store<crate::runtime::PluginHost>,
        &str,
    ) -> wasmtime::Result<Result<(), wit::DriverError>>,
) -> CallResult {
    unmount_path(path)?;
    let p = path_str(path);
    match plugin.call(op, |g, s| hook(g, s, &p))? {
        Ok(()) | Err(wit::DriverError::NotSupported) => Ok(DriverStatus::success()),
        Err(wit::DriverError::Failure(msg)) => Err(CallError::Plugin(msg)),
    }
}

fn existing_dir(path: &Path, what: &str) -> Result<PathBuf, CallError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(refused(format!(
            "{what} {} is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(refused(format!(
            "{what} {} does not exist (kubelet creates it before this call)",
            path.display()
        ))),
        Err(e) => Err(refused(format!("{what} {}: {e}", path.display()))),
    }
}

fn resolve_locator(
    plugin: &mut Plugin,
    grant: &Grant,
    locator: &wit::DeviceLocator,
) -> Result<PathBuf, CallError> {
    if let wit::DeviceLocator::LoopImage(name) = locator
        && grant.loop_image_dir.is_none()
    {
        return Err(refused(format!(
            "the plugin located its device by loop image '{name}', but the loop capability is not granted"
        )));
    }
    let dev = if let wit::DeviceLocator::Path(p) = locator {
        // A path that is not a block device deserves its own message.
        blockdev::resolve_block_device(Path::new(p))?
    } else {
        let loops = &mut plugin.host().loops;
        crate::capabilities::devices::find(locator, &mut |name| {
            loops.device_for(name).ok().flatten()
        })
        .map(|d| d.path)
        .ok_or_else(|| {
            refused(format!(
                "no block device on this node matches {}",
                describe_locator(locator)
            ))
        })?
    };
    // Never hand kubelet a device the plugin may not use.
    device_claim::check(&dev, grant, None).map_err(refused)?;
    Ok(dev)
}

fn describe_locator(locator: &wit::DeviceLocator) -> String {
    match locator {
        wit::DeviceLocator::Path(p) => format!("path {p}"),
        wit::DeviceLocator::Serial(s) => format!("serial {s}"),
        wit::DeviceLocator::Wwn(w) => format!("WWN {w}"),
        wit::DeviceLocator::LoopImage(n) => format!("loop image {n} (it is not attached)"),
        wit::DeviceLocator::LoopBackingFile(f) => format!("a loop device backed by {f}"),
        wit::DeviceLocator::Link(l) => format!("link {l}"),
    }
}

/// Check a plugin's mount options one by one against the grant; add
/// `nosuid,nodev` unless `suid` / `dev` were granted and asked for.
fn checked_mount_options(grant: &Grant, options: &[String]) -> Result<Vec<String>, CallError> {
    let mut out = Vec::with_capacity(options.len() + 2);
    for opt in options {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let name = opt.split('=').next().unwrap_or(opt);
        let plain = opt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:=/+@-".contains(&b));
        if !plain {
            return Err(refused(format!(
                "mount option '{}' is not allowed: one option per list entry, letters, digits and _.:=/+@- only",
                opt.chars().take(64).collect::<String>()
            )));
        }
        if NEVER_MOUNT_OPTIONS.contains(&name) {
            return Err(refused(format!(
                "mount option '{name}' is never allowed for plugin volumes"
            )));
        }
        if !RESTRICTIVE_MOUNT_OPTIONS.contains(&name)
            && !grant.mount_options.iter().any(|g| g == name)
        {
            return Err(refused(format!(
                "mount option '{name}' is not granted to this driver (granted: {})",
                list_or_none(&grant.mount_options)
            )));
        }
        out.push(opt.to_string());
    }
    for (forced, unless) in [("nosuid", "suid"), ("nodev", "dev")] {
        if !out.iter().any(|o| o == forced || o == unless) {
            out.push(forced.to_string());
        }
    }
    Ok(out)
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn check_fs_granted(kind: &str, fs_type: &str, granted: &[String]) -> Result<(), CallError> {
    if granted.iter().any(|g| g == fs_type) {
        Ok(())
    } else {
        Err(refused(format!(
            "{kind} of filesystem type '{fs_type}' is not granted to this driver (granted: {})",
            list_or_none(granted)
        )))
    }
}

/// Carry out a block plan at `target`: resolve the device, check what it
/// holds, format only if blank and read-write, mount.
fn mount_block(
    grant: &Grant,
    plan: &wit::BlockPlan,
    target: &Path,
    read_only: bool,
) -> Result<(), CallError> {
    let fs_type = plan.fs_type.trim();
    if !mkfs::is_supported_fs(fs_type) {
        return Err(refused(format!(
            "filesystem type '{fs_type}' is not supported for block volumes (use ext4, xfs, ext3, ext2 or btrfs)"
        )));
    }
    check_fs_granted("mounting", fs_type, &grant.block)?;
    let mount_options = checked_mount_options(grant, &plan.mount_options)?;
    let device = blockdev::resolve_block_device(Path::new(&plan.device))?;
    let (major, minor) = blockdev::dev_numbers(&device)?;
    device_claim::check(&device, grant, Some(target)).map_err(refused)?;

    if let Some(existing) = mountinfo::mount_at(target)? {
        // btrfs reports an anonymous 0:N device number: compare sources too.
        let same = (existing.major, existing.minor) == (major, minor)
            || Path::new(&existing.source) == device;
        if same {
            let existing_ro = existing.options.iter().any(|o| o == "ro");
            if existing_ro != read_only {
                return Err(refused(format!(
                    "{} is already mounted {} but the volume is {}; unmount it first",
                    target.display(),
                    if existing_ro {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if read_only { "read-only" } else { "read-write" }
                )));
            }
            return Ok(()); // already done: idempotent
        }
        return Err(refused(format!(
            "{} is already mounted from {} ({}), not from {}",
            target.display(),
            existing.source,
            existing.fs_type,
            device.display()
        )));
    }

    match mkfs::probe(&device)? {
        mkfs::Signature::Blank if read_only => {
            return Err(refused(format!(
                "{} holds no filesystem and the volume is read-only; not formatting",
                device.display()
            )));
        }
        mkfs::Signature::Blank => {
            check_fs_granted("formatting", fs_type, &grant.format)?;
            mkfs::format(&device, fs_type, &plan.mkfs_options)?
        }
        mkfs::Signature::Filesystem {
            fs_type: found,
            label,
            ..
        } if found != fs_type => {
            let label = label.map(|l| format!(" (label {l})")).unwrap_or_default();
            return Err(refused(format!(
                "{} already holds a {found} filesystem{label} but {fs_type} was requested; not formatting, not mounting",
                device.display()
            )));
        }
        mkfs::Signature::Filesystem { .. } => {}
        other => {
            return Err(refused(format!(
                "{} holds {other}; not formatting, not mounting",
                device.display()
            )));
        }
    }
    let device_str = path_str(&device);
    node::mount::mount(node::mount::MountRequest {
        source: &device_str,
        target,
        fs_type,
        options: &mount_options,
        read_only,
    })?;
    Ok(())
}

fn mount_filesystem(
    grant: &Grant,
    plan: &wit::FilesystemPlan,
    target: &Path,
    read_only: bool,
) -> Result<(), CallError> {
    let fs_type = plan.fs_type.trim();
    check_fs_granted("mounting", fs_type, &grant.filesystem)?;
    if plan.source.is_empty() || plan.source.contains('\0') || plan.source.len() > 4096 {
        return Err(refused("the mount plan's source is empty or malformed"));
    }
    let mount_options = checked_mount_options(grant, &plan.mount_options)?;
    if let Some(existing) = mountinfo::mount_at(target)? {
        if existing.fs_type == fs_type && existing.source == plan.source {
            return Ok(());
        }
        return Err(refused(format!(
            "{} is already mounted from {} ({})",
            target.display(),
            existing.source,
            existing.fs_type
        )));
    }
    node::mount::mount(node::mount::MountRequest {
        source: &plan.source,
        target,
        fs_type,
        options: &mount_options,
        read_only,
    })?;
    Ok(())
}

/// Unmount whatever is mounted at `path`; nothing mounted is success.
fn unmount_path(path: &Path) -> Result<(), CallError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    node::mount::unmount_all(path)?;
    Ok(())
}

fn grow_mounted_filesystem(
    grant: &Grant,
    device: &str,
    mount_path: &Path,
) -> Result<(), CallError> {
    let dev = blockdev::resolve_block_device(Path::new(device))?;
    let numbers = blockdev::dev_numbers(&dev)?;
    device_claim::check(&dev, grant, Some(mount_path)).map_err(refused)?;
    let Some(mounted) = mountinfo::mount_at(mount_path)? else {
        return Err(refused(format!(
            "nothing is mounted at {}; cannot grow its filesystem",
            mount_path.display()
        )));
    };
    if (mounted.major, mounted.minor) != numbers && Path::new(&mounted.source) != dev {
        return Err(refused(format!(
            "{} is mounted from {}, not from {}",
            mount_path.display(),
            mounted.source,
            dev.display()
        )));
    }
    node::resize::grow_filesystem(&dev, mount_path, &mounted.fs_type)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_are_checked_against_the_grant_and_hardened() {
        let mut grant = Grant::baseline();
        grant.mount_options = vec!["noatime".into(), "discard".into()];
        let ok = checked_mount_options(&grant, &["noatime".into(), "discard".into(), "ro".into()])
            .unwrap();
        assert_eq!(ok, vec!["noatime", "discard", "ro", "nosuid", "nodev"]);
        for bad in [
            "suid", "dev", "exec", "size=1", "bind", "remount", "ro,suid", "a b",
        ] {
            assert!(
                checked_mount_options(&grant, &[bad.to_string()]).is_err(),
                "{bad}"
            );
        }
        grant
            .mount_options
            .extend(["suid".to_string(), "bind".to_string()]);
        assert_eq!(
            checked_mount_options(&grant, &["suid".into()]).unwrap(),
            vec!["suid", "nodev"]
        );
        assert!(checked_mount_options(&grant, &["bind".into()]).is_err());
    }
}
