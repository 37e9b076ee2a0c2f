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

/// Rotate when the log grows past this; keep `.1` … `.3`.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;
const KEEP: u32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct PluginLogLine {
    pub level: &'static str,
    pub message: String,
}

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

/// Replace each secret in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

impl CallRecord<'_> {
    /// Scrub every string field of `secrets`. Done per field, before
    /// serialising: in the JSON text a secret may be escaped (quotes,
    /// backslashes, newlines) and a short one would corrupt the structure.
    fn redact(&mut self, secrets: &[String]) {
        if secrets.is_empty() {
            return;
        }
        let r = |s: &mut String| *s = redact(s, secrets);
        self.args.iter_mut().for_each(r);
        if let Some(m) = self.message.as_mut() {
            r(m);
        }
        self.plugin_log.iter_mut().for_each(|l| r(&mut l.message));
        r(&mut self.plugin_stdout);
        r(&mut self.plugin_stderr);
        for h in &mut self.http {
            r(&mut h.url);
            h.denied.iter_mut().for_each(r);
            h.error.iter_mut().for_each(r);
        }
    }
}

/// Append one record to `path`, rotating first if it is large.
pub fn append(path: &Path, mut record: CallRecord<'_>, secrets: &[String]) {
    record.redact(secrets);
    let Ok(line) = serde_json::to_string(&record) else {
        return;
    };
    let _ = write_line(path, &line);
}

fn write_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    if let Ok(meta) = fs::metadata(path)
        && meta.len() > ROTATE_BYTES
    {
        rotate(path);
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    // One write(2) of a line under PIPE_BUF-ish sizes keeps concurrent calls'
    // lines from interleaving in O_APPEND mode.
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    file.write_all(&buf)
}

fn rotate(path: &Path) {
    let name = |i: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        std::path::PathBuf::from(p)
    };
    for i in (1..KEEP).rev() {
        let _ = fs::rename(name(i), name(i + 1));
    }
    let _ = fs::rename(path, name(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_every_occurrence() {
        let s = redact(
            "a s3cr3t b s3cr3t czNjcjN0",
            &["s3cr3t".into(), "czNjcjN0".into()],
        );
        assert_eq!(s, "a <redacted> b <redacted> <redacted>");
    }
}
