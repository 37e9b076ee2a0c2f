//! Finding kubelet, k3s/rke2 and kube-controller-manager among the
//! processes in `<root>/proc`, and reading their flags as pflag does.
//!
//! `/proc/PID/cmdline` is read as bytes (arguments need not be UTF-8), at
//! most [`CMDLINE_LIMIT`] bytes of it; a process that exits mid-scan
//! (ENOENT/ESRCH) is skipped and counted. A process that rewrote its
//! argv into one title (k3s does, to hide its arguments) shows a single
//! space-separated string: it is split on spaces for recognition only.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// At most this much of one command line is read. Linux caps one
/// argument at 128 KiB; the whole argv only by the stack limit, so a
/// hostile or broken process could make it huge.
pub(crate) const CMDLINE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distro {
    K3s,
    Rke2,
}

impl Distro {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Distro::K3s => "k3s",
            Distro::Rke2 => "rke2",
        }
    }

    /// Where the distro reads its own config when `--config` is not given.
    pub(crate) fn default_config(self) -> &'static str {
        match self {
            Distro::K3s => "/etc/rancher/k3s/config.yaml",
            Distro::Rke2 => "/etc/rancher/rke2/config.yaml",
        }
    }

    /// The environment variable that names that config instead.
    pub(crate) fn config_env(self) -> &'static str {
        match self {
            Distro::K3s => "K3S_CONFIG_FILE",
            Distro::Rke2 => "RKE2_CONFIG_FILE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Kubelet,
    /// k3s or rke2 `server`/`agent`: kubelet flags come as `--kubelet-arg`.
    Embedded(Distro),
    ControllerManager,
}

/// A process that matters here.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub pid: u32,
    pub role: Role,
    /// How it was recognised, e.g. `hyperkube kubelet`.
    pub title: String,
    /// The arguments after the program (and its subcommand).
    pub args: Vec<OsString>,
    /// The command line was longer than [`CMDLINE_LIMIT`]; its last,
    /// cut, argument was dropped.
    pub truncated: bool,
    /// The process rewrote its argv into one title: its real arguments
    /// cannot be seen.
    pub retitled: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub found: Vec<Process>,
    pub examined: usize,
    pub vanished: usize,
    pub unreadable: usize,
    /// `<root>/proc` could not be listed.
    pub error: Option<String>,
}

/// Every kubelet-like and controller-manager process under `<root>/proc`,
/// in pid order.
pub(crate) fn scan(root: &Path) -> Scan {
    let proc_dir = root.join("proc");
    let mut scan = Scan::default();
    let entries = match std::fs::read_dir(&proc_dir) {
        Ok(e) => e,
        Err(e) => {
            scan.error = Some(format!("cannot list {}: {e}", proc_dir.display()));
            return scan;
        }
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let b = name.as_bytes();
            if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
                return None;
            }
            name.to_str()?.parse().ok()
        })
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let path = proc_dir.join(pid.to_string()).join("cmdline");
        match read_bounded(&path, CMDLINE_LIMIT) {
            Ok((bytes, truncated)) => {
                scan.examined += 1;
                if let Some(p) = recognise(pid, &bytes, truncated) {
                    scan.found.push(p);
                }
            }
            Err(e) if has_vanished(&e) => scan.vanished += 1,
            Err(_) => scan.unreadable += 1,
        }
    }
    scan
}

/// The process exited between the listing and the read.
fn has_vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// At most `limit` bytes of a regular file, and whether there was more.
/// Opened with `O_NONBLOCK`, so a FIFO (in a fake tree, or named by a
/// config flag) is refused instead of waiting for a writer.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> io::Result<(Vec<u8>, bool)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    let truncated = buf.len() as u64 > limit;
    if truncated {
        buf.truncate(limit as usize);
    }
    Ok((buf, truncated))
}

/// The NUL-separated arguments of a command line.
pub(crate) fn split_cmdline(bytes: &[u8], truncated: bool) -> Vec<OsString> {
    let mut parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    // A complete command line ends with a NUL (an empty last piece); a cut
    // one ends inside an argument we cannot trust.
    parts.pop();
    if !truncated && bytes.last().is_some_and(|b| *b != 0) {
        // No trailing NUL: a retitled process; keep what it wrote.
        parts = bytes.split(|b| *b == 0).collect();
    }
    parts
        .into_iter()
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect()
}

fn basename(a: &OsStr) -> &[u8] {
    let b = a.as_bytes();
    match b.iter().rposition(|c| *c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

/// Which role, if any, a command line shows, and where its flags start.
pub(crate) fn classify(argv: &[OsString]) -> Option<(Role, usize)> {
    let first = basename(argv.first()?);
    let second = argv.get(1).map(|a| a.as_bytes());
    let embedded = |d| match second {
        Some(b"server" | b"agent") => Some((Role::Embedded(d), 2)),
        _ => None,
    };
    match first {
        b"kubelet" => Some((Role::Kubelet, 1)),
        b"kube-controller-manager" => Some((Role::ControllerManager, 1)),
        b"hyperkube" => match second? {
            b"kubelet" => Some((Role::Kubelet, 2)),
            b"kube-controller-manager" | b"controller-manager" => {
                Some((Role::ControllerManager, 2))
            }
            _ => None,
        },
        b"k3s" => embedded(Distro::K3s),
        b"rke2" => embedded(Distro::Rke2),
        b"k3s-server" | b"k3s-agent" => Some((Role::Embedded(Distro::K3s), 1)),
        _ => None,
    }
}

/// Recognise one process from its raw command line.
pub(crate) fn recognise(pid: u32, bytes: &[u8], truncated: bool) -> Option<Process> {
    let mut argv = split_cmdline(bytes, truncated);
    let mut retitled = false;
    // setproctitle-style titles may be padded with NULs.
    if argv.first().is_some_and(|a| a.as_bytes().contains(&b' '))
        && argv[1..].iter().all(|a| a.is_empty())
    {
        let title = argv[0].as_bytes().to_vec();
        argv = title
            .split(|b| *b == b' ')
            .filter(|p| !p.is_empty())
            .map(|p| OsString::from_vec(p.to_vec()))
            .collect();
        retitled = true;
    }
    let (role, start) = classify(&argv)?;
    let title = argv[..start]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Process {
        pid,
        role,
        title,
        args: argv[start..].to_vec(),
        truncated,
        retitled,
    })
}

/// Every value of `--name` as pflag reads it: `--name=value` or
/// `--name value`, in order (the last one is the one in force for a
/// single-valued flag). Parsing stops at `--`.
pub(crate) fn flag_values<'a>(args: &'a [OsString], name: &str) -> Vec<&'a OsStr> {
    let long = format!("--{name}");
    let with_eq = format!("--{name}=");
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            break;
        }
        if let Some(v) = a.strip_prefix(with_eq.as_bytes()) {
            out.push(OsStr::from_bytes(v));
        } else if a == long.as_bytes()
            && let Some(v) = args.get(i + 1)
        {
            out.push(v.as_os_str());
            i += 1;
        }
        i += 1;
    }
    out
}

/// The last value of `--name`, if any.
pub(crate) fn flag_value<'a>(args: &'a [OsString], name: &str) -> Option<&'a OsStr> {
    flag_values(args, name).pop()
}

/// A k3s/rke2 `kubelet-arg` item (`volume-plugin-dir=/x`, also with
/// leading dashes) as the kubelet flag it becomes (`--volume-plugin-dir=/x`).
pub(crate) fn kubelet_arg_to_flag(item: &OsStr) -> OsString {
    let b = item.as_bytes();
    let b = b.strip_prefix(b"--").unwrap_or(b);
    let mut out = b"--".to_vec();
    out.extend_from_slice(b);
    OsString::from_vec(out)
}

/// The value of `NAME=` in a NUL-separated environment block.
pub(crate) fn environ_value(environ: &[u8], name: &str) -> Option<OsString> {
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| OsString::from_vec(v.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_lines_split_on_nul_bytes() {
        assert_eq!(
            split_cmdline(b"/usr/bin/kubelet\0--v=2\0", false),
            os(&["/usr/bin/kubelet", "--v=2"])
        );
        assert_eq!(split_cmdline(b"", false), Vec::<OsString>::new());
        // An empty argument is kept.
        assert_eq!(split_cmdline(b"a\0\0b\0", false), os(&["a", "", "b"]));
        // Cut midway: the last piece is dropped.
        assert_eq!(
            split_cmdline(b"kubelet\0--volume-plugin-dir=/va", true),
            os(&["kubelet"])
        );
        // No trailing NUL (retitled): kept whole.
        assert_eq!(split_cmdline(b"k3s server", false), os(&["k3s server"]));
    }

    #[test]
    fn kubelet_hyperkube_controller_manager_and_k3s_are_recognised() {
        let p = recognise(7, b"/usr/local/bin/hyperkube\0kubelet\0--v=2\0", false).unwrap();
        assert_eq!(
            (p.role, p.title.as_str(), p.args.clone()),
            (
                Role::Kubelet,
                "/usr/local/bin/hyperkube kubelet",
                os(&["--v=2"])
            )
        );
        assert_eq!(
            recognise(1, b"kubelet\0", false).unwrap().role,
            Role::Kubelet
        );
        assert_eq!(
            recognise(1, b"/bin/kube-controller-manager\0", false)
                .unwrap()
                .role,
            Role::ControllerManager
        );
        assert_eq!(
            recognise(1, b"hyperkube\0kube-controller-manager\0", false)
                .unwrap()
                .role,
            Role::ControllerManager
        );
        assert_eq!(
            recognise(1, b"/usr/local/bin/k3s\0agent\0", false)
                .unwrap()
                .role,
            Role::Embedded(Distro::K3s)
        );
        assert_eq!(
            recognise(1, b"rke2\0server\0", false).unwrap().role,
            Role::Embedded(Distro::Rke2)
        );
        let k = recognise(1, b"/usr/local/bin/k3s server", false).unwrap();
        assert!(k.retitled && k.args.is_empty());
        assert!(recognise(1, b"k3s agent\0\0\0", false).unwrap().retitled);
        for other in [
            &b"kubelet-wrapper\0"[..],
            b"sh\0-c\0kubelet\0",
            b"hyperkube\0kubectl\0",
            b"k3s\0kubectl\0",
            b"\xff\xfe\0kubelet\0",
            b"",
        ] {
            assert!(recognise(1, other, false).is_none(), "{other:?}");
        }
        // Non-UTF-8 arguments survive as bytes.
        let p = recognise(1, b"kubelet\0--volume-plugin-dir=/x\xff\0", false).unwrap();
        assert_eq!(
            flag_value(&p.args, "volume-plugin-dir").unwrap().as_bytes(),
            b"/x\xff"
        );
    }

    #[test]
    fn flags_as_pflag_reads_them() {
        let a = os(&[
            "--volume-plugin-dir",
            "/one",
            "--volume-plugin-dir=/two",
            "--config=/c",
        ]);
        assert_eq!(
            flag_value(&a, "volume-plugin-dir"),
            Some(OsStr::new("/two"))
        );
        assert_eq!(flag_value(&a, "config"), Some(OsStr::new("/c")));
        let a = os(&[
            "--volume-plugin-dir-x=/no",
            "--",
            "--volume-plugin-dir=/after",
        ]);
        assert_eq!(flag_value(&a, "volume-plugin-dir"), None);
        assert_eq!(
            flag_value(&os(&["--volume-plugin-dir"]), "volume-plugin-dir"),
            None
        );
        let k = os(&["--kubelet-arg=a=1", "--kubelet-arg", "--b=2"]);
        assert_eq!(
            flag_values(&k, "kubelet-arg"),
            vec![OsStr::new("a=1"), OsStr::new("--b=2")]
        );
        assert_eq!(
            kubelet_arg_to_flag(OsStr::new("volume-plugin-dir=/x")),
            "--volume-plugin-dir=/x"
        );
        assert_eq!(
            kubelet_arg_to_flag(OsStr::new("--config=/c")),
            "--config=/c"
        );
        assert_eq!(
            environ_value(b"A=1\0K3S_CONFIG_FILE=/k.yaml\0", "K3S_CONFIG_FILE"),
            Some("/k.yaml".into())
        );
    }
}
