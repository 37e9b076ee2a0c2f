//! The top-level keys of a kubelet config file (`KubeletConfiguration`,
//! YAML or JSON) or a k3s/rke2 config file (YAML), read without a YAML
//! library.
//!
//! We need one top-level scalar (`volumePluginDir`, `config`) or one
//! top-level list of strings (`kubelet-arg`). A JSON document (first
//! character `{`) goes to `serde_json`. Anything else is read line by line
//! as a block mapping at column 0:
//!
//! - `key: value` with a plain, `'single'` or `"double"` quoted value
//!   (comments after ` #` dropped; `~`/`null` read as null);
//! - `key:` followed by `- item` lines (at column 0 or indented), or
//!   `key: [a, "b"]` on one line: a list of scalars;
//! - comments, blank lines, `%` directives, a leading `---`; a second
//!   document ends the reading (kubelet reads one).
//!
//! Indented lines under any other key (nested mappings such as
//! `authentication:`) are skipped, so an indented `volumePluginDir:` is never
//! mistaken for the top-level one. What this reader cannot delimit with
//! certainty it refuses instead of guessing: a quoted value or `[`/`{`
//! collection that does not end on its line makes the whole file
//! unreadable (its continuation could hold a line that looks like a
//! top-level key); a block scalar (`|`, `>`), an anchor, alias or tag, a
//! plain value continued on the next line, or a value holding `: ` make that
//! key unreadable; a key set twice makes the file unreadable (kubelet's
//! strict decoding refuses it too). An unreadable answer is reported as
//! such, never replaced by a default.
//!
//! Why no YAML crate: `serde_yaml` is archived, its best-known fork
//! (`serde_yml`) was found unsound and deprecated, and the remaining forks
//! are young; a 200-line reader of the one shape kubelet and k3s configs
//! use in practice is easier to audit than any of them, adds nothing to the
//! driver binary's attack surface, and says so when a file is outside that
//! shape.

/// What a top-level key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Scalar(String),
    /// `key:` with nothing under it, `~` or `null`.
    Null,
    List(Vec<String>),
    /// A mapping, a block scalar, … : not something this reader returns;
    /// the text says what and why.
    Unreadable(String),
}

/// The top-level keys of one document, in file order.
#[derive(Debug, Default)]
pub(crate) struct TopLevel {
    entries: Vec<(String, Value)>,
}

impl TopLevel {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Read the top-level keys of a config file's text.
pub(crate) fn parse(text: &str) -> Result<TopLevel, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return parse_json(text);
    }
    parse_yaml(text)
}

fn parse_json(text: &str) -> Result<TopLevel, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("starts with `{{` but is not a JSON object: {e}"))?;
    let entries = map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => Value::Scalar(s),
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()
                    .map(Value::List)
                    .unwrap_or_else(|| Value::Unreadable("a list holding non-strings".into())),
                other => Value::Unreadable(format!("a JSON {}", json_kind(&other))),
            };
            (k, v)
        })
        .collect();
    Ok(TopLevel { entries })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Object(_) => "object",
        _ => "value",
    }
}

/// A top-level key's value while its following lines are still being read.
enum Slot {
    /// `key:` and nothing yet: a list or a nested mapping may follow.
    Pending,
    Done(Value),
}

fn parse_yaml(text: &str) -> Result<TopLevel, String> {
    let mut entries: Vec<(String, Slot)> = Vec::new();
    let mut seen_content = false;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !seen_content && line.starts_with('%') {
            continue; // %YAML / %TAG directive
        }
        if let Some(rest) = line.strip_prefix("---")
            && (rest.is_empty() || rest.starts_with([' ', '\t']))
        {
            if seen_content {
                break; // a second document: kubelet reads only the first
            }
            if !strip_comment(rest).is_empty() {
                return Err(format!(
                    "line {line_no}: content on the `---` line is not handled by this reader"
                ));
            }
            continue;
        }
        if line == "..." || line.starts_with("... ") {
            break;
        }
        seen_content = true;
        let indented = line.starts_with([' ', '\t']);
        let item = list_item(trimmed);
        if indented || item.is_some() {
            let Some((key, slot)) = entries.last_mut() else {
                return Err(format!(
                    "line {line_no}: indented text or a list item before any top-level key"
                ));
            };
            continue_value(key, slot, item, indented, line_no)?;
            continue;
        }
        let (key, rest) = split_key(line, line_no)?;
        if entries.iter().any(|(k, _)| *k == key) {
            return Err(format!(
                "line {line_no}: key `{key}` is set twice (kubelet refuses such a file)"
            ));
        }
        let slot = value_of(rest.trim()).map_err(|e| format!("line {line_no}: {e}"))?;
        entries.push((key, slot));
    }
    Ok(TopLevel {
        entries: entries
            .into_iter()
            .map(|(k, slot)| {
                let v = match slot {
                    Slot::Pending => Value::Null,
                    Slot::Done(v) => v,
                };
                (k, v)
            })
            .collect(),
    })
}

/// `- x` / `-` as a list item: the text after the dash.
fn list_item(trimmed: &str) -> Option<&str> {
    let rest = trimmed.strip_prefix('-')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.trim())
}

/// A line below a top-level key: a list item, or more of its value.
fn continue_value(
    key: &str,
    slot: &mut Slot,
    item: Option<&str>,
    indented: bool,
    line_no: usize,
) -> Result<(), String> {
    match (&mut *slot, item) {
        (Slot::Pending, Some(text)) => {
            let mut items = Vec::new();
            *slot = Slot::Done(match push_item(&mut items, text, line_no)? {
                Some(why) => Value::Unreadable(why),
                None => Value::List(items),
            });
        }
        (Slot::Done(Value::List(items)), Some(text)) => {
            if let Some(why) = push_item(items, text, line_no)? {
                *slot = Slot::Done(Value::Unreadable(why));
            }
        }
        (Slot::Pending, None) => {
            *slot = Slot::Done(Value::Unreadable("a nested mapping".into()));
        }
        (Slot::Done(Value::List(_)), None) => {
            *slot = Slot::Done(Value::Unreadable(
                "a list whose items span several lines or hold mappings".into(),
            ));
        }
        (Slot::Done(Value::Scalar(_) | Value::Null), _) => {
            if !indented {
                return Err(format!(
                    "line {line_no}: a list item after `{key}:` already has a value"
                ));
            }
            *slot = Slot::Done(Value::Unreadable(
                "a plain value continued on the next line".into(),
            ));
        }
        // Already unreadable (block scalar, mapping, …): its lines are skipped.
        (Slot::Done(Value::Unreadable(_)), _) => {}
    }
    Ok(())
}

/// Parse one `- item` and push it; `Some(reason)` when the item is not a
/// scalar this reader returns.
fn push_item(
    items: &mut Vec<String>,
    text: &str,
    line_no: usize,
) -> Result<Option<String>, String> {
    match value_of(text).map_err(|e| format!("line {line_no}: {e}"))? {
        Slot::Done(Value::Scalar(s)) => {
            items.push(s);
            Ok(None)
        }
        Slot::Done(Value::Null) | Slot::Pending => Ok(Some("a list with an empty item".into())),
        Slot::Done(Value::List(_)) => Ok(Some("a list of lists".into())),
        Slot::Done(Value::Unreadable(why)) => Ok(Some(format!("a list item that is {why}"))),
    }
}

/// `key: rest` at column 0.
fn split_key(line: &str, line_no: usize) -> Result<(String, &str), String> {
    let refuse = |what: &str| format!("line {line_no}: {what} is not handled by this reader");
    if line.starts_with(['"', '\'']) {
        let (key, after) = quoted(line).map_err(|e| format!("line {line_no}: {e}"))?;
        let after = after.trim_start();
        let rest = after
            .strip_prefix(':')
            .ok_or_else(|| refuse("a quoted key without `:`"))?;
        return Ok((key, rest));
    }
    if line.starts_with(['?', '&', '*', '!', '[', '{', '|', '>', '@', '`', '%']) {
        return Err(refuse(
            "a top-level line starting with an indicator character",
        ));
    }
    let bytes = line.as_bytes();
    let colon = (0..bytes.len())
        .find(|&i| {
            bytes[i] == b':' && (i + 1 == bytes.len() || matches!(bytes[i + 1], b' ' | b'\t'))
        })
        .ok_or_else(|| format!("line {line_no}: expected `key: value` at the top level"))?;
    let key = line[..colon].trim_end();
    if key.is_empty() || key.contains(" #") {
        return Err(format!(
            "line {line_no}: expected `key: value` at the top level"
        ));
    }
    Ok((key.to_string(), &line[colon + 1..]))
}

/// A value as written after `key:` or `- `.
fn value_of(v: &str) -> Result<Slot, String> {
    if v.is_empty() || v.starts_with('#') {
        return Ok(Slot::Pending);
    }
    let unreadable = |why: &str| Ok(Slot::Done(Value::Unreadable(why.to_string())));
    match v.as_bytes()[0] {
        b'"' | b'\'' => {
            let (s, after) = quoted(v)?;
            if !strip_comment(after).is_empty() {
                return Err("text after a quoted value".into());
            }
            Ok(Slot::Done(Value::Scalar(s)))
        }
        b'[' => flow_list(v).map(Slot::Done),
        b'{' => {
            if !closes_on_line(v, b'{', b'}') {
                return Err(
                    "a `{…}` mapping over several lines is not handled by this reader".into(),
                );
            }
            unreadable("a mapping")
        }
        b'|' | b'>' => unreadable("a block scalar (`|` or `>`)"),
        b'&' | b'*' | b'!' => unreadable("an anchor, alias or tag"),
        b'@' | b'`' | b'%' | b'?' => unreadable("a value starting with a reserved indicator"),
        b'-' if list_item(v).is_some() => unreadable("a list on the key's own line"),
        _ => {
            let plain = strip_comment(v);
            if plain.contains(": ") || plain.contains(":\t") || plain.ends_with(':') {
                return unreadable("a value holding `: ` (a mapping, or invalid YAML)");
            }
            Ok(Slot::Done(
                if matches!(plain, "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar(plain.to_string())
                },
            ))
        }
    }
}

/// Text before a ` #` comment, trimmed.
fn strip_comment(s: &str) -> &str {
    let b = s.as_bytes();
    let cut = (0..b.len())
        .find(|&i| b[i] == b'#' && (i == 0 || matches!(b[i - 1], b' ' | b'\t')))
        .unwrap_or(b.len());
    s[..cut].trim()
}

/// A quoted scalar at the start of `s`: its value and the text after the
/// closing quote. A quote that does not close on this line is an error: its
/// continuation could hold anything.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let unterminated = || "a quoted value that does not end on its line".to_string();
    let mut chars = s.char_indices();
    let (_, q) = chars.next().ok_or_else(unterminated)?;
    let mut out = String::new();
    if q == '\'' {
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if s[i + 1..].starts_with('\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Ok((out, &s[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return Err(unterminated());
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or_else(unterminated)?;
                let simple = match e {
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '/' => Some('/'),
                    ' ' => Some(' '),
                    '\t' | 't' => Some('\t'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    '0' => Some('\0'),
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'e' => Some('\u{1b}'),
                    'f' => Some('\u{c}'),
                    'v' => Some('\u{b}'),
                    'N' => Some('\u{85}'),
                    '_' => Some('\u{a0}'),
                    'L' => Some('\u{2028}'),
                    'P' => Some('\u{2029}'),
                    _ => None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    continue;
                }
                let digits = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return Err(format!("unknown escape `\\{e}` in a quoted value")),
                };
                let hex: String = (0..digits)
                    .filter_map(|_| chars.next().map(|(_, c)| c))
                    .collect();
                let c = (hex.len() == digits)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape `\\{e}{hex}` in a quoted value"))?;
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Err(unterminated())
}

/// Whether a `open…close` collection starting `v` closes on this line
/// (quotes respected).
fn closes_on_line(v: &str, open: u8, close: u8) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    for &b in v.as_bytes() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == open => depth += 1,
            None if b == close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return true;
                }
            }
            None => {}
        }
    }
    false
}

/// `[a, "b", 'c']` on one line.
fn flow_list(v: &str) -> Result<Value, String> {
    let mut items = Vec::new();
    let mut rest = &v[1..];
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(']') {
            if !strip_comment(after).is_empty() {
                return Err("text after a `[…]` list".into());
            }
            return Ok(Value::List(items));
        }
        if rest.is_empty() {
            return Err("a `[…]` list over several lines is not handled by this reader".into());
        }
        let (item, after) = if rest.starts_with(['"', '\'']) {
            let (s, after) = quoted(rest)?;
            (s, after.trim_start())
        } else if rest.starts_with(['[', '{']) {
            return Ok(Value::Unreadable("a list holding collections".into()));
        } else {
            let end = rest.find([',', ']']).unwrap_or(rest.len());
            let plain = rest[..end].trim();
            if plain.contains(": ") {
                return Ok(Value::Unreadable("a list holding mappings".into()));
            }
            (plain.to_string(), &rest[end..])
        };
        items.push(item);
        rest = match after.strip_prefix(',') {
            Some(r) => r,
            None if after.starts_with(']') || after.is_empty() => after,
            None => return Err("text after a list item".into()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, key: &str) -> Option<Value> {
        parse(text).unwrap().get(key).cloned()
    }

    #[test]
    fn plain_and_quoted_values_with_comments() {
        let text = "\u{feff}%YAML 1.2\n---\n# kubelet\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\r\nvolumePluginDir: /var/lib/kubelet/volumeplugins   # flex\n";
        assert_eq!(
            scalar(text, "volumePluginDir"),
            Some(Value::Scalar("/var/lib/kubelet/volumeplugins".into()))
        );
        assert_eq!(
            scalar(
                "volumePluginDir: \"/a b/\\x41\\u00e9 #x\" # c\n",
                "volumePluginDir"
            ),
            Some(Value::Scalar("/a b/Aé #x".into()))
        );
        assert_eq!(
            scalar("volumePluginDir: '/it''s'\n", "volumePluginDir"),
            Some(Value::Scalar("/it's".into()))
        );
        assert_eq!(
            scalar("volumePluginDir: ~\n", "volumePluginDir"),
            Some(Value::Null)
        );
        assert_eq!(
            scalar("volumePluginDir:\n", "volumePluginDir"),
            Some(Value::Null)
        );
        assert_eq!(
            scalar("volumePluginDir: /a#b\n", "volumePluginDir"),
            Some(Value::Scalar("/a#b".into()))
        );
        assert_eq!(scalar("other: 1\n", "volumePluginDir"), None);
    }

    #[test]
    fn nested_keys_are_not_top_level() {
        let text =
            "authentication:\n  volumePluginDir: /nested\n  x:\n    - a\nvolumePluginDir: /top\n";
        let t = parse(text).unwrap();
        assert_eq!(
            t.get("volumePluginDir"),
            Some(&Value::Scalar("/top".into()))
        );
        assert!(matches!(
            t.get("authentication"),
            Some(Value::Unreadable(_))
        ));
        let text = "evictionHard:\n  memory.available: 100Mi\n";
        assert_eq!(scalar(text, "volumePluginDir"), None);
    }

    #[test]
    fn lists_block_and_flow() {
        let text = "kubelet-arg:\n- volume-plugin-dir=/x\n- \"config=/y\"\nother: 1\nkubelet-arg+:\n  - 'a=b'\n";
        let t = parse(text).unwrap();
        assert_eq!(
            t.get("kubelet-arg"),
            Some(&Value::List(vec![
                "volume-plugin-dir=/x".into(),
                "config=/y".into()
            ]))
        );
        assert_eq!(
            t.get("kubelet-arg+"),
            Some(&Value::List(vec!["a=b".into()]))
        );
        assert_eq!(
            scalar("kubelet-arg: [ \"a=1\", b=2 , 'c']  # x\n", "kubelet-arg"),
            Some(Value::List(vec!["a=1".into(), "b=2".into(), "c".into()]))
        );
        assert_eq!(
            scalar("kubelet-arg: []\n", "kubelet-arg"),
            Some(Value::List(vec![]))
        );
    }

    #[test]
    fn json_documents() {
        let t = parse(" {\"kind\": \"KubeletConfiguration\", \"volumePluginDir\": \"/j\", \"n\": 1, \"l\": [\"a\"]}").unwrap();
        assert_eq!(t.get("volumePluginDir"), Some(&Value::Scalar("/j".into())));
        assert!(matches!(t.get("n"), Some(Value::Unreadable(_))));
        assert_eq!(t.get("l"), Some(&Value::List(vec!["a".into()])));
        assert!(parse("{volumePluginDir: /x}").is_err());
    }

    #[test]
    fn what_cannot_be_delimited_is_refused_not_guessed() {
        // The continuation of an open quote could look like a top-level key.
        assert!(parse("a: \"one\nvolumePluginDir: /fake\"\n").is_err());
        assert!(parse("a: [one,\nvolumePluginDir: /fake]\n").is_err());
        assert!(parse("a: {x: 1,\nvolumePluginDir: /fake}\n").is_err());
        assert!(parse("volumePluginDir: /a\nvolumePluginDir: /b\n").is_err());
        assert!(parse("? complex\n").is_err());
        assert!(parse("  indented: first\n").is_err());
        assert!(parse("volumePluginDir: \"\\q\"\n").is_err());
        for (text, what) in [
            ("volumePluginDir: |\n  /x\n", "block scalar"),
            ("volumePluginDir: &a /x\n", "anchor"),
            ("volumePluginDir: *a\n", "alias"),
            ("volumePluginDir: !!str /x\n", "tag"),
            ("volumePluginDir: /x\n  /y\n", "continued"),
            ("volumePluginDir: a: b\n", "`: `"),
            ("volumePluginDir:\n  a: b\n", "mapping"),
        ] {
            match scalar(text, "volumePluginDir") {
                Some(Value::Unreadable(why)) => assert!(why.contains(what), "{text:?}: {why}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_first_document_counts() {
        let text = "---\nvolumePluginDir: /one\n---\nvolumePluginDir: /two\n";
        assert_eq!(
            scalar(text, "volumePluginDir"),
            Some(Value::Scalar("/one".into()))
        );
        let text = "volumePluginDir: /one\n...\nvolumePluginDir: /two\n";
        assert_eq!(
            scalar(text, "volumePluginDir"),
            Some(Value::Scalar("/one".into()))
        );
    }
}
