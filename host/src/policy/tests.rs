use super::*;
use std::time::Duration;

const SHA: &str = "437fb2e3142303b8c62f99aa87e55685eabcd04e6cc7146ece3557a694cbefe3";

fn parse(text: &str) -> Result<Grant, PolicyError> {
    Grant::parse(
        text,
        Path::new("/d/policy.toml"),
        Path::new("/var/lib/flexwasm/a~b"),
    )
}

#[test]
fn full_policy_validates() {
    let g = parse(&format!(
        r#"plugin_sha256 = "{SHA}"
        [limits]
        deadline_seconds = 10
        memory_mib = 32
        [state]
        [loop]
        image_dir = "images"
        [devices]
        [mount]
        format = ["ext4"]
        block = ["ext4", "xfs"]
        options = ["noatime"]
        [config]
        endpoint = "https://x"
        port = 8443
        thin = true
        arrays = ["a1", "a2"]
        token = {{ value = "t", secret = true }}
        pin = {{ value = 1234, secret = true }}
        "#
    ))
    .unwrap();
    assert_eq!(g.limits.deadline, Duration::from_secs(10));
    assert_eq!(g.limits.wait_for_attach_deadline, Duration::from_secs(10));
    assert_eq!(g.limits.memory_bytes, 32 << 20);
    assert_eq!(g.state_quota, Some(4 << 20));
    assert_eq!(
        g.loop_image_dir.as_deref(),
        Some(Path::new("/var/lib/flexwasm/a~b/images"))
    );
    assert!(g.devices);
    assert_eq!(
        g.config.as_ref().unwrap()["endpoint"].source,
        ConfigSource::Value(ConfigData::Text("https://x".into()))
    );
    let c = g.config.as_ref().unwrap();
    assert_eq!(
        c["port"].source,
        ConfigSource::Value(ConfigData::Integer(8443))
    );
    assert_eq!(
        c["thin"].source,
        ConfigSource::Value(ConfigData::Boolean(true))
    );
    assert_eq!(
        c["arrays"].source,
        ConfigSource::Value(ConfigData::List(vec!["a1".into(), "a2".into()]))
    );
    assert!(c["token"].secret && c["pin"].secret && !c["port"].secret);
    assert_eq!(
        c["pin"].source,
        ConfigSource::Value(ConfigData::Integer(1234))
    );
}

#[test]
fn absent_means_denied() {
    let g = parse(&format!("plugin_sha256 = \"{SHA}\"")).unwrap();
    assert!(!g.allows(Capability::State));
    assert!(!g.allows(Capability::Loop));
    assert!(!g.allows(Capability::Devices));
    assert!(g.format.is_empty() && g.block.is_empty() && g.mount_options.is_empty());
    let imports = vec![
        "wasi:cli/stdout@0.2.6".to_string(),
        "flexwasm:driver/devices@0.1.0".to_string(),
        "wasi:filesystem/preopens@0.2.6".to_string(),
    ];
    assert_eq!(
        g.ungranted(&imports),
        vec![
            "flexwasm:driver/devices@0.1.0",
            "wasi:filesystem/preopens@0.2.6"
        ]
    );
}

#[test]
fn http_allow_entries_match_origins() {
    let a = AllowedOrigin::parse("https://array.example.com").unwrap();
    assert!(a.allows(true, "ARRAY.example.com", 443));
    assert!(!a.allows(false, "array.example.com", 443));
    assert!(!a.allows(true, "array.example.com", 8443));
    assert!(!a.allows(true, "evil-array.example.com", 443));
    let w = AllowedOrigin::parse("http://*.example.com:8080").unwrap();
    assert!(w.allows(false, "a.b.example.com", 8080));
    assert!(!w.allows(false, "example.com", 8080));
    assert!(!w.allows(false, "badexample.com", 8080));
    let v6 = AllowedOrigin::parse("http://[::1]:9").unwrap();
    assert!(v6.allows(false, "::1", 9));
    let g = parse(&format!(
        "plugin_sha256 = \"{SHA}\"\n[http]\nallow = [\"https://x.example\"]\n[config]\nt = {{ value = \"v\", secret = true }}"
    ))
    .unwrap();
    assert!(g.allows(Capability::Http) && g.allows(Capability::Config));
    assert!(g.config.unwrap()["t"].secret);
}

#[test]
fn bad_policies_are_named() {
    for (text, needle) in [
        ("", "plugin_sha256 is required"),
        ("plugin_sha256 = \"abc\"", "not 64 hex digits"),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[limits]\ndeadline_seconds = 600"),
            "out of range",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[lop]\n"),
            "unknown field",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[loop]\n"),
            "image_dir is required",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"../x\""),
            "without '..'",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nformat = [\"ntfs\"]"),
            "cannot format 'ntfs'",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[mount]\noptions = [\"size=1\"]"),
            "option name",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"ext4\"]"),
            "block plan",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"devtmpfs\"]"),
            "view of the node",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[mount]\nfilesystem = [\"proc\"]"),
            "view of the node",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = 1.5"),
            "must be a string, a whole number",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = [\"a\", 2]"),
            "strings only",
        ),
        (
            &format!("plugin_sha256 = \"{SHA}\"\n[config]\nx = {{ value = 1, file = \"/f\" }}"),
            "exactly one of",
        ),
        ("plugin_sha256 = ", "line 1, column"),
        (
            &format!(
                "plugin_sha256 = \"{SHA}\"\n[config]\ntoken = {{ value = \"hunter2\\q\", secret = true }}"
            ),
            "line 3",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(
            !e.contains("hunter2"),
            "a config value is in the message: {e}"
        );
    }
}

#[test]
fn loop_limits_have_safe_defaults_and_room_for_256_volumes() {
    let g = parse(&format!(
        "plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"images\""
    ))
    .unwrap();
    assert_eq!(
        g.loop_limits,
        LoopLimits {
            max_images: 64,
            max_total_bytes: 256 << 30,
            max_attached: 32,
            max_attaches_per_call: 1,
        }
    );
    // Not granted: the same defaults, never used.
    assert_eq!(Grant::baseline().loop_limits, LoopLimits::default());
    let g = parse(&format!(
        "plugin_sha256 = \"{SHA}\"\n[state]\nquota_kib = 2048\n[loop]\nimage_dir = \"images\"\n\
         max_images = 256\nmax_total_gib = 2560\nmax_attached = 256\nmax_attaches_per_call = 2"
    ))
    .unwrap();
    assert_eq!(
        g.loop_limits,
        LoopLimits {
            max_images: 256,
            max_total_bytes: 2560 << 30,
            max_attached: 256,
            max_attaches_per_call: 2,
        }
    );
    assert_eq!(g.state_quota, Some(2 << 20));
    for (key, bad) in [
        ("max_images", "0"),
        ("max_images", "65537"),
        ("max_total_gib", "0"),
        ("max_total_gib", "1048577"),
        ("max_attached", "16385"),
        ("max_attaches_per_call", "65"),
    ] {
        let e = parse(&format!(
            "plugin_sha256 = \"{SHA}\"\n[loop]\nimage_dir = \"images\"\n{key} = {bad}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("loop.{key} = {bad} is out of range")),
            "{e}"
        );
    }
}

#[test]
fn claim_patterns_parse() {
    assert_eq!(
        ClaimPattern::parse("loop-backing-dir:/var/lib/array").unwrap(),
        ClaimPattern::LoopBackingDir("/var/lib/array".into())
    );
    assert_eq!(
        ClaimPattern::parse("wwn:naa.600A").unwrap(),
        ClaimPattern::Wwn("600a".into())
    );
    for bad in [
        "x",
        "loop-backing-dir:rel",
        "loop-backing-dir:/",
        "by-id:",
        "nope:x",
        "loop-backing-dir:/a/../b",
        // Found by fuzz/ (policy): empty once normalised, a prefix of every WWN.
        "wwn:0x",
        "wwn:naa.",
        "wwn: NAA. ",
    ] {
        assert!(ClaimPattern::parse(bad).is_err(), "{bad}");
    }
}
