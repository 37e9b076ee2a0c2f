//! The options JSON kubelet passes (contract page §2): `RawOptions::parse`
//! then `resolve`, and the forms the host derives from it (redacted log
//! form, volume identity, secrets).
//!
//! Input: the options argument as text. An input starting with a NUL byte
//! is instead a volume and pod (via `arbitrary`) that kubelet's encoder
//! (`kubelet_options::build`) turns into options, which must then parse
//! and resolve to what was encoded.
//!
//! Checked: no panic; parse accepts exactly the JSON objects of strings up
//! to 128 KiB (checked against serde_json independently); resolve types
//! kubelet's keys as documented (ro/rw, fsGroup, base64 secrets) and
//! passes every other key through; the redacted form keeps every key and
//! hides every secret value; the volume identity ignores the per-call keys.
#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use flexwasm::kubelet_options::{self, Op, PodMount, VolumeSpec};
use flexwasm::options::{self as o, RawOptions};
use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(rest) = data.strip_prefix(&[0]) {
        roundtrip(rest);
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_text(text);
});

fn check_text(text: &str) -> Option<BTreeMap<String, String>> {
    let parsed = RawOptions::parse(text);
    // Independently: a JSON object whose values are all strings.
    let independent: Option<BTreeMap<String, String>> = (!text.trim().is_empty()
        && text.len() <= 128 * 1024)
        .then(|| serde_json::from_str::<serde_json::Value>(text).ok())
        .flatten()
        .and_then(|v| match v {
            serde_json::Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
            _ => None,
        });
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            assert!(independent.is_none(), "refused a valid options object: {e}");
            return None;
        }
    };
    let map: BTreeMap<String, String> = raw
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        Some(&map),
        independent.as_ref(),
        "parse differs from the JSON"
    );

    // The redacted form: every key, secret values hidden, others as is.
    let redacted: BTreeMap<String, String> =
        serde_json::from_str(&raw.redacted_json()).expect("redacted_json is an object of strings");
    assert_eq!(redacted.len(), map.len());
    for (k, v) in &map {
        let shown = &redacted[k];
        if k.starts_with(o::SECRET_PREFIX) {
            assert_eq!(shown, "<redacted>");
        } else {
            assert_eq!(shown, v);
        }
    }

    // The volume identity ignores what kubelet adds per call.
    let mut per_call = map.clone();
    per_call.insert(o::READWRITE.into(), "ro".into());
    per_call.insert(o::POD_UID.into(), "u-other".into());
    per_call.insert(format!("{}extra-key", o::SECRET_PREFIX), "c2VjcmV0".into());
    per_call.insert(o::FS_GROUP.into(), "1234".into());
    let again = RawOptions::parse(&serde_json::to_string(&per_call).unwrap()).unwrap();
    assert_eq!(raw.volume_identity(), again.volume_identity());

    let mut secrets = flexwasm::secrets::SecretSet::new();
    raw.add_secrets_to(&mut secrets);
    assert_eq!(
        raw.has_secrets(),
        map.keys().any(|k| k.starts_with(o::SECRET_PREFIX))
    );

    match raw.resolve() {
        Ok(v) => {
            let get = |k: &str| map.get(k).map(String::as_str);
            assert_eq!(v.read_only, get(o::READWRITE) == Some("ro"));
            assert!(matches!(get(o::READWRITE), None | Some("" | "rw" | "ro")));
            assert_eq!(
                v.fs_type.as_deref(),
                get(o::FS_TYPE).map(str::trim).filter(|s| !s.is_empty())
            );
            assert_eq!(v.volume_name, get(o::VOLUME_NAME).unwrap_or(""));
            let group = [o::FS_GROUP, o::FS_GROUP_OLD]
                .into_iter()
                .find_map(|k| get(k).filter(|v| !v.is_empty()));
            assert_eq!(v.fs_group, group.map(|g| g.trim().parse::<u32>().unwrap()));
            assert_eq!(v.pod.is_some(), get(o::POD_UID).is_some());
            for (k, val) in &map {
                if let Some(name) = k.strip_prefix(o::SECRET_PREFIX) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(val.trim())
                        .unwrap();
                    assert_eq!(v.secrets.get(name), Some(&decoded));
                    if val.trim().len() >= 4 {
                        assert!(
                            secrets.found_in(val.trim()),
                            "a secret is known by its encoding"
                        );
                    }
                } else if !k.starts_with("kubernetes.io/") || !is_kubelet_key(k) {
                    assert_eq!(v.extra.get(k), Some(val), "{k} passes through");
                }
            }
            for k in v.extra.keys() {
                assert!(!is_kubelet_key(k) && !k.starts_with(o::SECRET_PREFIX));
            }
        }
        Err(e) => {
            // Only kubelet's own keys can make typed resolution fail.
            let get = |k: &str| map.get(k).map(String::as_str);
            let bad_rw = !matches!(get(o::READWRITE), None | Some("" | "rw" | "ro"));
            let group = [o::FS_GROUP, o::FS_GROUP_OLD]
                .into_iter()
                .find_map(|k| get(k).filter(|v| !v.is_empty()));
            let bad_group = group.is_some_and(|g| g.trim().parse::<u32>().is_err());
            let bad_secret = map.iter().any(|(k, v)| {
                k.starts_with(o::SECRET_PREFIX)
                    && base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .is_err()
            });
            assert!(
                bad_rw || bad_group || bad_secret,
                "refused for no reason: {e}"
            );
        }
    }
    Some(map)
}

fn is_kubelet_key(k: &str) -> bool {
    [
        o::FS_TYPE,
        o::READWRITE,
        o::VOLUME_NAME,
        o::POD_NAME,
        o::POD_NAMESPACE,
        o::POD_UID,
        o::SERVICE_ACCOUNT,
        o::FS_GROUP,
        o::FS_GROUP_OLD,
    ]
    .contains(&k)
}

/// What kubelet encodes, the host must read back as encoded.
fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(strings) = <Vec<String>>::arbitrary(&mut u) else {
        return;
    };
    let s = |i: usize| strings.get(i).map(String::as_str).unwrap_or("");
    let pairs: Vec<(&str, &str)> = strings
        .chunks(2)
        .skip(4)
        .take(8)
        .map(|c| (c[0].as_str(), c.get(1).map_or("", String::as_str)))
        .collect();
    let op = [
        Op::GetVolumeName,
        Op::Attach,
        Op::WaitForAttach,
        Op::IsAttached,
        Op::MountDevice,
        Op::Mount,
        Op::ExpandVolume,
        Op::ExpandFs,
    ][usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 8];
    let volume = VolumeSpec {
        name: s(0),
        fs_type: s(1),
        read_only: u.arbitrary().unwrap_or(false),
        options: pairs,
    };
    let secret_pairs: Vec<(&str, &str)> = vec![(s(4), s(5))]
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let pod = (op == Op::Mount).then(|| PodMount {
        name: s(2),
        namespace: s(3),
        uid: s(6),
        service_account: s(7),
        fs_group: u.arbitrary::<Option<u32>>().unwrap_or(None).map(i64::from),
        secret: secret_pairs,
    });
    let Ok(json) = kubelet_options::build(op, &volume, pod.as_ref()) else {
        return;
    };
    assert!(
        !json.contains('<') && !json.contains('>') && !json.contains('&'),
        "Go's encoder escapes HTML characters"
    );
    let map = check_text(&json).unwrap_or_else(|| panic!("kubelet's options do not parse: {json}"));
    let raw = RawOptions::parse(&json).unwrap();
    // The user's options win over kubelet's keys (merged last), as in kubelet.
    let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
    expected.insert(o::FS_TYPE, volume.fs_type);
    expected.insert(o::READWRITE, if volume.read_only { "ro" } else { "rw" });
    expected.insert(o::VOLUME_NAME, volume.name);
    for (k, v) in &volume.options {
        expected.insert(k, v);
    }
    for (k, v) in &expected {
        assert_eq!(map.get(*k).map(String::as_str), Some(*v), "{k} in {json}");
    }
    if let Some(pod) = &pod
        && let Ok(v) = raw.resolve()
        && !volume
            .options
            .iter()
            .any(|(k, _)| k.starts_with("kubernetes.io/"))
    {
        let p = v.pod.expect("mount carries the pod");
        assert_eq!((p.name.as_str(), p.uid.as_str()), (pod.name, pod.uid));
        assert_eq!(v.fs_group.map(i64::from), pod.fs_group);
        for (k, val) in &pod.secret {
            assert_eq!(v.secrets.get(*k).map(Vec::as_slice), Some(val.as_bytes()));
        }
    }
}
