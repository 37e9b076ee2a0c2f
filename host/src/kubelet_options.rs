//! The options JSON, exactly as kubelet builds it for each op (contract page
//! §2; kubelet v1.20 `NewOptionsForDriver` in driver-call.go, the extra
//! options in mounter.go and util.go `addSecretsToOptions`). `flexwasm
//! options` prints it for plugin authors; the tests build every argv with it.

/// An op whose argv carries kubelet's options JSON (contract page §1).
/// `init`, `detach`, `unmountdevice` and `unmount` get no options, so they
/// have no variant: there are no options to build for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    GetVolumeName,
    Attach,
    WaitForAttach,
    IsAttached,
    MountDevice,
    Mount,
    ExpandVolume,
    ExpandFs,
}

impl Op {
    /// The op as it appears in argv.
    pub fn name(self) -> &'static str {
        match self {
            Op::GetVolumeName => "getvolumename",
            Op::Attach => "attach",
            Op::WaitForAttach => "waitforattach",
            Op::IsAttached => "isattached",
            Op::MountDevice => "mountdevice",
            Op::Mount => "mount",
            Op::ExpandVolume => "expandvolume",
            Op::ExpandFs => "expandfs",
        }
    }
}

/// One flexVolume volume as its PV (or the pod's inline volume) describes
/// it: what kubelet puts into the options of every op.
#[derive(Clone, Debug, Default)]
pub struct VolumeSpec<'a> {
    /// The PV name, or the inline volume's name: `kubernetes.io/pvOrVolumeName`.
    pub name: &'a str,
    /// `flexVolume.fsType`: `kubernetes.io/fsType`, sent even when empty.
    pub fs_type: &'a str,
    /// The volume's `readOnly`: `kubernetes.io/readwrite` is `ro`, else `rw`.
    pub read_only: bool,
    /// The volume's own `flexVolume.options`, merged in last.
    pub options: Vec<(&'a str, &'a str)>,
}

impl<'a> VolumeSpec<'a> {
    /// A read-write volume `name` with `fs_type` (may be empty) and its own
    /// `options`.
    pub fn new(name: &'a str, fs_type: &'a str, options: &[(&'a str, &'a str)]) -> Self {
        VolumeSpec {
            name,
            fs_type,
            read_only: false,
            options: options.to_vec(),
        }
    }
}

/// What kubelet adds to `mount`, and to no other op: the pod's keys, the
/// pod's fsGroup, and the data of the volume's `secretRef` (kubelet reads
/// the secret when it mounts for a pod; attach, isattached and detach run
/// in kube-controller-manager, which never reads it).
#[derive(Clone, Debug)]
pub struct PodMount<'a> {
    /// `kubernetes.io/pod.name`
    pub name: &'a str,
    /// `kubernetes.io/pod.namespace`
    pub namespace: &'a str,
    /// `kubernetes.io/pod.uid`
    pub uid: &'a str,
    /// `kubernetes.io/serviceAccount.name`
    pub service_account: &'a str,
    /// The pod's `securityContext.fsGroup`: `kubernetes.io/mounterArgs.FsGroup`.
    pub fs_group: Option<i64>,
    /// The secret's data, decoded: each key arrives as
    /// `kubernetes.io/secret/<key>`, its value base64-encoded (standard).
    pub secret: Vec<(&'a str, &'a str)>,
}

impl<'a> PodMount<'a> {
    /// Pod `web-0` in namespace `default` with service account `default`
    /// and `uid`; no fsGroup, no secret.
    pub fn new(uid: &'a str) -> Self {
        PodMount {
            name: "web-0",
            namespace: "default",
            uid,
            service_account: "default",
            fs_group: None,
            secret: Vec::new(),
        }
    }
}

/// Keys kubelet sets for `mount` only.
fn mount_only_key(key: &str) -> bool {
    matches!(
        key,
        "kubernetes.io/pod.name"
            | "kubernetes.io/pod.namespace"
            | "kubernetes.io/pod.uid"
            | "kubernetes.io/serviceAccount.name"
            | "kubernetes.io/mounterArgs.FsGroup"
            | "kubernetes.io/fsGroup"
    ) || key
        .to_ascii_lowercase()
        .starts_with("kubernetes.io/secret/")
}

/// The options JSON kubelet passes with `op` for `volume`, byte for byte as
/// kubelet's Go encoder writes it: keys sorted, values strings, `<` `>` `&`
/// U+2028 U+2029 escaped as `\u003c` `\u003e` `\u0026` `\u2028` `\u2029`,
/// control characters as `\u00XX` (`\n` `\r` `\t` short).
///
/// Every op gets `kubernetes.io/fsType` (maybe empty),
/// `kubernetes.io/readwrite` (`ro`/`rw`) and `kubernetes.io/pvOrVolumeName`.
/// `mount`, and only `mount`, also gets what `pod` holds: the pod keys
/// (`kubernetes.io/pod.name`, `…pod.namespace`, `…pod.uid`,
/// `kubernetes.io/serviceAccount.name`), `kubernetes.io/mounterArgs.FsGroup`
/// when the pod has an fsGroup, and `kubernetes.io/secret/<key>` (base64)
/// for each entry of the volume's secret. The volume's own
/// `flexVolume.options` are merged in last, as kubelet does: they may
/// overwrite any key kubelet set (that is how a user's options reach a
/// driver with an odd `kubernetes.io/readwrite`, say).
///
/// An error, naming the mistake, for a call kubelet does not make: `pod`
/// given for an op other than `mount`, or missing for `mount` (kubelet
/// always sends the pod keys there); an empty volume name. It also refuses
/// a mount-only key (pod keys, fsGroup, `kubernetes.io/secret/*`) among the
/// volume's own options of an op other than `mount`: a user could write
/// such an option and kubelet would pass it to every op, but nobody should
/// put a secret or pod key into another op's argv by accident.
pub fn build(
    op: Op,
    volume: &VolumeSpec<'_>,
    pod: Option<&PodMount<'_>>,
) -> Result<String, String> {
    use base64::Engine as _;
    use std::collections::BTreeMap;
    if volume.name.is_empty() {
        return Err(format!(
            "options for {}: the volume has no name; kubelet always sends the PV or \
             inline volume name as kubernetes.io/pvOrVolumeName",
            op.name()
        ));
    }
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        map.insert(k.to_string(), v.to_string());
    };
    set("kubernetes.io/fsType", volume.fs_type);
    set(
        "kubernetes.io/readwrite",
        if volume.read_only { "ro" } else { "rw" },
    );
    set("kubernetes.io/pvOrVolumeName", volume.name);
    match (op, pod) {
        (Op::Mount, Some(pod)) => {
            set("kubernetes.io/pod.name", pod.name);
            set("kubernetes.io/pod.namespace", pod.namespace);
            set("kubernetes.io/pod.uid", pod.uid);
            set("kubernetes.io/serviceAccount.name", pod.service_account);
            if let Some(group) = pod.fs_group {
                set("kubernetes.io/mounterArgs.FsGroup", &group.to_string());
            }
            for (key, value) in &pod.secret {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                set(&format!("kubernetes.io/secret/{key}"), &encoded);
            }
        }
        (Op::Mount, None) => {
            return Err(
                "options for mount: kubelet always sends mount the pod's keys \
                 (kubernetes.io/pod.*, serviceAccount.name): give the pod"
                    .into(),
            );
        }
        (op, Some(_)) => {
            return Err(format!(
                "options for {}: kubelet sends pod keys, fsGroup and secrets only to mount; \
                 {} gets none of them (contract page §2)",
                op.name(),
                op.name()
            ));
        }
        (_, None) => {}
    }
    for (key, value) in &volume.options {
        if op != Op::Mount && mount_only_key(key) {
            return Err(format!(
                "options for {}: the volume's own options hold {key:?}, which kubelet sets \
                 for mount only; a user's option of that name would reach every op",
                op.name()
            ));
        }
        set(key, value);
    }
    let mut out = String::from("{");
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_json_string(key, &mut out);
        out.push(':');
        go_json_string(value, &mut out);
    }
    out.push('}');
    Ok(out)
}

/// `s` as a JSON string the way Go's encoding/json writes it (HTML-safe).
fn go_json_string(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Op, String> {
        [
            Op::GetVolumeName,
            Op::Attach,
            Op::WaitForAttach,
            Op::IsAttached,
            Op::MountDevice,
            Op::Mount,
            Op::ExpandVolume,
            Op::ExpandFs,
        ]
        .into_iter()
        .find(|op| op.name() == s)
        .ok_or_else(|| {
            format!(
                "{s:?} gets no options from kubelet (init, detach, unmountdevice and unmount \
                 get none) or is not an op"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_encoding_and_per_op_keys() {
        let v = VolumeSpec::new("pv<1>", "ext4", &[("size", "1Gi")]);
        assert_eq!(
            build(Op::Attach, &v, None).unwrap(),
            r#"{"kubernetes.io/fsType":"ext4","kubernetes.io/pvOrVolumeName":"pv\u003c1\u003e","kubernetes.io/readwrite":"rw","size":"1Gi"}"#
        );
        let mut pod = PodMount::new("uid-1");
        pod.secret = vec![("token", "s3cr3t")];
        pod.fs_group = Some(2000);
        let m = build(Op::Mount, &v, Some(&pod)).unwrap();
        assert!(
            m.contains(r#""kubernetes.io/secret/token":"czNjcjN0""#),
            "{m}"
        );
        assert!(
            m.contains(r#""kubernetes.io/mounterArgs.FsGroup":"2000""#),
            "{m}"
        );
        assert!(build(Op::Attach, &v, Some(&pod)).is_err());
        assert!(build(Op::Mount, &v, None).is_err());
        let sneaky = VolumeSpec::new("v", "", &[("kubernetes.io/secret/x", "y")]);
        assert!(build(Op::IsAttached, &sneaky, None).is_err());
        assert!("mount".parse::<Op>().is_ok());
        assert!("unmount".parse::<Op>().is_err());
    }
}
