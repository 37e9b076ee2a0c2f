//! The policy file (`policy.toml`): `Grant::parse` — text → RawPolicy →
//! Grant — as `Grant::load` and `flexwasm install` run it (after the
//! `plugin_sha256 = "auto"` fill-in).
//!
//! Input: the file's text. Checked: no panic; an accepted grant satisfies
//! every documented rule, re-checked here from the grant itself (pin, limit
//! ranges, absolute loop dir without `..`, fs type lists, option names,
//! claim patterns that round-trip, absolute config files); a refusal's
//! message never quotes a `[config]` value marked secret.
#![no_main]

use std::path::Path;

use flexwasm::node::mkfs;
use flexwasm::policy::{self, ClaimPattern, ConfigSource, Grant};
use libfuzzer_sys::fuzz_target;

const STATE_DIR: &str = "/var/lib/flexwasm/acme~fuzz";

fuzz_target!(|data: &[u8]| {
    if data.len() > 256 * 1024 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = policy::fill_auto_pin(text, &"0".repeat(64));
    let path =
        Path::new("/usr/libexec/kubernetes/kubelet-plugins/volume/exec/acme~fuzz/policy.toml");
    match Grant::parse(&text, path, Path::new(STATE_DIR)) {
        Ok(grant) => check_grant(&grant),
        Err(e) => {
            let message = e.to_string();
            for secret in secret_values(&text) {
                // Values written once, as is, in their own literal, that the
                // message holds: it must still hold them with the literal
                // changed (the host's own words, such as a key name),
                // else it quoted the value.
                if secret.len() >= 4
                    && text.matches(secret.as_str()).count() == 1
                    && message.contains(&secret)
                {
                    let other = text.replace(&secret, &"Q".repeat(secret.len()));
                    let again = Grant::parse(&other, path, Path::new(STATE_DIR))
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    assert!(
                        again.contains(&secret),
                        "refusal quotes a secret: {message}"
                    );
                }
            }
        }
    }
});

/// `[config]` values marked `secret = true`, as far as TOML can read them.
fn secret_values(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(config) = doc.get("config").and_then(|c| c.as_table()) else {
        return Vec::new();
    };
    config
        .values()
        .filter_map(|v| v.as_table())
        .filter(|t| t.get("secret").and_then(|s| s.as_bool()) == Some(true))
        .filter_map(|t| t.get("value").and_then(|v| v.as_str()).map(str::to_string))
        .collect()
}

fn type_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn check_grant(g: &Grant) {
    let sha = g.plugin_sha256.as_deref().expect("a grant is pinned");
    assert!(
        sha.len() == 64
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );

    let l = &g.limits;
    let secs = |d: std::time::Duration| d.as_secs();
    assert!((1..=policy::MAX_DEADLINE_SECS).contains(&secs(l.deadline)));
    assert!((1..=policy::MAX_DEADLINE_SECS).contains(&secs(l.wait_for_attach_deadline)));
    assert!((1 << 20..=4096 << 20).contains(&l.memory_bytes));
    assert!((8 << 20..=1024 << 20).contains(&l.host_memory_bytes));
    assert!((1 << 10..=16384 << 10).contains(&l.output_bytes));
    for op in ["init", "waitforattach", "mount"] {
        let d = l.for_op(op).deadline;
        assert!(d.as_secs() >= 1 && d.as_secs() <= policy::MAX_DEADLINE_SECS);
    }

    if let Some(q) = g.state_quota {
        assert!((1 << 10..=1 << 30).contains(&q) && q % 1024 == 0);
    }
    if let Some(dir) = &g.loop_image_dir {
        assert!(dir.is_absolute() && dir != Path::new("/"), "{dir:?}");
        assert!(
            !dir.components()
                .any(|c| c == std::path::Component::ParentDir),
            "{dir:?}"
        );
        let b = g.loop_limits;
        assert!((1..=65536).contains(&b.max_images));
        assert!((1 << 30..=1 << 50).contains(&b.max_total_bytes));
        assert!((1..=16384).contains(&b.max_attached));
        assert!((1..=64).contains(&b.max_attaches_per_call));
    }
    if !g.device_claims.is_empty() {
        assert!(g.devices, "claims come only with [devices]");
    }
    for c in &g.device_claims {
        let rendered = c.render();
        let again = ClaimPattern::parse(&rendered);
        // (A WWN is normalised once: `0x0x6a` is kept as `0x6a`, and
        // `naa.naa.` as `naa.`, which no normalised device WWN starts
        // with: such a claim claims nothing, and does not re-parse alike.)
        if !matches!(c, ClaimPattern::Wwn(_)) {
            assert_eq!(again.as_ref(), Ok(c), "{rendered}");
        }
        match c {
            ClaimPattern::LoopBackingDir(d) => {
                assert!(d.is_absolute() && d != Path::new("/"), "{d:?}")
            }
            ClaimPattern::ById(p) | ClaimPattern::Serial(p) | ClaimPattern::Wwn(p) => {
                assert!(
                    !p.is_empty(),
                    "an empty prefix would claim every device: {rendered}"
                )
            }
        }
    }
    for t in &g.format {
        assert!(mkfs::is_supported_fs(t), "format {t}");
    }
    for t in g.block.iter().chain(&g.format).chain(&g.filesystem) {
        assert!(type_name(t), "{t:?}");
    }
    for t in &g.filesystem {
        assert!(
            policy::check_filesystem_plan_type(t).is_ok(),
            "filesystem {t}"
        );
        assert!(
            !mkfs::is_supported_fs(t),
            "a filesystem plan type that lives on a device: {t}"
        );
    }
    for o in &g.mount_options {
        assert!(
            !o.is_empty() && o.len() <= 64 && !o.contains('=') && !o.contains(','),
            "{o:?}"
        );
    }
    if let Some(config) = &g.config {
        for (k, v) in config {
            if let ConfigSource::File(f) = &v.source {
                assert!(f.is_absolute(), "config.{k}.file {f:?}");
            }
        }
    }
}
