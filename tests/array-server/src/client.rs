//! The test side: start and stop the server, talk HTTP to it.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::loopdev;

/// How long [`ArrayServer::start`] waits for the server to publish its
/// address, and [`ArrayServer::stop`] for it to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `flexwasm-array-server` for one test.
///
/// Dropping it stops the server and detaches every loop device backed by a
/// file under `data_dir`, so a test that fails half-way leaves no loop
/// devices behind. The server also exits by itself when this process dies
/// (it watches a stdin pipe), so a killed test run leaves no server behind.
#[derive(Debug)]
pub struct ArrayServer {
    pub addr: SocketAddr,
    pub token: String,
    pub data_dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    /// Held only to be closed: the server exits on EOF.
    _stdin: Option<ChildStdin>,
}

impl ArrayServer {
    /// Starts `bin` on `127.0.0.1:0` with state in `data_dir` (created if
    /// missing) and waits up to 10 s for it to listen. Panics on failure:
    /// it is a test fixture.
    pub fn start(bin: impl AsRef<Path>, data_dir: impl AsRef<Path>, token: &str) -> ArrayServer {
        let (bin, data_dir) = (bin.as_ref(), data_dir.as_ref());
        Self::try_start(bin, data_dir, token)
            .unwrap_or_else(|e| panic!("starting {} in {}: {e}", bin.display(), data_dir.display()))
    }

    /// [`start`](Self::start) returning the error instead of panicking.
    pub fn try_start(
        bin: impl AsRef<Path>,
        data_dir: impl AsRef<Path>,
        token: &str,
    ) -> io::Result<ArrayServer> {
        let mut server = ArrayServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: token.to_string(),
            data_dir: data_dir.as_ref().to_path_buf(),
            bin: bin.as_ref().to_path_buf(),
            child: None,
            _stdin: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `http://ip:port`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request to `path` (e.g. `/api/v1/volumes`) on this server with its
    /// token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        request(
            method,
            &format!("{}{path}", self.url()),
            Some(&self.token),
            body,
        )
    }

    /// The request log (`data_dir/server.log`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it.
    /// Loop devices stay attached: they are the array's attachments, and a
    /// restarted server picks them up. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid, which we have not
            // reaped yet (so it cannot have been reused).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
        self._stdin = None;
    }

    /// Stops the server and starts it again on the same data directory (on a
    /// new port: `addr` changes).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| {
            panic!(
                "restarting {} in {}: {e}",
                self.bin.display(),
                self.data_dir.display()
            )
        });
    }

    fn spawn(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.data_dir)?;
        let addr_file = self.data_dir.join("server.addr");
        match fs::remove_file(&addr_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--token")
            .arg(&self.token)
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            // The server writes the file atomically (temp + rename), so a
            // file that exists is complete.
            if let Ok(text) = fs::read_to_string(&addr_file) {
                break text.trim().parse::<SocketAddr>().map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("addr file holds {text:?}: {e}"),
                    )
                });
            }
            if let Some(status) = child.try_wait()? {
                break Err(io::Error::other(format!(
                    "server exited before listening: {status}"
                )));
            }
            if Instant::now() >= deadline {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no {} after {START_TIMEOUT:?}", addr_file.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match addr {
            Ok(addr) => {
                self.addr = addr;
                self.child = Some(child);
                self._stdin = stdin;
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for ArrayServer {
    fn drop(&mut self) {
        self.stop();
        for (device, e) in loopdev::detach_all_under(&self.data_dir) {
            eprintln!("array-server cleanup: cannot detach {device}: {e}");
        }
    }
}

/// The server binary for tests outside this package, which cannot use
/// `env!("CARGO_BIN_EXE_flexwasm-array-server")`: `$FLEXWASM_ARRAY_SERVER_BIN`
/// if set, else the binary in the profile directory of the running test
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/`), which
/// `cargo test --workspace` builds. `None` if neither exists.
pub fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLEXWASM_ARRAY_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join("flexwasm-array-server");
    bin.is_file().then_some(bin)
}

/// One HTTP/1.1 request (`Connection: close`) to `url` (`http://host:port/path`)
/// with an optional bearer token and JSON body; returns the status and the
/// body. Panics on a transport error: it is a test helper (see
/// [`try_request`]).
pub fn request(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    try_request(method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// [`request`] returning transport errors.
pub fn try_request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {url}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid("host resolves to nothing"))?;

    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    // Generous: /test/slow is meant to be slow; a hung server still ends.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some(body) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )),
        // A POST without a body still says so: servers may want a length.
        None if !matches!(method, "GET" | "HEAD" | "DELETE") => {
            head.push_str("Content-Length: 0\r\n")
        }
        None => {}
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes())?;
    }

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("response without a complete header"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("response without a status code"))?;
    let mut body = &raw[head_end + 4..];
    // The connection is closed after one response, so the body is the rest;
    // Content-Length, when present, still bounds it.
    let length = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length {
        if body.len() < length {
            return Err(bad("response body shorter than its Content-Length"));
        }
        body = &body[..length];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}
