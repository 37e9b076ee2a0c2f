//! The volume options of a call, typed.

use std::collections::BTreeMap;
use std::fmt;

use crate::bindings::flexwasm::driver::types::VolumeOptions;
use crate::{Error, Result, parse_size};

#[doc(inline)]
pub use crate::bindings::flexwasm::driver::types::PodInfo;

/// The options JSON kubelet passed with a call, as the host parsed it.
///
/// The `kubernetes.io/*` keys kubelet adds have their own fields; everything
/// else, in particular the user's `flexVolume.options`, is in
/// [`extra`](Options::extra) (read it with [`get`](Options::get) and
/// [`size_bytes`](Options::size_bytes)).
///
/// `Debug` shows secret keys but never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `kubernetes.io/fsType`; `None` when absent or empty.
    pub fs_type: Option<String>,
    /// `kubernetes.io/readwrite` is `ro`.
    pub read_only: bool,
    /// `kubernetes.io/pvOrVolumeName`: the PV name or the inline volume name.
    pub volume_name: String,
    /// The pod being mounted for (`mount` only).
    pub pod: Option<PodInfo>,
    /// The pod's fsGroup (`mount` only, when the pod sets one).
    pub fs_group: Option<u32>,
    /// `kubernetes.io/secret/<key>` values by `<key>`, base64-decoded
    /// (`mount` only, when the volume has a `secretRef`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Every other key, e.g. the user's `flexVolume.options`.
    pub extra: BTreeMap<String, String>,
}

impl Options {
    /// The value of option `key` (from [`extra`](Options::extra)).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra.get(key).map(String::as_str)
    }

    /// The decoded value of secret `key` (`kubernetes.io/secret/<key>`).
    pub fn secret(&self, key: &str) -> Option<&[u8]> {
        self.secrets.get(key).map(Vec::as_slice)
    }

    /// Option `key` read as a byte size written as a Kubernetes quantity
    /// (`1Gi`, `512Mi`, `10G`, `1000`; see [`parse_size`]). `Ok(None)` when
    /// the option is absent; an error naming the option when it is not a
    /// valid size.
    pub fn size_bytes(&self, key: &str) -> Result<Option<u64>> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        parse_size(text)
            .map(Some)
            .map_err(|error| Error::Failure(format!("option {key:?}: {error}")))
    }
}

impl From<VolumeOptions> for Options {
    fn from(options: VolumeOptions) -> Self {
        Options {
            fs_type: options.fs_type.filter(|fs_type| !fs_type.is_empty()),
            read_only: options.read_only,
            volume_name: options.volume_name,
            pod: options.pod,
            fs_group: options.fs_group,
            secrets: options
                .secrets
                .into_iter()
                .map(|secret| (secret.key, secret.value))
                .collect(),
            extra: options.extra.into_iter().collect(),
        }
    }
}

// Written by hand so that secret values never reach a log line.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_keys: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        f.debug_struct("Options")
            .field("fs_type", &self.fs_type)
            .field("read_only", &self.read_only)
            .field("volume_name", &self.volume_name)
            .field("pod", &self.pod)
            .field("fs_group", &self.fs_group)
            .field("secrets", &secret_keys)
            .field("extra", &self.extra)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::flexwasm::driver::types::Secret;

    fn wit_options() -> VolumeOptions {
        VolumeOptions {
            fs_type: Some("xfs".into()),
            read_only: true,
            volume_name: "pv-data".into(),
            pod: Some(PodInfo {
                name: "web-0".into(),
                namespace: "shop".into(),
                uid: "1234-abcd".into(),
                service_account: "default".into(),
            }),
            fs_group: Some(2000),
            secrets: vec![Secret {
                key: "password".into(),
                value: b"hunter2".to_vec(),
            }],
            extra: vec![
                ("mountOptions".into(), "noatime,discard".into()),
                ("size".into(), "2Gi".into()),
            ],
        }
    }

    #[test]
    fn converts_every_field() {
        let options = Options::from(wit_options());
        assert_eq!(options.fs_type.as_deref(), Some("xfs"));
        assert!(options.read_only);
        assert_eq!(options.volume_name, "pv-data");
        assert_eq!(
            options.pod.as_ref().map(|pod| pod.name.as_str()),
            Some("web-0")
        );
        assert_eq!(options.fs_group, Some(2000));
        assert_eq!(options.secret("password"), Some(&b"hunter2"[..]));
        assert_eq!(options.secret("token"), None);
        assert_eq!(options.get("mountOptions"), Some("noatime,discard"));
        assert_eq!(options.get("missing"), None);
        assert_eq!(options.size_bytes("size"), Ok(Some(2 << 30)));
    }

    #[test]
    fn empty_fs_type_means_none() {
        let options = Options::from(VolumeOptions {
            fs_type: Some(String::new()),
            ..wit_options()
        });
        assert_eq!(options.fs_type, None);
    }

    #[test]
    fn minimal_options_convert() {
        let options = Options::from(VolumeOptions {
            fs_type: None,
            read_only: false,
            volume_name: "v".into(),
            pod: None,
            fs_group: None,
            secrets: Vec::new(),
            extra: Vec::new(),
        });
        assert_eq!(
            options,
            Options {
                volume_name: "v".into(),
                ..Options::default()
            }
        );
    }

    #[test]
    fn size_bytes_absent_is_none_and_junk_names_the_option() {
        let mut options = Options::default();
        assert_eq!(options.size_bytes("size"), Ok(None));
        options.extra.insert("size".into(), "lots".into());
        let error = options.size_bytes("size").unwrap_err().to_string();
        assert!(
            error.starts_with("option \"size\": invalid size \"lots\""),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let shown = format!("{:?}", Options::from(wit_options()));
        assert!(shown.contains("password"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104, 117"), "{shown}"); // "hu" as bytes
    }
}
