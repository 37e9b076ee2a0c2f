//! The kubelet side of the FlexVolume contract: argv in, one JSON object out.
//!
//! Parsing is in two stages, like ripgrep's low/high args: [`parse_call`]
//! turns raw argv into a [`Call`] whose every field is checked (argument
//! count, JSON shape, sizes), so nothing downstream sees raw argv. The answer
//! is a [`DriverStatus`], printed once by `main`.
//!
//! The argv shapes are the ones kubelet's code builds (see
//! `shared/docs/flexvolume-contract.md` §1), not the stale public docs.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

use crate::options::{OptionsError, RawOptions};
use crate::secrets::SecretSet;

/// Longest `message` kubelet is given (it lands in events and
/// `kubectl describe`); longer ones are cut, with a note.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest `device` answer: a path (PATH_MAX).
pub const MAX_DEVICE_BYTES: usize = 4096;
/// Longest `volumeName` answer (kubelet ignores it; Kubernetes names are at
/// most 253 characters).
pub const MAX_VOLUME_NAME_BYTES: usize = 1024;

/// One FlexVolume call, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Init,
    GetVolumeName {
        options: RawOptions,
    },
    Attach {
        options: RawOptions,
        node: String,
    },
    WaitForAttach {
        device: String,
        options: RawOptions,
    },
    Detach {
        volume: String,
        node: String,
    },
    IsAttached {
        options: RawOptions,
        node: String,
    },
    MountDevice {
        mount_path: PathBuf,
        device: String,
        options: RawOptions,
    },
    UnmountDevice {
        mount_path: PathBuf,
    },
    Mount {
        dir: PathBuf,
        options: RawOptions,
    },
    Unmount {
        dir: PathBuf,
    },
    ExpandVolume {
        options: RawOptions,
        /// kubelet's code passes an empty string here today.
        mount_path: String,
        new_size: u64,
        old_size: u64,
    },
    ExpandFs {
        options: RawOptions,
        device: String,
        mount_path: PathBuf,
        new_size: u64,
        old_size: u64,
    },
}

impl Call {
    /// The volume a call attaches, detaches or expands (its
    /// `pvOrVolumeName`, or detach's name), whose calls the host runs one
    /// at a time; `None` for every other call, and when it has no name.
    pub fn changed_volume(&self) -> Option<String> {
        let name = match self {
            Call::Detach { volume, .. } => volume.clone(),
            Call::Attach { options, .. } | Call::ExpandVolume { options, .. } => {
                options.get(crate::options::VOLUME_NAME)?.to_string()
            }
            _ => return None,
        };
        (!name.is_empty()).then_some(name)
    }

    /// The op name as kubelet spells it.
    pub fn op(&self) -> &'static str {
        match self {
            Call::Init => "init",
            Call::GetVolumeName { .. } => "getvolumename",
            Call::Attach { .. } => "attach",
            Call::WaitForAttach { .. } => "waitforattach",
            Call::Detach { .. } => "detach",
            Call::IsAttached { .. } => "isattached",
            Call::MountDevice { .. } => "mountdevice",
            Call::UnmountDevice { .. } => "unmountdevice",
            Call::Mount { .. } => "mount",
            Call::Unmount { .. } => "unmount",
            Call::ExpandVolume { .. } => "expandvolume",
            Call::ExpandFs { .. } => "expandfs",
        }
    }

    /// The options of this call, if it carries any.
    pub fn options(&self) -> Option<&RawOptions> {
        match self {
            Call::GetVolumeName { options }
            | Call::Attach { options, .. }
            | Call::WaitForAttach { options, .. }
            | Call::IsAttached { options, .. }
            | Call::MountDevice { options, .. }
            | Call::Mount { options, .. }
            | Call::ExpandVolume { options, .. }
            | Call::ExpandFs { options, .. } => Some(options),
            Call::Init
            | Call::Detach { .. }
            | Call::UnmountDevice { .. }
            | Call::Unmount { .. } => None,
        }
    }
}

/// Why argv could not become a [`Call`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgvError {
    #[error("no operation given: expected `<driver> <op> [args…]`")]
    Missing,
    /// Not an error for kubelet: it is answered `Not supported`.
    #[error("operation '{0}' is not supported by this driver")]
    UnknownOp(String),
    #[error("{op}: expected {expected} argument(s) `{usage}`, got {got}")]
    Count {
        op: &'static str,
        usage: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {what} is empty")]
    Empty {
        op: &'static str,
        what: &'static str,
    },
    #[error("{op}: {what} '{value}' is not an absolute path")]
    NotAbsolute {
        op: &'static str,
        what: &'static str,
        value: String,
    },
    #[error("{op}: {what} '{value}' is not a size in bytes (a non-negative integer)")]
    Size {
        op: &'static str,
        what: &'static str,
        value: String,
    },
    #[error("{op}: the options argument is not valid: {source}")]
    Options {
        op: &'static str,
        #[source]
        source: OptionsError,
    },
}

/// Turn argv (without the executable) into a validated [`Call`].
pub fn parse_call(args: &[String]) -> Result<Call, ArgvError> {
    let Some((op, rest)) = args.split_first() else {
        return Err(ArgvError::Missing);
    };
    let op_name: &'static str = match op.as_str() {
        "init" => "init",
        "getvolumename" => "getvolumename",
        "attach" => "attach",
        "waitforattach" => "waitforattach",
        "detach" => "detach",
        "isattached" => "isattached",
        "mountdevice" => "mountdevice",
        "unmountdevice" => "unmountdevice",
        "mount" => "mount",
        "unmount" => "unmount",
        "expandvolume" => "expandvolume",
        "expandfs" => "expandfs",
        other => return Err(ArgvError::UnknownOp(other.chars().take(64).collect())),
    };
    let args = Args { op: op_name, rest };
    Ok(match op_name {
        "init" => {
            args.count(0, "init")?;
            Call::Init
        }
        "getvolumename" => {
            args.count(1, "getvolumename <json>")?;
            Call::GetVolumeName {
                options: args.options(0)?,
            }
        }
        "attach" => {
            args.count(2, "attach <json> <nodeName>")?;
            Call::Attach {
                options: args.options(0)?,
                node: args.non_empty(1, "node name")?,
            }
        }
        "waitforattach" => {
            args.count(2, "waitforattach <device> <json>")?;
            Call::WaitForAttach {
                device: args.rest[0].clone(),
                options: args.options(1)?,
            }
        }
        "detach" => {
            args.count(2, "detach <pvOrVolumeName> <nodeName>")?;
            Call::Detach {
                volume: args.non_empty(0, "volume name")?,
                node: args.non_empty(1, "node name")?,
            }
        }
        "isattached" => {
            args.count(2, "isattached <json> <nodeName>")?;
            Call::IsAttached {
                options: args.options(0)?,
                node: args.non_empty(1, "node name")?,
            }
        }
        "mountdevice" => {
            args.count(3, "mountdevice <deviceMountPath> <device> <json>")?;
            Call::MountDevice {
                mount_path: args.abs_path(0, "device mount path")?,
                device: args.non_empty(1, "device")?,
                options: args.options(2)?,
            }
        }
        "unmountdevice" => {
            args.count(1, "unmountdevice <deviceMountPath>")?;
            Call::UnmountDevice {
                mount_path: args.abs_path(0, "device mount path")?,
            }
        }
        "mount" => {
            args.count(2, "mount <podVolumeDir> <json>")?;
            Call::Mount {
                dir: args.abs_path(0, "pod volume dir")?,
                options: args.options(1)?,
            }
        }
        "unmount" => {
            args.count(1, "unmount <podVolumeDir>")?;
            Call::Unmount {
                dir: args.abs_path(0, "pod volume dir")?,
            }
        }
        "expandvolume" => {
            args.count(
                4,
                "expandvolume <json> <deviceMountPath> <newSizeBytes> <oldSizeBytes>",
            )?;
            Call::ExpandVolume {
                options: args.options(0)?,
                mount_path: args.rest[1].clone(),
                new_size: args.size(2, "new size")?,
                old_size: args.size(3, "old size")?,
            }
        }
        _ => {
            args.count(
                5,
                "expandfs <json> <devicePath> <deviceMountPath> <newSizeBytes> <oldSizeBytes>",
            )?;
            Call::ExpandFs {
                options: args.options(0)?,
                device: args.non_empty(1, "device path")?,
                mount_path: args.abs_path(2, "device mount path")?,
                new_size: args.size(3, "new size")?,
                old_size: args.size(4, "old size")?,
            }
        }
    })
}

struct Args<'a> {
    op: &'static str,
    rest: &'a [String],
}

impl Args<'_> {
    fn count(&self, expected: usize, usage: &'static str) -> Result<(), ArgvError> {
        if self.rest.len() == expected {
            Ok(())
        } else {
            Err(ArgvError::Count {
                op: self.op,
                usage,
                expected,
                got: self.rest.len(),
            })
        }
    }

    fn options(&self, i: usize) -> Result<RawOptions, ArgvError> {
        RawOptions::parse(&self.rest[i]).map_err(|source| ArgvError::Options {
            op: self.op,
            source,
        })
    }

    fn non_empty(&self, i: usize, what: &'static str) -> Result<String, ArgvError> {
        let value = &self.rest[i];
        if value.is_empty() {
            return Err(ArgvError::Empty { op: self.op, what });
        }
        Ok(value.clone())
    }

    fn abs_path(&self, i: usize, what: &'static str) -> Result<PathBuf, ArgvError> {
        let value = self.non_empty(i, what)?;
        if !value.starts_with('/') {
            return Err(ArgvError::NotAbsolute {
                op: self.op,
                what,
                value,
            });
        }
        Ok(PathBuf::from(value))
    }

    fn size(&self, i: usize, what: &'static str) -> Result<u64, ArgvError> {
        let value = &self.rest[i];
        value.parse::<u64>().map_err(|_| ArgvError::Size {
            op: self.op,
            what,
            value: value.chars().take(64).collect(),
        })
    }
}

/// The `status` field kubelet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Success,
    Failure,
    #[serde(rename = "Not supported")]
    NotSupported,
}

/// Capabilities as kubelet reads them from `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesJson {
    pub attach: bool,
    #[serde(rename = "selinuxRelabel")]
    pub selinux_relabel: bool,
    pub supports_metrics: bool,
    pub fs_group: bool,
    #[serde(rename = "requiresFSResize")]
    pub requires_fs_resize: bool,
}

/// The one JSON object a call prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverStatus {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(rename = "volumeName", skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilitiesJson>,
    /// Exit code; not printed. Decided by [`DriverStatus::exit_code`].
    #[serde(skip)]
    pub quiet_failure: bool,
}

impl DriverStatus {
    pub fn success() -> Self {
        DriverStatus {
            status: Status::Success,
            message: None,
            device: None,
            volume_name: None,
            attached: None,
            capabilities: None,
            quiet_failure: false,
        }
    }

    pub fn failure(message: impl fmt::Display) -> Self {
        DriverStatus {
            status: Status::Failure,
            message: Some(message.to_string()),
            ..Self::success()
        }
    }

    pub fn not_supported(message: impl fmt::Display) -> Self {
        DriverStatus {
            status: Status::NotSupported,
            message: Some(message.to_string()),
            ..Self::success()
        }
    }

    /// 0 for `Success`, 1 otherwise — except a `Failure` marked quiet (a
    /// call whose argv carries secrets): kubelet ignores the exit code of a
    /// `Failure` answer but logs the whole argv when it is non-zero, so
    /// exiting 0 keeps secrets out of kubelet's log (contract page §3).
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Success => 0,
            Status::Failure if self.quiet_failure => 0,
            Status::Failure | Status::NotSupported => 1,
        }
    }

    /// The answer as it may leave the host. Every string in it may carry
    /// what a plugin chose, so, whatever path produced it:
    /// - `message` has every secret scrubbed, control and bidirectional
    ///   formatting characters replaced by spaces, and is cut to
    ///   [`MAX_MESSAGE_BYTES`];
    /// - `device` and `volumeName` are refused — the whole answer becomes a
    ///   `Failure` — when they are too long, hold control characters, or
    ///   hold a secret: kubelet stores a device in the Node object, so it is
    ///   never scrubbed into something else, only withheld.
    pub fn sanitized(mut self, secrets: &SecretSet, who: &str) -> DriverStatus {
        let fields = [
            ("device", self.device.as_deref(), MAX_DEVICE_BYTES),
            (
                "volumeName",
                self.volume_name.as_deref(),
                MAX_VOLUME_NAME_BYTES,
            ),
        ];
        let refusal = fields.into_iter().find_map(|(name, value, max)| {
            let why = answer_field_problem(value?, max, secrets)?;
            Some(format!(
                "{who}: the plugin's answer was withheld from kubelet: its {name} {why}"
            ))
        });
        if let Some(message) = refusal {
            // Scrubbed below like any message: `who` and the words around
            // it are text too.
            let quiet = self.quiet_failure;
            self = DriverStatus::failure(message);
            self.quiet_failure = quiet;
        }
        if let Some(m) = self.message.take() {
            self.message = Some(clean_text(&secrets.redact(&m), MAX_MESSAGE_BYTES));
        }
        self
    }

    /// The single line printed on stdout.
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail (no maps with non-string keys,
        // no custom Serialize impls); keep a fallback anyway so a bug can
        // never produce an empty answer.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"status":"Failure","message":"flexwasm: internal error encoding the answer"}"#
                .to_string()
        })
    }
}

/// Why a `device` / `volumeName` value may not go to kubelet, if it may not.
fn answer_field_problem(value: &str, max: usize, secrets: &SecretSet) -> Option<String> {
    if value.len() > max {
        return Some(format!("is {} bytes long (at most {max})", value.len()));
    }
    if value.chars().any(is_unprintable) {
        return Some("holds control or formatting characters".into());
    }
    if secrets.found_in(value) {
        return Some("holds a secret of this call".into());
    }
    None
}

/// Control characters, and the formatting characters that reorder or hide
/// text in a terminal (bidirectional overrides, zero-width characters).
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` on one line, unprintable characters replaced by spaces, cut to
/// at most `max` bytes (on a character boundary, with a note).
pub fn clean_text(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut last_space = false;
    for c in text.chars() {
        let c = if is_unprintable(c) { ' ' } else { c };
        // Runs of replaced characters become one space.
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    const CUT: &str = " […cut]";
    if out.len() > max {
        let mut end = max.saturating_sub(CUT.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(CUT);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded_cleaned_and_never_carry_a_secret() {
        let mut secrets = SecretSet::new();
        secrets.add_str("Sup3rSecretValue");
        let mut s = DriverStatus::success();
        s.volume_name = Some("x".repeat(MAX_VOLUME_NAME_BYTES + 1));
        let out = s.sanitized(&secrets, "acme/x getvolumename");
        assert_eq!(out.status, Status::Failure);
        assert!(out.message.as_deref().unwrap().contains("bytes long"));

        let mut s = DriverStatus::success();
        s.device = Some("/dev/sup3rsecretvalue".into());
        s.quiet_failure = true;
        let out = s.sanitized(&secrets, "acme/x attach");
        assert_eq!(out.status, Status::Failure);
        assert!(out.quiet_failure);
        assert!(out.device.is_none());
        assert!(!out.to_json().to_lowercase().contains("sup3r"));

        let mut s = DriverStatus::success();
        s.device = Some("/dev/loop1\u{202e}".into());
        assert_eq!(s.sanitized(&secrets, "w").status, Status::Failure);

        let f = DriverStatus::failure(format!(
            "line1\nline2\u{1b}[31m\u{202e}evil SUP3R-SECRET-VALUE {}",
            "y".repeat(10_000)
        ))
        .sanitized(&secrets, "w");
        let m = f.message.unwrap();
        assert!(m.len() <= MAX_MESSAGE_BYTES, "{}", m.len());
        assert!(m.starts_with("line1 line2 [31m evil <redacted> yyy"), "{m}");
        assert!(m.ends_with("[…cut]"));
        assert!(!m.chars().any(is_unprintable));
    }

    /// Found by fuzz/ (plans): the message of a withheld answer was not
    /// scrubbed, so a secret that matched its words (or the driver's name)
    /// reached kubelet.
    #[test]
    fn a_withheld_answer_is_scrubbed_too() {
        let mut secrets = SecretSet::new();
        secrets.add_str("withheld-from");
        let mut s = DriverStatus::success();
        s.volume_name = Some("bad\u{7}name".into());
        let out = s.sanitized(&secrets, "acme/x getvolumename");
        assert_eq!(out.status, Status::Failure);
        let m = out.message.unwrap();
        assert!(!secrets.found_in(&m), "{m}");
        assert!(m.contains("control or formatting characters"), "{m}");
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_op_parses_with_kubelets_argv_shape() {
        let j = r#"{"kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv1"}"#;
        let cases: Vec<Vec<&str>> = vec![
            vec!["init"],
            vec!["getvolumename", j],
            vec!["attach", j, "node1"],
            vec!["waitforattach", "/dev/loop0", j],
            vec!["detach", "pv1", "node1"],
            vec!["isattached", j, "node1"],
            vec!["mountdevice", "/var/lib/kubelet/x", "/dev/loop0", j],
            vec!["unmountdevice", "/var/lib/kubelet/x"],
            vec!["mount", "/var/lib/kubelet/pods/u/volumes/v~d/pv1", j],
            vec!["unmount", "/var/lib/kubelet/pods/u/volumes/v~d/pv1"],
            vec!["expandvolume", j, "", "2048", "1024"],
            vec![
                "expandfs",
                j,
                "/dev/loop0",
                "/var/lib/kubelet/x",
                "2048",
                "1024",
            ],
        ];
        for case in cases {
            let call = parse_call(&argv(&case)).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert_eq!(call.op(), case[0]);
        }
    }

    #[test]
    fn waitforattach_takes_device_first() {
        let call = parse_call(&argv(&["waitforattach", "/dev/sdb", "{}"])).unwrap();
        assert_eq!(
            call,
            Call::WaitForAttach {
                device: "/dev/sdb".into(),
                options: RawOptions::parse("{}").unwrap()
            }
        );
    }

    #[test]
    fn unknown_op_and_wrong_counts() {
        assert_eq!(
            parse_call(&argv(&["provision"])),
            Err(ArgvError::UnknownOp("provision".into()))
        );
        assert!(matches!(
            parse_call(&argv(&["init", "extra"])),
            Err(ArgvError::Count { got: 1, .. })
        ));
        assert!(matches!(
            parse_call(&argv(&["mount", "/x"])),
            Err(ArgvError::Count { expected: 2, .. })
        ));
        assert_eq!(parse_call(&[]), Err(ArgvError::Missing));
    }

    #[test]
    fn status_json_shape() {
        let mut s = DriverStatus::success();
        s.attached = Some(false);
        assert_eq!(s.to_json(), r#"{"status":"Success","attached":false}"#);
        let f = DriverStatus::not_supported("no");
        assert_eq!(f.to_json(), r#"{"status":"Not supported","message":"no"}"#);
        assert_eq!(f.exit_code(), 1);
    }
}
