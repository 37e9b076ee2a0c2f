//! `flexwasm-bench`: runs commands side by side, interleaved, and prints
//! every sample as JSON.
//!
//! Why not hyperfine: it runs one command's samples in a row, so a change of
//! machine load (the other core busy, a CPU frequency step) lands on one
//! command and not the other. Here round r runs command 1, 2, …, n, then
//! round r+1 — each ratio compares samples taken under the same conditions.
//! And each child's peak RSS comes from its own `wait4` rusage, not a
//! separate `/usr/bin/time` run.
//!
//! Input (stdin), one command per line, tab-separated:
//!   `NAME<TAB>ARGV0<TAB>ARG1…` — argv as is, no shell.
//! A line `@setup NAME<TAB>ARGV0<TAB>…` names a command run (untimed) before
//! every sample of NAME, e.g. to remove a cache.
//!
//! Output (stdout): `{"runs":N,"warmup":W,"results":[{"name","argv",
//! "wall_ms":[…],"maxrss_kib":[…],"failures":K}]}`. stdout/stderr of the
//! commands go to /dev/null; a non-zero exit counts as a failure (the sample
//! is kept: kubelet-shaped drivers exit 0 on Success and on Failure alike,
//! so failures are reported, not hidden).
//!
//! Usage: `flexwasm-bench [--runs N] [--warmup W] < spec`

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Instant;

struct Cmd {
    name: String,
    argv: Vec<String>,
    setup: Option<Vec<String>>,
    wall_ms: Vec<f64>,
    maxrss_kib: Vec<i64>,
    failures: usize,
}

fn parse_args() -> Result<(usize, usize), String> {
    let mut runs = 100;
    let mut warmup = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number"))
        };
        match a.as_str() {
            "--runs" => runs = num("--runs")?,
            "--warmup" => warmup = num("--warmup")?,
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok((runs, warmup))
}

fn parse_spec(text: &str) -> Result<Vec<Cmd>, String> {
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut setups: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
        if fields.len() < 2 {
            return Err(format!("spec line needs NAME<TAB>ARGV0…: {line:?}"));
        }
        let name = fields.remove(0);
        if let Some(target) = name.strip_prefix("@setup ") {
            setups.push((target.to_owned(), fields));
        } else {
            cmds.push(Cmd {
                name,
                argv: fields,
                setup: None,
                wall_ms: Vec::new(),
                maxrss_kib: Vec::new(),
                failures: 0,
            });
        }
    }
    for (target, argv) in setups {
        let cmd = cmds
            .iter_mut()
            .find(|c| c.name == target)
            .ok_or_else(|| format!("@setup for unknown command {target:?}"))?;
        cmd.setup = Some(argv);
    }
    if cmds.is_empty() {
        return Err("no commands on stdin".into());
    }
    Ok(cmds)
}

/// Run argv once; wall time from just before spawn to reaping, and the
/// child's own peak RSS.
fn run_once(argv: &[String]) -> Result<(f64, i64, bool), String> {
    let start = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (a struct of integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child (std's `Child` is never waited
    // on: it is forgotten below), and both out-pointers point to live,
    // writable locals of the right types.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64() * 1000.0;
    // Reaped by wait4: dropping `Child` does not wait, but forget it so no
    // later code can wait on a recycled pid.
    std::mem::forget(child);
    if r != pid {
        return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
    }
    let ok = std::process::ExitStatus::from_raw(status).success();
    Ok((wall, usage.ru_maxrss, ok))
}

fn main() {
    let result = (|| -> Result<serde_json::Value, String> {
        let (runs, warmup) = parse_args()?;
        let mut spec = String::new();
        std::io::stdin()
            .read_to_string(&mut spec)
            .map_err(|e| format!("reading the spec: {e}"))?;
        let mut cmds = parse_spec(&spec)?;
        for round in 0..warmup + runs {
            for cmd in cmds.iter_mut() {
                if let Some(setup) = &cmd.setup {
                    run_once(setup)?;
                }
                let (wall, rss, ok) = run_once(&cmd.argv)?;
                if round >= warmup {
                    cmd.wall_ms.push(wall);
                    cmd.maxrss_kib.push(rss);
                    if !ok {
                        cmd.failures += 1;
                    }
                }
            }
        }
        Ok(serde_json::json!({
            "runs": runs,
            "warmup": warmup,
            "results": cmds.iter().map(|c| serde_json::json!({
                "name": c.name,
                "argv": c.argv,
                "wall_ms": c.wall_ms,
                "maxrss_kib": c.maxrss_kib,
                "failures": c.failures,
            })).collect::<Vec<_>>(),
        }))
    })();
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("flexwasm-bench: {e}");
            std::process::exit(2);
        }
    }
}
