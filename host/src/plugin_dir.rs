//! Where is the FlexVolume plugin dir on this node?
//!
//! kubelet looks for drivers in one directory, set by its
//! `--volume-plugin-dir` flag or its config's `volumePluginDir`;
//! kube-controller-manager (which runs `attach`, `detach`, `isattached`)
//! in its own `--flex-volume-plugin-dir`. A driver installed anywhere else
//! is silently never called. [`Detector::detect`] answers from the best
//! evidence available, in this order, and records what every rule found
//! (or why it did not apply) so an operator can check the answer:
//!
//! 1. `--plugin-dir` given to the command;
//! 2. `$FLEXVOLUME_DIR_PATH` (an absolute path);
//! 3. a running kubelet's command line (`/proc/PID/cmdline`):
//!    `--volume-plugin-dir=X` or `--volume-plugin-dir X`, the last one
//!    winning as in pflag. kubelet is `kubelet` or `hyperkube kubelet`;
//!    k3s and rke2 (`k3s server|agent`, `rke2 server|agent`) pass it as
//!    `--kubelet-arg=volume-plugin-dir=X` (or `--kubelet-arg volume-plugin-dir=X`)
//!    or in their config file's `kubelet-arg:` list
//!    (`/etc/rancher/{k3s,rke2}/config.yaml` and its `config.yaml.d/*.yaml`
//!    drop-ins, `kubelet-arg+:` appending; `--config`/`-c` or
//!    `$K3S_CONFIG_FILE`/`$RKE2_CONFIG_FILE` naming another file);
//! 4. that kubelet's config file (`--config`, YAML or JSON, a relative
//!    path taken from the kubelet's working directory), then its
//!    `--config-dir` drop-ins (`*.conf`, in name order, later ones winning):
//!    `volumePluginDir`. The flag beats the files, as in kubelet. A kubelet
//!    found with neither uses its built-in default: rules 5 and 6 are then
//!    skipped (the running kubelet is better evidence than a guess);
//! 5. kube-controller-manager's `--flex-volume-plugin-dir`, when no kubelet
//!    runs here;
//! 6. platform defaults: GKE `/home/kubernetes/flexvolume`; AKS, Flatcar,
//!    CoreOS, Fedora CoreOS and Atomic Host `/etc/kubernetes/volumeplugins`;
//!    OpenShift 4 (RHCOS) `/etc/kubernetes/kubelet-plugins/volume/exec`;
//!    OpenShift 3 `/etc/origin/kubelet-plugins/volume/exec`; OpenStack
//!    Magnum `/var/lib/kubelet/volumeplugins`;
//! 7. kubelet's default, `/usr/libexec/kubernetes/kubelet-plugins/volume/exec`
//!    — unless `/usr` is read-only there (kubelet cannot create the dir and
//!    FlexVolume is silently off): then `/var/lib/kubelet/volumeplugins`,
//!    with a warning naming the kubelet flag, config field and
//!    controller-manager flag that must be set to it.
//!
//! Rules 3 to 5 are evaluated even when an earlier rule decides, so that a
//! disagreement is reported: a `--plugin-dir` the running kubelet does not
//! use, several kubelets with different dirs, and above all a
//! controller-manager whose dir differs from kubelet's (attach and detach
//! then never find the driver).
//!
//! **A containerized kubelet** (RKE, kind, k3d) names a path inside its own
//! root. When `/proc/PID/root` is not our root the path is carried to the
//! host through the two mount tables (see [`host_view`]); when that fails
//! it is reported as `/proc/PID/root/X`, valid only while that process
//! lives, with a warning.
//!
//! **`--root DIR`** makes DIR `/` for every file read, `/proc` included,
//! so every rule can be tested with a fake tree, and a DaemonSet with the
//! host's `/` at `/host` (and `hostPID`) can run `--root /host`. The answer
//! is always a path as the node sees it (without DIR); [`Detection::path_under`]
//! gives the path to write to from here.
//!
//! Everything read is bounded: command lines 1 MiB, config files 1 MiB,
//! mount tables 16 MiB; every file read must be a regular file and is
//! opened without blocking (a FIFO named by `--config`, or planted in a
//! fake tree, cannot hang us); processes that exit mid-scan are skipped.
//! Nothing here writes anything.

mod config_file;
mod host_view;
mod processes;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use config_file::{TopLevel, Value};
use host_view::{RootRelation, lexical, under};
use processes::{Distro, Process, Role, flag_value, flag_values, read_bounded};

/// kubelet's (and kube-controller-manager's) built-in plugin dir.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";
/// The usual writable choice where `/usr` is read-only.
pub const READ_WRITE_PLUGIN_DIR: &str = "/var/lib/kubelet/volumeplugins";
/// The environment variable of rule 2.
pub const ENV_VAR: &str = "FLEXVOLUME_DIR_PATH";
/// The `schema` of [`Detection::to_json`].
pub const JSON_SCHEMA: &str = "flexwasm.plugin-dir/v1";

/// At most this much of a config file is read.
const CONFIG_LIMIT: u64 = 1 << 20;

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    PluginDirFlag,
    Env,
    KubeletCmdline,
    KubeletConfig,
    ControllerManager,
    PlatformDefault,
    Default,
    /// Rule 7 with `/usr` read-only: [`READ_WRITE_PLUGIN_DIR`].
    DefaultReadOnlyUsr,
}

impl Rule {
    /// The stable name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PluginDirFlag => "plugin-dir-flag",
            Rule::Env => "env",
            Rule::KubeletCmdline => "kubelet-cmdline",
            Rule::KubeletConfig => "kubelet-config",
            Rule::ControllerManager => "controller-manager",
            Rule::PlatformDefault => "platform-default",
            Rule::Default => "default",
            Rule::DefaultReadOnlyUsr => "default-read-only-usr",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Rule::PluginDirFlag => 1,
            Rule::Env => 2,
            Rule::KubeletCmdline => 3,
            Rule::KubeletConfig => 4,
            Rule::ControllerManager => 5,
            Rule::PlatformDefault => 6,
            Rule::Default | Rule::DefaultReadOnlyUsr => 7,
        }
    }
}

/// The answer, with its reasons.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The plugin dir as the node sees it (no `--root` prefix).
    pub plugin_dir: PathBuf,
    pub rule: Rule,
    /// One line per rule, in order, then the decision.
    pub explain: Vec<String>,
    /// What an operator must act on (empty when all is consistent).
    pub warnings: Vec<String>,
}

impl Detection {
    /// Where the plugin dir is from here, with the node's `/` at `root`.
    pub fn path_under(&self, root: &Path) -> PathBuf {
        if root == Path::new("/") {
            self.plugin_dir.clone()
        } else {
            under(root, &self.plugin_dir)
        }
    }

    /// `{ "schema": "flexwasm.plugin-dir/v1", "plugin_dir", "rule", "explain": [..], "warnings": [..] }`.
    /// A non-UTF-8 path is shown with U+FFFD replacements (and the explain
    /// lines say which path it was).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": JSON_SCHEMA,
            "plugin_dir": self.plugin_dir.to_string_lossy(),
            "rule": self.rule.as_str(),
            "explain": self.explain,
            "warnings": self.warnings,
        })
    }
}

/// Whether the filesystem holding an existing path is mounted read-only.
pub type ReadOnlyCheck = fn(&Path) -> io::Result<bool>;

/// `statvfs(path)` has `ST_RDONLY`.
pub fn statvfs_read_only(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// The inputs of a detection.
#[derive(Debug, Clone)]
pub struct Detector {
    /// The node's `/` (default `/`).
    pub root: PathBuf,
    /// Rule 1: an explicit `--plugin-dir`.
    pub plugin_dir_flag: Option<PathBuf>,
    /// Rule 2: the value of `$FLEXVOLUME_DIR_PATH` (passed in, so tests
    /// need not touch the process environment).
    pub env_value: Option<OsString>,
    /// Rule 7's read-only test (injectable for tests).
    pub read_only: ReadOnlyCheck,
}

/// What one kubelet (or k3s/rke2 process) uses.
struct KubeletView {
    pid: u32,
    role: Role,
    title: String,
    shares_root: bool,
    /// Rule 3's line about it.
    cmdline_note: String,
    /// Rule 4's line about it.
    config_note: String,
    source: Source,
    /// Its plugin dir as the host sees it.
    host: HostDir,
    /// Config files that name a dir we could not read.
    config_doubts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Config,
    BuiltinDefault,
}

struct HostDir {
    path: PathBuf,
    /// How the path was carried to the host, or why it could not be.
    note: Option<String>,
    /// Reported as `/proc/PID/root/…`: valid only while the process lives.
    through_proc: bool,
}

struct ControllerManagerView {
    pid: u32,
    title: String,
    flag_set: bool,
    host: HostDir,
    note: String,
}

struct Platform {
    name: &'static str,
    evidence: String,
    dir: &'static str,
}

impl Detector {
    /// Detection over the node's `/` at `root`, no flag, no environment,
    /// the real read-only check.
    pub fn new(root: impl Into<PathBuf>) -> Detector {
        Detector {
            root: root.into(),
            plugin_dir_flag: None,
            env_value: None,
            read_only: statvfs_read_only,
        }
    }

    /// Take rule 2 from this process's environment.
    pub fn with_process_env(mut self) -> Detector {
        self.env_value = std::env::var_os(ENV_VAR);
        self
    }

    pub fn detect(&self) -> Detection {
        let mut explain = Vec::new();
        let mut warnings = Vec::new();
        let mut decided: Option<(Rule, PathBuf)> = None;

        // 1.
        match &self.plugin_dir_flag {
            Some(p) => {
                explain.push(format!("rule 1 (--plugin-dir): {} (given)", p.display()));
                decided = Some((Rule::PluginDirFlag, p.clone()));
            }
            None => explain.push("rule 1 (--plugin-dir): not given".into()),
        }

        // 2.
        let env_line = match self.env_value.as_deref() {
            None => "not set".to_string(),
            Some(v) if v.is_empty() => "set but empty: ignored".into(),
            Some(v) if !Path::new(v).is_absolute() => {
                format!("{:?} is not an absolute path: ignored", v.to_string_lossy())
            }
            Some(v) => {
                let dir = lexical(Path::new(v));
                if decided.is_none() {
                    decided = Some((Rule::Env, dir.clone()));
                }
                dir.display().to_string()
            }
        };
        explain.push(format!("rule 2 (${ENV_VAR}): {env_line}"));

        // 3 and 4.
        let scan = processes::scan(&self.root);
        let mut kubelets: Vec<KubeletView> = scan
            .found
            .iter()
            .filter(|p| matches!(p.role, Role::Kubelet | Role::Embedded(_)))
            .map(|p| self.kubelet_view(p))
            .collect();
        // rke2 runs kubelet as its own process: that one carries the flags.
        if kubelets.iter().any(|k| k.role == Role::Kubelet) {
            kubelets.retain(|k| k.role == Role::Kubelet);
        }
        kubelets.sort_by_key(|k| (!k.shares_root, k.pid));
        let primary = kubelets.first();
        match (&scan.error, primary) {
            (Some(e), _) => {
                explain.push(format!("rule 3 (kubelet command line): {e}"));
                explain.push("rule 4 (kubelet config file): no kubelet found".into());
            }
            (None, None) => {
                explain.push(format!(
                    "rule 3 (kubelet command line): no kubelet, hyperkube kubelet, k3s or rke2 process among {} in {}{}",
                    scan.examined,
                    self.root.join("proc").display(),
                    scan_details(scan.vanished, scan.unreadable)
                ));
                explain.push("rule 4 (kubelet config file): no kubelet found".into());
            }
            (None, Some(k)) => {
                let mut line = format!("rule 3 (kubelet command line): {}", k.cmdline_note);
                let others: Vec<String> = kubelets[1..]
                    .iter()
                    .map(|o| format!("pid {} ({}) uses {}", o.pid, o.title, o.host.path.display()))
                    .collect();
                if !others.is_empty() {
                    line.push_str(&format!("; also found: {}", others.join("; ")));
                }
                if let Some(note) = &k.host.note {
                    line.push_str(&format!("; {note}"));
                }
                explain.push(line);
                explain.push(format!("rule 4 (kubelet config file): {}", k.config_note));
                if decided.is_none() {
                    match k.source {
                        Source::Flag => decided = Some((Rule::KubeletCmdline, k.host.path.clone())),
                        Source::Config => {
                            decided = Some((Rule::KubeletConfig, k.host.path.clone()))
                        }
                        Source::BuiltinDefault => {}
                    }
                }
            }
        }
        if let Some(k) = primary
            && k.source != Source::Flag
            && !k.config_doubts.is_empty()
        {
            warnings.push(format!(
                "kubelet pid {}: {}: its volumePluginDir could not be read, so this answer may not be the dir it uses",
                k.pid,
                k.config_doubts.join("; ")
            ));
        }
        if let Some(k) = primary
            && k.host.through_proc
        {
            warnings.push(format!(
                "kubelet pid {} runs in a container and its plugin dir could not be found on the host: reported as {}, which exists only while that process runs; mount the plugin dir into its container from the host to get a stable path",
                k.pid,
                k.host.path.display()
            ));
        }
        let distinct: Vec<&KubeletView> = kubelets
            .iter()
            .filter(|k| primary.is_some_and(|p| p.host.path != k.host.path))
            .collect();
        if let (Some(p), false) = (primary, distinct.is_empty()) {
            let all: Vec<String> = std::iter::once(p)
                .chain(distinct)
                .map(|k| format!("pid {} uses {}", k.pid, k.host.path.display()))
                .collect();
            warnings.push(format!(
                "several kubelets run here and use different plugin dirs ({}); this answer is for pid {}",
                all.join(", "),
                p.pid
            ));
        }
        let kubelet_on_default = primary.is_some_and(|k| k.source == Source::BuiltinDefault);

        // 5.
        let cms: Vec<ControllerManagerView> = scan
            .found
            .iter()
            .filter(|p| p.role == Role::ControllerManager)
            .map(|p| self.controller_manager_view(p))
            .collect();
        let cm_line = match cms.first() {
            None if scan.error.is_some() => "not searched (see rule 3)".to_string(),
            None => "none runs on this node (it usually runs on control-plane nodes: its --flex-volume-plugin-dir must name the same dir)".into(),
            Some(c) => {
                let mut line = c.note.clone();
                if let Some(note) = &c.host.note {
                    line.push_str(&format!("; {note}"));
                }
                if decided.is_none() && primary.is_none() && c.flag_set {
                    decided = Some((Rule::ControllerManager, c.host.path.clone()));
                } else if primary.is_some() {
                    line.push_str(" (a kubelet runs here: kubelet decides)");
                }
                line
            }
        };
        explain.push(format!("rule 5 (kube-controller-manager): {cm_line}"));

        // 6.
        if decided.is_some() {
            explain.push("rule 6 (platform defaults): not needed".into());
        } else if let Some(k) = primary.filter(|_| kubelet_on_default) {
            explain.push(format!(
                "rule 6 (platform defaults): not used: kubelet pid {} runs without --volume-plugin-dir or volumePluginDir, so it uses its built-in default",
                k.pid
            ));
        } else {
            let found = self.platforms();
            match found.first() {
                None => explain.push(
                    "rule 6 (platform defaults): no GKE, AKS, OpenStack Magnum, OpenShift or CoreOS/Flatcar/Atomic marker found".into(),
                ),
                Some(p) => {
                    let mut line = format!(
                        "rule 6 (platform defaults): {} ({}): {}",
                        p.name, p.evidence, p.dir
                    );
                    if found.len() > 1 {
                        let rest: Vec<String> = found[1..]
                            .iter()
                            .map(|o| format!("{} ({})", o.name, o.evidence))
                            .collect();
                        line.push_str(&format!("; also matched, lower in order: {}", rest.join(", ")));
                    }
                    explain.push(line);
                    decided = Some((Rule::PlatformDefault, PathBuf::from(p.dir)));
                }
            }
        }

        // 7.
        let (rule, dir) = match decided {
            Some(d) => {
                explain.push("rule 7 (kubelet's default): not needed".into());
                d
            }
            None => {
                let default_here = under(&self.root, Path::new(DEFAULT_PLUGIN_DIR));
                let probe = nearest_existing(&self.root, &default_here);
                match (self.read_only)(&probe) {
                    Ok(true) => {
                        explain.push(format!(
                            "rule 7 (kubelet's default): {DEFAULT_PLUGIN_DIR} is on a read-only filesystem ({} is read-only): using {READ_WRITE_PLUGIN_DIR}",
                            probe.display()
                        ));
                        warnings.push(read_only_usr_warning(
                            primary.filter(|_| kubelet_on_default).map(|k| k.pid),
                        ));
                        (
                            Rule::DefaultReadOnlyUsr,
                            PathBuf::from(READ_WRITE_PLUGIN_DIR),
                        )
                    }
                    Ok(false) => {
                        explain.push(format!(
                            "rule 7 (kubelet's default): {DEFAULT_PLUGIN_DIR} ({} is writable)",
                            probe.display()
                        ));
                        (Rule::Default, PathBuf::from(DEFAULT_PLUGIN_DIR))
                    }
                    Err(e) => {
                        explain.push(format!(
                            "rule 7 (kubelet's default): {DEFAULT_PLUGIN_DIR} (could not tell whether {} is read-only: {e})",
                            probe.display()
                        ));
                        (Rule::Default, PathBuf::from(DEFAULT_PLUGIN_DIR))
                    }
                }
            }
        };

        // Disagreements with what is running.
        if let Some(k) = primary
            && k.host.path != dir
            && rule != Rule::DefaultReadOnlyUsr
        {
            warnings.push(format!(
                "kubelet pid {} ({}) uses {} but the answer is {} (rule {}, {}): kubelet will not find a driver installed there",
                k.pid,
                k.title,
                k.host.path.display(),
                dir.display(),
                rule.number(),
                rule.as_str()
            ));
        }
        for c in &cms {
            if c.host.path == dir {
                continue;
            }
            let kubelet = match primary {
                Some(k) if k.host.path == dir => {
                    format!("kubelet pid {} uses {}", k.pid, dir.display())
                }
                _ => format!("the driver goes to {}", dir.display()),
            };
            warnings.push(format!(
                "kube-controller-manager pid {} ({}) uses {}{} but {kubelet}: attach, detach and isattached run in the controller-manager, which will not find the driver; set its --flex-volume-plugin-dir={} (and install the driver where it can see it)",
                c.pid,
                c.title,
                c.host.path.display(),
                if c.flag_set { "" } else { " (its default)" },
                dir.display()
            ));
        }
        if rule != Rule::DefaultReadOnlyUsr && dir.is_absolute() {
            let here = under(&self.root, &dir);
            let probe = nearest_existing(&self.root, &here);
            if let Ok(true) = (self.read_only)(&probe) {
                warnings.push(format!(
                    "{} is on a read-only filesystem ({} is read-only): nothing can be installed there, and kubelet cannot create it",
                    dir.display(),
                    probe.display()
                ));
            }
        }
        if dir.to_str().is_none() {
            explain.push(format!(
                "the plugin dir is not valid UTF-8: {:?}",
                dir.as_os_str()
            ));
        }
        explain.push(format!(
            "decided by rule {} ({}): {}",
            rule.number(),
            rule.as_str(),
            dir.display()
        ));
        Detection {
            plugin_dir: dir,
            rule,
            explain,
            warnings,
        }
    }

    fn relation(&self, pid: u32) -> RootRelation {
        host_view::root_relation(&self.root, pid)
    }

    /// Where to open `path` as process `pid` names it.
    fn file_of(&self, pid: u32, relation: &RootRelation, path: &Path) -> PathBuf {
        let proc_dir = self.root.join("proc").join(pid.to_string());
        if path.is_relative() {
            // Through the magic link: the kernel resolves it from the
            // process's working directory (a fake tree uses a relative link).
            return proc_dir.join("cwd").join(path);
        }
        match relation {
            RootRelation::Different => under(&proc_dir.join("root"), path),
            _ => under(&self.root, path),
        }
    }

    /// `dir` of process `pid`, as the host sees it.
    fn host_dir(&self, pid: u32, relation: &RootRelation, dir: &Path) -> HostDir {
        let dir = lexical(dir);
        match relation {
            RootRelation::Same => HostDir {
                path: dir,
                note: None,
                through_proc: false,
            },
            RootRelation::Unknown(why) => HostDir {
                path: dir,
                note: Some(format!(
                    "could not compare its root with ours ({why}): its paths are taken as the host's"
                )),
                through_proc: false,
            },
            RootRelation::Different => match host_view::host_path(&self.root, pid, &dir) {
                Ok((path, how)) => HostDir {
                    note: Some(format!(
                        "it runs in its own root; {how}: on the host that is {}",
                        path.display()
                    )),
                    path,
                    through_proc: false,
                },
                Err(why) => {
                    let path = under(&PathBuf::from(format!("/proc/{pid}/root")), &dir);
                    HostDir {
                        note: Some(format!(
                            "it runs in its own root, and its {} could not be found on the host ({why}): reported as {}, under {}",
                            dir.display(),
                            path.display(),
                            self.root.display()
                        )),
                        path,
                        through_proc: true,
                    }
                }
            },
        }
    }

    fn kubelet_view(&self, p: &Process) -> KubeletView {
        let relation = self.relation(p.pid);
        let who = format!("pid {} ({})", p.pid, p.title);
        let mut cmd_notes = Vec::new();
        if p.truncated {
            cmd_notes.push("its command line is over 1 MiB; the rest was not read".to_string());
        }
        let args: Vec<OsString> = match p.role {
            Role::Embedded(d) => {
                let (args, note) = self.embedded_kubelet_args(p, d, &relation);
                cmd_notes.push(note);
                args
            }
            _ => p.args.clone(),
        };
        let flag = flag_value(&args, "volume-plugin-dir").filter(|v| !v.is_empty());
        let (config_note, config_dir, config_doubts) = self.kubelet_config(p.pid, &relation, &args);
        let (source, dir) = match (flag, &config_dir) {
            (Some(f), _) => (Source::Flag, PathBuf::from(f)),
            (None, Some(c)) => (Source::Config, c.clone()),
            (None, None) => (Source::BuiltinDefault, PathBuf::from(DEFAULT_PLUGIN_DIR)),
        };
        let mut cmdline_note = match (flag, p.role) {
            (Some(f), Role::Embedded(_)) => {
                format!("{who}: kubelet-arg volume-plugin-dir={}", show(f))
            }
            (Some(f), _) => format!("{who}: --volume-plugin-dir={}", show(f)),
            (None, _) => format!("{who}: no --volume-plugin-dir"),
        };
        for n in cmd_notes {
            cmdline_note.push_str(&format!("; {n}"));
        }
        let config_note = match (source, config_dir) {
            (Source::Flag, Some(c)) => format!(
                "{config_note}; not used: the flag beats the config file, as in kubelet (it says {})",
                c.display()
            ),
            (Source::BuiltinDefault, _) => format!(
                "{config_note}; so kubelet pid {} uses its built-in default {DEFAULT_PLUGIN_DIR}",
                p.pid
            ),
            _ => config_note,
        };
        let host = self.host_dir(p.pid, &relation, &dir);
        KubeletView {
            pid: p.pid,
            role: p.role,
            title: p.title.clone(),
            shares_root: !matches!(relation, RootRelation::Different),
            cmdline_note,
            config_note,
            source,
            host,
            config_doubts,
        }
    }

    /// The kubelet flags a k3s/rke2 process passes to its kubelet: its
    /// config file's `kubelet-arg` list (with drop-ins), then its command
    /// line's `--kubelet-arg`s (later ones win in kubelet's parser).
    fn embedded_kubelet_args(
        &self,
        p: &Process,
        d: Distro,
        relation: &RootRelation,
    ) -> (Vec<OsString>, String) {
        let name = d.name();
        let mut notes = Vec::new();
        if p.retitled {
            notes.push(format!(
                "{name} hides its arguments (its command line is a title)"
            ));
        }
        let config: PathBuf = if let Some(c) =
            flag_value(&p.args, "config").or_else(|| short_flag_value(&p.args, "-c"))
        {
            PathBuf::from(c)
        } else if let Some(c) = self.environ_of(p.pid, d.config_env()) {
            notes.push(format!("${} names its config", d.config_env()));
            PathBuf::from(c)
        } else {
            PathBuf::from(d.default_config())
        };
        let mut from_config: Vec<OsString> = Vec::new();
        let mut files = vec![config.clone()];
        let dropins = PathBuf::from(format!("{}.d", config.display()));
        files.extend(
            list_dir(&self.file_of(p.pid, relation, &dropins), &["yaml", "yml"])
                .into_iter()
                .map(|n| dropins.join(n)),
        );
        let mut read_any = false;
        for (i, file) in files.iter().enumerate() {
            let here = self.file_of(p.pid, relation, file);
            match read_config(&here) {
                Ok(top) => {
                    read_any = true;
                    for (key, replace) in [("kubelet-arg", true), ("kubelet-arg+", false)] {
                        match top.get(key) {
                            None | Some(Value::Null) => {}
                            Some(Value::List(items)) => {
                                if replace {
                                    from_config.clear();
                                }
                                from_config.extend(items.iter().map(OsString::from));
                            }
                            Some(Value::Scalar(s)) => {
                                if replace {
                                    from_config.clear();
                                }
                                from_config.push(OsString::from(s));
                            }
                            Some(Value::Unreadable(why)) => notes
                                .push(format!("{}: `{key}` is {why}: not read", file.display())),
                        }
                    }
                }
                Err(e) if i == 0 && e.kind == io::ErrorKind::NotFound => {
                    notes.push(format!("no {}", file.display()));
                }
                Err(e) => notes.push(format!("{}: {}", file.display(), e.text)),
            }
        }
        if read_any {
            let shown: Vec<String> = from_config
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            notes.push(format!(
                "{} (and drop-ins) give kubelet-arg [{}]",
                config.display(),
                shown.join(", ")
            ));
        }
        let cli: Vec<&OsStr> = flag_values(&p.args, "kubelet-arg");
        let args: Vec<OsString> = from_config
            .iter()
            .map(|a| processes::kubelet_arg_to_flag(a))
            .chain(cli.into_iter().map(processes::kubelet_arg_to_flag))
            .collect();
        (args, notes.join("; "))
    }

    /// `NAME` in process `pid`'s environment.
    fn environ_of(&self, pid: u32, name: &str) -> Option<OsString> {
        let path = self.root.join("proc").join(pid.to_string()).join("environ");
        let (bytes, _) = read_bounded(&path, processes::CMDLINE_LIMIT).ok()?;
        processes::environ_value(&bytes, name).filter(|v| !v.is_empty())
    }

    /// Rule 4 for one kubelet: the line to show, and the dir its config
    /// files set (drop-ins over the main file).
    fn kubelet_config(
        &self,
        pid: u32,
        relation: &RootRelation,
        args: &[OsString],
    ) -> (String, Option<PathBuf>, Vec<String>) {
        let config = flag_value(args, "config").filter(|v| !v.is_empty());
        let config_dir = flag_value(args, "config-dir").filter(|v| !v.is_empty());
        if config.is_none() && config_dir.is_none() {
            return ("no --config".into(), None, Vec::new());
        }
        let mut notes = Vec::new();
        let mut doubts = Vec::new();
        let mut dir: Option<PathBuf> = None;
        let mut consider = |file: &Path, notes: &mut Vec<String>| {
            let here = self.file_of(pid, relation, file);
            let shown = if here == file {
                file.display().to_string()
            } else {
                format!("{} (read as {})", file.display(), here.display())
            };
            match read_config(&here) {
                Err(e) => {
                    notes.push(format!("{shown}: {}", e.text));
                    doubts.push(format!("{}: {}", file.display(), e.text));
                }
                Ok(top) => match top.get("volumePluginDir") {
                    None => notes.push(format!("{shown}: no volumePluginDir")),
                    Some(Value::Null) => notes.push(format!("{shown}: volumePluginDir is null")),
                    Some(Value::Scalar(s)) if s.is_empty() => {
                        notes.push(format!("{shown}: volumePluginDir is empty"))
                    }
                    Some(Value::Scalar(s)) => {
                        notes.push(format!("{shown}: volumePluginDir: {s}"));
                        dir = Some(PathBuf::from(s));
                    }
                    Some(Value::List(_)) => {
                        notes.push(format!("{shown}: volumePluginDir is a list: not a path"));
                        doubts.push(format!("{}: volumePluginDir is a list", file.display()));
                    }
                    Some(Value::Unreadable(why)) => {
                        notes.push(format!(
                            "{shown}: volumePluginDir is {why}: this reader cannot use it"
                        ));
                        doubts.push(format!("{}: volumePluginDir is {why}", file.display()));
                    }
                },
            }
        };
        if let Some(c) = config {
            consider(Path::new(c), &mut notes);
        }
        if let Some(d) = config_dir {
            let d = Path::new(d);
            let names = list_dir(&self.file_of(pid, relation, d), &["conf"]);
            if names.is_empty() {
                notes.push(format!("--config-dir {}: no *.conf drop-ins", d.display()));
            }
            for n in names {
                consider(&d.join(n), &mut notes);
            }
        }
        (notes.join("; "), dir, doubts)
    }

    fn controller_manager_view(&self, p: &Process) -> ControllerManagerView {
        let relation = self.relation(p.pid);
        let flag = flag_value(&p.args, "flex-volume-plugin-dir").filter(|v| !v.is_empty());
        let note = match flag {
            Some(f) => format!(
                "pid {} ({}): --flex-volume-plugin-dir={}",
                p.pid,
                p.title,
                show(f)
            ),
            None => format!(
                "pid {} ({}): no --flex-volume-plugin-dir, so it uses its default {DEFAULT_PLUGIN_DIR}",
                p.pid, p.title
            ),
        };
        let dir = flag.map_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR), PathBuf::from);
        ControllerManagerView {
            pid: p.pid,
            title: p.title.clone(),
            flag_set: flag.is_some(),
            host: self.host_dir(p.pid, &relation, &dir),
            note,
        }
    }

    /// Every platform whose marker is present, in precedence order.
    fn platforms(&self) -> Vec<Platform> {
        let at = |p: &str| under(&self.root, Path::new(p));
        let mut out = Vec::new();
        if let Some(m) = [
            "/home/kubernetes/bin/kubelet",
            "/home/kubernetes/kube-env",
            "/home/kubernetes/bin/configure-helper.sh",
        ]
        .into_iter()
        .find(|m| at(m).exists())
        {
            out.push(Platform {
                name: "GKE",
                evidence: format!("{m} exists"),
                dir: "/home/kubernetes/flexvolume",
            });
        }
        if at("/etc/kubernetes/azure.json").exists() {
            out.push(Platform {
                name: "AKS",
                evidence: "/etc/kubernetes/azure.json exists".into(),
                dir: "/etc/kubernetes/volumeplugins",
            });
        }
        if at("/etc/sysconfig/heat-params").exists() {
            out.push(Platform {
                name: "OpenStack Magnum",
                evidence: "/etc/sysconfig/heat-params exists".into(),
                dir: READ_WRITE_PLUGIN_DIR,
            });
        }
        if at("/etc/origin/node").is_dir() {
            out.push(Platform {
                name: "OpenShift 3",
                evidence: "/etc/origin/node exists".into(),
                dir: "/etc/origin/kubelet-plugins/volume/exec",
            });
        }
        if let Some((file, fields)) = ["/etc/os-release", "/usr/lib/os-release"]
            .into_iter()
            .find_map(|f| Some((f, os_release(&read_bounded(&at(f), 64 << 10).ok()?.0))))
        {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let (id, variant) = (get("ID"), get("VARIANT_ID"));
            let os = match (id, variant) {
                ("rhcos", _) => Some((
                    "OpenShift 4 (RHCOS)",
                    "/etc/kubernetes/kubelet-plugins/volume/exec",
                )),
                ("flatcar", _) => Some(("Flatcar", "/etc/kubernetes/volumeplugins")),
                ("coreos", _) => Some(("CoreOS Container Linux", "/etc/kubernetes/volumeplugins")),
                ("fedora-coreos", _) | (_, "coreos") => {
                    Some(("Fedora CoreOS", "/etc/kubernetes/volumeplugins"))
                }
                (_, "atomic.host") => Some(("Atomic Host", "/etc/kubernetes/volumeplugins")),
                _ => None,
            };
            if let Some((name, dir)) = os {
                out.push(Platform {
                    name,
                    evidence: format!("{file}: ID={id} VARIANT_ID={variant}"),
                    dir,
                });
            }
        }
        out
    }
}

fn show(v: &OsStr) -> String {
    v.to_string_lossy().into_owned()
}

fn scan_details(vanished: usize, unreadable: usize) -> String {
    let mut parts = Vec::new();
    if vanished > 0 {
        parts.push(format!("{vanished} exited during the scan"));
    }
    if unreadable > 0 {
        parts.push(format!("{unreadable} unreadable"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// `-c value` or `-c=value` (urfave/cli short flags, as k3s uses).
fn short_flag_value<'a>(args: &'a [OsString], flag: &str) -> Option<&'a OsStr> {
    let with_eq = format!("{flag}=");
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            break;
        }
        if let Some(v) = a.strip_prefix(with_eq.as_bytes()) {
            found = Some(OsStr::from_bytes(v));
        } else if a == flag.as_bytes() {
            found = args.get(i + 1).map(|v| v.as_os_str());
            i += 1;
        }
        i += 1;
    }
    found
}

/// The names in `dir` with one of `exts`, sorted (kubelet and k3s apply
/// drop-ins in name order). Missing dir: none.
fn list_dir(dir: &Path, exts: &[&str]) -> Vec<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| {
            let n = Path::new(n);
            !n.as_os_str().as_bytes().starts_with(b".")
                && n.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    names.sort();
    // At most this many drop-ins are read.
    names.truncate(256);
    names
}

struct ConfigError {
    kind: io::ErrorKind,
    text: String,
}

/// Read and parse a config file: a regular file of at most 1 MiB of UTF-8.
fn read_config(path: &Path) -> Result<TopLevel, ConfigError> {
    let io_err = |e: io::Error| ConfigError {
        kind: e.kind(),
        text: e.to_string(),
    };
    let other = |text: String| ConfigError {
        kind: io::ErrorKind::InvalidData,
        text,
    };
    let (bytes, truncated) = read_bounded(path, CONFIG_LIMIT).map_err(io_err)?;
    if truncated {
        return Err(other("larger than 1 MiB: not read".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| other("not UTF-8 text".into()))?;
    config_file::parse(&text).map_err(other)
}

/// The nearest existing path at or above `path`, not above `root`.
fn nearest_existing(root: &Path, path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.exists() || p == root {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if parent.starts_with(root) => p = parent,
            _ => return root.to_path_buf(),
        }
    }
}

/// `KEY=value` lines of os-release(5), quotes removed.
fn os_release(bytes: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn read_only_usr_warning(kubelet_pid: Option<u32>) -> String {
    let now = match kubelet_pid {
        Some(pid) => format!(
            "kubelet pid {pid} uses the default {DEFAULT_PLUGIN_DIR}, which it cannot create on a read-only /usr, so FlexVolume is off on this node"
        ),
        None => format!(
            "kubelet's default {DEFAULT_PLUGIN_DIR} is on a read-only filesystem, where kubelet cannot create it and FlexVolume is silently off"
        ),
    };
    format!(
        "{now}. Using {READ_WRITE_PLUGIN_DIR} instead, which kubelet and kube-controller-manager use only once told to: start kubelet with --volume-plugin-dir={READ_WRITE_PLUGIN_DIR} (or set volumePluginDir: {READ_WRITE_PLUGIN_DIR} in its config file) and kube-controller-manager with --flex-volume-plugin-dir={READ_WRITE_PLUGIN_DIR}, then restart both"
    )
}

#[cfg(test)]
mod tests;
