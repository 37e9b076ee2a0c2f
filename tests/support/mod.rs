//! Shared test support: build the plugins, install a driver into a temp
//! plugin dir, call it exactly as kubelet does, and check every answer
//! against kubelet's output rules.
//!
//! Privileged tests run in a private mount namespace (per test thread), so
//! every mount disappears with the test even when it fails; loop devices
//! are global, so [`Sandbox`]'s Drop detaches every loop device backed by a
//! file under the sandbox.

#![allow(dead_code)]

pub mod lifecycle;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, PoisonError, RwLock};

pub const HOST: &str = env!("CARGO_BIN_EXE_flexwasm");

/// A spawned child holds a copy of every descriptor of this test process
/// until it execs (they are all close-on-exec). So a test thread with a
/// file open inside a mount while another thread spawns keeps that mount
/// busy for an instant, and an unmount the host makes just then fails with
/// EBUSY (seen once in tests/crash.rs, whose rounds run side by side, on a
/// loaded machine). Spawns share this lock; file work inside mounts takes it
/// alone ([`in_mounts`]).
static SPAWNS: RwLock<()> = RwLock::new(());

/// `cmd.spawn()`, never while a test thread has a file open in a mount.
/// (`spawn` returns once the child has exec'd.)
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _shared = SPAWNS.read().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
}

/// `cmd.output()` (stdin null, stdout and stderr captured), spawned as by
/// [`spawn`].
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

/// Run `f`, which opens files inside mounts, while no child is being
/// spawned. `f` must not spawn.
pub fn in_mounts<T>(f: impl FnOnce() -> T) -> T {
    let _alone = SPAWNS.write().unwrap_or_else(PoisonError::into_inner);
    f()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Run `cargo build --release <args>` with its own target dir
/// (`target/guests`), so it never waits on the outer cargo's lock; the
/// target dir on success. `what` names it in the error.
fn cargo_build(what: &str, args: &[&str]) -> Result<PathBuf, String> {
    let target = workspace_root().join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output(
        Command::new(cargo)
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--release"])
            .args(args),
    )
    .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target)
}

/// Build every guest (reference plugins) once per test process, as
/// wasm32-wasip2 components, in their own target dir so this does not wait
/// on the outer cargo's lock.
pub fn plugin_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let target = cargo_build(
                "plugins",
                &[
                    "--target",
                    "wasm32-wasip2",
                    "-p",
                    "flexwasm-plugin-loop",
                    "-p",
                    "flexwasm-plugin-tmpfs",
                ],
            )?;
            Ok(target.join("wasm32-wasip2").join("release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(format!("flexwasm_plugin_{name}.wasm"));
    assert!(file.exists(), "{} was not built", file.display());
    file
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a privileged test may run. Not root: skip, unless `CI` is set,
/// where a skipped privileged test is a failure.
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    flexwasm::test_skip::skip(test, "needs root");
    false
}

/// Give this test thread (and the processes it starts) a private mount
/// namespace with private propagation: nothing mounted here is seen by, or
/// left behind on, the host.
pub fn private_mount_namespace() {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / rprivate");
}

/// A kubelet-shaped world in a temp dir: plugin dir, kubelet root, state
/// and log dirs.
pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub plugin_dir: PathBuf,
    pub kubelet_root: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// The answer of one driver call.
#[derive(Debug)]
pub struct Answer {
    pub args: Vec<String>,
    pub json: Value,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// The answer of a finished driver process, checked against kubelet's
    /// output rules.
    #[track_caller]
    pub fn from_output(args: Vec<String>, out: &std::process::Output) -> Answer {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let json = check_output_discipline(&args, &stdout, &stderr, code);
        Answer {
            args,
            json,
            code,
            stdout,
            stderr,
        }
    }

    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.status(),
            "Success",
            "{:?} answered {}",
            self.args,
            self.stdout
        );
        assert_eq!(self.code, 0, "{:?}: Success must exit 0", self.args);
        self
    }

    #[track_caller]
    pub fn assert_failure(&self, message_part: &str) -> &Self {
        assert_eq!(
            self.status(),
            "Failure",
            "{:?} answered {}",
            self.args,
            self.stdout
        );
        assert!(
            self.message().contains(message_part),
            "{:?}: message {:?} does not mention {:?}",
            self.args,
            self.message(),
            message_part
        );
        self
    }
}

/// kubelet's output rules (contract page §3): stdout and stderr merged must
/// be exactly one JSON object; `status` is one of three strings; Success
/// exits 0; `attached` is a JSON bool; `capabilities` is never null.
#[track_caller]
pub fn check_output_discipline(args: &[String], stdout: &str, stderr: &str, code: i32) -> Value {
    assert!(
        stderr.is_empty(),
        "{args:?}: stderr must be empty, got {stderr:?}"
    );
    let mut stream = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let first = stream
        .next()
        .unwrap_or_else(|| panic!("{args:?}: no JSON on stdout"))
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {stdout:?}"));
    assert!(
        stream.next().is_none(),
        "{args:?}: more than one JSON value on stdout: {stdout:?}"
    );
    assert_eq!(
        stdout.trim_end_matches('\n').lines().count(),
        1,
        "{args:?}: one line expected: {stdout:?}"
    );
    let obj = first
        .as_object()
        .unwrap_or_else(|| panic!("{args:?}: not a JSON object: {stdout:?}"));
    let status = obj
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{args:?}: no string status: {stdout:?}"));
    assert!(
        ["Success", "Failure", "Not supported"].contains(&status),
        "{args:?}: bad status {status}"
    );
    if status == "Success" {
        assert_eq!(code, 0, "{args:?}: Success with exit {code}");
    }
    if let Some(a) = obj.get("attached") {
        assert!(
            a.is_boolean(),
            "{args:?}: attached must be a bool: {stdout}"
        );
    }
    if let Some(c) = obj.get("capabilities") {
        assert!(
            c.is_object(),
            "{args:?}: capabilities must be an object: {stdout}"
        );
    }
    first
}

impl Sandbox {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("flexwasm-test-")
            .tempdir()
            .expect("tempdir");
        let p = root.path().to_path_buf();
        let sb = Sandbox {
            plugin_dir: p.join("volume-plugins"),
            kubelet_root: p.join("kubelet"),
            state_dir: p.join("state"),
            log_dir: p.join("log"),
            root,
        };
        for d in [&sb.plugin_dir, &sb.kubelet_root] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        sb
    }

    /// `flexwasm install` a reference plugin as `flexwasm/<name>`.
    /// Install a reference plugin with the policy it ships
    /// (`plugins/<name>/policy.toml`).
    pub fn install(&self, name: &str) -> PathBuf {
        let policy = workspace_root()
            .join("plugins")
            .join(name)
            .join("policy.toml");
        self.install_with_policy(name, &plugin_wasm(name), Some(&policy))
    }

    /// Install without a policy: the plugin gets only the baseline.
    pub fn install_file(&self, driver: &str, wasm: &Path) -> PathBuf {
        self.install_with_policy(driver, wasm, None)
    }

    pub fn install_with_policy(&self, driver: &str, wasm: &Path, policy: Option<&Path>) -> PathBuf {
        let mut cmd = Command::new(HOST);
        // Call-time enforcement is what the tests check: an install whose
        // grant lacks an import goes ahead (tests/admin.rs checks that a
        // plain install refuses it).
        cmd.args(["install", "--allow-ungranted", "--plugin-dir"])
            .arg(&self.plugin_dir)
            .args(["--driver", &format!("flexwasm/{driver}"), "--plugin"])
            .arg(wasm)
            .envs(self.env());
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        let out = output(&mut cmd).expect("run flexwasm install");
        assert!(
            out.status.success(),
            "install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.driver_exe(driver)
    }

    pub fn driver_dir(&self, driver: &str) -> PathBuf {
        self.plugin_dir.join(format!("flexwasm~{driver}"))
    }

    pub fn driver_exe(&self, driver: &str) -> PathBuf {
        self.driver_dir(driver).join(driver)
    }

    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("FLEXWASM_STATE_DIR", self.state_dir.clone()),
            ("FLEXWASM_LOG_DIR", self.log_dir.clone()),
        ]
    }

    /// Call the driver as kubelet does and check the output rules.
    #[track_caller]
    pub fn call(&self, driver: &str, args: &[&str]) -> Answer {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = output(
            Command::new(self.driver_exe(driver))
                .args(&args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(self.env()),
        )
        .expect("exec driver");
        Answer::from_output(args, &out)
    }

    /// Call twice; both must answer the same (idempotency), return the second.
    #[track_caller]
    pub fn call_twice(&self, driver: &str, args: &[&str]) -> Answer {
        let first = self.call(driver, args);
        let second = self.call(driver, args);
        assert_eq!(
            (first.status(), first.code),
            (second.status(), second.code),
            "{args:?} is not idempotent: {} then {}",
            first.stdout,
            second.stdout
        );
        second
    }

    /// Grow `volume` from `old_size` to `new_size` bytes as Kubernetes
    /// does: `expandvolume` (kube-controller-manager), then `expandfs`
    /// (kubelet) on its attached `device` mounted at `device_mount_path`;
    /// each twice (idempotency), each must succeed.
    #[track_caller]
    pub fn expand_twice(
        &self,
        driver: &str,
        volume: &VolumeSpec<'_>,
        device: &str,
        device_mount_path: &str,
        new_size: u64,
        old_size: u64,
    ) {
        let (new, old) = (new_size.to_string(), old_size.to_string());
        let expand_volume = kubelet_options(Op::ExpandVolume, volume, None);
        self.call_twice(driver, &["expandvolume", &expand_volume, "", &new, &old])
            .assert_success();
        let expand_fs = kubelet_options(Op::ExpandFs, volume, None);
        self.call_twice(
            driver,
            &[
                "expandfs",
                &expand_fs,
                device,
                device_mount_path,
                &new,
                &old,
            ],
        )
        .assert_success();
    }

    /// `<kubelet-root>/plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<vol>`
    pub fn device_mount_path(&self, driver: &str, volume: &str) -> PathBuf {
        let p = self
            .kubelet_root
            .join("plugins/kubernetes.io/flexvolume/flexwasm")
            .join(driver)
            .join("mounts")
            .join(volume);
        std::fs::create_dir_all(&p).expect("mkdir deviceMountPath");
        p
    }

    /// `<kubelet-root>/pods/<uid>/volumes/<vendor>~<driver>/<vol>`
    pub fn pod_volume_dir(&self, uid: &str, driver: &str, volume: &str) -> PathBuf {
        let p = self
            .kubelet_root
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(format!("flexwasm~{driver}"))
            .join(volume);
        std::fs::create_dir_all(&p).expect("mkdir podVolDir");
        p
    }

    pub fn log_lines(&self, driver: &str) -> Vec<Value> {
        let path = self.log_dir.join(format!("flexwasm~{driver}.log"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }

    fn cleanup(&self) {
        // Unmount anything still mounted under the sandbox (lazily: the
        // namespace is ours), then detach loop devices backed by its files.
        if let Ok(text) = std::fs::read_to_string("/proc/thread-self/mountinfo") {
            let root = self.root.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for dev in loop_devices_under(self.root.path()) {
            let _ = output(Command::new("losetup").arg("-d").arg(&dev));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Loop devices whose backing file lies under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    let dir = dir.to_string_lossy().into_owned();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && backing.trim().starts_with(&dir)
        {
            out.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The options JSON, exactly as kubelet builds it for each op: the host's own
// builder (`flexwasm options` prints the same), panicking on a call kubelet
// does not make.

pub use flexwasm::kubelet_options::{Op, PodMount, VolumeSpec};

/// [`flexwasm::kubelet_options::build`]; panics, naming the mistake, for a
/// call kubelet does not make. A test whose point is a malformed argv
/// writes that argv out by hand.
#[track_caller]
pub fn kubelet_options(op: Op, volume: &VolumeSpec<'_>, pod: Option<&PodMount<'_>>) -> String {
    flexwasm::kubelet_options::build(op, volume, pod).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `path` is a mount point in this namespace.
pub fn is_mounted(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let p = path.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&p))
}

/// `df -B1 --output=size <path>` as bytes.
pub fn df_size(path: &Path) -> u64 {
    let out = output(Command::new("df").args(["-B1", "--output=size"]).arg(path)).expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df size")
}

// ---------------------------------------------------------------------------
// Hostile plugins (tests/hostile.rs): building them, installing them with a
// grant policy, and measuring a call (wall time, peak RSS, signals).

/// Build every hostile plugin (`tests/hostile/examples/*.rs`) once per test
/// process, as wasm32-wasip2 components, into target/guests.
pub fn hostile_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let target = cargo_build(
                "hostile plugins",
                &[
                    "--target",
                    "wasm32-wasip2",
                    "-p",
                    "flexwasm-hostile",
                    "--examples",
                ],
            )?;
            Ok(target
                .join("wasm32-wasip2")
                .join("release")
                .join("examples"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(format!("{name}.wasm"));
    assert!(file.exists(), "{} was not built", file.display());
    file
}

/// SHA-256 of a file, lower-case hex (what a policy's `plugin_sha256` pins).
pub fn file_sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a call measured from outside: wall time, the child's peak RSS, and
/// the signal that killed it, if one did.
#[derive(Debug)]
pub struct CallUsage {
    pub wall: std::time::Duration,
    pub max_rss_kib: u64,
    pub killed_by: Option<i32>,
}

/// A driver call started as kubelet starts it, still running.
pub struct RunningCall {
    pub args: Vec<String>,
    pub pid: i32,
    pub started: std::time::Instant,
    child: std::process::Child,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl RunningCall {
    /// Send `signal` to the driver process (as kubelet does on timeout).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal)
            .expect("signal the driver");
    }

    /// Wait for the driver (reaping it with wait4 for its rusage) and check
    /// its answer against kubelet's output rules.
    #[track_caller]
    pub fn finish(mut self) -> (Answer, CallUsage) {
        let (status, usage) = self.reap();
        let wall = self.started.elapsed();
        let stdout = self.stdout.take().map(|h| h.join().expect("stdout reader"));
        let stderr = self.stderr.take().map(|h| h.join().expect("stderr reader"));
        let stdout = String::from_utf8_lossy(&stdout.unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned();
        let (code, killed_by) = if libc::WIFEXITED(status) {
            (libc::WEXITSTATUS(status), None)
        } else if libc::WIFSIGNALED(status) {
            (-1, Some(libc::WTERMSIG(status)))
        } else {
            (-1, None)
        };
        let usage = CallUsage {
            wall,
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            killed_by,
        };
        assert!(
            killed_by.is_none(),
            "{:?}: the driver was killed by signal {killed_by:?} after {wall:?} (stdout {stdout:?})",
            self.args
        );
        let json = check_output_discipline(&self.args, &stdout, &stderr, code);
        // Reaped above; std's handle (never waited on) is just dropped.
        drop(self.child);
        let answer = Answer {
            args: self.args,
            json,
            code,
            stdout,
            stderr,
        };
        (answer, usage)
    }

    /// SIGKILL the driver (as a node crash or the OOM killer would) and reap
    /// it. True if the signal ended it, false if it had already exited.
    pub fn kill(mut self) -> bool {
        // ESRCH is impossible: the child is not reaped yet, at worst a zombie.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let (status, _) = self.reap();
        for h in [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL
    }

    /// wait4 the driver: its wait status and rusage.
    fn reap(&mut self) -> (libc::c_int, libc::rusage) {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `pid` is our own unreaped child (std's Child is never
            // waited on afterwards); both pointers are valid for writes.
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
            if r == self.pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::Interrupted,
                "wait4 {}: {err}",
                self.pid
            );
        }
        (status, usage)
    }
}

impl Sandbox {
    /// `flexwasm install --policy FILE` of `wasm` as `flexwasm/<driver>`,
    /// where `grant` is the policy's text without `plugin_sha256`: this pins
    /// the SHA-256 of `wasm`, writes the file into the sandbox (outside the
    /// plugin dir) and passes it.
    #[track_caller]
    pub fn install_with_grant(&self, driver: &str, wasm: &Path, grant: &str) -> PathBuf {
        let file = self.root.path().join(format!("policy-{driver}.toml"));
        let text = format!("plugin_sha256 = \"{}\"\n\n{grant}", file_sha256(wasm));
        std::fs::write(&file, text).expect("write policy");
        self.install_with_policy(driver, wasm, Some(&file))
    }

    /// The driver's state dir (`$FLEXWASM_STATE_DIR/<vendor>~<driver>`).
    pub fn driver_state_dir(&self, driver: &str) -> PathBuf {
        self.state_dir.join(format!("flexwasm~{driver}"))
    }

    /// Start a call exactly as [`Sandbox::call`] does, without waiting.
    pub fn spawn(&self, driver: &str, args: &[&str]) -> RunningCall {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let started = std::time::Instant::now();
        let mut child = spawn(
            Command::new(self.driver_exe(driver))
                .args(&args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(self.env())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("exec driver");
        // Drain both pipes while the driver runs, so a flood cannot block it.
        let stdout = child.stdout.take().map(|p| drain(Box::new(p)));
        let stderr = child.stderr.take().map(|p| drain(Box::new(p)));
        RunningCall {
            args,
            pid: i32::try_from(child.id()).expect("pid fits i32"),
            started,
            child,
            stdout,
            stderr,
        }
    }

    /// The raw lines of the driver's call log.
    pub fn raw_log_lines(&self, driver: &str) -> Vec<String> {
        let path = self.log_dir.join(format!("flexwasm~{driver}.log"));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Attach a blank sparse image of `size` bytes under the sandbox to a
    /// loop device (detached again by Drop). Needs root.
    pub fn blank_loop_device(&self, name: &str, size: u64) -> String {
        let image = self.root.path().join(format!("{name}.img"));
        let f = std::fs::File::create(&image).expect("create image");
        f.set_len(size).expect("size image");
        drop(f);
        let out = output(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image),
        )
        .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Every mount in this thread's mount namespace, as `(mount point, source,
/// fs type)`: compare before and after a call to see that it mounted nothing.
pub fn mounts() -> std::collections::BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some((
                fields.get(4)?.to_string(),
                fields.get(dash + 2)?.to_string(),
                fields.get(dash + 1)?.to_string(),
            ))
        })
        .collect()
}

/// Every path under `dir` (not following symlinks), sorted.
pub fn paths_under(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// What `blkid -p` finds on `device`: `None` when it is blank (exit 2).
pub fn probe_fs_type(device: &str) -> Option<String> {
    let out = output(Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE", device]))
        .expect("run blkid");
    match out.status.code() {
        Some(2) => None,
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        other => panic!(
            "blkid -p {device} failed ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Processes still running `exe` (a driver that outlived its answer).
pub fn processes_running(exe: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe))
        .collect()
}

// ---------------------------------------------------------------------------
// Backend tests (tests/backend.rs): the rest-array plugin, the http-probe
// test plugin and the array server binary.

/// Build the rest-array reference plugin and the http-probe and
/// state-probe test plugins once per test process, as wasm32-wasip2 components, into target/guests.
/// `name` is the package name with `-` → `_` (e.g. `flexwasm_http_probe`).
pub fn backend_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let target = cargo_build(
                "backend plugins",
                &[
                    "--target",
                    "wasm32-wasip2",
                    "-p",
                    "flexwasm-plugin-rest-array",
                    "-p",
                    "flexwasm-http-probe",
                    "-p",
                    "flexwasm-state-probe",
                ],
            )?;
            Ok(target.join("wasm32-wasip2").join("release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join(format!("{name}.wasm"));
    assert!(file.exists(), "{} was not built", file.display());
    file
}

/// The rest-array reference plugin.
pub fn rest_array_wasm() -> PathBuf {
    backend_wasm("flexwasm_plugin_rest_array")
}

/// The http-probe test plugin.
pub fn probe_wasm() -> PathBuf {
    backend_wasm("flexwasm_http_probe")
}

/// The state-probe test plugin.
pub fn state_probe_wasm() -> PathBuf {
    backend_wasm("flexwasm_state_probe")
}

/// `$<env>` if set, else `cargo build --release <args>` into target/guests
/// and the file at `<target/guests>/<path…>`.
fn native_binary(env: &str, args: &[&str], path: &[&str]) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let bin = path
        .iter()
        .fold(cargo_build(&args.join(" "), args)?, |dir, part| {
            dir.join(part)
        });
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} was not built", bin.display()))
    }
}

/// The `flexwasm-array-server` binary: `$FLEXWASM_ARRAY_SERVER_BIN` if set,
/// else built once per test process (native, into target/guests, so this
/// does not wait on the outer cargo's lock and works when only the host
/// package's tests were built).
pub fn array_server_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            native_binary(
                "FLEXWASM_ARRAY_SERVER_BIN",
                &["-p", "flexwasm-array-server"],
                &["release", "flexwasm-array-server"],
            )
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// The static host binary (x86_64-unknown-linux-musl), for drivers that
// kube-controller-manager runs from a distroless image (contract page §7).

/// The musl target the static host is built for.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The static `flexwasm` binary: `$FLEXWASM_STATIC_HOST_BIN` if set, else
/// built once per test process into target/guests (needs
/// `rustup target add x86_64-unknown-linux-musl` and `musl-gcc`).
pub fn static_host_bin() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            native_binary(
                "FLEXWASM_STATIC_HOST_BIN",
                &["--target", STATIC_TARGET, "-p", "flexwasm"],
                &[STATIC_TARGET, "release", "flexwasm"],
            )
        })
        .clone()
}

/// Whether `path` is an ELF executable without a program interpreter
/// (PT_INTERP), i.e. it runs with no dynamic loader and no libc on disk.
pub fn elf_has_interpreter(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a little-endian ELF64 file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == 3 // PT_INTERP
    })
}

/// The per-mount options (`rw,nosuid,nodev,…`) of the mount at `path` in
/// this thread's namespace; `None` if nothing is mounted there.
pub fn mount_options_of(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let p = path.to_string_lossy();
    text.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&p))
        .last()
        .and_then(|l| l.split(' ').nth(5))
        .map(|o| o.split(',').map(str::to_string).collect())
}

/// This node's name as kubelet derives it by default (hostname, lowercase).
pub fn this_node() -> String {
    nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .to_lowercase()
}

/// Every string in a JSON value (keys included), for searching a log line
/// for what must not be in it after JSON escaping is undone.
pub fn json_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| json_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                json_strings(v, out);
            }
        }
        _ => {}
    }
}

/// `text`'s letters and digits, lowercased: a secret split, padded or
/// recased is still found in this form.
pub fn folded(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Read `pipe` to its end on a thread of its own (a child's stdout or
/// stderr, drained while it runs so a flood cannot block it).
pub fn drain(mut pipe: Box<dyn std::io::Read + Send>) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}
