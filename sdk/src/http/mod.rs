//! Outbound HTTP(S): a small blocking client for a storage backend's REST
//! API, over `wasi:http` 0.2.
//!
//! ```no_run
//! use flexwasm_sdk::serde_json::Value;
//! use flexwasm_sdk::{Result, config, http};
//! use std::time::Duration;
//!
//! fn volume_exists(name: &str) -> Result<bool> {
//!     let endpoint = config::require("endpoint")?; // e.g. https://array.example.com:8443
//!     let token = config::require_secret("token")?; // Debug/Display: <secret>
//!     let response = http::Request::get(format!("{endpoint}/api/v1/volumes"))
//!         .query("name", name)
//!         .bearer(token.expose())
//!         .timeout(Duration::from_secs(10))
//!         .send()? // Failure in words if it could not be sent or got no answer
//!         .error_for_status()?; // Failure with the status and a body excerpt on 4xx/5xx
//!     let volumes: Vec<Value> = response.json()?;
//!     Ok(!volumes.is_empty())
//! }
//! ```
//!
//! What to expect:
//!
//! - **The host decides where a plugin may connect.** It links `wasi:http`
//!   only when the driver's grant policy has an `[http]` table, and sends a
//!   request only to the origins its `allow` list names; loopback,
//!   link-local and cloud metadata addresses need their own grant. A refused
//!   request is a [`Failure`](crate::Error::Failure) saying so, naming the
//!   URL.
//! - **Redirects are not followed.** A 3xx comes back as a [`Response`];
//!   [`Response::location`] gives its target, and a driver that wants to
//!   follow it sends a new request (which the host checks like any other).
//! - **Every error is a sentence.** Transport errors (denied, DNS, refused,
//!   timed out, TLS) and [`Response::error_for_status`] give messages fit for
//!   `kubectl describe`. Messages show URLs without their query, and never
//!   header values.
//! - **Bodies are read whole**, at most [`MAX_RESPONSE_BYTES`]; the host may
//!   allow less (`max_response_kib`). A request body always goes with a
//!   `Content-Length`.
//! - **Time is bounded** by [`Request::timeout`] and, always, by the call's
//!   deadline: set a timeout below the deadline to get a clear message
//!   instead of the call being cut short.
//!
//! Only a plugin (a `wasm32-wasip2` component) reaches the network. Built
//! for any other target, [`Request::send`] hands the request to the handler
//! a test set with `testing::http_handler`, and without one fails with
//! "http is only available inside a plugin".
//!
//! Sending a request makes the plugin import `wasi:http/outgoing-handler`
//! and `wasi:http/types`.

use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

// Used by the transport, which only plugins have; tested everywhere.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod errors;
#[cfg(target_arch = "wasm32")]
mod transport;
mod url;

use url::Url;

/// The most response body bytes [`Request::send`] reads (16 MiB); a larger
/// body is a [`Failure`](crate::Error::Failure).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// At most this many characters of a response body go into a message.
const EXCERPT_CHARS: usize = 200;

/// The request methods a REST client needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method's name, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An outbound request, built then [sent](Request::send).
///
/// The URL is checked when the request is sent: absolute, `http` or `https`,
/// no user name or password in it, spaces and non-ASCII characters
/// percent-encoded (use [`query`](Request::query) for query parameters).
///
/// `Debug` never shows header values that look like credentials
/// (`Authorization`, cookies, anything with `token`, `key` or `secret` in
/// its name), nor the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Request {
    /// A `method` request to `url`, with no body and a `User-Agent` header.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: vec![(
                "user-agent".to_owned(),
                concat!("flexwasm-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
            )],
            body: None,
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Self {
        Request::new(Method::Head, url)
    }

    /// A `POST` request. Without a body it is sent with an empty one.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::Post, url).with_empty_body()
    }

    /// A `PUT` request. Without a body it is sent with an empty one.
    pub fn put(url: impl Into<String>) -> Self {
        Request::new(Method::Put, url).with_empty_body()
    }

    /// A `PATCH` request. Without a body it is sent with an empty one.
    pub fn patch(url: impl Into<String>) -> Self {
        Request::new(Method::Patch, url).with_empty_body()
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Request::new(Method::Delete, url)
    }

    fn with_empty_body(mut self) -> Self {
        self.body = Some(Vec::new());
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL as given (plus any [`query`](Request::query) parameters).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body, if one was set.
    pub fn body_bytes(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The value of header `name` (case-insensitive), if set.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Sets header `name` to `value`, replacing any value it had. Names are
    /// sent lower-case. A name or value that is not valid HTTP (e.g. a line
    /// break in the value) makes [`send`](Request::send) fail.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        self.headers.retain(|(existing, _)| *existing != name);
        self.headers.push((name, value.into()));
        self
    }

    /// Sets `Authorization: Bearer <token>`.
    pub fn bearer(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.header("authorization", value)
    }

    /// Appends the query parameter `name=value` to the URL, both
    /// percent-encoded.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        self.url = format!(
            "{}{separator}{}={}",
            self.url,
            url::encode_component(name),
            url::encode_component(value)
        );
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self.header("content-type", content_type)
    }

    /// Sets a JSON body, `Content-Type: application/json`, and, unless
    /// already set, `Accept: application/json`.
    ///
    /// `body` is JSON text (`&str`, `String`), sent as it is, or — with the
    /// `json` feature, on by default — a [`serde_json::Value`], e.g. from
    /// `serde_json::json!({"name": name})`. See [`JsonBody`].
    pub fn json(self, body: impl JsonBody) -> Self {
        let request = self.body("application/json", body.into_json_bytes());
        if request.header_value("accept").is_some() {
            request
        } else {
            request.header("accept", "application/json")
        }
    }

    /// Bounds connecting, the wait for the response's first byte, and each
    /// wait between bytes, by `timeout` each. Without it the host's defaults
    /// apply; the call's deadline applies always.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    ///
    /// `Ok` for any response, whatever its status (see
    /// [`Response::error_for_status`]); a 3xx is returned, not followed. A
    /// [`Failure`](crate::Error::Failure) in words when the URL is not
    /// valid, when the host refuses the request, when it gets no complete
    /// response (DNS, connection, TLS, timeout…), or when the body exceeds
    /// [`MAX_RESPONSE_BYTES`].
    pub fn send(self) -> Result<Response> {
        let url = Url::parse(&self.url).map_err(|problem| {
            Error::Failure(format!("invalid URL {}: {problem}", url::shown(&self.url)))
        })?;
        send(self, &url)
    }
}

#[cfg(target_arch = "wasm32")]
fn send(request: Request, url: &Url) -> Result<Response> {
    transport::send(request, url)
}

/// Natively, the test's handler answers (`crate::testing::http_handler`).
#[cfg(not(target_arch = "wasm32"))]
fn send(request: Request, url: &Url) -> Result<Response> {
    crate::testing::stand_ins::http::send(request, url.display())
}

// Written by hand so that credentials never reach a log line.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if is_sensitive(name) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &url::shown(&self.url))
            .field("headers", &headers)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn is_sensitive(header: &str) -> bool {
    let header = header.to_ascii_lowercase();
    header.contains("auth")
        || header.contains("cookie")
        || header.contains("token")
        || header.contains("key")
        || header.contains("secret")
        || header.contains("password")
}

/// A JSON request body for [`Request::json`].
///
/// Text (`&str`, `String`) is taken to be JSON already and sent as it is;
/// with the `json` feature a [`serde_json::Value`] is serialized. To send a
/// `#[derive(Serialize)]` type, pass `serde_json::to_value(&it)?`, or
/// implement this trait for it.
pub trait JsonBody {
    /// The body's bytes.
    fn into_json_bytes(self) -> Vec<u8>;
}

impl JsonBody for &str {
    fn into_json_bytes(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl JsonBody for String {
    fn into_json_bytes(self) -> Vec<u8> {
        self.into_bytes()
    }
}

impl JsonBody for &String {
    fn into_json_bytes(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

#[cfg(feature = "json")]
impl JsonBody for &serde_json::Value {
    fn into_json_bytes(self) -> Vec<u8> {
        // Display of a Value is its compact JSON and cannot fail.
        self.to_string().into_bytes()
    }
}

#[cfg(feature = "json")]
impl JsonBody for serde_json::Value {
    fn into_json_bytes(self) -> Vec<u8> {
        (&self).into_json_bytes()
    }
}

/// A response, read whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received; names lower-case as the host gives
    /// them, values decoded as UTF-8 (lossily).
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
    /// The URL requested, as messages show it: `scheme://host[:port]/path`,
    /// without its query.
    pub url: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Status 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Status 3xx.
    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status)
    }

    /// The absolute URL the `Location` header points to (relative ones are
    /// resolved against the requested URL, without its query); `None`
    /// without a usable `Location`. Redirects are never followed for you:
    /// send a new request to follow one.
    pub fn location(&self) -> Option<String> {
        let location = self.header("location")?;
        Url::parse(&self.url).ok()?.resolve(location)
    }

    /// The body as text; invalid UTF-8 is replaced with `�`.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`; a [`Failure`](crate::Error::Failure)
    /// naming the URL when it is not the JSON `T` expects.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|error| {
            Error::Failure(format!(
                "the response from {} (status {}) is not the JSON expected: {error}",
                self.url, self.status
            ))
        })
    }

    /// `Ok(self)` unless the status is 4xx or 5xx; then a
    /// [`Failure`](crate::Error::Failure) such as
    /// `https://array.example.com/api/v1/volumes answered 401 Unauthorized:
    /// invalid or missing API token` (see [`excerpt`](Response::excerpt)).
    pub fn error_for_status(self) -> Result<Response> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut message = format!("{} answered {}", self.url, self.status);
        if let Some(reason) = reason_phrase(self.status) {
            message.push(' ');
            message.push_str(reason);
        }
        let excerpt = self.excerpt();
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        Err(Error::Failure(message))
    }

    /// A short, one-line account of the body for a message: with the
    /// `json` feature, the `error` / `message` / `detail` text of a JSON
    /// error body (`{"error": "…"}`, `{"error": {"message": "…"}}`);
    /// otherwise the start of the body, whitespace collapsed, at most 200
    /// characters. Empty for an empty body.
    pub fn excerpt(&self) -> String {
        #[cfg(feature = "json")]
        if let Some(message) = json_error_message(&self.body) {
            return one_line(&message);
        }
        one_line(&self.text())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The message of a JSON error body, if it has one.
#[cfg(feature = "json")]
fn json_error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    for key in ["error", "message", "detail", "error_description"] {
        match object.get(key) {
            Some(serde_json::Value::String(text)) if !text.trim().is_empty() => {
                return Some(text.clone());
            }
            Some(nested @ serde_json::Value::Object(_)) => {
                let text = nested.get("message").and_then(serde_json::Value::as_str);
                if let Some(text) = text.filter(|text| !text.trim().is_empty()) {
                    return Some(text.to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

/// Whitespace and control characters collapsed to single spaces, at most
/// [`EXCERPT_CHARS`] characters (then `…`).
fn one_line(text: &str) -> String {
    let words = text.split(|c: char| c.is_whitespace() || c.is_control());
    let collapsed = words
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if collapsed.chars().count() <= EXCERPT_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    cut.push('…');
    cut
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            url: "http://127.0.0.1:8080/api/v1/volumes".into(),
        }
    }

    #[test]
    fn builders_set_method_headers_and_body() {
        let request = Request::post("http://h/api")
            .header("X-Trace", "1")
            .header("x-trace", "2")
            .bearer("s3cret")
            .json(r#"{"name":"pv-1"}"#)
            .timeout(Duration::from_secs(5));
        assert_eq!(request.method(), Method::Post);
        assert_eq!(request.header_value("X-TRACE"), Some("2"));
        assert_eq!(request.header_value("authorization"), Some("Bearer s3cret"));
        assert_eq!(
            request.header_value("content-type"),
            Some("application/json")
        );
        assert_eq!(request.header_value("accept"), Some("application/json"));
        assert!(request.header_value("user-agent").is_some());
        assert_eq!(request.body.as_deref(), Some(&br#"{"name":"pv-1"}"#[..]));
        assert_eq!(request.timeout, Some(Duration::from_secs(5)));
        // A POST without a body still sends one (with Content-Length: 0).
        assert_eq!(Request::post("http://h/").body, Some(Vec::new()));
        assert_eq!(Request::get("http://h/").body, None);
        assert_eq!(Request::delete("http://h/").method().as_str(), "DELETE");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_values_are_serialized_and_accept_is_kept() {
        let request = Request::put("http://h/")
            .header("Accept", "*/*")
            .json(serde_json::json!({"size_bytes": 1024}));
        assert_eq!(
            request.body.as_deref(),
            Some(&br#"{"size_bytes":1024}"#[..])
        );
        assert_eq!(request.header_value("accept"), Some("*/*"));
    }

    #[test]
    fn query_parameters_are_encoded_and_appended() {
        let request = Request::get("http://h/v")
            .query("name", "pv 1&x")
            .query("a", "b");
        assert_eq!(request.url(), "http://h/v?name=pv%201%26x&a=b");
    }

    #[test]
    fn debug_hides_credentials() {
        let request = Request::get("http://h/v?api_key=k1")
            .bearer("s3cret")
            .header("X-Api-Key", "k2")
            .header("X-Request-Id", "abc");
        let shown = format!("{request:?}");
        for secret in ["s3cret", "k1", "k2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("abc"), "{shown}");
    }

    #[test]
    fn invalid_urls_fail_before_sending() {
        let error = Request::get("ftp://h/x?token=t").send().unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("invalid URL ftp://h/x: unsupported scheme"),
            "{text}"
        );
        assert!(!text.contains("token"), "{text}");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_builds_cannot_send_without_a_test_handler() {
        let error = Request::get("http://h/x").send().unwrap_err().to_string();
        assert!(
            error.starts_with("http is only available inside a plugin"),
            "{error}"
        );
    }

    #[test]
    fn error_for_status_passes_success_and_redirects() {
        assert!(response(200, "{}").error_for_status().is_ok());
        assert!(response(302, "").error_for_status().is_ok());
    }

    #[cfg(feature = "json")]
    #[test]
    fn error_for_status_reports_status_and_the_json_error() {
        let error = response(401, r#"{"error":"invalid or missing API token"}"#)
            .error_for_status()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "http://127.0.0.1:8080/api/v1/volumes answered 401 Unauthorized: invalid or \
             missing API token"
        );
        let nested = response(409, r#"{"error":{"code":7,"message":"in use"}}"#);
        assert_eq!(nested.excerpt(), "in use");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        let long = format!("line one\n\n\tline two {}", "x".repeat(500));
        let excerpt = response(500, &long).excerpt();
        assert!(excerpt.starts_with("line one line two x"), "{excerpt}");
        assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
        assert_eq!(
            response(599, "")
                .error_for_status()
                .unwrap_err()
                .to_string(),
            "http://127.0.0.1:8080/api/v1/volumes answered 599"
        );
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_bodies_parse_or_fail_in_words() {
        let volumes: Vec<u32> = response(200, "[1, 2]").json().unwrap();
        assert_eq!(volumes, [1, 2]);
        let error = response(200, "<html>")
            .json::<Vec<u32>>()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "the response from http://127.0.0.1:8080/api/v1/volumes (status 200) is not \
                 the JSON expected: "
            ),
            "{error}"
        );
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let mut redirect = response(302, "");
        assert_eq!(redirect.location(), None);
        redirect
            .headers
            .push(("Location".into(), "/api/v2/volumes".into()));
        assert!(redirect.is_redirect());
        assert_eq!(
            redirect.location().as_deref(),
            Some("http://127.0.0.1:8080/api/v2/volumes")
        );
    }
}
