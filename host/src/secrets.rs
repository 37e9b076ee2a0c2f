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

/// Shortest folded secret that is looked for: a shorter one would match
/// ordinary words and numbers everywhere.
const MIN_FOLDED: usize = 4;
/// Shortest encoded form (base64 core, hex) that is looked for.
const MIN_ENCODED: usize = 8;
/// From this folded length on, either half of a secret is enough.
const HALVES_FROM: usize = 16;

pub const REDACTED: &str = "<redacted>";

/// The secrets of one call, ready to be found in text.
#[derive(Debug, Clone, Default)]
pub struct SecretSet {
    /// Folded forms to look for, longest first.
    needles: Vec<Vec<char>>,
    /// The values as given (for the cut-aware trimming of captured output).
    raw: Vec<String>,
}

/// Letters and digits of `text`, lowercased, each with the byte range of
/// the character it came from.
fn fold(text: &str) -> (Vec<char>, Vec<(usize, usize)>) {
    let mut chars = Vec::with_capacity(text.len());
    let mut spans = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        // Fullwidth ASCII (U+FF01..U+FF5E) reads as ASCII.
        let c = match u32::from(c) {
            0xFF01..=0xFF5E => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            _ => c,
        };
        if c.is_alphanumeric() {
            for lc in c.to_lowercase() {
                chars.push(lc);
                spans.push((i, end));
            }
        }
    }
    (chars, spans)
}

fn folded(text: &str) -> Vec<char> {
    fold(text).0
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

impl SecretSet {
    pub fn new() -> Self {
        SecretSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Add one secret value (any bytes).
    pub fn add(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        let whole = folded(&text);
        if whole.len() < MIN_FOLDED {
            return;
        }
        self.raw.push(text.trim().to_string());
        let mut forms = vec![whole.clone()];
        if whole.len() >= HALVES_FROM {
            let half = whole.len().div_ceil(2);
            forms.extend(whole.windows(half).map(<[char]>::to_vec));
        }
        let mut encoded = vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)];
        encoded.extend((0..3).filter_map(|p| base64_core(value, p)));
        encoded.push(value.iter().map(|b| format!("{b:02x}")).collect());
        forms.extend(
            encoded
                .iter()
                .map(|e| folded(e))
                .filter(|f| f.len() >= MIN_ENCODED),
        );
        for f in forms {
            if !self.needles.contains(&f) {
                self.needles.push(f);
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    pub fn add_str(&mut self, value: &str) {
        self.add(value.as_bytes());
    }

    pub fn extend(&mut self, other: &SecretSet) {
        for n in &other.needles {
            if !self.needles.contains(n) {
                self.needles.push(n.clone());
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        self.raw.extend(other.raw.iter().cloned());
    }

    /// The values as given, trimmed.
    pub fn raw_values(&self) -> &[String] {
        &self.raw
    }

    /// Byte ranges of `text` that hold a secret, merged and sorted.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        if self.needles.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let (chars, spans) = fold(text);
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for needle in &self.needles {
            if needle.len() > chars.len() {
                continue;
            }
            let first = needle[0];
            let mut i = 0;
            while i + needle.len() <= chars.len() {
                if chars[i] == first && chars[i..i + needle.len()] == needle[..] {
                    hits.push((spans[i].0, spans[i + needle.len() - 1].1));
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
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
    fn overlapping_hits_merge() {
        let s = set(&["abcdef", "defghi"]);
        assert_eq!(s.redact("xxabcdefghiyy"), "xx<redacted>yy");
    }
}
