//! One `loop` volume through kubelet's lifecycle, for the concurrency and
//! crash tests: every op's argv exactly as kubelet and the controller send
//! it, the contract's exit codes, a marker file that tells a double format,
//! and what the node, the plugin's state and the host's records say about
//! the volume.

use super::*;
use std::os::unix::fs::MetadataExt;

/// The driver every lifecycle test installs (`plugins/loop`).
pub const DRIVER: &str = "loop";

/// The marker file written into a volume after its first `mountdevice`.
pub const MARKER: &str = "flexwasm-marker";

/// A tiny deterministic PRNG (splitmix64): the tests print their seed, and
/// `FLEXWASM_TEST_SEED=<n>` replays a run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed of this run: `FLEXWASM_TEST_SEED` or the clock.
    pub fn seed_from_env(test: &str) -> u64 {
        let seed = std::env::var("FLEXWASM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (replay with FLEXWASM_TEST_SEED={seed})");
        seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The ops of an attachable volume's lifecycle, in kubelet's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifeOp {
    Attach,
    WaitForAttach,
    MountDevice,
    Mount,
    Unmount,
    UnmountDevice,
    Detach,
}

impl LifeOp {
    pub const ALL: [LifeOp; 7] = [
        LifeOp::Attach,
        LifeOp::WaitForAttach,
        LifeOp::MountDevice,
        LifeOp::Mount,
        LifeOp::Unmount,
        LifeOp::UnmountDevice,
        LifeOp::Detach,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LifeOp::Attach => "attach",
            LifeOp::WaitForAttach => "waitforattach",
            LifeOp::MountDevice => "mountdevice",
            LifeOp::Mount => "mount",
            LifeOp::Unmount => "unmount",
            LifeOp::UnmountDevice => "unmountdevice",
            LifeOp::Detach => "detach",
        }
    }
}

/// One PV of the `loop` driver, and where kubelet puts it on this node.
#[derive(Clone, Debug)]
pub struct LoopVolume {
    pub name: String,
    pub fs_type: &'static str,
    pub size: &'static str,
    /// The pod that mounts it.
    pub pod_uid: String,
    /// A secret the PV's `secretRef` names: kubelet passes it to `mount`
    /// only, base64-encoded.
    pub secret: String,
    pub device_mount_path: PathBuf,
    pub pod_dir: PathBuf,
}

impl LoopVolume {
    /// Volume `name` of `sb`'s loop driver; creates its device mount path
    /// and pod volume dir, as kubelet does before `mountdevice` and `mount`.
    pub fn new(sb: &Sandbox, name: &str, fs_type: &'static str, size: &'static str) -> Self {
        let pod_uid = format!("uid-{name}");
        LoopVolume {
            name: name.to_string(),
            fs_type,
            size,
            secret: format!("s3cret-of-{name}-Zq8"),
            device_mount_path: sb.device_mount_path(DRIVER, name),
            pod_dir: sb.pod_volume_dir(&pod_uid, DRIVER, name),
            pod_uid,
        }
    }

    fn spec(&self) -> VolumeSpec<'_> {
        VolumeSpec::new(&self.name, self.fs_type, &[("size", self.size)])
    }

    fn options(&self, op: Op) -> String {
        let spec = self.spec();
        if op == Op::Mount {
            let mut pod = PodMount::new(&self.pod_uid);
            pod.fs_group = Some(2000);
            pod.secret = vec![("token", &self.secret)];
            kubelet_options(op, &spec, Some(&pod))
        } else {
            kubelet_options(op, &spec, None)
        }
    }

    /// The argv kubelet (or the attach/detach controller) sends for `op`.
    /// `device` is what `attach` answered (for `waitforattach`) or what
    /// `waitforattach` answered (for `mountdevice`).
    pub fn argv(&self, op: LifeOp, device: &str) -> Vec<String> {
        let node = this_node();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match op {
            LifeOp::Attach => vec!["attach".into(), self.options(Op::Attach), node],
            LifeOp::WaitForAttach => vec![
                "waitforattach".into(),
                device.into(),
                self.options(Op::WaitForAttach),
            ],
            LifeOp::MountDevice => vec![
                "mountdevice".into(),
                path(&self.device_mount_path),
                device.into(),
                self.options(Op::MountDevice),
            ],
            LifeOp::Mount => vec!["mount".into(), path(&self.pod_dir), self.options(Op::Mount)],
            LifeOp::Unmount => vec!["unmount".into(), path(&self.pod_dir)],
            LifeOp::UnmountDevice => vec!["unmountdevice".into(), path(&self.device_mount_path)],
            LifeOp::Detach => vec!["detach".into(), self.name.clone(), node],
        }
    }

    /// `isattached` as the attach/detach controller asks it (checked
    /// against the contract; it must succeed).
    #[track_caller]
    pub fn is_attached(&self, sb: &Sandbox) -> bool {
        let options = self.options(Op::IsAttached);
        let node = this_node();
        let answer = sb.call(DRIVER, &["isattached", &options, &node]);
        answer.assert_success();
        answer.json["attached"]
            .as_bool()
            .unwrap_or_else(|| panic!("isattached answered no bool: {}", answer.stdout))
    }

    /// The volume's image file.
    pub fn image(&self, sb: &Sandbox) -> PathBuf {
        sb.driver_state_dir(DRIVER)
            .join("images")
            .join(format!("{}.img", self.name))
    }

    /// Loop devices backed by the volume's image.
    pub fn loop_devices(&self, sb: &Sandbox) -> Vec<PathBuf> {
        let image = self.image(sb);
        loop_devices_under(&sb.state_dir)
            .into_iter()
            .filter(|dev| {
                let name = dev.file_name().unwrap_or_default().to_string_lossy();
                std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
                    .is_ok_and(|backing| Path::new(backing.trim()) == image)
            })
            .collect()
    }

    /// The plugin's record of the image it attached (`volume/<name>` in its
    /// state store), if any.
    pub fn state_record(&self, sb: &Sandbox) -> Option<String> {
        let key = format!("volume/{}", self.name);
        let file = sb
            .driver_state_dir(DRIVER)
            .join("kv")
            .join(sha256_hex(key.as_bytes()));
        let bytes = std::fs::read(file).ok()?;
        // FWKV1\n, u32 key length, key, value.
        let rest = bytes.strip_prefix(b"FWKV1\n".as_slice())?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let (stored, value) = rest.get(4..)?.split_at_checked(len)?;
        assert_eq!(
            stored,
            key.as_bytes(),
            "state entry of {key} holds another key"
        );
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// The host's record of what it mounted at the device mount path:
    /// (device, fs type), if any.
    pub fn host_record(&self, sb: &Sandbox) -> Option<(String, String)> {
        let file = sb
            .driver_state_dir(DRIVER)
            .join("host/device-mounts")
            .join(sha256_hex(
                self.device_mount_path.as_os_str().as_encoded_bytes(),
            ));
        let text = std::fs::read_to_string(file).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() >= 4 && Path::new(lines[1]) == self.device_mount_path,
            "host record of {} is damaged: {text:?}",
            self.device_mount_path.display()
        );
        Some((lines[2].to_string(), lines[3].to_string()))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The contract's exit codes (contract page §3, and the host's rule that a
/// `Failure` of `mount`, whose argv carries secrets, exits 0): `Success` 0,
/// `Failure` 1 (0 for `mount`), `Not supported` 1. The answer must be one
/// JSON object on stdout, nothing on stderr ([`Answer::from_output`]
/// checked that), and must not carry the volume's secret.
#[track_caller]
pub fn check_contract(vol: &LoopVolume, op: LifeOp, answer: &Answer) {
    let expected = match (answer.status(), op) {
        ("Success", _) => 0,
        ("Failure", LifeOp::Mount) => 0,
        _ => 1,
    };
    assert_eq!(
        answer.code, expected,
        "{:?} answered {} with exit code {}",
        answer.args, answer.stdout, answer.code
    );
    assert!(
        answer.status() != "Not supported",
        "{:?}: the loop driver supports every lifecycle op: {}",
        answer.args,
        answer.stdout
    );
    assert!(
        !answer.stdout.contains(&vol.secret)
            && !folded(&answer.stdout).contains(&folded(&vol.secret)),
        "{:?}: the answer holds the volume's secret: {}",
        answer.args,
        answer.stdout
    );
    if answer.status() == "Success" && matches!(op, LifeOp::Attach | LifeOp::WaitForAttach) {
        let device = answer.json["device"].as_str().unwrap_or("");
        assert!(
            device.starts_with("/dev/loop"),
            "{:?} answered no loop device: {}",
            answer.args,
            answer.stdout
        );
    }
}

/// The device an `attach` or `waitforattach` answer names.
pub fn answered_device(answer: &Answer) -> String {
    answer.json["device"].as_str().unwrap_or("").to_string()
}

/// Write `text` into the filesystem of `device` mounted at `dir`, through a
/// descriptor of `dir` checked to be on `device` (so a racing unmount can
/// neither make the write land in the bare directory nor unmount it from
/// under us: it fails busy). Err says why nothing was written.
pub fn write_marker(dir: &Path, device: &str, text: &str) -> Result<(), String> {
    in_mounts(|| write_marker_now(dir, device, text))
}

fn write_marker_now(dir: &Path, device: &str, text: &str) -> Result<(), String> {
    use std::io::Write;
    let handle = std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let on = handle.metadata().map_err(|e| e.to_string())?.dev();
    let rdev = std::fs::metadata(device)
        .map_err(|e| format!("stat {device}: {e}"))?
        .rdev();
    if on != rdev {
        return Err(format!("{} is not on {device}", dir.display()));
    }
    let path = format!("/proc/self/fd/{}/{MARKER}", {
        use std::os::fd::AsRawFd;
        handle.as_raw_fd()
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("create the marker in {}: {e}", dir.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("write the marker in {}: {e}", dir.display()))?;
    drop(handle);
    Ok(())
}

/// The marker in `dir`, if there is one.
pub fn read_marker(dir: &Path) -> Option<String> {
    in_mounts(|| std::fs::read_to_string(dir.join(MARKER)).ok())
}

/// (major, minor) of what is mounted at `path` in this thread's mount
/// namespace (the top mount), if anything.
pub fn mounted_device_numbers(path: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let p = path.to_string_lossy();
    text.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&p))
        .last()
        .and_then(|l| l.split(' ').nth(2))
        .and_then(|mm| {
            let (a, b) = mm.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
}

/// (major, minor) of a block device node.
pub fn device_numbers(device: &Path) -> Option<(u32, u32)> {
    let rdev = std::fs::metadata(device).ok()?.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
}

/// Mount points under `dir` in this thread's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let d = dir.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&d))
        .map(PathBuf::from)
        .collect()
}

/// Whether process `pid` is gone or a zombie (it ran to its end).
pub fn process_ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // pid (comm) STATE …: comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// The command line of process `pid`, space-separated.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The child processes of `pid` (of all its threads).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}
