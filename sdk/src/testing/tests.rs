//! The stand-ins, exercised through the typed modules a driver calls.

use super::*;
use crate::{DeviceLocator, Error, config, devices, http, log, loop_images, state};

fn failure(error: Error) -> String {
    match error {
        Error::Failure(message) => message,
        Error::NotSupported => panic!("expected a failure, got NotSupported"),
    }
}

// Issue 9: a native test of code that logged or used state aborted the
// whole test run ("entered unreachable code", then SIGABRT).
#[test]
fn native_code_that_logs_and_uses_state_runs() {
    log::info("attaching pv-1");
    state::set("volume/pv-1", "pv-1.img").unwrap();
    assert_eq!(
        state::get_string("volume/pv-1").unwrap().as_deref(),
        Some("pv-1.img")
    );
    assert_eq!(
        log_lines(),
        [LogLine {
            level: Level::Info,
            message: "attaching pv-1".into()
        }]
    );
}

#[test]
fn log_keeps_lines_in_order_with_their_level() {
    log::debug("one");
    log::warn("two");
    log::error("three");
    let levels: Vec<Level> = log_lines().iter().map(|l| l.level).collect();
    assert_eq!(levels, [Level::Debug, Level::Warn, Level::Error]);
    assert!(logged("two") && !logged("four"));
}

#[test]
fn log_keeps_64_kib_per_call_like_the_host() {
    let line = "x".repeat(1024 - 64); // costs 1 KiB with the per-line overhead
    for _ in 0..70 {
        log::info(&line);
    }
    assert_eq!((log_lines().len(), log_dropped()), (64, 6));
    new_call();
    log::info("next call");
    assert!(logged("next call"));
}

#[test]
fn state_rejects_keys_as_the_host_does() {
    let m = failure(state::set("", "x").unwrap_err());
    assert_eq!(
        m,
        "state store: cannot write \"\": invalid key: state key is empty; keys must be 1 to 256 \
         bytes"
    );
    let long = "k".repeat(257);
    let m = failure(state::get(&long).unwrap_err());
    assert!(m.contains("state key is 257 bytes long"), "{m}");
    assert!(state::set(&"k".repeat(256), "fits").is_ok());
}

#[test]
fn state_lists_deletes_and_compares_and_swaps() {
    state::set("mount/b", "2").unwrap();
    state::set("mount/a", "1").unwrap();
    state::set("other", "3").unwrap();
    assert_eq!(state::list_keys("mount/").unwrap(), ["mount/a", "mount/b"]);
    state::delete("mount/a").unwrap();
    state::delete("mount/a").unwrap(); // absent is fine
    assert!(!state::compare_and_swap("mount/b", Some(b"1"), Some(b"x")).unwrap());
    assert!(state::compare_and_swap("mount/b", Some(b"2"), None).unwrap());
    assert!(state::compare_and_swap("new", None, Some(b"v")).unwrap());
    let counted = state::update("count", |old| {
        let n = old.map_or(0, |v| v[0]);
        Ok(Some(vec![n + 1]))
    });
    assert_eq!(counted.unwrap(), Some(vec![1]));
    assert_eq!(
        state_entries().keys().collect::<Vec<_>>(),
        ["count", "new", "other"]
    );
}

#[test]
fn state_quota_counts_blocks_per_entry_like_the_host() {
    // Each short entry costs one 4 KiB block plus 2 KiB: 682 fit in 4 MiB.
    for i in 0..682 {
        state::set(&format!("volume/{i}"), "x").unwrap();
    }
    let m = failure(state::set("volume/682", "x").unwrap_err());
    assert!(
        m.contains("quota exceeded: storing this value would bring the state store to 4.0 MiB"),
        "{m}"
    );
    assert!(m.contains("683 entries") && m.contains("quota_kib"), "{m}");
    // Rewriting an entry replaces its cost; deleting frees it.
    state::set("volume/0", "y").unwrap();
    state::delete("volume/1").unwrap();
    state::set("volume/682", "x").unwrap();
    // A smaller quota; one value larger than a block costs two.
    reset();
    set_state_quota_kib(12);
    state::set("big", vec![0u8; 4096]).unwrap();
    assert!(state::set("small", "x").is_err());
}

#[test]
fn config_values_are_typed_as_the_operator_wrote_them() {
    set_config("endpoint", "https://array.example.com:8443");
    set_config("port", 8443);
    set_config("thin", true);
    set_config("pools", ["gold", "silver"]);
    set_secret_config("token", "t0ken-value");
    assert_eq!(
        config::require("endpoint").unwrap(),
        "https://array.example.com:8443"
    );
    assert_eq!(config::integer("port").unwrap(), Some(8443));
    assert_eq!(config::boolean("thin").unwrap(), Some(true));
    assert_eq!(config::list("pools").unwrap().unwrap(), ["gold", "silver"]);
    assert_eq!(
        config::require_secret("token").unwrap().expose(),
        "t0ken-value"
    );
    assert_eq!(
        config::keys(),
        ["endpoint", "pools", "port", "thin", "token"]
    );
    assert!(log_lines().is_empty());
    // Reading a secret as plain text warns, as in a plugin.
    config::get("token").unwrap();
    assert!(logged("\"token\" is secret"));
    remove_config("port");
    assert_eq!(config::integer("port").unwrap(), None);
    let m = failure(config::require("region").unwrap_err());
    assert!(m.contains("has no \"region\""), "{m}");
}

#[test]
fn config_files_the_host_cannot_read_fail_the_read() {
    set_config_unreadable("token", "/etc/acme/token: No such file or directory");
    assert_eq!(
        failure(config::secret("token").unwrap_err()),
        "config value \"token\": the host cannot use its file: /etc/acme/token: No such file \
         or directory"
    );
}

#[test]
fn devices_are_found_by_path_link_serial_and_wwn() {
    let mut disk = block_device("/dev/sdb", 10 << 30);
    disk.serial = Some("ARRAY-0042".into());
    disk.wwn = Some("naa.600a0b80".into());
    disk.links = vec!["/dev/disk/by-id/wwn-0x600a0b80".into()];
    add_device(disk.clone());
    assert_eq!(devices::list(), [disk.clone()]);
    assert_eq!(devices::get("/dev/sdb"), Some(disk.clone()));
    assert_eq!(
        devices::get("/dev/disk/by-id/wwn-0x600a0b80"),
        Some(disk.clone())
    );
    assert_eq!(devices::get("/dev/sdc"), None);
    let find = |l: DeviceLocator| devices::find(&l).map(|d| d.path);
    assert_eq!(
        find(DeviceLocator::Serial(" ARRAY-0042\n".into())),
        Some("/dev/sdb".into())
    );
    assert_eq!(
        find(DeviceLocator::Wwn("0x600A0B80".into())),
        Some("/dev/sdb".into())
    );
    assert_eq!(
        find(DeviceLocator::Link("/dev/disk/by-id/wwn-0x600a0b80".into())),
        Some("/dev/sdb".into())
    );
    // As on the host, only links under /dev/disk/ are followed.
    assert_eq!(find(DeviceLocator::Link("/dev/sdb".into())), None);
    assert_eq!(find(DeviceLocator::Serial("ARRAY-0043".into())), None);
    let waited = devices::wait_for(
        &DeviceLocator::Wwn("600a0b80".into()),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(waited, Some(disk));
    remove_device("/dev/sdb");
    assert!(devices::list().is_empty());
}

#[test]
fn loop_images_attach_to_fake_loop_devices_seen_by_devices() {
    assert_eq!(
        loop_images::create_image("a.img", 1 << 30).unwrap(),
        1 << 30
    );
    // An existing image is left as it is.
    assert_eq!(loop_images::create_image("a.img", 5).unwrap(), 1 << 30);
    assert_eq!(loop_images::attach("a.img").unwrap(), "/dev/loop0");
    assert_eq!(loop_images::attach("a.img").unwrap(), "/dev/loop0");
    assert_eq!(
        loop_images::find("a.img").unwrap().as_deref(),
        Some("/dev/loop0")
    );
    let device = devices::find(&DeviceLocator::LoopImage("a.img".into())).unwrap();
    assert_eq!(device.path, "/dev/loop0");
    assert_eq!(
        device.loop_backing_file.as_deref(),
        Some("/var/lib/flexwasm/test~driver/images/a.img")
    );
    assert_eq!(
        devices::find(&DeviceLocator::LoopBackingFile(format!(
            "{LOOP_IMAGE_DIR}/a.img"
        )))
        .map(|d| d.path),
        Some("/dev/loop0".into())
    );
    // Growing never shrinks; refresh needs the image attached.
    assert_eq!(loop_images::grow_image("a.img", 2 << 30).unwrap(), 2 << 30);
    assert_eq!(loop_images::grow_image("a.img", 1).unwrap(), 2 << 30);
    loop_images::refresh("a.img").unwrap();
    let m = failure(loop_images::remove_image("a.img").unwrap_err());
    assert_eq!(
        m,
        "cannot remove loop image \"a.img\": image a.img is attached to /dev/loop0; detach it \
         first"
    );
    loop_images::detach("a.img").unwrap();
    loop_images::detach("a.img").unwrap();
    let m = failure(loop_images::refresh("a.img").unwrap_err());
    assert!(m.ends_with("not found: image a.img is not attached"), "{m}");
    loop_images::remove_image("a.img").unwrap();
    loop_images::remove_image("a.img").unwrap();
    assert_eq!(loop_images::image_size("a.img").unwrap(), None);
    assert!(loop_images().is_empty());
    let m = failure(loop_images::attach("a.img").unwrap_err());
    assert_eq!(
        m,
        "cannot attach loop image \"a.img\": not found: image a.img does not exist"
    );
    assert!(loop_images::grow_image("a.img", 1).is_err());
}

#[test]
fn loop_image_names_and_sizes_follow_the_host_rules() {
    for bad in ["", ".hidden", "-dash", "a/b", "..", "a b", &"x".repeat(129)] {
        let m = failure(loop_images::create_image(bad, 1).unwrap_err());
        assert!(m.contains("invalid image name"), "{bad:?}: {m}");
    }
    assert!(loop_images::create_image("_ok.img-1", 1).is_ok());
    let m = failure(loop_images::create_image("zero", 0).unwrap_err());
    assert!(
        m.ends_with("image size 0 is out of range (1 byte to 16 TiB)"),
        "{m}"
    );
    assert!(loop_images::create_image("huge", (16 << 40) + 1).is_err());
    // The kernel shows every user an attached image's backing file.
    set_secret_config("token", "S3cret-Token");
    let m = failure(loop_images::create_image("vol-s3cret-token.img", 1).unwrap_err());
    assert!(m.contains("image name holds a secret"), "{m}");
}

#[test]
fn loop_limits_bound_images_size_and_attaches() {
    set_loop_limits(LoopLimits {
        max_images: 3,
        max_total_bytes: 3 << 30,
        max_attached: 2,
        max_attaches_per_call: 1,
    });
    loop_images::create_image("a", 1 << 30).unwrap();
    loop_images::create_image("b", 1 << 30).unwrap();
    let m = failure(loop_images::create_image("c", (1 << 30) + 1).unwrap_err());
    assert!(
        m.contains("would total 3.0 GiB") && m.contains("max_total_gib = 3"),
        "{m}"
    );
    assert!(loop_images::grow_image("b", (2 << 30) + 1).is_err());
    loop_images::create_image("c", 1 << 20).unwrap();
    let m = failure(loop_images::create_image("d", 1).unwrap_err());
    assert!(
        m.contains("holds 3 images") && m.contains("max_images = 3"),
        "{m}"
    );

    assert_eq!(loop_images::attach("a").unwrap(), "/dev/loop0");
    let m = failure(loop_images::attach("b").unwrap_err());
    assert!(m.contains("max_attaches_per_call = 1"), "{m}");
    assert!(m.contains("testing::new_call()"), "{m}");
    new_call();
    assert_eq!(loop_images::attach("b").unwrap(), "/dev/loop1");
    new_call();
    let m = failure(loop_images::attach("c").unwrap_err());
    assert!(
        m.contains("2 loop devices are attached") && m.contains("max_attached = 2"),
        "{m}"
    );
    // The lowest free number is reused, as the kernel does.
    loop_images::detach("a").unwrap();
    assert_eq!(loop_images::attach("c").unwrap(), "/dev/loop0");
}

#[test]
fn http_requests_go_to_the_tests_handler() {
    let m = failure(
        http::Request::get("https://array.example.com/v1/x?token=abc")
            .send()
            .unwrap_err(),
    );
    assert!(
        m.starts_with("http is only available inside a plugin"),
        "{m}"
    );
    assert!(
        m.contains("testing::http_handler") && !m.contains("abc"),
        "{m}"
    );

    http_handler(|request| {
        log::debug("handler ran"); // may use the SDK itself
        match request.method() {
            http::Method::Post => Ok(http_response(201, request.body_bytes().unwrap_or_default())),
            _ => Err(Error::failure("connection refused")),
        }
    });
    let response = http::Request::post("https://array.example.com/v1/volumes?x=1")
        .json(r#"{"name":"pv-1"}"#)
        .send()
        .unwrap();
    assert_eq!(
        (response.status, response.text()),
        (201, r#"{"name":"pv-1"}"#.into())
    );
    assert_eq!(response.url, "https://array.example.com/v1/volumes");
    assert!(
        http::Request::get("https://array.example.com/")
            .send()
            .is_err()
    );
    assert!(logged("handler ran"));
    let sent = http_requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1].url(), "https://array.example.com/v1/volumes?x=1");
}

#[test]
fn each_thread_has_its_own_host_and_reset_empties_it() {
    state::set("k", "main").unwrap();
    set_config("endpoint", "https://a");
    std::thread::spawn(|| {
        assert_eq!(state::get("k").unwrap(), None);
        assert!(config::keys().is_empty());
        state::set("k", "other thread").unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(state::get_string("k").unwrap().as_deref(), Some("main"));
    reset();
    assert!(state_entries().is_empty() && config::keys().is_empty());
}
