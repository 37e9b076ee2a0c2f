//! Storage backends over HTTP: the rest-array reference plugin against a
//! real local array server (tests/array-server), driven exactly as kubelet
//! does; the host's outbound-HTTP refusals, seen through the http-probe
//! test plugin; and secrets that must never leave the call.
//!
//! Privileged tests (loop devices, mounts) run as root in a private mount
//! namespace; the others need no privilege. The array server's Drop
//! detaches the loop devices of its images, the Sandbox's Drop its own.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flexwasm_array_server::ArrayServer;
use serde_json::Value;
use support::*;

const NODE: &str = "node-1";
const DRIVER: &str = "rest-array";
const PROBE: &str = "http-probe";

fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Start an array server with its data under the sandbox.
fn start_server(sb: &Sandbox, token: &str) -> ArrayServer {
    ArrayServer::start(array_server_bin(), sb.root.path().join("array"), token)
}

/// The array server's image dir, as the kernel names loop backing files.
fn images_dir(server: &ArrayServer) -> PathBuf {
    let dir = server.data_dir.join("images");
    std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("canonicalize {}: {e}", dir.display()))
}

/// The grant an operator gives rest-array for `server`, with `token` as
/// the `[config] token` value (TOML, e.g. `{ value = "T", secret = true }`).
/// The token is the operator's: kubelet passes a volume's secret only to
/// `mount`, and rest-array talks to the array on every other op.
fn rest_array_grant(server: &ArrayServer, token: &str) -> String {
    format!(
        r#"[limits]
deadline_seconds = 60
wait_for_attach_deadline_seconds = 90

[state]
quota_kib = 2048

[devices]
claim = ["loop-backing-dir:{images}"]

[mount]
format = ["xfs", "ext4"]
block = ["xfs", "ext4"]
options = ["noatime", "discard"]

[http]
allow = ["{url}"]
allow_loopback = true

[config]
endpoint = "{url}"
token = {token}
defaultMountOpt = "noatime,discard"
"#,
        images = images_dir(server).display(),
        url = server.url(),
    )
}

fn secret_token(token: &str) -> String {
    format!("{{ value = \"{token}\", secret = true }}")
}

/// A rest-array PV: xfs, `size` its only option.
fn volume<'a>(name: &'a str, size: &'a str) -> VolumeSpec<'a> {
    VolumeSpec::new(name, "xfs", &[("size", size)])
}

/// Every `http` entry of every call-log line for `op`.
fn http_entries(sb: &Sandbox, driver: &str, op: &str) -> Vec<Value> {
    sb.log_lines(driver)
        .iter()
        .filter(|l| l["op"] == op)
        .flat_map(|l| l["http"].as_array().cloned().unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The full kubelet sequence against the array.

#[test]
fn rest_array_full_kubelet_sequence() {
    if !privileged("rest_array_full_kubelet_sequence") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    let token = "T0ken-full-sequence-4a7c";
    let mut server = start_server(&sb, token);
    let wasm = rest_array_wasm();
    sb.install_with_grant(
        DRIVER,
        &wasm,
        &rest_array_grant(&server, &secret_token(token)),
    );
    let vol = "pv-backend-rest";
    // xfs: ext4's online grow needs CAP_SYS_RESOURCE, which this sandbox
    // drops even for root.
    let volume = volume(vol, "320Mi");
    let opts = |op| kubelet_options(op, &volume, None);

    let init = sb.call_twice(DRIVER, &["init"]);
    init.assert_success();
    assert_eq!(init.json["capabilities"]["attach"], true, "{}", init.stdout);

    let name = sb.call_twice(DRIVER, &["getvolumename", &opts(Op::GetVolumeName)]);
    name.assert_success();
    assert_eq!(name.json["volumeName"], vol);

    let attach = sb.call_twice(DRIVER, &["attach", &opts(Op::Attach), NODE]);
    attach.assert_success();
    let attached_dev = attach.json["device"].as_str().expect("device").to_string();
    assert!(attached_dev.starts_with("/dev/loop"), "{attached_dev}");
    assert_eq!(
        loop_devices_under(&server.data_dir).len(),
        1,
        "attach twice must attach once"
    );
    let (status, body) = server.api("GET", &format!("/api/v1/volumes?name={vol}"), None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("\"attached_to\":\"{NODE}\"")),
        "{body}"
    );

    let is = sb.call_twice(DRIVER, &["isattached", &opts(Op::IsAttached), NODE]);
    is.assert_success();
    assert_eq!(is.json["attached"], true);

    let wait = sb.call_twice(
        DRIVER,
        &["waitforattach", &attached_dev, &opts(Op::WaitForAttach)],
    );
    wait.assert_success();
    let dev = wait.json["device"].as_str().expect("device").to_string();
    assert_eq!(dev, attached_dev);

    let dmp = sb.device_mount_path(DRIVER, vol);
    let dmp_s = dmp.to_str().unwrap();
    sb.call_twice(
        DRIVER,
        &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
    )
    .assert_success();
    assert!(is_mounted(&dmp));
    assert_eq!(probe_fs_type(&dev).as_deref(), Some("xfs"));
    std::fs::write(dmp.join("hello.txt"), "kept on the array").unwrap();

    // mount (with the pod's keys, as only mount gets them): rest-array
    // leaves it to the host, which binds the device mount into the pod dir.
    let pod_dir = sb.pod_volume_dir("uid-rest", DRIVER, vol);
    let pod_s = pod_dir.to_str().unwrap();
    let mount_opts = kubelet_options(Op::Mount, &volume, Some(&PodMount::new("uid-rest")));
    sb.call_twice(DRIVER, &["mount", pod_s, &mount_opts])
        .assert_success();
    assert_eq!(read_file(&pod_dir.join("hello.txt")), "kept on the array");
    sb.call_twice(DRIVER, &["unmount", pod_s]).assert_success();
    assert!(!is_mounted(&pod_dir));

    sb.call_twice(DRIVER, &["unmountdevice", dmp_s])
        .assert_success();
    assert!(!is_mounted(&dmp));
    assert!(!dmp.join("hello.txt").exists());

    sb.call_twice(
        DRIVER,
        &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
    )
    .assert_success();
    assert_eq!(read_file(&dmp.join("hello.txt")), "kept on the array");

    let before = df_size(&dmp);
    sb.expand_twice(DRIVER, &volume, &dev, dmp_s, 640 << 20, 320 << 20);
    let after = df_size(&dmp);
    assert!(
        after > before + (250 << 20),
        "df size {before} → {after}: filesystem did not grow"
    );
    assert_eq!(read_file(&dmp.join("hello.txt")), "kept on the array");

    sb.call_twice(DRIVER, &["unmountdevice", dmp_s])
        .assert_success();
    assert!(!is_mounted(&dmp));

    // The array restarts (on a new port, so the operator re-points the
    // grant); every driver call is a fresh process anyway. detach gets a
    // name and no options: the plugin finds the volume via its state.
    server.restart();
    sb.install_with_grant(
        DRIVER,
        &wasm,
        &rest_array_grant(&server, &secret_token(token)),
    );
    sb.call_twice(DRIVER, &["detach", vol, NODE])
        .assert_success();
    assert!(
        loop_devices_under(&server.data_dir).is_empty(),
        "detach must detach the array's loop device"
    );
    let is = sb.call_twice(DRIVER, &["isattached", &opts(Op::IsAttached), NODE]);
    is.assert_success();
    assert_eq!(is.json["attached"], false);

    // The call log shows every request the plugin sent, with its status.
    for op in [
        "attach",
        "isattached",
        "waitforattach",
        "expandvolume",
        "detach",
    ] {
        let http = http_entries(&sb, DRIVER, op);
        assert!(!http.is_empty(), "{op}: no http entries in the call log");
        for h in &http {
            assert!(
                h["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s)),
                "{op}: http entry without a 2xx status: {h}"
            );
            assert!(h["denied"].is_null(), "{op}: {h}");
        }
    }
    // Detach used the id recorded in state (GET/POST on /volumes/<id>).
    let detach = http_entries(&sb, DRIVER, "detach");
    assert!(
        detach
            .iter()
            .any(|h| h["url"].as_str().unwrap_or("").contains("/detach")),
        "{detach:?}"
    );
    let log = sb.raw_log_lines(DRIVER).join("\n");
    assert!(!log.contains(token), "the token is in the call log");
}

// ---------------------------------------------------------------------------
// 2. What the host refuses, through the http-probe plugin.

/// Install the probe with `grant` and GET `url` (with `extra` options):
/// `getvolumename` of a volume whose own options are `url` and `extra`.
fn probe(sb: &Sandbox, grant: &str, url: &str, extra: &[(&str, &str)]) -> (Answer, Duration) {
    sb.install_with_grant(PROBE, &probe_wasm(), grant);
    let mut options = vec![("url", url)];
    options.extend_from_slice(extra);
    let volume = VolumeSpec::new("pv-probe", "", &options);
    let opts = kubelet_options(Op::GetVolumeName, &volume, None);
    let started = Instant::now();
    let answer = sb.call(PROBE, &["getvolumename", &opts]);
    (answer, started.elapsed())
}

/// The call's only http entry that the host denied; it must say why.
#[track_caller]
fn denied_entry(sb: &Sandbox, reason_part: &str) -> Value {
    let http = http_entries(sb, PROBE, "getvolumename");
    let denied: Vec<&Value> = http.iter().filter(|h| !h["denied"].is_null()).collect();
    assert_eq!(denied.len(), 1, "one denied request expected: {http:?}");
    let reason = denied[0]["denied"].as_str().unwrap_or("");
    assert!(
        reason.contains(reason_part),
        "denial reason {reason:?} does not mention {reason_part:?}"
    );
    denied[0].clone()
}

#[track_caller]
fn assert_refused(answer: &Answer, parts: &[&str]) {
    answer.assert_failure("outbound HTTP refused by the host");
    for p in parts {
        assert!(
            answer.message().contains(p),
            "message {:?} does not mention {p:?}",
            answer.message()
        );
    }
}

#[test]
fn http_host_not_on_the_allowlist_is_refused() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "probe-token");
    // Loopback is allowed, but only a different port.
    let grant = "[http]\nallow = [\"http://127.0.0.1:1\"]\nallow_loopback = true\n";
    let url = format!("{}/healthz", server.url());
    let (answer, _) = probe(&sb, grant, &url, &[]);
    assert_refused(
        &answer,
        &["not in this driver's [http] allow list", &server.url()],
    );
    let entry = denied_entry(&sb, "allow list");
    assert!(
        entry["status"].is_null() && entry["address"].is_null(),
        "{entry}"
    );
    assert!(
        !server.log().contains("/healthz"),
        "the request reached the server"
    );
}

#[test]
fn http_allowed_name_resolving_to_loopback_is_refused() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "probe-token");
    let port = server.addr.port();
    let grant = format!("[http]\nallow = [\"http://localhost:{port}\"]\nallow_loopback = false\n");
    let url = format!("http://localhost:{port}/healthz");
    let (answer, _) = probe(&sb, &grant, &url, &[]);
    assert_refused(&answer, &["localhost", "loopback"]);
    denied_entry(&sb, "loopback");
    assert!(
        !server.log().contains("/healthz"),
        "the request reached the server"
    );
}

#[test]
fn http_to_the_nodes_own_address_is_refused_like_loopback() {
    // A routable address of this node: it reaches the same services as
    // loopback (kubelet's API, anything bound to 0.0.0.0).
    let own = nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter_map(|a| a.address)
        .filter_map(|a| a.as_sockaddr_in().map(|v4| v4.ip()))
        .find(|ip| !ip.is_loopback() && !ip.is_link_local())
        .expect("this node has a routable IPv4 address");
    let sb = Sandbox::new();
    let grant = format!("[http]\nallow = [\"http://{own}:10250\"]\nallow_loopback = false\n");
    let (answer, _) = probe(&sb, &grant, &format!("http://{own}:10250/pods"), &[]);
    assert_refused(&answer, &["this node's own addresses", "allow_loopback"]);
    let entry = denied_entry(&sb, "this node's own addresses");
    assert!(entry["address"].is_null(), "it connected: {entry}");
}

#[test]
fn http_cloud_metadata_is_refused_before_connecting() {
    let sb = Sandbox::new();
    // Link-local is granted; the metadata service still is not.
    let grant = "[http]\nallow = [\"http://169.254.169.254\"]\nallow_link_local = true\n";
    let (answer, wall) = probe(
        &sb,
        grant,
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        &[("timeout_ms", "20000")],
    );
    assert_refused(&answer, &["169.254.169.254", "metadata"]);
    let entry = denied_entry(&sb, "metadata");
    assert!(
        entry["address"].is_null(),
        "no connection expected: {entry}"
    );
    // Refused before connecting: no network needed, no connect timeout.
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}

#[test]
fn http_redirect_to_a_denied_host_is_refused() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "probe-token");
    let grant = format!(
        "[http]\nallow = [\"{}\"]\nallow_loopback = true\n",
        server.url()
    );
    let url = format!("{}/test/redirect?to=http://evil.invalid/", server.url());
    let (answer, _) = probe(&sb, &grant, &url, &[("follow", "1")]);
    assert_refused(&answer, &["evil.invalid", "allow list"]);
    let http = http_entries(&sb, PROBE, "getvolumename");
    assert_eq!(http.len(), 2, "{http:?}");
    assert_eq!(http[0]["status"], 302, "{http:?}");
    assert!(http[0]["denied"].is_null(), "{http:?}");
    let entry = denied_entry(&sb, "evil.invalid");
    assert!(entry["address"].is_null(), "{entry}");
}

#[test]
fn http_response_over_the_cap_is_refused() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "probe-token");
    let grant = format!(
        "[http]\nallow = [\"{}\"]\nallow_loopback = true\nmax_response_kib = 64\n",
        server.url()
    );
    let url = format!("{}/test/big?bytes=1000000", server.url());
    let (answer, _) = probe(&sb, &grant, &url, &[]);
    assert_refused(&answer, &["1000000 bytes", "max_response_kib (64 KiB)"]);
    denied_entry(&sb, "max_response_kib");
}

#[test]
fn http_slow_server_ends_at_the_deadline() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "probe-token");
    let grant = format!(
        "[limits]\ndeadline_seconds = 2\n\n[http]\nallow = [\"{}\"]\nallow_loopback = true\n",
        server.url()
    );
    let url = format!("{}/test/slow?ms=10000", server.url());
    let (answer, wall) = probe(&sb, &grant, &url, &[]);
    assert_eq!(answer.status(), "Failure", "{}", answer.stdout);
    assert!(
        wall < Duration::from_millis(3500),
        "the 2 s deadline took {wall:?}"
    );
    let message = answer.message();
    assert!(
        message.contains("deadline")
            || message.contains("timed out")
            || message.contains("timeout")
            || message.contains("did not answer in time"),
        "message does not say the call ran out of time: {message:?}"
    );
    // The request that ran out of time is in the call log, with why.
    let http = http_entries(&sb, PROBE, "getvolumename");
    assert_eq!(
        http.len(),
        1,
        "the slow request is not in the call log: {http:?}"
    );
    // Why it ended must be visible there too (regression: when the
    // connection task's deadline fired first, the entry said "DispatchGone"
    // and the answer "HTTP protocol error").
    let why = format!("{} {}", http[0]["denied"], http[0]["error"]).to_lowercase();
    assert!(
        why.contains("deadline") || why.contains("timeout"),
        "the call log does not say the request ran out of time: {http:?}"
    );
}

// TLS: a vendor's private CA, trusted through the grant's `ca_bundle`.

/// An HTTPS server on 127.0.0.1 whose certificate, for `names`, is signed
/// by a fresh private CA. It answers every request `200 tls-ok`.
struct TlsServer {
    port: u16,
    ca_pem: String,
    /// Requests that got through the handshake.
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Handshakes that failed, with rustls's reason.
    refused: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TlsServer {
    fn start(names: &[&str]) -> TlsServer {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "flexwasm test private CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(names)
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
                    .expect("server key DER"),
            )
            .expect("server TLS config");
        let config = Arc::new(config);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (req, refs) = (requests.clone(), refused.clone());
        // Lives until the test process ends.
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, req, refs) = (config.clone(), req.clone(), refs.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                    let conn = rustls::ServerConnection::new(config).expect("server connection");
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                            Err(e) => {
                                refs.lock().unwrap().push(e.to_string());
                                return;
                            }
                        }
                    }
                    req.fetch_add(1, Ordering::SeqCst);
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntls-ok",
                    );
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsServer {
            port,
            ca_pem: ca.pem(),
            requests,
            refused,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

/// The server's CA as a bundle file an operator would install: 0644,
/// whatever the umask.
fn write_ca_bundle(sb: &Sandbox, server: &TlsServer) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bundle = sb.root.path().join("acme-ca.pem");
    std::fs::write(&bundle, &server.ca_pem).expect("write ca bundle");
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    bundle
}

/// The probe's grant for `https://localhost:<port>`, with `ca_bundle` if given.
fn tls_grant(port: u16, ca_bundle: Option<&Path>) -> String {
    let mut grant =
        format!("[http]\nallow = [\"https://localhost:{port}\"]\nallow_loopback = true\n");
    if let Some(path) = ca_bundle {
        grant.push_str(&format!("ca_bundle = \"{}\"\n", path.display()));
    }
    grant
}

#[test]
fn http_tls_with_a_private_ca_in_ca_bundle_is_trusted() {
    let sb = Sandbox::new();
    let server = TlsServer::start(&["localhost"]);
    let bundle = write_ca_bundle(&sb, &server);
    let url = format!("https://localhost:{}/api/v1/healthz", server.port);
    let (answer, _) = probe(&sb, &tls_grant(server.port, Some(&bundle)), &url, &[]);
    answer.assert_success();
    assert_eq!(answer.json["volumeName"], "200 6", "{}", answer.json);
    assert_eq!(server.requests(), 1);
    assert!(server.refused().is_empty(), "{:?}", server.refused());
    let http = http_entries(&sb, PROBE, "getvolumename");
    assert_eq!(http.len(), 1, "{http:?}");
    assert_eq!(http[0]["status"], 200, "{}", http[0]);
    assert_eq!(http[0]["url"], url.as_str(), "{}", http[0]);
}

#[test]
fn http_tls_with_an_unknown_ca_is_refused() {
    let sb = Sandbox::new();
    let server = TlsServer::start(&["localhost"]);
    let url = format!("https://localhost:{}/api/v1/healthz", server.port);
    let (answer, _) = probe(&sb, &tls_grant(server.port, None), &url, &[]);
    answer.assert_failure("TLS");
    assert!(
        answer.message().contains("UnknownIssuer") || answer.message().contains("unknown issuer"),
        "message does not say the issuer is unknown: {:?}",
        answer.message()
    );
    assert_eq!(
        server.requests(),
        0,
        "a request went over an untrusted connection"
    );
    let http = http_entries(&sb, PROBE, "getvolumename");
    assert_eq!(http.len(), 1, "{http:?}");
    assert!(http[0]["status"].is_null(), "{}", http[0]);
}

#[test]
fn http_tls_certificate_for_another_name_is_refused() {
    let sb = Sandbox::new();
    // Signed by the trusted CA, but for a different host.
    let server = TlsServer::start(&["array.example"]);
    let bundle = write_ca_bundle(&sb, &server);
    let url = format!("https://localhost:{}/api/v1/healthz", server.port);
    let (answer, _) = probe(&sb, &tls_grant(server.port, Some(&bundle)), &url, &[]);
    answer.assert_failure("TLS");
    assert!(
        answer.message().contains("NotValidForName") || answer.message().contains("not valid for"),
        "message does not say the certificate is for another name: {:?}",
        answer.message()
    );
    assert_eq!(server.requests(), 0, "a request went to the wrong server");
}

#[test]
fn http_unreadable_ca_bundle_is_a_clear_failure() {
    let sb = Sandbox::new();
    let server = TlsServer::start(&["localhost"]);
    let bundle = sb.root.path().join("not-a-ca.pem");
    std::fs::write(&bundle, "this is not PEM\n").expect("write bundle");
    let url = format!("https://localhost:{}/", server.port);
    let (answer, _) = probe(&sb, &tls_grant(server.port, Some(&bundle)), &url, &[]);
    answer.assert_failure("ca_bundle");
    assert!(
        answer.message().contains(&bundle.display().to_string()),
        "message does not name the bundle: {:?}",
        answer.message()
    );
    assert_eq!(server.requests(), 0);
}

#[test]
fn http_ca_bundle_others_can_change_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    if !privileged("http_ca_bundle_others_can_change_is_not_trusted") {
        return;
    }
    let sb = Sandbox::new();
    let server = TlsServer::start(&["localhost"]);
    let bundle = sb.root.path().join("acme-ca.pem");
    std::fs::write(&bundle, &server.ca_pem).expect("write ca bundle");
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let url = format!("https://localhost:{}/", server.port);
    let (answer, _) = probe(&sb, &tls_grant(server.port, Some(&bundle)), &url, &[]);
    answer.assert_failure("ca_bundle is not trusted");
    assert!(
        answer
            .message()
            .contains("is writable by anyone (mode 0666)"),
        "{}",
        answer.message()
    );
    assert_eq!(server.requests(), 0);
}

#[test]
fn rest_array_invalid_token_is_a_clear_failure() {
    let sb = Sandbox::new();
    let server = start_server(&sb, "the-right-token");
    sb.install_with_grant(
        DRIVER,
        &rest_array_wasm(),
        &rest_array_grant(&server, &secret_token("a-wrong-token")),
    );
    let opts = kubelet_options(Op::Attach, &volume("pv-bad-token", "64Mi"), None);
    let answer = sb.call(DRIVER, &["attach", &opts, NODE]);
    answer.assert_failure("401");
    assert!(
        answer.message().to_lowercase().contains("token"),
        "message does not mention the token: {:?}",
        answer.message()
    );
    assert!(!answer.stdout.contains("a-wrong-token"));
    let http = http_entries(&sb, DRIVER, "attach");
    assert!(
        http.iter().any(|h| h["status"] == 401),
        "no 401 in the call log: {http:?}"
    );
    assert!(loop_devices_under(&server.data_dir).is_empty());
}

// ---------------------------------------------------------------------------
// 3. Secrets never leave the call.

#[test]
fn secrets_never_reach_logs_or_answers() {
    use base64::Engine;
    if !privileged("secrets_never_reach_logs_or_answers") {
        return;
    }
    private_mount_namespace();
    let sb = Sandbox::new();
    // The operator's API token, in the grant's [config]: rest-array talks
    // to the array with it on every call, none of which carries a secret.
    let token = "Sekr1t-Tok3n-b64-9f2e";
    // The volume's own secret (its secretRef): kubelet passes it to mount,
    // and to no other call.
    let volume_secret = "V0lume-Sekr1t-mount-only-5d1a";
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let server = start_server(&sb, token);
    sb.install_with_grant(
        DRIVER,
        &rest_array_wasm(),
        &rest_array_grant(&server, &secret_token(token)),
    );
    let vol = "pv-secret";
    // xfs needs at least 300 MB.
    let volume = volume(vol, "320Mi");
    let opts = |op| kubelet_options(op, &volume, None);
    let pod = PodMount {
        secret: vec![("password", volume_secret)],
        ..PodMount::new("uid-secret")
    };
    let mount_opts = kubelet_options(Op::Mount, &volume, Some(&pod));
    assert!(mount_opts.contains(&b64(volume_secret)), "{mount_opts}");
    let mut answers = Vec::new();

    let attach = sb.call(DRIVER, &["attach", &opts(Op::Attach), NODE]);
    attach.assert_success();
    let dev = attach.json["device"].as_str().expect("device").to_string();
    answers.push(attach);
    let is = sb.call(DRIVER, &["isattached", &opts(Op::IsAttached), NODE]);
    is.assert_success();
    assert_eq!(is.json["attached"], true);
    answers.push(is);
    let wait = sb.call(DRIVER, &["waitforattach", &dev, &opts(Op::WaitForAttach)]);
    wait.assert_success();
    answers.push(wait);
    let dmp = sb.device_mount_path(DRIVER, vol);
    let dmp_s = dmp.to_str().unwrap();
    let md = sb.call(
        DRIVER,
        &["mountdevice", dmp_s, &dev, &opts(Op::MountDevice)],
    );
    md.assert_success();
    answers.push(md);
    std::fs::write(dmp.join("data"), "on the array").unwrap();

    // mount, the one call with the secret: rest-array leaves it to the
    // host, which binds the device mount into the pod dir.
    let pod_dir = sb.pod_volume_dir("uid-secret", DRIVER, vol);
    let pod_s = pod_dir.to_str().unwrap();
    let mount = sb.call(DRIVER, &["mount", pod_s, &mount_opts]);
    mount.assert_success();
    assert_eq!(read_file(&pod_dir.join("data")), "on the array");
    answers.push(mount);
    let unmount = sb.call(DRIVER, &["unmount", pod_s]);
    unmount.assert_success();
    assert!(!is_mounted(&pod_dir));
    answers.push(unmount);

    // Failures of the secret-bearing call exit 0 (kubelet logs the whole
    // argv of a call that exits non-zero): a pod dir that is gone…
    let gone = sb
        .kubelet_root
        .join("pods/uid-gone/volumes/flexwasm~rest-array")
        .join(vol);
    let gone_pod = PodMount {
        secret: vec![("password", volume_secret)],
        ..PodMount::new("uid-gone")
    };
    let bad = sb.call(
        DRIVER,
        &[
            "mount",
            gone.to_str().unwrap(),
            &kubelet_options(Op::Mount, &volume, Some(&gone_pod)),
        ],
    );
    bad.assert_failure("does not exist");
    assert_eq!(bad.code, 0, "a failing mount must exit 0");
    answers.push(bad);
    // …and, after unmountdevice, a device mount the host cannot bind.
    let umd = sb.call(DRIVER, &["unmountdevice", dmp_s]);
    umd.assert_success();
    answers.push(umd);
    let bad = sb.call(DRIVER, &["mount", pod_s, &mount_opts]);
    bad.assert_failure("mountdevice mounted nothing");
    assert_eq!(bad.code, 0, "a failing mount must exit 0");
    assert!(!is_mounted(&pod_dir));
    answers.push(bad);

    let detach = sb.call(DRIVER, &["detach", vol, NODE]);
    detach.assert_success();
    answers.push(detach);
    assert!(loop_devices_under(&server.data_dir).is_empty());

    // The call log shows each mount carried the secret, redacted.
    let log = sb.log_lines(DRIVER);
    let mounts: Vec<&Value> = log.iter().filter(|l| l["op"] == "mount").collect();
    assert_eq!(mounts.len(), 3, "{log:?}");
    for line in mounts {
        let options: Value = line["args"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_str)
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_else(|| panic!("no options in the mount log line {line}"));
        assert_eq!(
            options["kubernetes.io/secret/password"], "<redacted>",
            "{line}"
        );
    }
    let call_log = sb.raw_log_lines(DRIVER).join("\n");
    let server_log = server.log();
    assert!(!server_log.is_empty(), "no server log");
    for secret in [
        token.to_string(),
        b64(token),
        volume_secret.to_string(),
        b64(volume_secret),
    ] {
        assert!(
            !call_log.contains(&secret),
            "the call log holds secret {secret:?}"
        );
        assert!(
            !server_log.contains(&secret),
            "the server log holds secret {secret:?}"
        );
        for a in &answers {
            assert!(
                !a.stdout.contains(&secret) && !a.stderr.contains(&secret),
                "{:?}: the answer holds secret {secret:?}: {}",
                a.args,
                a.stdout
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. State under concurrency and crashes: many rest-array processes writing
// (then deleting) their own keys in one store at once; 64 processes
// incrementing one counter (state-probe, compare-and-swap through the SDK's
// `state::update`); processes SIGKILLed while rewriting a large value.

/// The store's entries (files not starting with `.`: not the lock, not a
/// temp file).
fn state_entries(sb: &Sandbox, driver: &str) -> Vec<PathBuf> {
    let kv = sb.driver_state_dir(driver).join("kv");
    let Ok(entries) = std::fs::read_dir(&kv) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

#[test]
fn state_concurrent_attach_and_detach_lose_no_update() {
    if !privileged("state_concurrent_attach_and_detach_lose_no_update") {
        return;
    }
    const N: usize = 64;
    let sb = Sandbox::new();
    let token = "concurrency-token";
    let server = start_server(&sb, token);
    sb.install_with_grant(
        DRIVER,
        &rest_array_wasm(),
        &rest_array_grant(&server, &secret_token(token)),
    );
    let names: Vec<String> = (0..N).map(|i| format!("pv-conc-{i}")).collect();
    let opts: Vec<String> = names
        .iter()
        .map(|n| kubelet_options(Op::Attach, &volume(n, "1Mi"), None))
        .collect();
    let running: Vec<RunningCall> = opts
        .iter()
        .map(|o| sb.spawn(DRIVER, &["attach", o, NODE]))
        .collect();
    for call in running {
        let (answer, _) = call.finish();
        answer.assert_success();
    }
    assert_eq!(
        state_entries(&sb, DRIVER).len(),
        N,
        "every concurrent attach recorded its volume"
    );
    assert_eq!(loop_devices_under(&server.data_dir).len(), N);

    // detach gets only the name: each finds its volume through state.
    let running: Vec<RunningCall> = names
        .iter()
        .map(|n| sb.spawn(DRIVER, &["detach", n, NODE]))
        .collect();
    for call in running {
        let (answer, _) = call.finish();
        answer.assert_success();
    }
    assert!(
        state_entries(&sb, DRIVER).is_empty(),
        "entries left: {:?}",
        state_entries(&sb, DRIVER)
    );
    assert!(loop_devices_under(&server.data_dir).is_empty());
    // Every detach went by the recorded id, none by a name search.
    for l in sb.log_lines(DRIVER).iter().filter(|l| l["op"] == "detach") {
        let http = l["http"].as_array().cloned().unwrap_or_default();
        assert!(
            http.iter()
                .all(|h| !h["url"].as_str().unwrap_or("").ends_with("/api/v1/volumes")),
            "a detach searched by name: {http:?}"
        );
    }
}

const STATE_PROBE: &str = "state-probe";

/// kubelet's `getvolumename` options for the state-probe: its request
/// (`op`, `key`, …) is the volume's own options.
fn state_probe_options(op: &[(&str, &str)]) -> String {
    let volume = VolumeSpec::new("pv-state", "", op);
    kubelet_options(Op::GetVolumeName, &volume, None)
}

fn state_probe(sb: &Sandbox, op: &[(&str, &str)]) -> RunningCall {
    sb.spawn(STATE_PROBE, &["getvolumename", &state_probe_options(op)])
}

/// The state-probe's answer to `op`.
#[track_caller]
fn state_probe_call(sb: &Sandbox, op: &[(&str, &str)]) -> Answer {
    sb.call(STATE_PROBE, &["getvolumename", &state_probe_options(op)])
}

/// The state-probe's answer to `op`, which must succeed.
#[track_caller]
fn state_probe_answer(sb: &Sandbox, op: &[(&str, &str)]) -> String {
    let answer = state_probe_call(sb, op);
    answer.assert_success();
    answer.json["volumeName"]
        .as_str()
        .unwrap_or_else(|| panic!("no volumeName in {}", answer.json))
        .to_string()
}

#[test]
fn state_64_processes_incrementing_one_key_lose_no_update() {
    const N: u64 = 64;
    let sb = Sandbox::new();
    sb.install_with_grant(
        STATE_PROBE,
        &state_probe_wasm(),
        "[state]\nquota_kib = 64\n[config]\n",
    );
    let running: Vec<RunningCall> = (0..N)
        .map(|_| state_probe(&sb, &[("op", "increment"), ("key", "counter")]))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for call in running {
        let (answer, _) = call.finish();
        answer.assert_success();
        let stored: u64 = answer.json["volumeName"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a count: {}", answer.json));
        assert!(seen.insert(stored), "two increments both stored {stored}");
    }
    // Each increment stored a different count, 1 to 64: none was lost, none
    // was applied twice.
    assert_eq!(seen, (1..=N).collect(), "counts stored");
    assert_eq!(
        state_probe_answer(&sb, &[("op", "increment"), ("key", "counter")]),
        (N + 1).to_string()
    );
}

#[test]
fn state_sigkill_during_writes_leaves_old_or_new_value_never_torn() {
    // Kill until this many kills are seen to land inside a write (the
    // writer's temp file is left) and as many after a new value was stored,
    // at most MAX_ROUNDS; about one kill in six lands inside a write.
    const INSIDE_WRITES: u64 = 12;
    const MAX_ROUNDS: u64 = 400;
    let sb = Sandbox::new();
    // 1 MiB records: each write spends milliseconds in write + fsync.
    sb.install_with_grant(
        STATE_PROBE,
        &state_probe_wasm(),
        "[state]\nquota_kib = 4096\n[config]\n",
    );
    let churn = [
        ("op", "churn"),
        ("key", "big"),
        ("kib", "1024"),
        ("writes", "100000"),
    ];
    let check = [("op", "check"), ("key", "big")];
    // A first record, so every kill has an old value to keep.
    let first = state_probe_answer(
        &sb,
        &[
            ("op", "churn"),
            ("key", "big"),
            ("kib", "1024"),
            ("writes", "1"),
        ],
    );
    assert_eq!(first, "1");
    let mut last_seq = 1u64;
    let mut killed = 0;
    let mut advanced = 0;
    let mut mid_write = 0;
    let kv = sb.driver_state_dir(STATE_PROBE).join("kv");
    let mut rounds = 0;
    while (mid_write < INSIDE_WRITES || advanced < INSIDE_WRITES) && rounds < MAX_ROUNDS {
        let round = rounds;
        rounds += 1;
        let call = state_probe(&sb, &churn);
        // Spread the kill over startup and many writes: 5 to 400 ms.
        let delay = 5 + (round * 37 + round * round * 11) % 396;
        std::thread::sleep(Duration::from_millis(delay));
        let pid = call.pid;
        if call.kill() {
            killed += 1;
        }
        // This writer's temp file: the kill landed inside its write.
        if kv.join(format!(".tmp-{pid}")).exists() {
            mid_write += 1;
        }
        // The store answers with a whole record (old or new), never torn,
        // never damaged, never older than what was there before the kill.
        let seen = state_probe_answer(&sb, &check);
        let seq: u64 = seen
            .strip_prefix("seq ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: check answered {seen:?}"));
        assert!(
            seq >= last_seq,
            "round {round}: value went back from {last_seq} to {seq}"
        );
        if seq > last_seq {
            advanced += 1;
        }
        last_seq = seq;
    }
    assert_eq!(killed, rounds, "every churn was still writing when killed");
    eprintln!(
        "{killed} kills, {mid_write} inside a write, {advanced} after new values were stored"
    );
    assert!(
        mid_write >= INSIDE_WRITES && advanced >= INSIDE_WRITES,
        "only {mid_write} of {rounds} kills landed inside a write and {advanced} after one: \
         the test did not exercise what it claims"
    );
    // Killed writers leave temp files; the next write clears them, and the
    // store holds one entry.
    state_probe_answer(
        &sb,
        &[
            ("op", "churn"),
            ("key", "big"),
            ("kib", "1"),
            ("writes", "1"),
        ],
    );
    assert!(
        temp_files(&kv).next().is_none(),
        "the next write left temp files"
    );
    let names: Vec<String> = std::fs::read_dir(&kv)
        .expect("read kv dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert_eq!(
        names.len(),
        1,
        "entries in the store after the kills: {names:?}"
    );
}

/// Temp files of writers in a store dir.
fn temp_files(kv: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(kv)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
}

// ---------------------------------------------------------------------------
// 5. Operator config: typed values, the secret mark, files read per call.

#[test]
fn config_values_arrive_typed_with_their_secret_mark() {
    let sb = Sandbox::new();
    let token_file = sb.root.path().join("array-token");
    std::fs::write(&token_file, "file-token-7f3a9c\n").expect("write token file");
    let region_file = sb.root.path().join("region");
    std::fs::write(&region_file, "eu-1").expect("write region file");
    let grant = format!(
        r#"[state]

[config]
endpoint = "https://array.example:8443"
port = 8443
port_text = " 9443 "
thin = true
pools = ["gold", "silver"]
token = {{ file = "{}", secret = true }}
pin = {{ value = 12345678, secret = true }}
gone = {{ file = "/nonexistent/flexwasm-test-token", secret = true }}
region = {{ file = "{}" }}
"#,
        token_file.display(),
        region_file.display()
    );
    sb.install_with_grant(STATE_PROBE, &state_probe_wasm(), &grant);
    let entry = |key: &str| state_probe_answer(&sb, &[("op", "config"), ("key", key)]);
    assert_eq!(
        entry("endpoint"),
        r#"Entry { value: Text("https://array.example:8443"), secret: false }"#
    );
    assert_eq!(
        entry("port"),
        "Entry { value: Integer(8443), secret: false }"
    );
    assert_eq!(
        entry("thin"),
        "Entry { value: Boolean(true), secret: false }"
    );
    assert_eq!(
        entry("pools"),
        r#"Entry { value: List(["gold", "silver"]), secret: false }"#
    );
    assert_eq!(entry("token"), "Entry { value: <secret>, secret: true }");
    assert_eq!(entry("pin"), "Entry { value: <secret>, secret: true }");
    assert_eq!(entry("missing"), "absent");
    let integer = |key: &str| state_probe_answer(&sb, &[("op", "config-integer"), ("key", key)]);
    assert_eq!(integer("port"), "8443");
    assert_eq!(integer("port_text"), "9443");

    // A wrong type names the key and the policy.
    let answer = state_probe_call(&sb, &[("op", "config-integer"), ("key", "endpoint")]);
    answer
        .assert_failure("\"endpoint\" must be a whole number, not \"https://array.example:8443\"");
    // A file that cannot be read: the host says which and why, and the
    // plugin's call fails with that.
    let answer = state_probe_call(&sb, &[("op", "config"), ("key", "gone")]);
    answer.assert_failure(
        "the host cannot use its file: /nonexistent/flexwasm-test-token cannot be read: No such file",
    );

    // Files are read at every call: change one in place.
    assert_eq!(
        entry("region"),
        r#"Entry { value: Text("eu-1"), secret: false }"#
    );
    std::fs::write(&region_file, "eu-2").expect("change region");
    assert_eq!(
        entry("region"),
        r#"Entry { value: Text("eu-2"), secret: false }"#
    );
    std::fs::write(&token_file, "rotated-token-42c1\n").expect("rotate token");
    assert_eq!(entry("token"), "Entry { value: <secret>, secret: true }");
    // Secret values never reached the log.
    let log = sb.raw_log_lines(STATE_PROBE).join("\n");
    for secret in ["file-token-7f3a9c", "rotated-token-42c1", "12345678"] {
        assert!(!log.contains(secret), "{secret} is in the call log");
    }
}

// ---------------------------------------------------------------------------
// 6. kube-controller-manager runs attach and detach from a distroless image:
// no shell, no libc, no tools (contract page §7). The static host (musl)
// must do the whole attach side there.

/// chroot(8), from coreutils.
fn chroot_bin() -> &'static str {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot(8) (coreutils)")
}

/// Run `exe args…` chrooted into `root` with only `env`, as
/// kube-controller-manager would exec the driver in its container.
#[track_caller]
fn call_in_root(root: &Path, exe: &str, args: &[&str], env: &[(&str, &str)]) -> Answer {
    let out = std::process::Command::new(chroot_bin())
        .arg(root)
        .arg(exe)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run chroot");
    Answer::from_output(args.iter().map(|s| s.to_string()).collect(), &out)
}

#[test]
fn static_host_attaches_and_detaches_from_a_distroless_root() {
    if !privileged("static_host_attaches_and_detaches_from_a_distroless_root") {
        return;
    }
    let host = match static_host_bin() {
        Ok(host) => host,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED static_host_attaches_and_detaches_from_a_distroless_root: {e}\n\
                 (needs `rustup target add {STATIC_TARGET}` and musl-gcc; CI installs both)"
            );
            return;
        }
        Err(e) => panic!("the static host is required under CI: {e}"),
    };
    assert!(
        !elf_has_interpreter(&host),
        "{} needs a dynamic loader: it would not start in a distroless image",
        host.display()
    );
    private_mount_namespace();
    let sb = Sandbox::new();
    let token = "T0ken-distroless-91c2";
    let server = start_server(&sb, token);

    // The container's root: nothing but what a distroless image and the
    // runtime give (/dev/null, /proc), the plugin dir and a state dir.
    let root = sb.root.path().join("kcm-root");
    for d in [
        "dev",
        "proc",
        "tmp",
        "plugins",
        "var/lib/flexwasm",
        "var/log/flexwasm",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir in root");
    }
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod /dev/null");
    nix::mount::mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount proc");
    for tool in ["sh", "bin/sh", "usr/bin/env", "lib", "lib64", "usr/lib"] {
        assert!(!root.join(tool).exists(), "{tool} exists in the root");
    }
    // Control: the ordinary, dynamically linked host cannot even start here.
    std::fs::copy(HOST, root.join("tmp/flexwasm-dynamic")).expect("copy dynamic host");
    let out = std::process::Command::new(chroot_bin())
        .arg(&root)
        .args(["/tmp/flexwasm-dynamic", "init"])
        .env_clear()
        .output()
        .expect("run chroot");
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "the dynamic host ran in the distroless root: {out:?}"
    );

    // Installed by the operator with the static host as the driver binary.
    let policy = sb.root.path().join("policy-kcm.toml");
    std::fs::write(
        &policy,
        format!(
            "plugin_sha256 = \"auto\"\n\n{}",
            rest_array_grant(&server, &secret_token(token))
        ),
    )
    .expect("write policy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexwasm"))
        .args(["install", "--plugin-dir"])
        .arg(root.join("plugins"))
        .args(["--driver", "flexwasm/rest-array", "--plugin"])
        .arg(rest_array_wasm())
        .arg("--policy")
        .arg(&policy)
        .arg("--host-binary")
        .arg(&host)
        .output()
        .expect("run flexwasm install");
    assert!(
        out.status.success(),
        "install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let exe = "/plugins/flexwasm~rest-array/rest-array";
    let env = [
        ("FLEXWASM_STATE_DIR", "/var/lib/flexwasm"),
        ("FLEXWASM_LOG_DIR", "/var/log/flexwasm"),
    ];
    let vol = "pv-distroless";
    let volume = volume(vol, "1Mi");
    let opts = |op| kubelet_options(op, &volume, None);
    let init = call_in_root(&root, exe, &["init"], &env);
    init.assert_success();
    assert_eq!(init.json["capabilities"]["attach"], true, "{}", init.json);

    let attach = call_in_root(&root, exe, &["attach", &opts(Op::Attach), NODE], &env);
    attach.assert_success();
    let device = attach.json["device"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        device.starts_with("/dev/loop"),
        "attach answered {}",
        attach.json
    );
    assert_eq!(loop_devices_under(&server.data_dir).len(), 1);

    let attached = call_in_root(
        &root,
        exe,
        &["isattached", &opts(Op::IsAttached), NODE],
        &env,
    );
    attached.assert_success();
    assert_eq!(attached.json["attached"], true, "{}", attached.json);

    // detach gets only the name; the id comes from state, in the root.
    let detach = call_in_root(&root, exe, &["detach", vol, NODE], &env);
    detach.assert_success();
    assert!(loop_devices_under(&server.data_dir).is_empty());
    let attached = call_in_root(
        &root,
        exe,
        &["isattached", &opts(Op::IsAttached), NODE],
        &env,
    );
    assert_eq!(attached.json["attached"], false, "{}", attached.json);

    // Every call was logged inside the root, with its HTTP requests.
    let log = std::fs::read_to_string(root.join("var/log/flexwasm/flexwasm~rest-array.log"))
        .expect("call log in the root");
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(!log.contains(token), "the token is in the log");
}
