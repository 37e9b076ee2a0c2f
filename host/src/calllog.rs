//! The JSON-lines call log: one line per kubelet call, never on kubelet's
//! stdout/stderr.
//!
//! A line holds the op, its argv (secrets redacted), how long it took, the
//! answer, and what the plugin logged or printed. Every secret value the
//! call carried is scrubbed from the whole line before it is written.
//! Writing the log must never change the call's answer: failures here are
//! swallowed.

use serde::Serialize;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::capabilities::log::PluginLogLine;
use crate::secrets::SecretSet;

/// Rotate when the log grows past this; keep `.1` … `.3`.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;
pub const KEEP: u32 = 3;
/// How long a call waits for another call's hold on the log.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Debug, Serialize)]
pub struct CallRecord<'a> {
    /// Seconds since the Unix epoch, with milliseconds.
    pub ts: f64,
    pub driver: &'a str,
    pub pid: u32,
    pub op: &'a str,
    pub args: Vec<String>,
    pub duration_ms: f64,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub exit_code: i32,
    /// Outbound HTTP requests: allowed ones with status, refused ones with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<crate::capabilities::http::HttpLogEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugin_log: Vec<PluginLogLine>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub plugin_stdout: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub plugin_stderr: String,
    /// Timings of the call's phases, in milliseconds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<(&'static str, f64)>,
}

/// Captured output keeps its start and end and drops the middle (see
/// [`crate::capabilities::output`]); a secret straddling a cut survives only
/// in part, where whole-value redaction cannot match it. Around each cut,
/// drop a kept end that is the start of a secret and a kept start that is
/// the end of one.
fn trim_partial_secrets_at_cut(text: &str, secrets: &[String]) -> String {
    // Cut pieces are matched as written: the folded matching of
    // [`SecretSet`] finds whole secrets and halves, not a few characters.
    use crate::capabilities::output::DROP_NOTE_END;
    use crate::capabilities::output::DROP_NOTE_START;
    let Some(cut) = text.find(DROP_NOTE_START) else {
        return text.to_string();
    };
    let Some(note_len) = text[cut..]
        .find(DROP_NOTE_END)
        .map(|i| i + DROP_NOTE_END.len())
    else {
        return text.to_string();
    };
    let (head, note, tail) = (
        &text[..cut],
        &text[cut..cut + note_len],
        &text[cut + note_len..],
    );
    let mut head_end = head.len();
    let mut tail_start = 0;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        // Longest suffix of the head that begins the secret.
        let starts: Vec<usize> = s.char_indices().skip(1).map(|(i, _)| i).collect();
        if let Some(i) = starts.into_iter().rev().find(|&i| head.ends_with(&s[..i])) {
            head_end = head_end.min(head.len() - i);
        }
        // Longest prefix of the tail that ends the secret.
        for (i, _) in s.char_indices().skip(1) {
            if tail.starts_with(&s[i..]) {
                tail_start = tail_start.max(s.len() - i);
                break;
            }
        }
    }
    format!(
        "{}{note}{}",
        &head[..head_end],
        &tail[tail_start.min(tail.len())..]
    )
}

/// Append one record to `path`, rotating first if it is large. Every
/// string in the record, whatever field it is in, is scrubbed of
/// `secrets`; captured output first loses a secret's pieces at a cut.
pub fn append(path: &Path, mut record: CallRecord<'_>, secrets: &SecretSet) {
    if !secrets.is_empty() {
        for out in [&mut record.plugin_stdout, &mut record.plugin_stderr] {
            *out = trim_partial_secrets_at_cut(out, secrets.raw_values());
        }
    }
    let Ok(mut value) = serde_json::to_value(&record) else {
        return;
    };
    secrets.redact_json(&mut value);
    let Ok(line) = serde_json::to_string(&value) else {
        return;
    };
    let _ = write_line(path, &line);
}

fn write_line(path: &Path, line: &str) -> std::io::Result<()> {
    write_line_rotating(path, line, ROTATE_BYTES, KEEP)
}

/// Append `line`; first rotate `path` if it is over `rotate_bytes`,
/// keeping `keep` old files.
///
/// Concurrent calls of one driver share the log. Check-and-rotate happens
/// under an exclusive `flock` of the log file, and a writer that locked a
/// file another writer has just rotated away reopens the new one, so two
/// calls never both rotate (which would push a whole old log out).
fn write_line_rotating(
    path: &Path,
    line: &str,
    rotate_bytes: u64,
    keep: u32,
) -> std::io::Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    // One write(2) per line: O_APPEND keeps concurrent lines whole.
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    // A few rounds at most: each retry means another writer rotated.
    for _ in 0..8 {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        // Never wait long: the answer is already out, and kubelet waits for
        // this process to exit. A writer stuck on the log's filesystem
        // must not hold every later call.
        let mut waited = std::time::Duration::ZERO;
        let mut locked = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break Some(locked),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if waited < LOCK_WAIT => {
                    file = f;
                    std::thread::sleep(LOCK_POLL);
                    waited += LOCK_POLL;
                }
                Err(_) => break None,
            }
        };
        let Some(locked) = locked.as_mut() else {
            break;
        };
        let ours = locked.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            // Rotated (or removed) between our open and our lock.
            _ => continue,
        }
        if ours.len() > rotate_bytes && rotate(path, keep) {
            continue;
        }
        return locked.write_all(&buf);
    }
    // Still racing after several rounds, or the lock is held too long:
    // append without rotating.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?
        .write_all(&buf)
}

/// Shift `path` to `.1` (and `.1` to `.2`, …); false if `path` could not be
/// moved (e.g. an append-only log), so the caller appends instead of
/// rotating again and again.
fn rotate(path: &Path, keep: u32) -> bool {
    let name = |i: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        std::path::PathBuf::from(p)
    };
    for i in (1..keep).rev() {
        let _ = fs::rename(name(i), name(i + 1));
    }
    fs::rename(path, name(1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_every_occurrence() {
        let mut secrets = SecretSet::new();
        secrets.add_str("s3cr3t");
        let s = secrets.redact("a s3cr3t b S3CR3T czNjcjN0");
        assert_eq!(s, "a <redacted> b <redacted> <redacted>");
    }

    #[test]
    fn a_secret_cut_by_dropped_output_leaves_no_piece() {
        use crate::capabilities::output::{DROP_NOTE_END, DROP_NOTE_START};
        let secrets = vec!["TOPSECRET-123".to_string()];
        let text = format!("log: TOP{DROP_NOTE_START}77{DROP_NOTE_END}CRET-123 done");
        let out = trim_partial_secrets_at_cut(&text, &secrets);
        assert!(!out.contains("TOP") && !out.contains("CRET-123"), "{out}");
        assert!(out.starts_with("log: ") && out.ends_with(" done"), "{out}");
        // Text with no cut is untouched.
        assert_eq!(trim_partial_secrets_at_cut("a TOP b", &secrets), "a TOP b");
    }

    #[test]
    fn concurrent_writers_rotate_once_per_threshold_and_lose_no_line() {
        const WRITERS: usize = 8;
        const LINES: usize = 400;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acme~x.log");
        // ~25 KiB per writer, 200 KiB in all: about 12 rotations at 16 KiB,
        // and 20 files kept, so every line must still be somewhere.
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let path = &path;
                s.spawn(move || {
                    for i in 0..LINES {
                        let line = format!(
                            "{{\"writer\":{w},\"line\":{i},\"pad\":\"{}\"}}",
                            "x".repeat(24)
                        );
                        write_line_rotating(path, &line, 16 << 10, 20).expect("write");
                    }
                });
            }
        });
        let mut seen = std::collections::BTreeSet::new();
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).expect("read dir").flatten() {
            files += 1;
            let text = std::fs::read_to_string(entry.path()).expect("read");
            let size = text.len() as u64;
            // A rotated file went over the threshold by at most one line.
            assert!(
                size <= (16 << 10) + 100,
                "{} is {size} bytes",
                entry.path().display()
            );
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("whole JSON line");
                assert!(
                    seen.insert((v["writer"].as_u64(), v["line"].as_u64())),
                    "duplicate {line}"
                );
            }
        }
        assert_eq!(
            seen.len(),
            WRITERS * LINES,
            "lines lost across {files} files"
        );
        assert!(files > 10, "only {files} files: no rotation happened");
    }
}
