//! Routes: the authenticated volume API under `/api/v1`, and the
//! unauthenticated test knobs (`/healthz`, `/test/*`) that denial tests use
//! to make a backend slow, huge or redirecting.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{Body, Request, Response};
use crate::store::{ApiError, Store};

/// `/test/slow` sleeps at most this long: long enough for any deadline test,
/// short enough that a typo does not park a thread for a day.
const MAX_SLOW_MS: u64 = 10 * 60 * 1000;
/// `/test/big` sends at most this much.
const MAX_BIG_BYTES: u64 = 1 << 40;

pub struct Api {
    token: String,
    /// One lock for every volume operation: requests on the same volume must
    /// not interleave, and it serialises `losetup` across the process.
    store: Mutex<Store>,
}

impl Api {
    pub fn new(token: String, store: Store) -> Self {
        Api {
            token,
            store: Mutex::new(store),
        }
    }

    pub fn handle(&self, req: &Request) -> Response {
        let path = req.path.as_str();
        match path {
            "/healthz" => only_get(req, || Response::new(200, "text/plain", "ok\n")),
            "/test/slow" => only_get(req, || test_slow(req)),
            "/test/big" => only_get(req, || test_big(req)),
            "/test/redirect" => only_get(req, || test_redirect(req)),
            _ if path == "/api/v1" || path.starts_with("/api/v1/") => {
                if !self.authorized(req) {
                    return Response::error(401, "invalid or missing API token")
                        .with_header("WWW-Authenticate", "Bearer".to_string());
                }
                let segments: Vec<&str> = path["/api/v1".len()..].split('/').skip(1).collect();
                self.volumes(req, &segments)
                    .unwrap_or_else(|e| Response::error(e.status, &e.message))
            }
            _ => Response::error(404, &format!("no route for {path}")),
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && constant_time_eq(token.trim().as_bytes(), self.token.as_bytes())
    }

    fn volumes(&self, req: &Request, segments: &[&str]) -> Result<Response, ApiError> {
        let method = req.method.as_str();
        // A handler that panicked mid-operation left the store as it was
        // before its last persist() at worst; keep serving.
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match (segments, method) {
            (["volumes"], "GET") => {
                let name = req.query_param("name").map_err(|m| ApiError::new(400, m))?;
                let volumes = store.list(name.as_deref());
                Ok(Response::json(200, &VolumeList { volumes }))
            }
            (["volumes"], "POST") => {
                let body: CreateBody = parse_body(req)?;
                let (volume, created) = store.create(&body.name, body.size_bytes)?;
                Ok(Response::json(if created { 201 } else { 200 }, &volume))
            }
            (["volumes"], _) => Ok(not_allowed("GET, POST")),
            (["volumes", id], "GET") => Ok(Response::json(200, &store.get(id)?)),
            (["volumes", id], "DELETE") => {
                store.delete(id)?;
                Ok(Response::no_content())
            }
            (["volumes", _], _) => Ok(not_allowed("GET, DELETE")),
            (["volumes", id, "resize"], "POST") => {
                let body: ResizeBody = parse_body(req)?;
                Ok(Response::json(200, &store.resize(id, body.size_bytes)?))
            }
            (["volumes", id, "attach"], "POST") => {
                let body: NodeBody = parse_body(req)?;
                Ok(Response::json(200, &store.attach(id, &body.node)?))
            }
            (["volumes", id, "detach"], "POST") => {
                let body: NodeBody = parse_body(req)?;
                Ok(Response::json(200, &store.detach(id, &body.node)?))
            }
            (["volumes", _, "resize" | "attach" | "detach"], _) => Ok(not_allowed("POST")),
            _ => Err(ApiError::new(404, format!("no route for {}", req.path))),
        }
    }
}

/// The list answer is wrapped, so fields (paging, totals) can be added later
/// without breaking clients.
#[derive(Serialize)]
struct VolumeList {
    volumes: Vec<flexwasm_array_server::Volume>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    size_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    size_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    node: String,
}

/// Unknown fields are refused: a plugin sending `size` instead of
/// `size_bytes` should hear about it, not get a default.
fn parse_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, &format!("method not allowed; use {allow}"))
        .with_header("Allow", allow.to_string())
}

fn only_get(req: &Request, handler: impl FnOnce() -> Response) -> Response {
    if req.method == "GET" {
        handler()
    } else {
        not_allowed("GET")
    }
}

/// A required unsigned query parameter at most `max`.
fn u64_param(req: &Request, name: &str, max: u64) -> Result<u64, Response> {
    let value = req
        .query_param(name)
        .map_err(|m| Response::error(400, &m))?
        .ok_or_else(|| Response::error(400, &format!("missing query parameter {name}")))?;
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Response::error(
            400,
            &format!("{name} must be an integer from 0 to {max}, not {value:?}"),
        )),
    }
}

fn test_slow(req: &Request) -> Response {
    match u64_param(req, "ms", MAX_SLOW_MS) {
        Ok(ms) => {
            thread::sleep(Duration::from_millis(ms));
            Response::json(200, &json!({ "slept_ms": ms }))
        }
        Err(response) => response,
    }
}

fn test_big(req: &Request) -> Response {
    match u64_param(req, "bytes", MAX_BIG_BYTES) {
        Ok(bytes) => Response {
            status: 200,
            content_type: "application/octet-stream",
            headers: Vec::new(),
            body: Body::Filler(bytes),
        },
        Err(response) => response,
    }
}

fn test_redirect(req: &Request) -> Response {
    let to = match req.query_param("to") {
        Ok(Some(to)) if !to.is_empty() => to,
        Ok(_) => return Response::error(400, "missing query parameter to"),
        Err(m) => return Response::error(400, &m),
    };
    // The value goes into a header: no CR/LF smuggling a second one.
    if to.chars().any(char::is_control) {
        return Response::error(400, "to must not contain control characters");
    }
    Response::json(302, &json!({ "location": to })).with_header("Location", to)
}

/// Token comparison whose time does not depend on where the first
/// mismatching byte is (only on the lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
