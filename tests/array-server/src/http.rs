//! Just enough HTTP/1.1 server for a JSON API: one request at a time per
//! connection (keep-alive, no pipelining guarantees beyond in-order), bodies
//! by Content-Length or chunked (hyper, behind wasi:http, sends chunked when
//! a plugin streams a body without a length), and hard bounds on every part
//! of a request so a misbehaving client gets a 4xx instead of our memory.

use std::io::{self, BufRead, Read, Write};

/// Request line and headers together. Beyond: 431.
pub const MAX_HEAD_BYTES: u64 = 16 * 1024;
/// Headers per request. Beyond: 431.
const MAX_HEADERS: usize = 100;
/// Request body, however it is framed. Beyond: 413. Volume requests are a
/// few hundred bytes; this leaves room without inviting abuse.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// A chunk-size line or a trailer line.
const MAX_LINE_BYTES: u64 = 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query, as sent (not percent-decoded: API paths
    /// are plain ASCII and a decoded `/` must not become a separator).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client lets the connection stay open afterwards.
    pub keep_alive: bool,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter `name`, percent-decoded; `Err` if its
    /// encoding is invalid.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, String> {
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(key)? == name {
                return percent_decode(value).map(Some);
            }
        }
        Ok(None)
    }
}

/// Why no request came out of the connection.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed (or went idle past the timeout) between requests:
    /// nothing to answer.
    Closed,
    /// The connection broke mid-request: nothing can be answered either.
    Io(io::Error),
    /// The request is bad: answer `status` with `message`, then close
    /// (whatever follows on the connection cannot be framed any more).
    Reject {
        status: u16,
        message: String,
        method: String,
        path: String,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one request. `interim` receives `100 Continue` when the client asks
/// for it (curl does for larger bodies) and the body is acceptable.
pub fn read_request(
    reader: &mut impl BufRead,
    interim: &mut impl Write,
) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    let reject = |status: u16, message: &str, method: &str, path: &str| ReadError::Reject {
        status,
        message: message.to_string(),
        method: method.to_string(),
        path: path.to_string(),
    };

    // RFC 9112 §2.2: ignore empty lines before the request line.
    let request_line = loop {
        let line = match read_line(reader, &mut budget) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(ReadError::Closed),
            Err(LineError::TooLong) => return Err(reject(431, "request head too large", "-", "-")),
            Err(LineError::Io(e)) if is_idle_end(&e) => return Err(ReadError::Closed),
            Err(LineError::Io(e)) => return Err(ReadError::Io(e)),
        };
        if !line.is_empty() {
            break line;
        }
    };
    let Ok(request_line) = String::from_utf8(request_line) else {
        return Err(reject(400, "request line is not UTF-8", "-", "-"));
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "malformed request line", "-", "-"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bad = |status: u16, message: &str| reject(status, message, method, path);
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(bad(400, "malformed method"));
    }
    if !path.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad(400, "request target must be an origin-form path"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad(505, "only HTTP/1.0 and HTTP/1.1 are supported")),
    };

    let mut headers = Vec::new();
    loop {
        let line = match read_line(reader, &mut budget) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Err(LineError::TooLong) => return Err(bad(431, "request head too large")),
            Err(LineError::Io(e)) => return Err(ReadError::Io(e)),
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad(431, "too many headers"));
        }
        let Ok(line) = String::from_utf8(line) else {
            return Err(bad(400, "header is not UTF-8"));
        };
        // No whitespace before the colon (RFC 9112 §5.1), and no obs-fold.
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(400, "malformed header"));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(bad(400, "malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }

    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = request
        .header("connection")
        .unwrap_or("")
        .to_ascii_lowercase();
    request.keep_alive = if http10 {
        connection.split(',').any(|t| t.trim() == "keep-alive")
    } else {
        !connection.split(',').any(|t| t.trim() == "close")
    };

    let chunked = match request.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(_) => return Err(bad(501, "only chunked transfer-encoding is supported")),
    };
    // Both framings at once is the request-smuggling shape: refuse it.
    if chunked && request.header("content-length").is_some() {
        return Err(bad(400, "both Content-Length and Transfer-Encoding"));
    }
    let length = content_length(&request).map_err(|m| bad(400, m))?;
    if length.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(bad(413, "request body too large"));
    }
    let expects_continue = request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expects_continue && (chunked || length.is_some_and(|n| n > 0)) {
        interim.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        interim.flush()?;
    }

    if chunked {
        request.body = read_chunked(reader).map_err(|e| match e {
            ChunkError::TooLarge => bad(413, "request body too large"),
            ChunkError::Malformed => bad(400, "malformed chunked body"),
            ChunkError::Io(e) => ReadError::Io(e),
        })?;
    } else if let Some(length) = length {
        // `length` is at most MAX_BODY_BYTES, so this allocation is bounded.
        let mut body = vec![0; usize::try_from(length).unwrap_or(0)];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

/// Content-Length, if any; repeated headers must agree.
fn content_length(request: &Request) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed Content-Length");
        }
        let value = value
            .parse::<u64>()
            .map_err(|_| "malformed Content-Length")?;
        if length.is_some_and(|l| l != value) {
            return Err("conflicting Content-Length headers");
        }
        length = Some(value);
    }
    Ok(length)
}

enum ChunkError {
    TooLarge,
    Malformed,
    Io(io::Error),
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ChunkError> {
    let mut body = Vec::new();
    let line = |reader: &mut _| {
        let mut budget = MAX_LINE_BYTES;
        match read_line(reader, &mut budget) {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(ChunkError::Io(io::ErrorKind::UnexpectedEof.into())),
            Err(LineError::TooLong) => Err(ChunkError::Malformed),
            Err(LineError::Io(e)) => Err(ChunkError::Io(e)),
        }
    };
    loop {
        let size_line = line(reader)?;
        let size_line = std::str::from_utf8(&size_line).map_err(|_| ChunkError::Malformed)?;
        // Chunk extensions (`;name=value`) carry nothing we use.
        let size = size_line.split(';').next().unwrap_or("").trim();
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChunkError::Malformed);
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| ChunkError::TooLarge)?;
        if size == 0 {
            break;
        }
        let total = (body.len() as u64).saturating_add(size);
        if total > MAX_BODY_BYTES {
            return Err(ChunkError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(ChunkError::Io)?;
        if !line(reader)?.is_empty() {
            return Err(ChunkError::Malformed);
        }
    }
    // Trailers are read and dropped; a bounded number of bounded lines.
    for _ in 0..MAX_HEADERS {
        if line(reader)?.is_empty() {
            return Ok(body);
        }
    }
    Err(ChunkError::Malformed)
}

enum LineError {
    TooLong,
    Io(io::Error),
}

/// One line without its CRLF (or bare LF), charged against `budget`.
/// `Ok(None)` on EOF before any byte.
fn read_line(reader: &mut impl BufRead, budget: &mut u64) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    let read = reader
        .take(*budget)
        .read_until(b'\n', &mut line)
        .map_err(LineError::Io)?;
    *budget -= read as u64;
    if read == 0 {
        return if *budget == 0 {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    }
    if line.last() != Some(&b'\n') {
        return if *budget == 0 {
            Err(LineError::TooLong)
        } else {
            Err(LineError::Io(io::ErrorKind::UnexpectedEof.into()))
        };
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// A read timeout or reset while waiting for the next request is the normal
/// end of an idle keep-alive connection.
fn is_idle_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Percent-decoding for query parameters (`+` is a space, as forms send it).
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid percent-encoding in {text:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("query value {text:?} is not UTF-8"))
}

pub enum Body {
    Bytes(Vec<u8>),
    /// `n` filler bytes, written in pieces: `/test/big` must not allocate
    /// what it sends.
    Filler(u64),
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
        }
    }

    /// `value` as JSON, fields in declaration order (what a person reading
    /// a volume expects: id first).
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Self::new(status, "application/json", body)
            }
            // Only a map with non-string keys fails; none is ever sent.
            Err(e) => Self::new(
                500,
                "text/plain",
                format!("serialising the response: {e}\n"),
            ),
        }
    }

    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn no_content() -> Self {
        Self::new(204, "application/json", Vec::new())
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Filler(n) => *n,
        }
    }
}

/// Writes `response`; every response has a Content-Length, so the client
/// can keep the connection when `keep_alive` is set.
pub fn write_response(
    out: &mut impl Write,
    response: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: flexwasm-array-server\r\n",
        response.status,
        reason(response.status)
    );
    if response.status != 204 {
        head.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body_len()
        ));
    }
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.write_all(head.as_bytes())?;
    match &response.body {
        Body::Bytes(bytes) if response.status != 204 => out.write_all(bytes)?,
        Body::Bytes(_) => {}
        Body::Filler(n) => {
            let piece = [b'x'; 64 * 1024];
            let mut left = *n;
            while left > 0 {
                let len = left.min(piece.len() as u64) as usize;
                out.write_all(&piece[..len])?;
                left -= len as u64;
            }
        }
    }
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Request, ReadError> {
        read_request(&mut io::BufReader::new(raw), &mut io::sink())
    }

    fn rejected(raw: &[u8]) -> u16 {
        match parse(raw) {
            Err(ReadError::Reject { status, .. }) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let req = parse(b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}rest").unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), req.query.as_str()),
            ("POST", "/a", "x=1")
        );
        assert_eq!(req.body, b"{}");
        assert!(req.keep_alive);
        let req = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!req.keep_alive);
        let req = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!req.keep_alive);
    }

    #[test]
    fn chunked_body() {
        let req = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\n{\"\r\n1\r\n}\r\n0\r\nT: v\r\n\r\n")
            .unwrap();
        assert_eq!(req.body, b"{\"}");
    }

    #[test]
    fn bad_requests_are_rejected_not_panicked_on() {
        assert_eq!(rejected(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET / HTTP/2\r\n\r\n"), 505);
        assert_eq!(rejected(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400);
        assert_eq!(
            rejected(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"),
            413
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        assert_eq!(
            rejected(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n"
            ),
            413
        );
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES as usize));
        assert_eq!(rejected(&huge), 431);
    }

    #[test]
    fn closed_connection_is_not_an_error() {
        assert!(matches!(parse(b""), Err(ReadError::Closed)));
        assert!(matches!(parse(b"GET / HT"), Err(ReadError::Io(_))));
    }

    #[test]
    fn query_params_are_decoded() {
        let req = parse(b"GET /x?name=a%20b+c&to=http%3A%2F%2Fh%2F HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(req.query_param("name").unwrap().as_deref(), Some("a b c"));
        assert_eq!(req.query_param("to").unwrap().as_deref(), Some("http://h/"));
        assert_eq!(req.query_param("missing").unwrap(), None);
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
