//! One kubelet call, end to end: typed call → plugin → plan → host
//! validation → node operation → [`DriverStatus`].
//!
//! The plugin decides *what* (which device, which fs type, which options);
//! the host decides whether that is acceptable and does it. Whatever the
//! plugin returns, the host:
//! - mounts only at the path kubelet passed;
//! - accepts only block devices under `/dev` (symlinks resolved) that the
//!   grant lets this driver claim ([`crate::device_claim`]);
//! - never runs mkfs on a device holding a filesystem or a partition
//!   table, nor on a read-only volume;
//! - formats and mounts only the filesystem types the grant lists, and
//!   only the mount options it lists (`suid`, `dev`, `exec` included), with
//!   values that make sense for the filesystem; `bind`, `remount` and
//!   propagation changes are never allowed; adds `nosuid,nodev` unless
//!   `suid` / `dev` were granted and asked for;
//! - never lets a filesystem plan mount a block device;
//! - never puts a secret where others can read it (mount table, a tool's
//!   command line, kubelet's answer: see [`crate::secrets`]);
//! - treats repeating a call that already succeeded as success.
//!
//! **No answer hands kubelet privileged work the host would refuse.**
//! When a driver answers "Not supported", kubelet does the default itself:
//! formats and mounts whatever device it was given, bind-mounts the pod
//! dir (dropping `nosuid,nodev`), grows a filesystem on a device path,
//! records a volume as grown. So the host never passes "Not supported" on
//! for those calls; it does the default itself, through the same checks as
//! a plan, or fails (see [`dispatch`]):
//!
//! | op | plugin answers "Not supported" | host answers |
//! |---|---|---|
//! | `waitforattach` | kubelet would use the device from `attach` | that device, if this driver may claim it |
//! | `mountdevice` | kubelet would format and mount it | formats (if blank) and mounts it as a plan would |
//! | `mount` | kubelet would bind-mount, losing `nosuid,nodev` | binds the device mount with its flags (`ro` when read-only) |
//! | `unmount`, `unmountdevice` | kubelet would unmount | the host has already unmounted |
//! | `expandfs` | kubelet would grow the fs on the device path | grows it, checked as after a plugin's expandfs |
//! | `expandvolume` | kubelet would record the new size | `Failure`: nothing was grown |
//!
//! `init`, `getvolumename`, `attach`, `detach` and `isattached` may answer
//! "Not supported": kubelet's defaults there do nothing privileged (and
//! every device kubelet later acts on comes from `waitforattach`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capabilities::http::HttpLogEntry;
use crate::capabilities::log::PluginLogLine;
use crate::contract::{ArgvError, Call, CapabilitiesJson, DriverStatus, parse_call};
use crate::device_claim;
use crate::device_mounts::{self, DeviceMount};
use crate::kubelet_paths;
use crate::layout::DriverLayout;
use crate::node::{self, NodeError, blockdev, mkfs, mountinfo};
use crate::options::{RawOptions, VolumeOptions};
use crate::policy::{Grant, PolicyError};
use crate::precompiled::LoadedFrom;
use crate::runtime::{Plugin, RuntimeError, wit};
use crate::secrets::SecretSet;
use crate::supervisor::Supervisor;

/// Longest device path `attach` may answer: kubelet stores it in the Node
/// object's status (by-path links of iSCSI LUNs are about 120 characters).
const MAX_ATTACH_DEVICE_BYTES: usize = 256;

/// Whether mount-table entry `e` is of the block device `dev` (numbers
/// `numbers`): by the device number only the kernel sets; the source text
/// counts for btrfs alone, whose device number is anonymous (a FUSE
/// filesystem chooses its source freely, but not the type btrfs).
fn same_device(e: &mountinfo::MountEntry, numbers: (u32, u32), dev: &Path) -> bool {
    (e.major, e.minor) == numbers || (e.fs_type == "btrfs" && Path::new(&e.source) == dev)
}

fn has_flag(e: &mountinfo::MountEntry, flag: &str) -> bool {
    e.options.iter().any(|o| o == flag)
}

/// The filesystem kubelet formats a device with when the volume names none.
const KUBELET_DEFAULT_FS: &str = "ext4";

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
    pub secrets: crate::secrets::SecretSet,
    pub http: Vec<crate::capabilities::http::HttpLogEntry>,
    pub plugin_log: Vec<PluginLogLine>,
    pub plugin_stdout: String,
    pub plugin_stderr: String,
    pub phases: Vec<(&'static str, f64)>,
    pub loaded_from: Option<LoadedFrom>,
}

/// Why a call failed, turned into the `message` kubelet shows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
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

/// argv (without the executable) as a [`Call`], or the answer kubelet gets
/// when it is not one: `Not supported` for an unknown op, `Failure` for
/// anything else wrong with it.
pub fn parse_argv(layout: &DriverLayout, args: &[String]) -> Result<Call, DriverStatus> {
    parse_call(args).map_err(|e| match e {
        ArgvError::UnknownOp(op) => DriverStatus::not_supported(format!(
            "flexwasm driver {}: operation '{op}' is not supported",
            layout.name
        )),
        e => DriverStatus::failure(format!("flexwasm driver {}: {e}", layout.name)),
    })
}

/// Run the call described by `args` (argv without the executable).
pub fn run(
    layout: &DriverLayout,
    args: &[String],
    supervisor: &Supervisor,
) -> (DriverStatus, CallReport) {
    let call = match parse_argv(layout, args) {
        Ok(call) => call,
        Err(status) => return (status, CallReport::default()),
    };
    let mut report = CallReport::default();
    let result = run_call(layout, &call, supervisor, &mut report);
    let status = match result {
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

/// What every step of a call checks against.
pub(crate) struct CallContext<'a> {
    pub(crate) layout: &'a DriverLayout,
    pub(crate) grant: &'a Grant,
    /// Every secret of the call: kubelet's and the config's.
    pub(crate) secrets: SecretSet,
}

fn run_call(
    layout: &DriverLayout,
    call: &Call,
    supervisor: &Supervisor,
    report: &mut CallReport,
) -> CallResult {
    let started = Instant::now();
    // Validate everything kubelet gave us before starting the plugin.
    let options = call.options().map(resolve_options).transpose()?;
    let wopts = options.as_ref().map(to_wit_options);
    let t = Instant::now();
    let mut grant = Grant::load(&layout.driver_dir, &layout.state_dir)?;
    if let Some(config) = grant.config.as_mut() {
        // Config files are read once: the plugin sees, and the log is
        // scrubbed of, the same contents even if a file changes mid-call.
        *config = crate::capabilities::config::snapshot(config);
        report.secrets = crate::capabilities::config::secrets(config);
    }
    let mut secrets = report.secrets.clone();
    if let Some(o) = call.options() {
        o.add_secrets_to(&mut secrets);
    }
    let limits = grant.limits.for_op(call.op());
    let mut phases = vec![("policy", ms_since(t))];
    // One deadline for the whole call: the guest is interrupted at it, its
    // waits in the host end at it, node tools are killed at it; the
    // watchdog answers at most `ANSWER_GRACE` later, whatever still runs.
    let deadline = started + limits.deadline;
    supervisor.arm_watchdog(deadline, limits.deadline, format!("the {} call", call.op()));
    node::exec::set_call_deadline(deadline);

    // One attach, detach or expand of a volume at a time: taken before
    // the memory share, so a waiting call holds none.
    let _volume_lock = match call.changed_volume() {
        Some(volume) => {
            let t = Instant::now();
            let lock = crate::volume_lock::lock(&layout.volume_locks_dir(), &volume, deadline)
                .map_err(refused)?;
            phases.push(("volume lock", ms_since(t)));
            Some(lock)
        }
        None => None,
    };

    // The call's worst case must fit in the node's pool before the plugin
    // may grow into it.
    let t = Instant::now();
    let _share = crate::memory::reserve_node_share(
        &layout.node_memory_pool_dir(),
        ((limits.memory_bytes + limits.host_memory_bytes) >> 20) as u64,
        deadline,
    )
    .map_err(refused)?;
    phases.push(("memory pool", ms_since(t)));
    report.phases = phases.clone();
    let mut plugin = Plugin::load(layout, &grant, &limits, deadline, &secrets)?;
    report.loaded_from = Some(plugin.loaded_from);
    let ctx = CallContext {
        layout,
        grant: &grant,
        secrets,
    };
    let result = dispatch(&mut plugin, &ctx, call, options.as_ref(), wopts);
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
    phases.append(&mut plugin.phases);
    report.phases = phases;
    result
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The local node's name as kubelet derives it by default: the hostname,
/// lowercased.
fn this_node_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()?
        .into_string()
        .ok()
        .map(|h| h.to_lowercase())
}

fn dispatch(
    plugin: &mut Plugin,
    ctx: &CallContext<'_>,
    call: &Call,
    options: Option<&VolumeOptions>,
    wopts: Option<wit::VolumeOptions>,
) -> CallResult {
    let grant = ctx.grant;
    // `options()` is Some exactly for the calls that carry options.
    let wopts = move || wopts.ok_or_else(|| refused("internal: options missing"));
    let read_only = options.is_some_and(|o| o.read_only);
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
            check_attach_device(ctx, &device, node)?;
            let mut status = DriverStatus::success();
            status.device = Some(device);
            Ok(status)
        }
        Call::WaitForAttach { device, .. } => {
            let o = wopts()?;
            let answer = plugin.call("waitforattach", |g, s| {
                g.call_wait_for_attach(s, device, &o)
            })?;
            let dev = match answer {
                Ok(locator) => resolve_locator(plugin, grant, &locator)?,
                // kubelet's default: the device `attach` reported. Handed on
                // only if this driver may claim it on this node.
                Err(wit::DriverError::NotSupported) => default_wait_for_attach(grant, device)?,
                Err(wit::DriverError::Failure(msg)) => return Err(CallError::Plugin(msg)),
            };
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
            let target = existing_dir(mount_path, "device mount path")?;
            let o = wopts()?;
            let mp = path_str(mount_path);
            let answer = plugin.call("mountdevice", |g, s| {
                g.call_mount_device(s, &mp, device, &o)
            })?;
            let plan = match answer {
                Ok(plan) => plan,
                // kubelet's default: format (if blank) and mount the device
                // with the volume's fsType, ext4 when none — here through
                // every check a plan gets.
                Err(wit::DriverError::NotSupported) => wit::BlockPlan {
                    device: device.clone(),
                    fs_type: options
                        .and_then(|o| o.fs_type.clone())
                        .unwrap_or_else(|| KUBELET_DEFAULT_FS.to_string()),
                    mkfs_options: Vec::new(),
                    mount_options: Vec::new(),
                },
                Err(wit::DriverError::Failure(msg)) => return Err(CallError::Plugin(msg)),
            };
            // Recorded before the mount: a call stopped right after mount(2)
            // must not leave a device mount the host cannot bind from.
            let previous = device_mounts::lookup(ctx.layout, mount_path);
            let record = DeviceMount {
                path: mount_path.clone(),
                device: blockdev::resolve_block_device(Path::new(&plan.device))?,
                fs_type: plan.fs_type.trim().to_string(),
                volume: call
                    .options()
                    .map(RawOptions::volume_identity)
                    .unwrap_or_default(),
            };
            device_mounts::record(ctx.layout, &record).map_err(|e| {
                refused(format!(
                    "cannot record the mount in {}: {e}",
                    ctx.layout.state_dir.display()
                ))
            })?;
            let looked_up = plugin.host().loops.image_behind(Path::new(&plan.device));
            if let Err(e) = mount_block(ctx, &plan, &target, read_only, looked_up) {
                let _ = match previous {
                    Some(p) => device_mounts::record(ctx.layout, &p),
                    None => device_mounts::forget(ctx.layout, mount_path),
                };
                return Err(e);
            }
            Ok(DriverStatus::success())
        }
        Call::UnmountDevice { mount_path } => {
            unmount_path(mount_path)?;
            // Forgotten once unmounted, whatever the plugin's hook says.
            device_mounts::forget(ctx.layout, mount_path).map_err(|e| {
                refused(format!(
                    "unmounted, but cannot forget the mount in {}: {e}",
                    ctx.layout.state_dir.display()
                ))
            })?;
            unmount_then_hook(plugin, mount_path, "unmountdevice", |g, s, p| {
                g.call_unmount_device(s, p)
            })
        }
        Call::Mount { dir, .. } => {
            let target = existing_dir(dir, "pod volume dir")?;
            let o = wopts()?;
            let d = path_str(dir);
            match plugin.call("mount", |g, s| g.call_mount(s, &d, &o))? {
                Ok(wit::MountPlan::Block(block)) => {
                    let looked_up = plugin.host().loops.image_behind(Path::new(&block.device));
                    mount_block(ctx, &block, &target, read_only, looked_up)?;
                }
                Ok(wit::MountPlan::Filesystem(fs)) => {
                    mount_filesystem(ctx, &fs, &target, read_only)?
                }
                // kubelet's default is this bind, minus the flags.
                Err(wit::DriverError::NotSupported) => {
                    let identity = call.options().map(RawOptions::volume_identity);
                    bind_device_mount(ctx, &target, read_only, identity.as_deref())?
                }
                Err(wit::DriverError::Failure(msg)) => return Err(CallError::Plugin(msg)),
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
            match plugin.call("expandvolume", |g, s| {
                g.call_expand_volume(s, &o, mount_path, *new_size, *old_size)
            })? {
                Ok(()) => Ok(DriverStatus::success()),
                Err(wit::DriverError::NotSupported) => Err(refused(format!(
                    "the driver cannot expand volumes, so the volume was not grown to {new_size} bytes"
                ))),
                Err(wit::DriverError::Failure(msg)) => Err(CallError::Plugin(msg)),
            }
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
            match plugin.call("expandfs", |g, s| {
                g.call_expand_fs(s, &o, device, &mp, *new_size, *old_size)
            })? {
                // The plugin made the device bigger, or has nothing to do
                // first (kubelet's default): either way the host grows the
                // filesystem, checked.
                Ok(()) | Err(wit::DriverError::NotSupported) => {}
                Err(wit::DriverError::Failure(msg)) => return Err(CallError::Plugin(msg)),
            }
            grow_mounted_filesystem(ctx, device, mount_path)?;
            Ok(DriverStatus::success())
        }
    }
}

/// The device `attach` reports is stored in the Node object and handed to
/// `waitforattach` on the node, which the host answers itself, checked. It
/// must still be a clean path under `/dev`; and when the volume is
/// attached to this very node (a single node, or the controller-manager on
/// the node it attaches to), it must be a device this driver may claim.
fn check_attach_device(ctx: &CallContext<'_>, device: &str, node: &str) -> Result<(), CallError> {
    check_attach_device_path(ctx, device)?;
    if this_node_name().as_deref() == Some(node.to_lowercase().as_str()) {
        let dev = blockdev::resolve_block_device(Path::new(device))?;
        device_claim::check(&dev, ctx.grant, None).map_err(refused)?;
    }
    Ok(())
}

/// The checks of an `attach` answer that need nothing from the node: a
/// clean path under `/dev/`, bounded, holding no secret of the call.
pub(crate) fn check_attach_device_path(
    ctx: &CallContext<'_>,
    device: &str,
) -> Result<(), CallError> {
    let p = Path::new(device);
    let clean = device.starts_with("/dev/")
        && device.len() <= MAX_ATTACH_DEVICE_BYTES
        && !p.components().any(|c| c == std::path::Component::ParentDir)
        && device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:+@=,-".contains(&b));
    if !clean {
        return Err(CallError::Plugin(format!(
            "plugin's attach answered a device that is not a plain path under /dev/ (at most \
             {MAX_ATTACH_DEVICE_BYTES} characters: letters, digits and /._:+@=,-)"
        )));
    }
    if ctx.secrets.found_in(device) {
        return Err(refused(
            "plugin's attach answered a device path that holds a secret of this call; not passing it on",
        ));
    }
    Ok(())
}

/// For the claim check of a mount at `target` by this driver.
fn only_at<'a>(ctx: &'a CallContext<'_>, target: &'a Path) -> device_claim::MountedOnlyAt<'a> {
    device_claim::MountedOnlyAt {
        target,
        driver: &ctx.layout.name,
    }
}

/// kubelet's `waitforattach` default, checked: the device from `attach`.
fn default_wait_for_attach(grant: &Grant, device: &str) -> Result<PathBuf, CallError> {
    if device.is_empty() {
        return Err(refused(
            "the driver does not implement waitforattach and attach reported no device",
        ));
    }
    let dev = blockdev::resolve_block_device(Path::new(device))?;
    device_claim::check(&dev, grant, None).map_err(refused)?;
    Ok(dev)
}

/// `mount` of an attachable driver without a mount of its own: bind the
/// volume's device mount into the pod dir, with the device mount's flags
/// (`nosuid`, `nodev`, `noexec`, atime) and `ro` when the volume is
/// read-only — what kubelet's default does, minus losing the flags.
fn bind_device_mount(
    ctx: &CallContext<'_>,
    target: &Path,
    read_only: bool,
    volume: Option<&str>,
) -> Result<(), CallError> {
    let name = &ctx.layout.name;
    let pod = kubelet_paths::parse_pod_volume_dir(target, name).ok_or_else(|| {
        refused(format!(
            "the driver does not implement mount, and {} is not a pod volume dir of {name} \
             (<kubelet-root>/pods/<uid>/volumes/{}/<volume>), so its device mount cannot be found",
            target.display(),
            name.dir_name()
        ))
    })?;
    let source = kubelet_paths::device_mount_path(&pod.kubelet_root, name, &pod.volume);
    let recorded = device_mounts::lookup(ctx.layout, &source).ok_or_else(|| {
        refused(format!(
            "the driver does not implement mount, and mountdevice mounted nothing at {} for \
             volume {}",
            source.display(),
            pod.volume
        ))
    })?;
    // The device mount path is keyed by the volume's name only: an inline
    // volume named after another pod's PV lands on the same path. Its own
    // options differ: never bind another volume's filesystem into a pod.
    if volume != Some(recorded.volume.as_str()) {
        return Err(refused(format!(
            "{} holds the device of a volume with other options than this one ({}); not \
             binding another volume's filesystem into this pod",
            source.display(),
            pod.volume
        )));
    }
    let mounted = mountinfo::mount_at(&source)?.ok_or_else(|| {
        refused(format!(
            "{} is no longer mounted (it was {} from {}); run mountdevice again",
            source.display(),
            recorded.fs_type,
            recorded.device.display()
        ))
    })?;
    let numbers = blockdev::dev_numbers(&recorded.device)?;
    if !same_device(&mounted, numbers, &recorded.device) {
        return Err(refused(format!(
            "{} is mounted from {}, not from {} as mountdevice left it; not binding it into a pod",
            source.display(),
            mounted.source,
            recorded.device.display()
        )));
    }
    if let Some(existing) = mountinfo::mount_at(target)? {
        if existing.mount_id != mounted.mount_id
            && (existing.major, existing.minor) == (mounted.major, mounted.minor)
            && existing.root == mounted.root
            && existing.is_read_only() == (read_only || mounted.is_read_only())
            && ["nosuid", "nodev"]
                .iter()
                .all(|f| !has_flag(&mounted, f) || has_flag(&existing, f))
        {
            return Ok(()); // already done: idempotent
        }
        return Err(refused(format!(
            "{} is already mounted from {} ({})",
            target.display(),
            existing.source,
            existing.fs_type
        )));
    }
    device_claim::check(&recorded.device, ctx.grant, Some(only_at(ctx, &source)))
        .map_err(refused)?;
    const CARRIED: &[&str] = &[
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "nodiratime",
        "relatime",
        "strictatime",
        "nosymfollow",
    ];
    let mut options = vec!["bind".to_string()];
    options.extend(
        mounted
            .options
            .iter()
            .filter(|o| CARRIED.contains(&o.as_str()))
            .cloned(),
    );
    // Bound from a descriptor of the device mount, not from its path: an
    // unmountdevice racing between the checks above and the bind would
    // leave the path a plain directory of the node's own filesystem, and
    // that would be bound into the pod. Held open, the device mount cannot
    // be unmounted meanwhile (the host never unmounts lazily).
    use std::os::fd::AsRawFd;
    // Its mount is checked by mount id (the kernel's, for the open file),
    // not st_dev: btrfs reports a subvolume's own anonymous device there,
    // never the one in mountinfo.
    let root = std::fs::File::open(&source)
        .map_err(|e| refused(format!("cannot open {}: {e}", source.display())))?;
    if mount_id_of(&root) != Some(mounted.mount_id) {
        return Err(refused(format!(
            "{} was unmounted meanwhile; run mountdevice again",
            source.display()
        )));
    }
    let source_str = format!("/proc/self/fd/{}", root.as_raw_fd());
    node::mount::mount(node::mount::MountRequest {
        source: &source_str,
        target,
        fs_type: "",
        options: &options,
        read_only,
    })?;
    drop(root);
    Ok(())
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
    let short = |s: &str| s.chars().take(256).collect::<String>();
    match locator {
        wit::DeviceLocator::Path(p) => format!("path {}", short(p)),
        wit::DeviceLocator::Serial(s) => format!("serial {}", short(s)),
        wit::DeviceLocator::Wwn(w) => format!("WWN {}", short(w)),
        wit::DeviceLocator::LoopImage(n) => {
            format!("loop image {} (it is not attached)", short(n))
        }
        wit::DeviceLocator::LoopBackingFile(f) => {
            format!("a loop device backed by {}", short(f))
        }
        wit::DeviceLocator::Link(l) => format!("link {}", short(l)),
    }
}

/// Check a plugin's mount options one by one against the grant and the
/// filesystem; add `nosuid,nodev` unless `suid` / `dev` were granted and
/// asked for. None may carry a secret: mount options are world-readable
/// in `/proc/*/mountinfo`.
fn checked_mount_options(
    ctx: &CallContext<'_>,
    fs_type: &str,
    options: &[String],
    read_only: bool,
) -> Result<Vec<String>, CallError> {
    let grant = ctx.grant;
    let mut out = Vec::with_capacity(options.len() + 2);
    for opt in options {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let name = opt.split('=').next().unwrap_or(opt);
        let plain = opt.len() <= 256
            && opt
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:=/+@-".contains(&b));
        if !plain {
            return Err(refused(format!(
                "mount option '{}' is not allowed: one option per list entry, at most 256 \
                 characters, letters, digits and _.:=/+@- only",
                opt.chars().take(64).collect::<String>()
            )));
        }
        if ctx.secrets.found_in(opt) {
            return Err(refused(format!(
                "mount option '{name}' holds a secret, which would be readable by every process \
                 in /proc/*/mountinfo; not mounting"
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
    node::mount_options::check_values(fs_type, &out, read_only)
        .map_err(|why| refused(format!("mount options for {fs_type}: {why}")))?;
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
            "{kind} of filesystem type '{}' is not granted to this driver (granted: {})",
            fs_type.chars().take(64).collect::<String>(),
            list_or_none(granted)
        )))
    }
}

/// The checks of a block plan that need nothing from the node: a type the
/// host formats and the grant mounts, mount options granted, checked and
/// hardened, no mkfs option holding a secret. Returns the type (trimmed)
/// and the mount options to use. (The mkfs options themselves are checked
/// by [`mkfs::format`], only when the device is to be formatted.)
pub(crate) fn check_block_plan<'p>(
    ctx: &CallContext<'_>,
    plan: &'p wit::BlockPlan,
    read_only: bool,
) -> Result<(&'p str, Vec<String>), CallError> {
    let fs_type = plan.fs_type.trim();
    if !mkfs::is_supported_fs(fs_type) {
        return Err(refused(format!(
            "filesystem type '{}' is not supported for block volumes (use ext4, xfs, ext3, ext2 or btrfs)",
            fs_type.chars().take(64).collect::<String>()
        )));
    }
    check_fs_granted("mounting", fs_type, &ctx.grant.block)?;
    let mount_options = checked_mount_options(ctx, fs_type, &plan.mount_options, read_only)?;
    if plan.mkfs_options.iter().any(|a| ctx.secrets.found_in(a)) {
        return Err(refused(
            "an mkfs option holds a secret, which would be readable by every process in mkfs's \
             command line and stored on the device; not formatting",
        ));
    }
    Ok((fs_type, mount_options))
}

/// Carry out a block plan at `target`: resolve the device, check what it
/// holds, format only if blank and read-write, mount. Returns the device.
/// `looked_up`: the image the plan's loop device was backed by when the
/// plugin looked it up in this call, if it did (the loop capability).
fn mount_block(
    ctx: &CallContext<'_>,
    plan: &wit::BlockPlan,
    target: &Path,
    read_only: bool,
    looked_up: Option<(u64, u64)>,
) -> Result<PathBuf, CallError> {
    let grant = ctx.grant;
    let (fs_type, mount_options) = check_block_plan(ctx, plan, read_only)?;
    let device = blockdev::resolve_block_device(Path::new(&plan.device))?;
    let (major, minor) = blockdev::dev_numbers(&device)?;
    // Held open until the mount: the loop device cannot then be re-attached
    // to another image (LOOP_CONFIGURE fails while it is open); a detach
    // meanwhile only marks it to clear itself once its last user (the
    // mount, later) lets go.
    let _pinned = match looked_up {
        Some(image) => Some(pin_looked_up_loop_device(&device, image)?),
        None => None,
    };
    if let Some(existing) = mountinfo::mount_at(target)? {
        // Ours only if it is this device, its whole filesystem, with the
        // flags the host sets.
        let same = same_device(&existing, (major, minor), &device)
            && existing.root == "/"
            && mount_options
                .iter()
                .filter(|o| ["nosuid", "nodev", "noexec"].contains(&o.as_str()))
                .all(|f| has_flag(&existing, f));
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
            // Already done: idempotent (the device was claimed when it
            // was mounted; still ours?).
            device_claim::check(&device, grant, Some(only_at(ctx, target))).map_err(refused)?;
            return Ok(device);
        }
        return Err(refused(format!(
            "{} is already mounted from {} ({}), not from {}",
            target.display(),
            existing.source,
            existing.fs_type,
            device.display()
        )));
    }
    device_claim::check(&device, grant, Some(only_at(ctx, target))).map_err(refused)?;

    // A format the host started on this device and never saw finish (its
    // call killed with mkfs) left what no probe can tell from data: wiped,
    // so the probe below finds the device blank and it is formatted again.
    let formats = ctx.layout.formats_dir();
    if !read_only {
        mkfs::recover_interrupted(&device, &formats)?;
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
            mkfs::format_noted(&device, fs_type, &plan.mkfs_options, &formats)?
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
    Ok(device)
}

/// The checks of a filesystem plan before anything is mounted: a type the
/// grant lists that needs no device (by name and by the kernel's word), a
/// plain source that holds no secret and names no block device, mount
/// options granted, checked and hardened. Returns the type (trimmed) and
/// the mount options to use.
pub(crate) fn check_filesystem_plan<'p>(
    ctx: &CallContext<'_>,
    plan: &'p wit::FilesystemPlan,
    read_only: bool,
) -> Result<(&'p str, Vec<String>), CallError> {
    let fs_type = plan.fs_type.trim();
    check_fs_granted("mounting", fs_type, &ctx.grant.filesystem)?;
    crate::policy::check_filesystem_plan_type(fs_type)
        .and_then(|()| crate::policy::check_kernel_needs_no_device(fs_type))
        .map_err(refused)?;
    if plan.source.is_empty() || plan.source.contains('\0') || plan.source.len() > 4096 {
        return Err(refused("the mount plan's source is empty or malformed"));
    }
    if ctx.secrets.found_in(&plan.source) {
        return Err(refused(
            "the mount plan's source holds a secret, which would be readable by every process in \
             /proc/*/mountinfo; not mounting",
        ));
    }
    // A filesystem plan is for filesystems without a device. Whatever its
    // type, its source must not name one: the kernel looks a source up as a
    // path (relative to our working directory too) for any type that
    // takes a device.
    if let Ok(meta) = std::fs::metadata(&plan.source) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_block_device() {
            return Err(refused(format!(
                "the mount plan's source {} is a block device; a filesystem plan never mounts a \
                 device (use a block plan, which checks what the device holds and who may use it)",
                plan.source.chars().take(256).collect::<String>()
            )));
        }
    }
    let mount_options = checked_mount_options(ctx, fs_type, &plan.mount_options, read_only)?;
    Ok((fs_type, mount_options))
}

/// The id of the mount `file` was opened on (`mnt_id` in its fdinfo, the
/// number mountinfo's first field shows).
fn mount_id_of(file: &std::fs::File) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Open `device`, a loop device the plugin looked up in this call, and
/// check it is still backed by the image it was then. Between the lookup
/// and here another call may have detached it and attached another image
/// (loop numbers are reused at once), whose filesystem would be mounted —
/// or, blank, formatted — for this volume. Kept open, it stays this image's
/// until the mount holds it.
fn pin_looked_up_loop_device(device: &Path, image: (u64, u64)) -> Result<std::fs::File, CallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let pin = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| refused(format!("cannot open {}: {e}", device.display())))?;
    let now = node::loopdev::status(device)?.map(|s| {
        (
            libc::makedev(s.backing_major, s.backing_minor),
            s.backing_inode,
        )
    });
    if now != Some(image) {
        return Err(refused(format!(
            "{} is no longer the loop device the plugin looked up (its image was detached \
             meanwhile{}); not mounting another volume's device: try again",
            device.display(),
            if now.is_some() {
                ", and another image attached there"
            } else {
                ""
            }
        )));
    }
    Ok(pin)
}

fn mount_filesystem(
    ctx: &CallContext<'_>,
    plan: &wit::FilesystemPlan,
    target: &Path,
    read_only: bool,
) -> Result<(), CallError> {
    let (fs_type, mount_options) = check_filesystem_plan(ctx, plan, read_only)?;
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
    ctx: &CallContext<'_>,
    device: &str,
    mount_path: &Path,
) -> Result<(), CallError> {
    let dev = blockdev::resolve_block_device(Path::new(device))?;
    let numbers = blockdev::dev_numbers(&dev)?;
    device_claim::check(&dev, ctx.grant, Some(only_at(ctx, mount_path))).map_err(refused)?;
    let Some(mounted) = mountinfo::mount_at(mount_path)? else {
        return Err(refused(format!(
            "nothing is mounted at {}; cannot grow its filesystem",
            mount_path.display()
        )));
    };
    if !same_device(&mounted, numbers, &dev) {
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
    use crate::layout::DriverName;

    fn ctx(grant: &Grant) -> CallContext<'_> {
        let layout = Box::leak(Box::new(DriverLayout::for_driver(
            DriverName::parse("acme/x").unwrap(),
            PathBuf::from("/p/acme~x"),
        )));
        let mut secrets = SecretSet::new();
        secrets.add_str("hunter2-password");
        CallContext {
            layout,
            grant,
            secrets,
        }
    }

    #[test]
    fn mount_options_are_checked_against_the_grant_and_hardened() {
        let mut grant = Grant::baseline();
        grant.mount_options = vec!["noatime".into(), "discard".into(), "comment".into()];
        let check = |g: &Grant, opts: &[&str]| {
            let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
            checked_mount_options(&ctx(g), "ext4", &opts, false)
        };
        let ok = check(&grant, &["noatime", "discard", "ro"]).unwrap();
        assert_eq!(ok, vec!["noatime", "discard", "ro", "nosuid", "nodev"]);
        for bad in [
            "suid", "dev", "exec", "size=1", "bind", "remount", "ro,suid", "a b",
        ] {
            assert!(check(&grant, &[bad]).is_err(), "{bad}");
        }
        let e = check(&grant, &["comment=HUNTER2-password"]).unwrap_err();
        assert!(e.to_string().contains("holds a secret"), "{e}");
        grant
            .mount_options
            .extend(["suid".to_string(), "bind".to_string()]);
        assert_eq!(check(&grant, &["suid"]).unwrap(), vec!["suid", "nodev"]);
        assert!(check(&grant, &["bind"]).is_err());
    }
}
