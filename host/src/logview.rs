//! `flexwasm logs VENDOR/NAME`: the driver's call log, for people.
//!
//! The log ([`crate::calllog`]) is JSON lines, one per kubelet call, already
//! scrubbed of secrets. This renders each as one line — time, op, the
//! volume it was about, status, duration, message — followed by what the
//! plugin logged and its HTTP requests, indented. Old rotated files
//! (`.3` … `.1`) come first, so `--since` reaches back across a rotation.
//! `--follow` keeps reading as lines are appended and notices a rotation
//! (the file's inode changes) or a truncation.

use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which lines to show.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only calls at or after this time (seconds since the epoch).
    pub since: Option<f64>,
    /// Only calls about this volume: its PV/volume name, a pod volume dir
    /// or device mount path ending in it, or the name kubelet got for it.
    pub volume: Option<String>,
}

/// `--since`: `90s`, `15m`, `2h`, `3d`, or seconds since the epoch.
pub fn parse_since(text: &str, now: SystemTime) -> Result<f64, String> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: f64 = num
        .parse::<u64>()
        .map_err(|_| format!("--since {text:?}: use e.g. 90s, 15m, 2h, 3d or a Unix time"))?
        as f64;
    let secs = match unit {
        "" if n > 1e9 => return Ok(n),
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("--since {text:?}: the unit must be s, m, h or d")),
    };
    Ok(now - secs)
}

/// The files of a log, oldest first: `log.3`, `log.2`, `log.1`, `log`.
pub fn files(log: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=crate::calllog::KEEP)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .filter(|p| p.is_file())
        .collect();
    if log.is_file() {
        out.push(log.to_path_buf());
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The volume a call was about, as far as its argv tells.
fn volume_of(record: &Value) -> Option<String> {
    let args: Vec<&str> = record
        .get("args")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for a in &args {
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(a)
            && let Some(name) = o
                .get("kubernetes.io/pvOrVolumeName")
                .and_then(Value::as_str)
        {
            return Some(name.to_string());
        }
    }
    // unmount, unmountdevice: a path ending in the volume; detach: the name.
    let op = str_of(record, "op");
    let first = args.get(1).copied().filter(|a| !a.is_empty())?;
    match op {
        "unmount" | "unmountdevice" | "mount" | "mountdevice" => Path::new(first)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        "detach" | "isattached" | "waitforattach" | "expandfs" | "expandvolume" => {
            Some(first.to_string())
        }
        _ => None,
    }
}

fn matches(record: &Value, filter: &Filter) -> bool {
    if let Some(since) = filter.since
        && record.get("ts").and_then(Value::as_f64).unwrap_or(0.0) < since
    {
        return false;
    }
    if let Some(want) = &filter.volume {
        let about = volume_of(record);
        let in_args = record
            .get("args")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|s| s.contains(want.as_str()))
            });
        if about.as_deref() != Some(want.as_str()) && !in_args {
            return false;
        }
    }
    true
}

/// UTC `YYYY-MM-DD HH:MM:SS.mmm` for seconds since the epoch.
pub fn utc(ts: f64) -> String {
    let secs = ts.max(0.0).floor() as i64;
    let ms = ((ts.max(0.0) - secs as f64) * 1000.0).round().min(999.0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One record, for people; `None` for a line that is not a call record.
pub fn render(line: &str, filter: &Filter) -> Option<String> {
    let record: Value = serde_json::from_str(line).ok()?;
    if !record.is_object() || !matches(&record, filter) {
        return None;
    }
    let ts = record.get("ts").and_then(Value::as_f64).unwrap_or(0.0);
    let mut out = format!(
        "{} {:<13} {:<14} {:>7.1} ms  exit {}",
        utc(ts),
        str_of(&record, "op"),
        str_of(&record, "status"),
        record
            .get("duration_ms")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        record.get("exit_code").and_then(Value::as_i64).unwrap_or(0),
    );
    if let Some(v) = volume_of(&record) {
        out.push_str(&format!("  volume {v}"));
    }
    let message = str_of(&record, "message");
    if !message.is_empty() {
        out.push_str(&format!("\n    {message}"));
    }
    if let Some(lines) = record.get("plugin_log").and_then(Value::as_array) {
        for l in lines {
            out.push_str(&format!(
                "\n    plugin {}: {}",
                str_of(l, "level"),
                str_of(l, "message")
            ));
        }
    }
    if let Some(reqs) = record.get("http").and_then(Value::as_array) {
        for r in reqs {
            let outcome = match (r.get("status"), r.get("denied"), r.get("error")) {
                (Some(s), _, _) => s.to_string(),
                (_, Some(d), _) => format!("denied: {}", d.as_str().unwrap_or("")),
                (_, _, Some(e)) => format!("error: {}", e.as_str().unwrap_or("")),
                _ => "pending".into(),
            };
            out.push_str(&format!(
                "\n    http {} {} -> {outcome}",
                str_of(r, "method"),
                str_of(r, "url")
            ));
        }
    }
    for (key, name) in [("plugin_stdout", "stdout"), ("plugin_stderr", "stderr")] {
        let text = str_of(&record, key);
        for l in text.lines() {
            out.push_str(&format!("\n    {name}: {l}"));
        }
    }
    Some(out)
}

/// Print every matching record of `log` to `out`; with `follow`, keep
/// printing new ones until `stop` says so (checked a few times a second).
pub fn show(
    log: &Path,
    filter: &Filter,
    follow: bool,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    for f in files(log) {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            if let Some(text) = render(&line, filter) {
                writeln!(out, "{text}")?;
            }
        }
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    // Follow: start at the current end of the live file.
    let mut current: Option<(File, u64, u64)> = File::open(log).ok().and_then(|mut f| {
        let m = f.metadata().ok()?;
        f.seek(SeekFrom::End(0)).ok()?;
        Some((f, m.ino(), m.dev()))
    });
    let mut partial = String::new();
    while !stop() {
        if let Some((file, _, _)) = current.as_mut() {
            let mut reader = BufReader::new(&*file);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => {
                        partial.push_str(&line);
                        break;
                    }
                    Ok(_) => {
                        partial.push_str(&line);
                        if let Some(text) = render(partial.trim_end(), filter) {
                            writeln!(out, "{text}")?;
                        }
                        partial.clear();
                    }
                }
            }
            out.flush()?;
        }
        // Rotated, truncated or created since: reopen from the start.
        let reopen = match (std::fs::metadata(log), &mut current) {
            (Ok(m), Some((f, ino, dev))) => {
                m.ino() != *ino
                    || m.dev() != *dev
                    || f.stream_position().is_ok_and(|pos| m.len() < pos)
            }
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        if reopen {
            current = File::open(log).ok().and_then(|f| {
                let m = f.metadata().ok()?;
                Some((f, m.ino(), m.dev()))
            });
            partial.clear();
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_796_083_200.25), "2026-12-01 00:00:00.250");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn since_units() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000_0);
        let n = 10_000_000_000.0;
        assert_eq!(parse_since("90s", now).unwrap(), n - 90.0);
        assert_eq!(parse_since("15m", now).unwrap(), n - 900.0);
        assert_eq!(parse_since("2h", now).unwrap(), n - 7200.0);
        assert_eq!(parse_since("1796083200", now).unwrap(), 1_796_083_200.0);
        assert!(parse_since("2 weeks", now).is_err());
        assert!(parse_since("h", now).is_err());
    }

    fn line(op: &str, args: &[&str], ts: f64) -> String {
        serde_json::json!({
            "ts": ts, "driver": "acme/loop", "pid": 1, "op": op, "args": args,
            "duration_ms": 3.5, "status": "Failure", "message": "no room", "exit_code": 1,
            "plugin_log": [{"level": "info", "message": "hello"}],
        })
        .to_string()
    }

    #[test]
    fn renders_and_filters_by_volume_and_time() {
        let opts = r#"{"kubernetes.io/pvOrVolumeName":"pv-7","kubernetes.io/fsType":"ext4"}"#;
        let a = line(
            "mountdevice",
            &["mountdevice", "/k/mounts/pv-7", "/dev/loop3", opts],
            100.0,
        );
        let b = line(
            "unmount",
            &["unmount", "/var/lib/kubelet/pods/u/volumes/acme~loop/pv-8"],
            200.0,
        );
        let all = Filter::default();
        let text = render(&a, &all).unwrap();
        assert!(text.contains("mountdevice"), "{text}");
        assert!(text.contains("volume pv-7"), "{text}");
        assert!(text.contains("\n    no room"), "{text}");
        assert!(text.contains("plugin info: hello"), "{text}");
        let pv8 = Filter {
            volume: Some("pv-8".into()),
            ..Filter::default()
        };
        assert!(render(&a, &pv8).is_none());
        assert!(render(&b, &pv8).unwrap().contains("volume pv-8"));
        let late = Filter {
            since: Some(150.0),
            ..Filter::default()
        };
        assert!(render(&a, &late).is_none());
        assert!(render(&b, &late).is_some());
        assert!(render("not json", &all).is_none());
    }

    #[test]
    fn follow_sees_appends_and_rotation() {
        let dir = std::env::temp_dir().join(format!("flexwasm-logview-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("acme~loop.log");
        std::fs::write(&log, line("init", &["init"], 1.0) + "\n").unwrap();
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::Write as _;
                std::thread::sleep(Duration::from_millis(300));
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                writeln!(f, "{}", line("getvolumename", &["getvolumename"], 2.0)).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                std::fs::rename(&log, format!("{}.1", log.display())).unwrap();
                std::fs::write(&log, line("attach", &["attach"], 3.0) + "\n").unwrap();
            })
        };
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        show(&log, &Filter::default(), true, &mut out, &|| {
            started.elapsed() > Duration::from_millis(1500)
        })
        .unwrap();
        writer.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        let ops: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect();
        assert_eq!(ops, ["init", "getvolumename", "attach"], "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
