//! What the fuzz targets share: the checks of the one answer kubelet reads.

use flexwasm::contract::{
    DriverStatus, MAX_DEVICE_BYTES, MAX_MESSAGE_BYTES, MAX_VOLUME_NAME_BYTES,
};
use flexwasm::secrets::{REDACTED, SecretSet};

/// Characters no answer string may hold (as `contract` defines them:
/// control characters and the ones that reorder or hide text).
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Whether `text` carries a secret of `secrets`, not counting what the
/// host put there itself: the `<redacted>` markers (each piece between
/// them is checked on its own) and the note of a cut message.
pub fn leaks(secrets: &SecretSet, text: &str) -> bool {
    let text = text.strip_suffix(" […cut]").unwrap_or(text);
    text.split(REDACTED).any(|piece| secrets.found_in(piece))
}

/// Check `status` as printed, exactly as kubelet would read it, and the
/// exit code `main` would give: panics (a finding) on any violation.
/// `quiet`: the call may carry secrets, so a Failure must exit 0.
pub fn check_answer(status: &DriverStatus, secrets: &SecretSet, quiet: bool) {
    let json = status.to_json();
    assert!(!json.contains('\n'), "the answer is one line: {json}");
    // Exactly one JSON object, nothing around it.
    let value: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {json}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("answer is not an object: {json}"));
    let mut de = serde_json::Deserializer::from_str(&json).into_iter::<serde_json::Value>();
    assert!(
        de.next().is_some_and(|v| v.is_ok()) && de.next().is_none(),
        "one value: {json}"
    );
    for key in obj.keys() {
        assert!(
            [
                "status",
                "message",
                "device",
                "volumeName",
                "attached",
                "capabilities"
            ]
            .contains(&key.as_str()),
            "unexpected key {key}: {json}"
        );
    }
    let st = obj
        .get("status")
        .and_then(|s| s.as_str())
        .expect("status is a string");
    assert!(
        ["Success", "Failure", "Not supported"].contains(&st),
        "status {st}"
    );
    assert_ne!(
        obj.get("capabilities"),
        Some(&serde_json::Value::Null),
        "capabilities: null"
    );
    if let Some(a) = obj.get("attached") {
        assert!(a.is_boolean(), "attached is a JSON bool: {json}");
    }
    for (key, max) in [
        ("message", MAX_MESSAGE_BYTES),
        ("device", MAX_DEVICE_BYTES),
        ("volumeName", MAX_VOLUME_NAME_BYTES),
    ] {
        if let Some(v) = obj.get(key) {
            let s = v
                .as_str()
                .unwrap_or_else(|| panic!("{key} is a string: {json}"));
            assert!(s.len() <= max, "{key} is {} bytes (max {max})", s.len());
            assert!(
                !s.chars().any(unprintable),
                "{key} holds unprintable characters: {s:?}"
            );
            assert!(!leaks(secrets, s), "{key} carries a secret: {s:?}");
        }
    }
    // Exit codes (contract page §3): 0 for Success, 1 otherwise, except a
    // Failure of a call that may carry secrets: 0, so kubelet does not log
    // its argv.
    let expected = match st {
        "Success" => 0,
        "Failure" if quiet => 0,
        _ => 1,
    };
    assert_eq!(
        status.exit_code(),
        expected,
        "exit code of {json} (quiet: {quiet})"
    );
}
