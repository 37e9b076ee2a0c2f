//! Secrets a call carries, and where they may not go.
//!
//! A call knows two kinds of secret: the values kubelet passes as
//! `kubernetes.io/secret/*` (only to `mount`, base64 in argv) and the
//! `[config]` values the operator marked `secret = true`. The plugin gets
//! them because it needs them (to authenticate to its backend); nothing
//! else does. The host's rules, strongest first:
//!
//! - **Refused, not scrubbed**, where a value leaves the host for good: a
//!   `device` or `volumeName` answer (kubelet stores the device in the
//!   Node object's status), a mount source or option (world-readable in
//!   `/proc/*/mountinfo`), an mkfs argument (world-readable in
//!   `/proc/PID/cmdline`, and written to the device). The call fails.
//! - **Scrubbed** from text meant for people: the answer's `message` and
//!   every field of the call log.
//!
//! Matching is on a folded form of both sides: only letters and digits
//! count, lowercased (fullwidth forms read as ASCII). So case changes,
//! separators or padding put between the characters, line breaks that
//! split a value, and bytes lost to UTF-8 repair (which become U+FFFD, not
//! a letter) do not hide a secret. Each secret is also looked for in base64
//! (at all three alignments, so inside a longer encoded blob such as an
//! `Authorization: Basic` header) and in hex; and a secret of 16 or more
//! folded characters is also found when only half of it is present, so a
//! value split across two fields or lines is caught by either half.
//!
//! What this cannot do: a hostile plugin can always transform a secret
//! (XOR, reverse, one character per log line) so that no scrubber
//! recognises it. Scrubbing protects against accidents; the structural
//! rules above, and granting secrets only to plugins that need them, are
//! the protection against a plugin that means harm.

use base64::Engine as _;
use memchr::memmem::Finder;

/// Shortest folded secret that is looked for: a shorter one would match
/// ordinary words and numbers everywhere.
const MIN_FOLDED: usize = 4;
/// Shortest encoded form (base64 core, hex) that is looked for.
const MIN_ENCODED: usize = 8;
/// From this folded length on, either half of a secret is enough.
const HALVES_FROM: usize = 16;

pub const REDACTED: &str = "<redacted>";

/// The secrets of one call, ready to be found in text. Finding them is
/// linear in the text and in the secrets (a few fixed-size forms each, and
/// one pass per form), whatever their size.
#[derive(Clone, Default)]
pub struct SecretSet {
    /// Folded forms (whole, halves, encodings), searched in folded text.
    folded: Vec<Finder<'static>>,
    /// Each value as given, ASCII-lowercased, searched in the text as is:
    /// a value that is mostly punctuation has little to fold.
    raw: Vec<Finder<'static>>,
    /// The values as given (for the cut-aware trimming of captured output).
    values: Vec<String>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} values)", self.values.len())
    }
}

/// Letters and digits of `text`, lowercased (fullwidth forms read as
/// ASCII), as UTF-8; for each of its bytes, the byte range in `text` of
/// the character it came from.
fn fold(text: &str) -> (String, Vec<(u32, u32)>) {
    let mut out = String::with_capacity(text.len());
    let mut spans = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let span = (i as u32, (i + c.len_utf8()) as u32);
        let c = match u32::from(c) {
            0xFF01..=0xFF5E => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            _ => c,
        };
        if c.is_alphanumeric() {
            for lc in c.to_lowercase() {
                out.push(lc);
                spans.extend(std::iter::repeat_n(span, lc.len_utf8()));
            }
        }
    }
    (out, spans)
}

/// The part of base64(`prefix` zero bytes + `secret`) that depends only on
/// the secret: how the secret looks inside any longer base64 text where it
/// starts at that alignment.
fn base64_core(secret: &[u8], prefix: usize) -> Option<String> {
    let mut padded = vec![0u8; prefix];
    padded.extend_from_slice(secret);
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
    // Characters that also carry bits of the bytes before or after.
    let skip = (prefix * 4).div_ceil(3);
    let end = encoded.len().saturating_sub(2);
    (end > skip).then(|| encoded[skip..end].to_string())
}

fn finder(needle: &[u8]) -> Finder<'static> {
    Finder::new(needle).into_owned()
}

impl SecretSet {
    pub fn new() -> Self {
        SecretSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.folded.is_empty() && self.raw.is_empty()
    }

    /// Add one secret value (any bytes).
    pub fn add(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        let trimmed = text.trim();
        if trimmed.len() >= MIN_FOLDED {
            self.raw
                .push(finder(trimmed.to_ascii_lowercase().as_bytes()));
            self.values.push(trimmed.to_string());
        }
        let (whole, _) = fold(&text);
        let chars: Vec<char> = whole.chars().collect();
        if chars.len() >= MIN_FOLDED {
            self.folded.push(finder(whole.as_bytes()));
        }
        // A value split in two, anywhere: the longer piece holds the first
        // or the second half.
        if chars.len() >= HALVES_FROM {
            let half = chars.len().div_ceil(2);
            let first: String = chars[..half].iter().collect();
            let second: String = chars[chars.len() - half..].iter().collect();
            self.folded.push(finder(first.as_bytes()));
            self.folded.push(finder(second.as_bytes()));
        }
        let mut encoded = vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)];
        encoded.extend((0..3).filter_map(|p| base64_core(value, p)));
        let mut hex = String::with_capacity(value.len() * 2);
        for b in value {
            hex.push_str(&format!("{b:02x}"));
        }
        encoded.push(hex);
        for e in encoded {
            let (f, _) = fold(&e);
            if f.len() >= MIN_ENCODED {
                self.folded.push(finder(f.as_bytes()));
            }
        }
    }

    pub fn add_str(&mut self, value: &str) {
        self.add(value.as_bytes());
    }

    pub fn extend(&mut self, other: &SecretSet) {
        self.folded.extend(other.folded.iter().cloned());
        self.raw.extend(other.raw.iter().cloned());
        self.values.extend(other.values.iter().cloned());
    }

    /// The values as given, trimmed.
    pub fn raw_values(&self) -> &[String] {
        &self.values
    }

    /// Byte ranges of `text` that hold a secret, merged and sorted.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        if self.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let mut hits: Vec<(usize, usize)> = Vec::new();
        let lower = text.to_ascii_lowercase();
        for f in &self.raw {
            let n = f.needle().len();
            hits.extend(f.find_iter(lower.as_bytes()).map(|i| (i, i + n)));
        }
        let (folded, spans) = fold(text);
        for f in &self.folded {
            let n = f.needle().len();
            hits.extend(
                f.find_iter(folded.as_bytes())
                    .map(|i| (spans[i].0 as usize, spans[i + n - 1].1 as usize)),
            );
        }
        hits.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(hits.len());
        for (s, e) in hits {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// Whether `text` holds any secret, in any of the forms above.
    pub fn found_in(&self, text: &str) -> bool {
        !self.matches(text).is_empty()
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let hits = self.matches(text);
        if hits.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in hits {
            out.push_str(&text[at..s]);
            out.push_str(REDACTED);
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Scrub every string in a JSON value, keys included: a record is
    /// redacted whole, so no field can be forgotten.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if self.found_in(s) {
                    *s = self.redact(s);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k), v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> SecretSet {
        let mut s = SecretSet::new();
        for v in values {
            s.add_str(v);
        }
        s
    }

    #[test]
    fn plain_case_padding_and_split_forms_are_found() {
        let s = set(&["Hunter2-Token"]);
        for leak in [
            "token Hunter2-Token here",
            "HUNTER2TOKEN",
            "h u n t e r 2 t o k e n",
            "hunter2\ntoken",
            "Ｈｕｎｔｅｒ２Token",
            "hun\u{200b}ter2-to\u{fffd}ken",
        ] {
            assert!(s.found_in(leak), "{leak:?}");
            assert!(
                !s.redact(leak).to_lowercase().contains("hunter"),
                "{leak:?}"
            );
        }
        assert_eq!(s.redact("a Hunter2-Token b"), "a <redacted> b");
        assert!(!s.found_in("hunter3 token"));
    }

    #[test]
    fn encoded_forms_are_found() {
        let secret = "correct-horse-battery";
        let s = set(&[secret]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let hex: String = secret.bytes().map(|b| format!("{b:02X}")).collect();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{secret}"));
        for leak in [b64, hex, format!("Authorization: Basic {basic}")] {
            assert!(s.found_in(&leak), "{leak:?}");
        }
    }

    #[test]
    fn either_half_of_a_long_secret_is_enough() {
        let s = set(&["0123456789abcdefGHIJKLMNOP"]);
        assert!(s.found_in("first: 0123456789abc"));
        assert!(s.found_in("second: defGHIJKLMNOP"));
        assert!(!s.found_in("only 0123456"));
    }

    #[test]
    fn non_utf8_secrets_are_found_by_their_text() {
        let mut s = SecretSet::new();
        s.add(b"\xffk3y\xfeMaterial99");
        let printed = String::from_utf8_lossy(b"\xffk3y\xfeMaterial99").into_owned();
        assert!(s.found_in(&printed));
        assert!(s.found_in("K3Y MATERIAL99"));
    }

    #[test]
    fn values_under_four_characters_are_not_looked_for() {
        let s = set(&["ab", "true", "x1"]);
        assert_eq!(s.redact("a b true x1"), "a b <redacted> x1");
        assert!(set(&["ab"]).is_empty());
    }

    #[test]
    fn punctuation_secrets_are_found_as_written() {
        let s = set(&["#!~@%^&*a1", "p@$$w0rd!#%^&*()"]);
        assert_eq!(
            s.redact("rejected password #!~@%^&*A1 and p@$$W0RD!#%^&*() here"),
            "rejected password <redacted> and <redacted> here"
        );
    }

    #[test]
    fn finding_is_linear_in_the_secret_size() {
        // 64 KiB secret, 1 MiB of text: a quadratic search would take
        // minutes and gigabytes.
        let secret: String = (0..64 << 10)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut s = SecretSet::new();
        s.add_str(&secret);
        let text = format!("{}{}", "x".repeat(1 << 20), &secret[..40 << 10]);
        let started = std::time::Instant::now();
        assert!(s.found_in(&text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn json_records_are_redacted_whole() {
        let s = set(&["Zk9-tOkEn-4242"]);
        let mut v = serde_json::json!({"method": "ZK9TOKEN4242", "a": [{"b": "x zk9-token-4242"}]});
        s.redact_json(&mut v);
        assert!(!v.to_string().to_lowercase().contains("4242"), "{v}");
    }

    #[test]
    fn overlapping_hits_merge() {
        let s = set(&["abcdef", "defghi"]);
        assert_eq!(s.redact("xxabcdefghiyy"), "xx<redacted>yy");
    }
}
