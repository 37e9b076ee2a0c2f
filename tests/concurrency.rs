//! Many calls of one driver at once, as root, in a private mount namespace:
//! 64 calls in flight across 16 volumes of the `loop` reference plugin, each
//! op picked at random (attach, waitforattach, mountdevice, mount, unmount,
//! unmountdevice, detach) with exactly the argv kubelet or the attach/detach
//! controller sends. kubelet serialises ops per volume; this storm does not,
//! so calls may fail (mount before mountdevice, detach of a mounted
//! device…) — but only cleanly: one JSON object, the contract's exit codes,
//! no secret. Afterwards every volume is driven to a known end state and
//! checked: what is attached and mounted is what the plugin's state and the
//! host's records say, nothing leaked, and the marker written after a
//! volume's first format is still there (no second format).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use support::lifecycle::*;
use support::*;

const VOLUMES: usize = 16;
/// Calls in flight at once.
const WORKERS: usize = 64;
/// Calls each worker makes, one after the other.
const CALLS_PER_WORKER: usize = 6;

/// What the storm learnt about a volume from its answers, as kubelet would
/// have: the device `attach` reported (the Node's status), the one
/// `waitforattach` found, and the marker written after its first format.
#[derive(Default, Debug)]
struct Book {
    attach_device: Option<String>,
    wait_device: Option<String>,
    marker: Option<String>,
    /// The op that last succeeded, for the next one in kubelet's order.
    last_success: Option<LifeOp>,
}

/// Half the time the op that follows the volume's last success in
/// kubelet's order (so volumes get deep into their lifecycle, racing each
/// other), half the time any op.
fn pick_op(rng: &mut Rng, book: &Book) -> LifeOp {
    let all = LifeOp::ALL;
    if rng.below(2) == 0 {
        let next = book
            .last_success
            .and_then(|op| all.iter().position(|o| *o == op))
            .map_or(0, |i| (i + 1) % all.len());
        all[next]
    } else {
        all[rng.below(all.len())]
    }
}

/// One answer of the storm, for the summary.
struct Outcome {
    op: LifeOp,
    status: String,
    message: String,
}

fn call(sb: &Sandbox, vol: &LoopVolume, op: LifeOp, device: &str) -> Answer {
    let argv = vol.argv(op, device);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let answer = sb.call(DRIVER, &args);
    check_contract(vol, op, &answer);
    answer
}

/// The call a worker makes for `picked` on a volume, given what is known
/// of it: kubelet calls `waitforattach` with the device `attach` reported
/// and `mountdevice` with the one `waitforattach` found, so without those
/// the worker makes the call that would have produced them.
fn kubelet_shaped(picked: LifeOp, book: &Book) -> (LifeOp, String) {
    match picked {
        LifeOp::MountDevice => match (&book.wait_device, &book.attach_device) {
            (Some(dev), _) => (LifeOp::MountDevice, dev.clone()),
            (None, Some(dev)) => (LifeOp::WaitForAttach, dev.clone()),
            (None, None) => (LifeOp::Attach, String::new()),
        },
        LifeOp::WaitForAttach => match &book.attach_device {
            Some(dev) => (LifeOp::WaitForAttach, dev.clone()),
            None => (LifeOp::Attach, String::new()),
        },
        op => (op, String::new()),
    }
}

/// A message with numbers and the sandbox path folded, so messages that
/// differ only in a device number or a volume count together.
fn message_shape(message: &str, root: &Path) -> String {
    let mut out = message.replace(&*root.to_string_lossy(), "<sandbox>");
    out = out
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut folded = String::with_capacity(out.len());
    for c in out.chars() {
        if !(c == '#' && folded.ends_with('#')) {
            folded.push(c);
        }
    }
    folded.chars().take(240).collect()
}

/// Where a volume is, as the node, the plugin's state and the host's
/// records say.
#[derive(Debug)]
struct Observed {
    loop_devices: Vec<PathBuf>,
    device_mount: Option<(u32, u32)>,
    device_mount_layers: usize,
    pod_mount: Option<(u32, u32)>,
    pod_mount_layers: usize,
    state_record: Option<String>,
    host_record: Option<(String, String)>,
}

fn observe(sb: &Sandbox, vol: &LoopVolume) -> Observed {
    let layers = |p: &Path| mounts_under(p).iter().filter(|m| m.as_path() == p).count();
    Observed {
        loop_devices: vol.loop_devices(sb),
        device_mount: mounted_device_numbers(&vol.device_mount_path),
        device_mount_layers: layers(&vol.device_mount_path),
        pod_mount: mounted_device_numbers(&vol.pod_dir),
        pod_mount_layers: layers(&vol.pod_dir),
        state_record: vol.state_record(sb),
        host_record: vol.host_record(sb),
    }
}

#[test]
fn sixty_four_concurrent_calls_across_sixteen_volumes_fail_cleanly_and_converge() {
    let test = "sixty_four_concurrent_calls_across_sixteen_volumes_fail_cleanly_and_converge";
    if !privileged(test) {
        return;
    }
    private_mount_namespace();
    let started = std::time::Instant::now();
    let sb = Sandbox::new();
    sb.install(DRIVER);
    let seed = Rng::seed_from_env(test);
    // Mostly small ext4 volumes; every fourth is xfs (whose mkfs and
    // mount behave differently), at the 300 MiB xfs needs (sparse).
    let vols: Vec<LoopVolume> = (0..VOLUMES)
        .map(|i| {
            let (fs, size) = if i % 4 == 3 {
                ("xfs", "320Mi")
            } else {
                ("ext4", "24Mi")
            };
            LoopVolume::new(&sb, &format!("pv-storm-{i:02}"), fs, size)
        })
        .collect();
    let books: Vec<Mutex<Book>> = (0..VOLUMES).map(|_| Mutex::default()).collect();
    let outcomes: Mutex<Vec<Outcome>> = Mutex::default();
    let marker_misses: Mutex<Vec<String>> = Mutex::default();

    // The storm.
    let barrier = Barrier::new(WORKERS);
    std::thread::scope(|s| {
        for worker in 0..WORKERS {
            let (sb, vols, books, outcomes, barrier) = (&sb, &vols, &books, &outcomes, &barrier);
            let marker_misses = &marker_misses;
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (worker as u64).wrapping_mul(0x9e37_79b9));
                barrier.wait();
                for _ in 0..CALLS_PER_WORKER {
                    let v = rng.below(VOLUMES);
                    let vol = &vols[v];
                    let (op, device) = {
                        let book = books[v].lock().unwrap();
                        kubelet_shaped(pick_op(&mut rng, &book), &book)
                    };
                    let answer = call(sb, vol, op, &device);
                    if answer.status() == "Success" {
                        let mut book = books[v].lock().unwrap();
                        book.last_success = Some(op);
                        match op {
                            LifeOp::Attach => book.attach_device = Some(answered_device(&answer)),
                            LifeOp::WaitForAttach => {
                                book.wait_device = Some(answered_device(&answer))
                            }
                            LifeOp::MountDevice if book.marker.is_none() => {
                                let text = format!("{} formatted once, seed {seed}", vol.name);
                                match write_marker(&vol.device_mount_path, &device, &text) {
                                    Ok(()) => book.marker = Some(text),
                                    // Unmounted again by a racing call: next time.
                                    Err(why) => marker_misses.lock().unwrap().push(why),
                                }
                            }
                            _ => {}
                        }
                    }
                    outcomes.lock().unwrap().push(Outcome {
                        op,
                        status: answer.status().to_string(),
                        message: answer.message().to_string(),
                    });
                }
            });
        }
    });
    let storm_time = started.elapsed();

    // What the storm's answers were.
    let outcomes = outcomes.into_inner().unwrap();
    let mut per_op: BTreeMap<LifeOp, (usize, usize)> = BTreeMap::new();
    let mut failures: BTreeMap<(LifeOp, String), usize> = BTreeMap::new();
    for o in &outcomes {
        let entry = per_op.entry(o.op).or_default();
        if o.status == "Success" {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            *failures
                .entry((o.op, message_shape(&o.message, sb.root.path())))
                .or_default() += 1;
        }
    }
    eprintln!(
        "storm: {} calls, {WORKERS} in flight, over {VOLUMES} volumes in {:.1?}",
        outcomes.len(),
        storm_time
    );
    for (op, (ok, failed)) in &per_op {
        eprintln!("  {:<13} {ok:>3} Success, {failed:>3} Failure", op.name());
    }
    for ((op, shape), n) in &failures {
        eprintln!("  {n:>3} × {} failed: {shape}", op.name());
    }
    let misses = marker_misses.into_inner().unwrap();
    if !misses.is_empty() {
        eprintln!("  markers not written at once (unmounted by a racing call): {misses:?}");
    }
    // Quiescent, before anything is repaired: where each volume was left.
    // The host runs one attach or detach of a volume at a time
    // (host/src/volume_lock.rs), so however they raced, the plugin's record
    // of an attachment and the device agree. Device mounts are per path,
    // and only kubelet orders those.
    let mut out_of_step: Vec<String> = Vec::new();
    for vol in &vols {
        let o = observe(&sb, vol);
        let attached = !o.loop_devices.is_empty();
        // (Detached with a record is by design: the plugin records before
        // it attaches, so a failed attach leaves one; the next detach
        // clears it.)
        if attached && o.state_record.is_none() {
            out_of_step.push(format!(
                "{} is attached with no state record: an attach and a detach of it overlapped",
                vol.name
            ));
        }
        if o.device_mount.is_some() != o.host_record.is_some() {
            eprintln!(
                "  after the storm {} has device mount {:?} with host record {:?} (racing \
                 mountdevice and unmountdevice of one path, which kubelet never makes; driven \
                 to an end state below)",
                vol.name, o.device_mount, o.host_record
            );
        }
    }

    // Drive every volume to a known end state: even ones up (attached,
    // device mounted, pod mounted), odd ones down. Down first, in phases
    // across all volumes, so no volume's teardown waits on another's.
    let mut problems: Vec<String> = out_of_step;
    let mut must = |vol: &LoopVolume, op: LifeOp, device: &str| -> Answer {
        let answer = call(&sb, vol, op, device);
        if answer.status() != "Success" {
            problems.push(format!(
                "{} {}: {} (after the storm, with nothing else running)",
                op.name(),
                vol.name,
                answer.stdout.trim()
            ));
        }
        answer
    };
    let up = |i: usize| i % 2 == 0;
    for op in [LifeOp::Unmount, LifeOp::UnmountDevice, LifeOp::Detach] {
        for (i, vol) in vols.iter().enumerate() {
            if !up(i) {
                must(vol, op, "");
            }
        }
    }
    let mut devices: BTreeMap<usize, String> = BTreeMap::new();
    for (i, vol) in vols.iter().enumerate() {
        if up(i) {
            let attached = answered_device(&must(vol, LifeOp::Attach, ""));
            let device = answered_device(&must(vol, LifeOp::WaitForAttach, &attached));
            must(vol, LifeOp::MountDevice, &device);
            must(vol, LifeOp::Mount, "");
            devices.insert(i, device);
        }
    }
    drop(must);

    // The end state, every way it can be seen.
    let mut expected_mounts = Vec::new();
    for (i, vol) in vols.iter().enumerate() {
        let o = observe(&sb, vol);
        let book = books[i].lock().unwrap();
        let mut wrong =
            |what: String| problems.push(format!("{}: {what}; observed {o:?}", vol.name));
        if vol.is_attached(&sb) != up(i) {
            wrong(format!("isattached does not answer {}", up(i)));
        }
        if up(i) {
            let device = devices.get(&i).cloned().unwrap_or_default();
            let numbers = device_numbers(Path::new(&device));
            if o.loop_devices != [PathBuf::from(&device)] {
                wrong(format!(
                    "up, but its image is not attached exactly once, at {device}"
                ));
            }
            if o.device_mount.is_none() || o.device_mount != numbers {
                wrong(format!("up, but its device mount is not of {device}"));
            }
            if o.pod_mount != o.device_mount {
                wrong("up, but its pod dir is not a bind of its device mount".into());
            }
            if o.state_record.as_deref() != Some(&format!("{}.img", vol.name)) {
                wrong("up, but the plugin's state has no record of its image".into());
            }
            if o.host_record != Some((device.clone(), vol.fs_type.to_string())) {
                wrong("up, but the host has no record of its device mount".into());
            }
            if o.device_mount_layers > 1 || o.pod_mount_layers > 1 {
                eprintln!(
                    "  {}: {} device mount and {} pod mount layers (stacked by racing calls; \
                     unmount and unmountdevice peel them all)",
                    vol.name, o.device_mount_layers, o.pod_mount_layers
                );
            }
            match &book.marker {
                Some(text) => {
                    for dir in [&vol.device_mount_path, &vol.pod_dir] {
                        if read_marker(dir).as_ref() != Some(text) {
                            wrong(format!(
                                "its marker {text:?} is gone from {} (formatted again?)",
                                dir.display()
                            ));
                        }
                    }
                }
                None => {}
            }
            expected_mounts.push(vol.device_mount_path.clone());
            expected_mounts.push(vol.pod_dir.clone());
        } else {
            if !o.loop_devices.is_empty() {
                wrong("down, but its image is still attached (a leaked loop device)".into());
            }
            if o.device_mount.is_some() || o.pod_mount.is_some() {
                wrong("down, but still mounted".into());
            }
            if o.state_record.is_some() || o.host_record.is_some() {
                wrong("down, but a record of it remains".into());
            }
        }
    }
    let mut mounted = mounts_under(&sb.kubelet_root);
    mounted.sort();
    mounted.dedup();
    expected_mounts.sort();
    if mounted != expected_mounts {
        problems.push(format!(
            "mounted under the kubelet root: {mounted:?}, expected exactly {expected_mounts:?}"
        ));
    }

    // Last, every volume once more through a whole cycle: its marker (if
    // the storm formatted it) must have survived, and nothing may be left.
    for (i, vol) in vols.iter().enumerate() {
        let mut book = books[i].lock().unwrap();
        let step = |op: LifeOp, device: &str, problems: &mut Vec<String>| -> Answer {
            let a = call(&sb, vol, op, device);
            if a.status() != "Success" {
                problems.push(format!(
                    "final {} {}: {}",
                    op.name(),
                    vol.name,
                    a.stdout.trim()
                ));
            }
            a
        };
        if !up(i) {
            let attached = answered_device(&step(LifeOp::Attach, "", &mut problems));
            let device = answered_device(&step(LifeOp::WaitForAttach, &attached, &mut problems));
            if step(LifeOp::MountDevice, &device, &mut problems).status() != "Success" {
                // Said above; its marker cannot be read.
                continue;
            }
            match &book.marker {
                Some(text) if read_marker(&vol.device_mount_path).as_ref() != Some(text) => {
                    problems.push(format!(
                        "{}: its marker {text:?} is gone after mountdevice (formatted again?)",
                        vol.name
                    ));
                }
                Some(_) => {}
                None => {
                    let text = format!("{} formatted after the storm", vol.name);
                    match write_marker(&vol.device_mount_path, &device, &text) {
                        Ok(()) => book.marker = Some(text),
                        Err(why) => problems.push(format!("{}: {why}", vol.name)),
                    }
                }
            }
        } else {
            step(LifeOp::Unmount, "", &mut problems);
        }
        step(LifeOp::UnmountDevice, "", &mut problems);
        step(LifeOp::Detach, "", &mut problems);
        let o = observe(&sb, vol);
        if !o.loop_devices.is_empty()
            || o.device_mount.is_some()
            || o.pod_mount.is_some()
            || o.state_record.is_some()
            || o.host_record.is_some()
        {
            problems.push(format!(
                "{} is not fully down after its final cycle: {o:?}",
                vol.name
            ));
        }
    }
    let leaked_mounts = mounts_under(sb.root.path());
    let leaked_loops = loop_devices_under(sb.root.path());
    if !leaked_mounts.is_empty() || !leaked_loops.is_empty() {
        problems.push(format!(
            "leaked: mounts {leaked_mounts:?}, loop devices {leaked_loops:?}"
        ));
    }
    let stray = processes_running(&sb.driver_exe(DRIVER));
    if !stray.is_empty() {
        problems.push(format!("driver processes still running: {stray:?}"));
    }
    // No secret in the call log (the answers were checked one by one).
    let log = sb.raw_log_lines(DRIVER).join("\n");
    for vol in &vols {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&vol.secret);
        if log.contains(&vol.secret) || log.contains(&b64) {
            problems.push(format!("the call log holds the secret of {}", vol.name));
        }
    }
    eprintln!("{test}: {:.1?} in all", started.elapsed());
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Attach and detach of one volume, 8 calls at a time, alternating: the
/// host runs one at a time per volume, so at every quiet moment the
/// plugin's record of the attachment and the loop device agree, and the
/// host keeps no lock file once they are done. (Before the lock, an attach
/// between a detach's read and delete of the record left the device
/// attached and the record gone.)
#[test]
fn attach_and_detach_of_one_volume_run_one_at_a_time() {
    let test = "attach_and_detach_of_one_volume_run_one_at_a_time";
    if !privileged(test) {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    sb.install(DRIVER);
    let vol = LoopVolume::new(&sb, "pv-same", "ext4", "8Mi");
    let mut problems = Vec::new();
    let mut locked = 0;
    const ROUNDS: usize = 6;
    const IN_FLIGHT: usize = 8;
    for round in 0..ROUNDS {
        let barrier = Barrier::new(IN_FLIGHT);
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..IN_FLIGHT)
                .map(|worker| {
                    let (sb, vol, barrier) = (&sb, &vol, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let op = if (worker + round) % 2 == 0 {
                            LifeOp::Attach
                        } else {
                            LifeOp::Detach
                        };
                        call(sb, vol, op, "")
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for answer in &answers {
            if answer.status() != "Success" {
                problems.push(format!(
                    "round {round}: {:?} failed: {}",
                    answer.args, answer.stdout
                ));
            }
        }
        let o = observe(&sb, &vol);
        if o.loop_devices.is_empty() == o.state_record.is_some() {
            problems.push(format!(
                "round {round}: loop devices {:?} but state record {:?}",
                o.loop_devices, o.state_record
            ));
        }
        if o.loop_devices.len() > 1 {
            problems.push(format!(
                "round {round}: attached twice: {:?}",
                o.loop_devices
            ));
        }
    }
    // Every call took the lock (its phase is in the call log).
    for line in sb.raw_log_lines(DRIVER) {
        if line.contains("\"volume lock\"") {
            locked += 1;
        }
    }
    let locks = sb.driver_state_dir(DRIVER).join("host/volume-locks");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        problems.push(format!("lock files left: {left:?}"));
    }
    if locked != ROUNDS * IN_FLIGHT {
        problems.push(format!(
            "{locked} of {} calls logged a volume lock phase",
            ROUNDS * IN_FLIGHT
        ));
    }
    // Down, and nothing leaked.
    let _ = call(&sb, &vol, LifeOp::Detach, "");
    let leaked_loops = loop_devices_under(sb.root.path());
    if !leaked_loops.is_empty() {
        problems.push(format!("leaked loop devices {leaked_loops:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
