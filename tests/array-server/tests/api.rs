//! The array server end to end: the real binary on an ephemeral port in a
//! temp dir, driven over TCP. Attach/detach need root (loop devices); those
//! parts are skipped without it, and fail instead when `CI` is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flexwasm_array_server::{ArrayServer, Volume, loopdev, request, serial_for};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_flexwasm-array-server");
const TOKEN: &str = "test-token-7f3a9c";
const MIB: u64 = 1024 * 1024;

fn start() -> (TempDir, ArrayServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ArrayServer::start(BIN, dir.path().join("array"), TOKEN);
    (dir, server)
}

/// Whether loop devices can be used here; without root, skip (or fail
/// under CI, where a skipped privileged test would hide a gap).
fn privileged(test: &str) -> bool {
    if flexwasm_array_server::running_as_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (loop devices) and CI is set"
    );
    // As flexwasm::test_skip::skip (this crate does not depend on the
    // host): named in tests/test.sh's summary.
    eprintln!("SKIPPED the privileged part of {test}: not root");
    if let Some(path) = std::env::var_os("FLEXWASM_SKIP_LOG") {
        use std::io::Write;
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{test} (privileged part): needs root"));
    }
    false
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

fn volume(text: &str) -> Volume {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a volume ({e}): {text:?}"))
}

fn error_of(text: &str) -> String {
    json(text)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {text:?}"))
        .to_string()
}

/// Raw bytes to the server, everything it answers until it closes.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_device_backs(device: &str, image: &Path, size_bytes: u64) {
    assert!(
        device.starts_with("/dev/loop"),
        "device {device} is not a loop device"
    );
    let meta = std::fs::metadata(device).unwrap_or_else(|e| panic!("{device}: {e}"));
    assert!(
        meta.file_type().is_block_device(),
        "{device} is not a block device"
    );
    assert_eq!(loopdev::backing_file(device).as_deref(), Some(image));
    assert_eq!(loopdev::size_bytes(device), Some(size_bytes));
}

#[test]
fn volume_lifecycle() {
    let (dir, mut server) = start();

    // Create, idempotently by name.
    let body = r#"{"name":"pv-data","size_bytes":16777216}"#;
    let (status, text) = server.api("POST", "/api/v1/volumes", Some(body));
    assert_eq!(status, 201, "{text}");
    let created = volume(&text);
    assert!(
        created.id.len() == 12
            && created.id.starts_with("vol-")
            && created.id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "id {}",
        created.id
    );
    assert_eq!(created.name, "pv-data");
    assert_eq!(created.size_bytes, 16 * MIB);
    assert_eq!(
        (created.attached_to.as_deref(), created.device.as_deref()),
        (None, None)
    );
    assert_eq!(created.serial, serial_for(&created.id));
    let image = std::fs::canonicalize(dir.path().join("array/images"))
        .expect("images dir")
        .join(format!("{}.img", created.id));
    assert_eq!(Path::new(&created.backing_file), image);
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 16 * MIB);

    let (status, text) = server.api("POST", "/api/v1/volumes", Some(body));
    assert_eq!(status, 200, "{text}");
    assert_eq!(volume(&text), created);
    let (status, text) = server.api(
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"pv-data","size_bytes":1048576}"#),
    );
    assert_eq!(status, 409, "{text}");
    assert_eq!(error_of(&text), "volume pv-data exists with size 16777216");

    // A second volume; sizes round up to whole sectors.
    let (status, text) = server.api(
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"pv-other","size_bytes":1000000}"#),
    );
    assert_eq!(status, 201, "{text}");
    let other = volume(&text);
    assert_eq!(other.size_bytes, 1_000_448);

    // List, filter, get.
    let (status, text) = server.api("GET", "/api/v1/volumes", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["volumes"].as_array().map(Vec::len), Some(2));
    let (status, text) = server.api("GET", "/api/v1/volumes?name=pv-data", None);
    assert_eq!(status, 200, "{text}");
    let found: Vec<Volume> = serde_json::from_value(json(&text)["volumes"].clone()).expect("list");
    assert_eq!(found, vec![created.clone()]);
    let (status, text) = server.api("GET", "/api/v1/volumes?name=nope", None);
    assert_eq!(
        (status, json(&text)["volumes"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, text) = server.api("GET", &format!("/api/v1/volumes/{}", created.id), None);
    assert_eq!((status, volume(&text)), (200, created.clone()));
    let (status, text) = server.api("GET", "/api/v1/volumes/vol-00000000", None);
    assert_eq!(status, 404, "{text}");
    assert_eq!(error_of(&text), "volume vol-00000000 not found");

    // Resize: grow, same size again, never shrink.
    let resize = format!("/api/v1/volumes/{}/resize", created.id);
    let (status, text) = server.api("POST", &resize, Some(r#"{"size_bytes":33554432}"#));
    assert_eq!(status, 200, "{text}");
    assert_eq!(volume(&text).size_bytes, 32 * MIB);
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 32 * MIB);
    let (status, text) = server.api("POST", &resize, Some(r#"{"size_bytes":33554432}"#));
    assert_eq!((status, volume(&text).size_bytes), (200, 32 * MIB));
    let (status, text) = server.api("POST", &resize, Some(r#"{"size_bytes":1048576}"#));
    assert_eq!(status, 409, "{text}");

    // Restart: volumes survive.
    server.restart();
    let (status, text) = server.api("GET", &format!("/api/v1/volumes/{}", created.id), None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(volume(&text).size_bytes, 32 * MIB);

    let attach = format!("/api/v1/volumes/{}/attach", created.id);
    let detach = format!("/api/v1/volumes/{}/detach", created.id);
    if privileged("volume_lifecycle") {
        // Attach: a real block device backed by the image appears.
        let (status, text) = server.api("POST", &attach, Some(r#"{"node":"node-a"}"#));
        assert_eq!(status, 200, "{text}");
        let attached = volume(&text);
        assert_eq!(attached.attached_to.as_deref(), Some("node-a"));
        let device = attached.device.clone().expect("device");
        assert_device_backs(&device, &image, 32 * MIB);
        assert_eq!(Path::new(&attached.backing_file), image);

        // Idempotent for the same node, refused for another.
        let (status, text) = server.api("POST", &attach, Some(r#"{"node":"node-a"}"#));
        assert_eq!((status, volume(&text)), (200, attached.clone()));
        assert_eq!(loopdev::backed_by(&image), vec![device.clone()]);
        let (status, text) = server.api("POST", &attach, Some(r#"{"node":"node-b"}"#));
        assert_eq!(status, 409, "{text}");
        assert!(
            error_of(&text).contains("attached to node node-a"),
            "{text}"
        );

        // Growing an attached volume grows its device.
        let (status, text) = server.api("POST", &resize, Some(r#"{"size_bytes":67108864}"#));
        assert_eq!(status, 200, "{text}");
        assert_device_backs(&device, &image, 64 * MIB);

        // Attached volumes cannot be deleted.
        let (status, text) = server.api("DELETE", &format!("/api/v1/volumes/{}", created.id), None);
        assert_eq!(status, 409, "{text}");

        // The attachment survives a restart.
        server.restart();
        let (status, text) = server.api("GET", &format!("/api/v1/volumes/{}", created.id), None);
        assert_eq!(status, 200, "{text}");
        let after = volume(&text);
        assert_eq!(after.attached_to.as_deref(), Some("node-a"));
        assert_eq!(after.device.as_deref(), Some(device.as_str()));

        // Detach: only from the node it is attached to; idempotent.
        let (status, text) = server.api("POST", &detach, Some(r#"{"node":"node-b"}"#));
        assert_eq!(status, 409, "{text}");
        let (status, text) = server.api("POST", &detach, Some(r#"{"node":"node-a"}"#));
        assert_eq!(status, 200, "{text}");
        let detached = volume(&text);
        assert_eq!((detached.attached_to, detached.device), (None, None));
        assert!(loopdev::backed_by(&image).is_empty(), "device still bound");
    }
    let (status, text) = server.api("POST", &detach, Some(r#"{"node":"node-a"}"#));
    assert_eq!(status, 200, "{text}");

    // Delete removes record and image; deleting again is 404.
    let (status, text) = server.api("DELETE", &format!("/api/v1/volumes/{}", created.id), None);
    assert_eq!((status, text.as_str()), (204, ""));
    assert!(!image.exists(), "image left behind");
    let (status, _) = server.api("GET", &format!("/api/v1/volumes/{}", created.id), None);
    assert_eq!(status, 404);
    let (status, _) = server.api("DELETE", &format!("/api/v1/volumes/{}", created.id), None);
    assert_eq!(status, 404);
    let (status, text) = server.api("GET", "/api/v1/volumes", None);
    assert_eq!(status, 200);
    let left: Vec<Volume> = serde_json::from_value(json(&text)["volumes"].clone()).expect("list");
    assert_eq!(left, vec![other]);

    let log = server.log();
    assert!(log.contains("POST /api/v1/volumes 201"), "{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}

#[test]
fn auth_is_required() {
    let (_dir, server) = start();
    let url = format!("{}/api/v1/volumes", server.url());
    for token in [None, Some("wrong"), Some("")] {
        let (status, text) = request("GET", &url, token, None);
        assert_eq!(status, 401, "{token:?}: {text}");
        assert_eq!(error_of(&text), "invalid or missing API token");
    }
    // Also before any other check: no route or method is revealed.
    let (status, _) = request("DELETE", &format!("{url}/vol-00000000"), None, None);
    assert_eq!(status, 401);
    let (status, _) = request(
        "GET",
        &format!("{}/api/v1/nothing", server.url()),
        None,
        None,
    );
    assert_eq!(status, 401);
    let reply = raw(
        server.addr,
        format!("GET /api/v1/volumes HTTP/1.1\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 401 "), "{reply}");
    assert!(reply.contains("WWW-Authenticate: Bearer\r\n"), "{reply}");
    // The scheme is case-insensitive.
    let reply = raw(
        server.addr,
        format!("GET /api/v1/volumes HTTP/1.1\r\nauthorization: bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        !server.log().contains(TOKEN),
        "the token leaked into the log"
    );
}

#[test]
fn bad_requests_are_400_not_crashes() {
    let (_dir, server) = start();
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/api/v1/volumes",
            Some("{"),
            400,
            "invalid JSON body",
        ),
        ("POST", "/api/v1/volumes", None, 400, "invalid JSON body"),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a"}"#),
            400,
            "missing field `size_bytes`",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a","size_bytes":-1}"#),
            400,
            "invalid JSON body",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a","size_bytes":"1"}"#),
            400,
            "invalid JSON body",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a","size":1}"#),
            400,
            "unknown field `size`",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a","size_bytes":0}"#),
            400,
            "size_bytes must be",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a","size_bytes":18446744073709551615}"#),
            400,
            "size_bytes must be",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"","size_bytes":512}"#),
            400,
            "name must be",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some(r#"{"name":"a\nb","size_bytes":512}"#),
            400,
            "control",
        ),
        (
            "POST",
            "/api/v1/volumes",
            Some("[1,2]"),
            400,
            "invalid JSON body",
        ),
        ("PUT", "/api/v1/volumes", None, 405, "method not allowed"),
        (
            "POST",
            "/api/v1/volumes/vol-00000000",
            None,
            405,
            "method not allowed",
        ),
        (
            "GET",
            "/api/v1/volumes/vol-00000000/attach",
            None,
            405,
            "method not allowed",
        ),
        (
            "POST",
            "/api/v1/volumes/vol-00000000/attach",
            Some(r#"{"node":"n"}"#),
            404,
            "not found",
        ),
        (
            "POST",
            "/api/v1/volumes/vol-00000000/attach",
            Some(r#"{}"#),
            400,
            "missing field `node`",
        ),
        (
            "POST",
            "/api/v1/volumes/vol-00000000/detach",
            Some(r#"{"node":""}"#),
            400,
            "node must be",
        ),
        (
            "POST",
            "/api/v1/volumes/vol-00000000/resize",
            Some(r#"{"size_bytes":512}"#),
            404,
            "not found",
        ),
        ("GET", "/api/v1/volumes/a/b/c", None, 404, "no route"),
        (
            "GET",
            "/api/v1/volumes?name=%zz",
            None,
            400,
            "percent-encoding",
        ),
        ("GET", "/nowhere", None, 404, "no route for /nowhere"),
    ];
    for (method, path, body, want_status, want_error) in cases {
        let (status, text) = server.api(method, path, *body);
        assert_eq!(status, *want_status, "{method} {path} {body:?}: {text}");
        let error = error_of(&text);
        assert!(
            error.contains(want_error),
            "{method} {path} {body:?}: {error}"
        );
    }
    let (status, _) = server.api("GET", "/healthz", None);
    assert_eq!(status, 200, "the server survived");
}

#[test]
fn test_knobs() {
    let (_dir, server) = start();
    // No token needed for any of them.
    let (status, text) = request("GET", &format!("{}/healthz", server.url()), None, None);
    assert_eq!((status, text.as_str()), (200, "ok\n"));

    let started = Instant::now();
    let (status, text) = request(
        "GET",
        &format!("{}/test/slow?ms=300", server.url()),
        None,
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (status, text) = request(
        "GET",
        &format!("{}/test/big?bytes=3000000", server.url()),
        None,
        None,
    );
    assert_eq!((status, text.len()), (200, 3_000_000));
    let (status, text) = request(
        "GET",
        &format!("{}/test/big?bytes=0", server.url()),
        None,
        None,
    );
    assert_eq!((status, text.len()), (200, 0));

    let reply = raw(
        server.addr,
        b"GET /test/redirect?to=http%3A%2F%2F169.254.169.254%2Flatest HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 302 "), "{reply}");
    assert!(
        reply.contains("\r\nLocation: http://169.254.169.254/latest\r\n"),
        "{reply}"
    );

    for bad in [
        "/test/slow",
        "/test/slow?ms=abc",
        "/test/slow?ms=99999999999",
        "/test/big?bytes=-1",
        "/test/redirect",
        "/test/redirect?to=http://x/%0d%0aSet-Cookie:%20a",
    ] {
        let (status, text) = request("GET", &format!("{}{bad}", server.url()), None, None);
        assert_eq!(status, 400, "{bad}: {text}");
    }
    let (status, _) = request(
        "POST",
        &format!("{}/healthz", server.url()),
        None,
        Some("{}"),
    );
    assert_eq!(status, 405);
}

#[test]
fn http_framing() {
    let (_dir, server) = start();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    // Keep-alive: two requests on one connection, the second closes it.
    let reply = raw(
        server.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/volumes HTTP/1.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(reply.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{reply}");
    assert!(
        reply.contains("Connection: keep-alive\r\n") && reply.ends_with("{\"volumes\":[]}\n"),
        "{reply}"
    );

    // HTTP/1.0 closes by default.
    let reply = raw(server.addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 200 ") && reply.contains("Connection: close\r\n"),
        "{reply}"
    );

    // Chunked bodies (what hyper sends for a streamed body), with Expect.
    let body = r#"{"name":"chunky","size_bytes":4096}"#;
    let (a, b) = body.split_at(10);
    let reply = raw(
        server.addr,
        format!(
            "POST /api/v1/volumes HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 "),
        "{reply}"
    );

    // Too large: 413 without reading the body; a huge head: 431.
    let reply = raw(
        server.addr,
        format!("POST /api/v1/volumes HTTP/1.1\r\n{auth}Content-Length: 10000000\r\n\r\n")
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(reply.contains("request body too large"), "{reply}");
    let mut huge = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend(b"\r\n\r\n");
    let reply = raw(server.addr, &huge);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    // Garbage gets a 400, and the server keeps serving.
    let reply = raw(server.addr, b"\x00\x01 nonsense\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let (status, _) = server.api("GET", "/healthz", None);
    assert_eq!(status, 200);
}

#[test]
fn concurrent_clients() {
    let (_dir, server) = start();
    let url = server.url();
    // A slow request does not hold up the others (a thread per connection).
    let slow = {
        let url = url.clone();
        std::thread::spawn(move || request("GET", &format!("{url}/test/slow?ms=2000"), None, None))
    };
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = format!(r#"{{"name":"pv-{}","size_bytes":1048576}}"#, i % 4);
                request(
                    "POST",
                    &format!("{url}/api/v1/volumes"),
                    Some(TOKEN),
                    Some(&body),
                )
            })
        })
        .collect();
    let mut created = 0;
    for worker in workers {
        let (status, text) = worker.join().expect("worker");
        assert!(status == 200 || status == 201, "{status}: {text}");
        created += usize::from(status == 201);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "blocked by the slow request"
    );
    // Idempotent by name under concurrency: four names, four volumes.
    assert_eq!(created, 4);
    let (_, text) = server.api("GET", "/api/v1/volumes", None);
    assert_eq!(json(&text)["volumes"].as_array().map(Vec::len), Some(4));
    assert_eq!(slow.join().expect("slow").0, 200);
}

#[test]
fn restart_reconciles_attachments() {
    if !privileged("restart_reconciles_attachments") {
        return;
    }
    let (dir, mut server) = start();
    let (status, text) = server.api(
        "POST",
        "/api/v1/volumes",
        Some(r#"{"name":"pv-r","size_bytes":8388608}"#),
    );
    assert_eq!(status, 201, "{text}");
    let id = volume(&text).id;
    let (status, text) = server.api(
        "POST",
        &format!("/api/v1/volumes/{id}/attach"),
        Some(r#"{"node":"node-a"}"#),
    );
    assert_eq!(status, 200, "{text}");
    let device = volume(&text).device.expect("device");

    // The device goes away while the server is down (node reboot, an
    // operator's losetup -d): the restarted server says so.
    server.stop();
    let out = Command::new("losetup")
        .args(["-d", &device])
        .output()
        .expect("losetup");
    assert!(out.status.success(), "{out:?}");
    server.restart();
    let (status, text) = server.api("GET", &format!("/api/v1/volumes/{id}"), None);
    assert_eq!(status, 200, "{text}");
    let after = volume(&text);
    assert_eq!((after.attached_to, after.device), (None, None));
    assert!(server.log().contains("marked detached"), "{}", server.log());

    // Attach again, and let Drop clean up: no loop device may survive it.
    let (status, text) = server.api(
        "POST",
        &format!("/api/v1/volumes/{id}/attach"),
        Some(r#"{"node":"node-a"}"#),
    );
    assert_eq!(status, 200, "{text}");
    assert!(!loopdev::backed_under(dir.path()).is_empty());
    drop(server);
    assert_eq!(
        loopdev::backed_under(dir.path()),
        vec![],
        "loop devices left behind"
    );
}

#[test]
fn stop_and_stdin_eof_end_the_server() {
    let (dir, mut server) = start();
    assert!(server.is_running());
    server.stop();
    assert!(!server.is_running());
    // Stopping twice is fine; so is dropping a stopped server.
    server.stop();

    // A test process that dies closes the server's stdin: it exits too.
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--exit-on-stdin-eof",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("orphan"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "exited early"
    );
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "still running after stdin EOF");
        std::thread::sleep(Duration::from_millis(10));
    }
}
