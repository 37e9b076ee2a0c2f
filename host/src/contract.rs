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

#[cfg(test)]
mod tests {
    use super::*;

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
