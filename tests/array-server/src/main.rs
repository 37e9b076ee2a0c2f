//! `flexwasm-array-server`: a local storage array for tests (see lib.rs).
//!
//! ```text
//! flexwasm-array-server --listen 127.0.0.1:0 --data-dir DIR --token TOKEN
//!                       [--addr-file FILE] [--exit-on-stdin-eof]
//! ```
//!
//! Binds, writes the bound `ip:port` to FILE (atomically: tests poll for
//! it), serves until SIGTERM or SIGINT (the default action: every change is
//! already on disk, so there is nothing to flush) or, with
//! `--exit-on-stdin-eof`, until stdin closes, so a test process that dies
//! takes its server with it. stdout stays empty; startup errors go to
//! stderr; one line per request goes to DIR/server.log.

mod api;
mod http;
mod store;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::Api;
use http::{ReadError, Response};
use store::Store;

/// Connections served at once; one more gets a 503. Tests open a handful; a
/// connection flood must not become a thread flood.
const MAX_CONNECTIONS: usize = 256;
/// A connection idle (or stalled mid-request) this long is closed.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// After rejecting a request: how long and how much of the rest of it to
/// read and drop before closing (see `linger_close`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: u64 = 4 * 1024 * 1024;

const USAGE: &str = "usage: flexwasm-array-server --listen ADDR --data-dir DIR --token TOKEN \
                     [--addr-file FILE] [--exit-on-stdin-eof]";

struct Args {
    listen: String,
    data_dir: PathBuf,
    token: String,
    addr_file: Option<PathBuf>,
    exit_on_stdin_eof: bool,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut listen, mut data_dir, mut token, mut addr_file) = (None, None, None, None);
    let mut exit_on_stdin_eof = false;
    while let Some(arg) = argv.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--token" => token = Some(value()?),
            "--addr-file" => addr_file = Some(PathBuf::from(value()?)),
            "--exit-on-stdin-eof" => exit_on_stdin_eof = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let token = token.ok_or("--token is required")?;
    // The token is a header value: no whitespace or control characters, or
    // no client could ever send it.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("--token must be non-empty printable ASCII without spaces".into());
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        data_dir: data_dir.ok_or("--data-dir is required")?,
        token,
        addr_file,
        exit_on_stdin_eof,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("flexwasm-array-server: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("flexwasm-array-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    // Canonical: image paths must match what the kernel reports as a loop
    // device's backing file.
    let data_dir = args
        .data_dir
        .canonicalize()
        .map_err(|e| format!("resolving {}: {e}", args.data_dir.display()))?;
    let log = Log::open(&data_dir.join("server.log"))?;

    let (store, notes) =
        Store::open(&data_dir).map_err(|e| format!("loading {}: {e}", data_dir.display()))?;
    for note in notes {
        log.line(&format!("startup: {note}"));
    }

    let listener =
        TcpListener::bind(&args.listen).map_err(|e| format!("binding {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    if let Some(addr_file) = &args.addr_file {
        write_atomically(addr_file, format!("{addr}\n").as_bytes())
            .map_err(|e| format!("writing {}: {e}", addr_file.display()))?;
    }
    log.line(&format!(
        "listening on {addr}, data in {}",
        data_dir.display()
    ));

    if args.exit_on_stdin_eof {
        thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }

    let server = Arc::new(Server {
        api: Api::new(args.token, store),
        log,
        connections: AtomicUsize::new(0),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and friends: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(slot) = ConnectionSlot::take(&server) else {
            refuse_busy(stream, &server.log);
            continue;
        };
        // If the spawn fails, the closure (stream and slot) is dropped: the
        // client sees a closed connection and the slot is given back.
        let _ = thread::Builder::new()
            .name("connection".into())
            .spawn(move || slot.0.serve(stream));
    }
    Ok(())
}

struct Server {
    api: Api,
    log: Log,
    connections: AtomicUsize,
}

/// One of the MAX_CONNECTIONS places, given back on drop: when the
/// connection ends, when its handler panics, or when its thread never
/// started.
struct ConnectionSlot(Arc<Server>);

impl ConnectionSlot {
    fn take(server: &Arc<Server>) -> Option<Self> {
        let taken = server.connections.fetch_add(1, Ordering::SeqCst);
        let slot = ConnectionSlot(Arc::clone(server));
        (taken < MAX_CONNECTIONS).then_some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Requests on one connection, in order, until either side closes.
    fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "-".to_string(), |a: SocketAddr| a.to_string());
        let setup = stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| stream.try_clone());
        let Ok(read_half) = setup else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut writer = stream;
        loop {
            match http::read_request(&mut reader, &mut writer) {
                Ok(req) => {
                    let started = Instant::now();
                    let response = self.api.handle(&req);
                    let written = http::write_response(&mut writer, &response, req.keep_alive);
                    self.log.request(
                        &peer,
                        &req.method,
                        &req.path,
                        response.status,
                        started,
                        &written,
                    );
                    if !req.keep_alive || written.is_err() {
                        return;
                    }
                }
                Err(ReadError::Reject {
                    status,
                    message,
                    method,
                    path,
                }) => {
                    let started = Instant::now();
                    let written = http::write_response(
                        &mut writer,
                        &Response::error(status, &message),
                        false,
                    );
                    self.log
                        .request(&peer, &method, &path, status, started, &written);
                    linger_close(&writer, &mut reader);
                    return;
                }
                Err(ReadError::Io(e)) => {
                    self.log
                        .line(&format!("{peer} connection broke mid-request: {e}"));
                    return;
                }
                Err(ReadError::Closed) => return,
            }
        }
    }
}

/// Closes a connection whose request was not read to its end. Closing a
/// socket with unread input makes the kernel send a reset, which can destroy
/// the error response before the client reads it; so: half-close, drain
/// what the client still sends (bounded in bytes and time), then close.
fn linger_close(stream: &TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER_TIMEOUT));
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut drained = 0u64;
    let mut sink = [0u8; 8192];
    while drained < LINGER_MAX_BYTES && Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n as u64,
        }
    }
}

/// Over the connection limit: a quick 503 without a thread, bounded by a
/// short write timeout so a stalled client cannot hold up the accept loop.
fn refuse_busy(mut stream: TcpStream, log: &Log) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let written = http::write_response(
        &mut stream,
        &Response::error(503, "too many connections; retry later"),
        false,
    );
    log.request("-", "-", "-", 503, started, &written);
}

/// DIR/server.log, one line per request. Only method, path, status and
/// timing are logged: never headers (the token) or bodies.
struct Log(Mutex<File>);

impl Log {
    fn open(path: &Path) -> Result<Self, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|file| Log(Mutex::new(file)))
            .map_err(|e| format!("opening {}: {e}", path.display()))
    }

    fn request(
        &self,
        peer: &str,
        method: &str,
        path: &str,
        status: u16,
        started: Instant,
        written: &io::Result<()>,
    ) {
        let mut line = format!(
            "{} {} {} {status} {:.1}ms",
            peer,
            printable(method),
            printable(path),
            started.elapsed().as_secs_f64() * 1000.0
        );
        if let Err(e) = written {
            line.push_str(&format!(" (response not sent: {e})"));
        }
        self.line(&line);
    }

    fn line(&self, text: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!("{}.{:03} {text}\n", now.as_secs(), now.subsec_millis());
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not take the API down with it.
        let _ = file.write_all(line.as_bytes());
    }
}

/// A client-sent string made safe for a one-line log entry: control
/// characters escaped, length capped.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(256)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > 256 {
        out.push('…');
    }
    out
}

/// Temp file in the same directory, fsync, rename: a reader sees no file or
/// the whole file.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}
