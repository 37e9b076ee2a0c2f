//! The options JSON kubelet passes (contract page §2), in two stages:
//! [`RawOptions`] is the checked string→string map; [`VolumeOptions`] is
//! what a plugin sees, with kubelet's own keys typed and secrets decoded.

use base64::Engine as _;
use std::collections::BTreeMap;

pub const FS_TYPE: &str = "kubernetes.io/fsType";
pub const READWRITE: &str = "kubernetes.io/readwrite";
pub const VOLUME_NAME: &str = "kubernetes.io/pvOrVolumeName";
pub const POD_NAME: &str = "kubernetes.io/pod.name";
pub const POD_NAMESPACE: &str = "kubernetes.io/pod.namespace";
pub const POD_UID: &str = "kubernetes.io/pod.uid";
pub const SERVICE_ACCOUNT: &str = "kubernetes.io/serviceAccount.name";
pub const FS_GROUP: &str = "kubernetes.io/mounterArgs.FsGroup";
/// The key before Kubernetes v1.15.
pub const FS_GROUP_OLD: &str = "kubernetes.io/fsGroup";
pub const SECRET_PREFIX: &str = "kubernetes.io/secret/";

/// Upper bound on the options argument. Linux caps one argv string at
/// 128 KiB anyway; this keeps a hostile caller from making us allocate more.
const MAX_OPTIONS_BYTES: usize = 128 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("it is empty; expected a JSON object such as {{\"kubernetes.io/fsType\":\"ext4\"}}")]
    Empty,
    #[error("it is {0} bytes, more than the 128 KiB allowed")]
    TooLarge(usize),
    #[error("it is not JSON ({0})")]
    NotJson(String),
    #[error("it is JSON {0}, not an object of strings")]
    NotObject(&'static str),
    #[error(
        "the value of \"{key}\" is {kind}, but option values must be strings (e.g. \"true\", \"1024\")"
    )]
    NotString { key: String, kind: &'static str },
    #[error("\"{key}\" is \"{value}\"; expected \"ro\" or \"rw\"")]
    ReadWrite { key: String, value: String },
    #[error("\"{key}\" is \"{value}\"; expected a group id between 0 and 4294967295")]
    FsGroup { key: String, value: String },
    #[error("secret \"{key}\" is not valid base64; kubelet always base64-encodes secret values")]
    SecretEncoding { key: String },
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The options argument: a JSON object of string to string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawOptions(BTreeMap<String, String>);

impl RawOptions {
    pub fn parse(text: &str) -> Result<Self, OptionsError> {
        if text.trim().is_empty() {
            return Err(OptionsError::Empty);
        }
        if text.len() > MAX_OPTIONS_BYTES {
            return Err(OptionsError::TooLarge(text.len()));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's message quotes no input, so no secret can leak here.
            OptionsError::NotJson(e.to_string())
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(OptionsError::NotObject(match value {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            }));
        };
        let mut out = BTreeMap::new();
        for (key, value) in map {
            match value {
                serde_json::Value::String(s) => {
                    out.insert(key, s);
                }
                other => {
                    return Err(OptionsError::NotString {
                        key,
                        kind: json_kind(&other),
                    });
                }
            }
        }
        Ok(RawOptions(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether any `kubernetes.io/secret/*` key is present.
    pub fn has_secrets(&self) -> bool {
        self.0.keys().any(|k| k.starts_with(SECRET_PREFIX))
    }

    /// Add the option values that must never be written anywhere to
    /// `secrets`: each secret as kubelet sent it (base64) and decoded.
    pub fn add_secrets_to(&self, secrets: &mut crate::secrets::SecretSet) {
        for (k, v) in &self.0 {
            if k.starts_with(SECRET_PREFIX) && !v.is_empty() {
                secrets.add_str(v);
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                    secrets.add(&bytes);
                }
            }
        }
    }

    /// What identifies the volume across its calls: every option but the
    /// ones kubelet adds per call (`readwrite`, which differs between a
    /// device mount and a read-only pod; the pod keys, fsGroup and secrets,
    /// which only `mount` gets), hashed. kubelet builds `mountdevice` and
    /// `mount` options from the same volume spec, so the two agree for one
    /// volume; two volumes that share a name (an inline volume named after
    /// someone's PV) differ in their own options.
    pub fn volume_identity(&self) -> String {
        let kept: BTreeMap<&str, &str> = self
            .0
            .iter()
            .filter(|(k, _)| {
                !(k.starts_with(SECRET_PREFIX)
                    || k.starts_with("kubernetes.io/pod.")
                    || matches!(
                        k.as_str(),
                        READWRITE | SERVICE_ACCOUNT | FS_GROUP | FS_GROUP_OLD
                    ))
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let canonical = serde_json::to_string(&kept).unwrap_or_default();
        crate::digest::sha256_hex(canonical.as_bytes())
    }

    /// The JSON object with every secret value replaced, for logs.
    pub fn redacted_json(&self) -> String {
        let map: BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(k, v)| {
                if k.starts_with(SECRET_PREFIX) {
                    (k.as_str(), "<redacted>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        serde_json::to_string(&map).unwrap_or_default()
    }

    /// Stage two: kubelet's keys typed, secrets decoded.
    pub fn resolve(&self) -> Result<VolumeOptions, OptionsError> {
        let fs_type = self
            .get(FS_TYPE)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let read_only = match self.get(READWRITE) {
            None | Some("") | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(OptionsError::ReadWrite {
                    key: READWRITE.into(),
                    value: other.chars().take(32).collect(),
                });
            }
        };
        let fs_group = match (self.get(FS_GROUP), self.get(FS_GROUP_OLD)) {
            (Some(v), _) if !v.is_empty() => Some((FS_GROUP, v)),
            (_, Some(v)) if !v.is_empty() => Some((FS_GROUP_OLD, v)),
            _ => None,
        }
        .map(|(key, v)| {
            v.trim().parse::<u32>().map_err(|_| OptionsError::FsGroup {
                key: key.into(),
                value: v.chars().take(32).collect(),
            })
        })
        .transpose()?;
        let pod = self.get(POD_UID).map(|uid| PodInfo {
            name: self.get(POD_NAME).unwrap_or_default().to_string(),
            namespace: self.get(POD_NAMESPACE).unwrap_or_default().to_string(),
            uid: uid.to_string(),
            service_account: self.get(SERVICE_ACCOUNT).unwrap_or_default().to_string(),
        });
        let mut secrets = BTreeMap::new();
        let mut extra = BTreeMap::new();
        for (key, value) in &self.0 {
            if let Some(name) = key.strip_prefix(SECRET_PREFIX) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .map_err(|_| OptionsError::SecretEncoding { key: name.into() })?;
                secrets.insert(name.to_string(), decoded);
                continue;
            }
            let consumed = matches!(
                key.as_str(),
                FS_TYPE
                    | READWRITE
                    | VOLUME_NAME
                    | POD_NAME
                    | POD_NAMESPACE
                    | POD_UID
                    | SERVICE_ACCOUNT
                    | FS_GROUP
                    | FS_GROUP_OLD
            );
            if !consumed {
                extra.insert(key.clone(), value.clone());
            }
        }
        Ok(VolumeOptions {
            fs_type,
            read_only,
            volume_name: self.get(VOLUME_NAME).unwrap_or_default().to_string(),
            pod,
            fs_group,
            secrets,
            extra,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// The options as a plugin receives them (the WIT `volume-options`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeOptions {
    pub fs_type: Option<String>,
    pub read_only: bool,
    pub volume_name: String,
    pub pod: Option<PodInfo>,
    pub fs_group: Option<u32>,
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub extra: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_keys_are_typed() {
        let raw = RawOptions::parse(
            r#"{"kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"ro",
               "kubernetes.io/pvOrVolumeName":"pv-1","kubernetes.io/pod.uid":"u1",
               "kubernetes.io/pod.name":"p","kubernetes.io/fsGroup":"2000",
               "kubernetes.io/secret/token":"czNjcjN0","size":"1Gi"}"#,
        )
        .unwrap();
        let o = raw.resolve().unwrap();
        assert_eq!(o.fs_type.as_deref(), Some("xfs"));
        assert!(o.read_only);
        assert_eq!(o.volume_name, "pv-1");
        assert_eq!(o.fs_group, Some(2000));
        assert_eq!(o.pod.unwrap().name, "p");
        assert_eq!(o.secrets["token"], b"s3cr3t");
        assert_eq!(o.extra.len(), 1);
        assert_eq!(o.extra["size"], "1Gi");
        assert!(!raw.redacted_json().contains("czNjcjN0"));
        let mut secrets = crate::secrets::SecretSet::new();
        raw.add_secrets_to(&mut secrets);
        assert!(secrets.found_in("czNjcjN0") && secrets.found_in("S3CR3T"));
    }

    #[test]
    fn new_fs_group_key_wins_and_html_escapes_decode() {
        let raw = RawOptions::parse(
            r#"{"kubernetes.io/mounterArgs.FsGroup":"7","kubernetes.io/fsGroup":"8","a":"x\u0026y\u003c"}"#,
        )
        .unwrap();
        let o = raw.resolve().unwrap();
        assert_eq!(o.fs_group, Some(7));
        assert_eq!(o.extra["a"], "x&y<");
    }

    #[test]
    fn bad_shapes_are_named() {
        assert_eq!(RawOptions::parse(""), Err(OptionsError::Empty));
        assert_eq!(
            RawOptions::parse("[1]"),
            Err(OptionsError::NotObject("an array"))
        );
        assert!(matches!(
            RawOptions::parse(r#"{"size": 10}"#),
            Err(OptionsError::NotString {
                kind: "a number",
                ..
            })
        ));
        assert!(matches!(
            RawOptions::parse("{nope"),
            Err(OptionsError::NotJson(_))
        ));
        let bad_rw = RawOptions::parse(r#"{"kubernetes.io/readwrite":"maybe"}"#).unwrap();
        assert!(matches!(
            bad_rw.resolve(),
            Err(OptionsError::ReadWrite { .. })
        ));
        let bad_secret = RawOptions::parse(r#"{"kubernetes.io/secret/k":"@@@"}"#).unwrap();
        assert!(matches!(
            bad_secret.resolve(),
            Err(OptionsError::SecretEncoding { .. })
        ));
        let bad_group = RawOptions::parse(r#"{"kubernetes.io/fsGroup":"-1"}"#).unwrap();
        assert!(matches!(
            bad_group.resolve(),
            Err(OptionsError::FsGroup { .. })
        ));
    }
}
