//! argv → typed call → the one answer and exit code, as `driver_main`
//! (host/src/main.rs) decides them for any argv kubelet (or anyone) can
//! pass — with a hostile plugin that echoes everything it was given.
//!
//! Input: the arguments after the executable, separated by NUL bytes (any
//! bytes, so not necessarily UTF-8). Checked: no panic; the answer is one
//! JSON object kubelet parses, its fields bounded and printable and free of
//! the call's secrets; the exit code is the contract's, 0 for any Failure
//! of a call that may carry secrets (`mount`, or argv mentioning
//! `secret`, which every options argument with a secret key kubelet's
//! encoder writes does).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use flexwasm::contract::{Call, DriverStatus};
use flexwasm::driver_call;
use flexwasm::layout::{DriverLayout, DriverName};
use flexwasm::options::RawOptions;
use flexwasm::secrets::SecretSet;
use flexwasm_fuzz::check_answer;
use libfuzzer_sys::fuzz_target;

include!(concat!(env!("OUT_DIR"), "/main_decisions.rs"));

fn layout() -> DriverLayout {
    DriverLayout::for_driver(
        DriverName::parse("acme/fuzz").unwrap(),
        PathBuf::from("/usr/libexec/kubernetes/kubelet-plugins/volume/exec/acme~fuzz"),
    )
}

/// What a hostile plugin answers: everything it was given, back.
fn plugin_answer(call: &Call, args: &[String], selector: u8) -> DriverStatus {
    let mut echo = args.join(" ");
    if let Some(options) = call.options()
        && let Ok(o) = options.resolve()
    {
        for value in o.secrets.values() {
            echo.push(' ');
            echo.push_str(&String::from_utf8_lossy(value));
        }
    }
    let layout = layout();
    match selector % 4 {
        0 => DriverStatus::failure(format!("{} {}: {echo}", layout.name, call.op())),
        1 => DriverStatus::not_supported(format!(
            "driver {} does not support {}",
            layout.name,
            call.op()
        )),
        2 => {
            let mut s = DriverStatus::success();
            s.device = Some(echo);
            s
        }
        _ => {
            let mut s = DriverStatus::success();
            s.volume_name = args.last().cloned();
            s.attached = Some(selector & 4 != 0);
            s
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 256 * 1024 {
        return;
    }
    let raw_args: Vec<OsString> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|b| *b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    let layout = layout();

    // driver_main, step by step (host/src/main.rs).
    let op: String = raw_args
        .first()
        .map(|a| a.to_string_lossy().chars().take(64).collect())
        .unwrap_or_default();
    let prefix = format!("{} {op}", layout.name).trim_end().to_string();
    let quiet = may_carry_secrets(&raw_args);
    let lossy: Vec<String> = raw_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let secrets = secrets_of(&lossy);
    let args: Result<Vec<String>, _> = raw_args.iter().map(|a| a.clone().into_string()).collect();
    let mut status = match args {
        Err(_) => DriverStatus::failure(format!(
            "flexwasm driver {}: an argument is not valid UTF-8",
            layout.name
        )),
        Ok(ref args) => match driver_call::parse_argv(&layout, args) {
            Err(status) => status,
            Ok(call) => {
                check_call(&call, args);
                match call.options().map(RawOptions::resolve) {
                    // run_call: options are resolved before the plugin runs.
                    Some(Err(e)) => DriverStatus::failure(format!(
                        "{} {}: the options argument is not valid: {e}",
                        layout.name,
                        call.op()
                    )),
                    _ => plugin_answer(
                        &call,
                        args,
                        data.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
                    ),
                }
            }
        },
    };
    status.quiet_failure = quiet;
    let status = status.sanitized(&secrets, &prefix);

    // Independently: which calls may carry a secret. kubelet sends them to
    // `mount` only, but any options argument with a secret key counts as
    // kubelet's encoder spells it (Go writes `secret` as is; a JSON escape
    // such as `\u0073ecret` is no argv kubelet makes, and is not caught by
    // the raw-bytes rule: see fuzz/README.md).
    let op_is_mount = raw_args.first().is_some_and(|a| a == "mount");
    let options_with_secrets = lossy
        .iter()
        .filter(|a| a.contains(flexwasm::options::SECRET_PREFIX))
        .filter_map(|a| RawOptions::parse(a).ok())
        .any(|o| o.has_secrets());
    let mentions_secret = data.windows(6).any(|w| w.eq_ignore_ascii_case(b"secret"));
    assert_eq!(quiet, op_is_mount || mentions_secret, "the documented rule");
    if options_with_secrets {
        assert!(
            quiet,
            "argv carries a secret but a Failure would exit 1: {lossy:?}"
        );
    }
    let mut all_secrets = SecretSet::new();
    all_secrets.extend(&secrets);
    check_answer(&status, &all_secrets, quiet);
});

/// A parsed call holds only what its op allows (contract page §1).
fn check_call(call: &Call, args: &[String]) {
    assert_eq!(call.op(), args[0]);
    let abs = |p: &std::path::Path| p.to_str().is_some_and(|s| s.starts_with('/'));
    match call {
        Call::Init => assert_eq!(args.len(), 1),
        Call::MountDevice {
            mount_path, device, ..
        } => {
            assert!(abs(mount_path) && !device.is_empty());
        }
        Call::UnmountDevice { mount_path } => assert!(abs(mount_path)),
        Call::Mount { dir, .. } | Call::Unmount { dir } => assert!(abs(dir)),
        Call::Detach { volume, node } => assert!(!volume.is_empty() && !node.is_empty()),
        Call::Attach { node, .. } | Call::IsAttached { node, .. } => assert!(!node.is_empty()),
        Call::ExpandFs {
            device,
            mount_path,
            new_size,
            old_size,
            ..
        } => {
            assert!(!device.is_empty() && abs(mount_path));
            assert_eq!(args[4].parse::<u64>().ok(), Some(*new_size));
            assert_eq!(args[5].parse::<u64>().ok(), Some(*old_size));
        }
        _ => {}
    }
}
