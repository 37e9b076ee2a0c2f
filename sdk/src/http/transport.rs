//! Sending a request through `wasi:http/outgoing-handler` and reading the
//! whole response, blocking on `wasi:io` pollables.
//!
//! Resource order matters to the host: a child (a body's stream, a
//! future's pollable) is dropped before its parent is finished or dropped.

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse,
    Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme, http_error_code,
};
use wasip2::io::streams::StreamError;

use super::errors::{describe, header_failure, transport_failure};
use super::url::Url;
use super::{MAX_RESPONSE_BYTES, Method, Request, Response};
use crate::{Error, Result};

/// Bytes asked for per read of the response body.
const READ_CHUNK: u64 = 64 * 1024;
/// `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

pub(super) fn send(request: Request, url: &Url) -> Result<Response> {
    let shown = url.display();
    let not_sent = |what: &str| {
        Error::Failure(format!(
            "outbound request to {shown} was not sent: the host refused its {what}"
        ))
    };

    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers
        .into_iter()
        .filter(|(name, _)| request.body.is_none() || name != "content-length")
        .map(|(name, value)| (name, value.into_bytes()))
        .collect();
    if let Some(body) = &request.body {
        // Always a Content-Length, the body's own: simple servers do not
        // take chunked bodies.
        entries.push((
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ));
    }
    let headers = Fields::from_list(&entries).map_err(|error| header_failure(&shown, &error))?;
    let outgoing = OutgoingRequest::new(headers);
    outgoing
        .set_method(&wasi_method(request.method))
        .map_err(|()| not_sent("method"))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| not_sent("scheme"))?;
    outgoing
        .set_authority(Some(&url.authority))
        .map_err(|()| not_sent("host and port"))?;
    outgoing
        .set_path_with_query(Some(&url.path_and_query))
        .map_err(|()| not_sent("path"))?;
    let body = match request.body {
        Some(bytes) => Some((outgoing.body().map_err(|()| not_sent("body"))?, bytes)),
        None => None,
    };
    let options = request.timeout.map(request_options);

    let future = outgoing_handler::handle(outgoing, options)
        .map_err(|code| transport_failure(&shown, &code))?;
    let written = match body {
        Some((body, bytes)) => write_body(body, &bytes),
        None => Ok(()),
    };
    // A body that cannot be written usually means the request failed
    // (refused, timed out…) and the response future says why, or that the
    // server answered early (e.g. 413), and that answer is the news.
    let response = wait(&future, &shown)?;
    if let Err(problem) = written
        && response.status() < 300
    {
        return Err(Error::Failure(format!(
            "outbound request to {shown} failed: sending the body: {problem}"
        )));
    }
    read_response(&response, &shown)
}

fn wasi_method(method: Method) -> WasiMethod {
    match method {
        Method::Get => WasiMethod::Get,
        Method::Head => WasiMethod::Head,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Patch => WasiMethod::Patch,
        Method::Delete => WasiMethod::Delete,
    }
}

/// The same timeout for connecting, the first byte of the response and
/// between bytes. A host that does not support one keeps its own.
fn request_options(timeout: Duration) -> RequestOptions {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    options
}

/// Writes the whole body and finishes it; the error is a clause in words.
fn write_body(body: OutgoingBody, bytes: &[u8]) -> std::result::Result<(), String> {
    {
        let stream = body
            .write()
            .map_err(|()| "the host gave no body stream".to_owned())?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| stream_problem(&error))?;
        }
        // The stream is dropped here, before its body is finished.
    }
    OutgoingBody::finish(body, None).map_err(|code| describe(&code))
}

/// Blocks until the response head (or an error) arrives.
fn wait(future: &FutureIncomingResponse, shown: &str) -> Result<IncomingResponse> {
    loop {
        {
            let ready = future.subscribe();
            ready.block();
        }
        match future.get() {
            None => continue,
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(transport_failure(shown, &code)),
            Some(Err(())) => {
                return Err(Error::Failure(format!(
                    "outbound request to {shown} failed: its response was already taken"
                )));
            }
        }
    }
}

fn read_response(response: &IncomingResponse, shown: &str) -> Result<Response> {
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect()
    };
    let incoming = response.consume().map_err(|()| {
        Error::Failure(format!(
            "outbound request to {shown} failed: the response body was already taken"
        ))
    })?;
    let body = read_body(&incoming, shown);
    // Trailers are not used; finishing releases the body.
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body: body?,
        url: shown.to_owned(),
    })
}

fn read_body(incoming: &IncomingBody, shown: &str) -> Result<Vec<u8>> {
    let stream = incoming.stream().map_err(|()| {
        Error::Failure(format!(
            "outbound request to {shown} failed: the response body stream was already taken"
        ))
    })?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                    return Err(Error::Failure(format!(
                        "the response from {shown} is larger than {} MiB, the most the SDK reads",
                        MAX_RESPONSE_BYTES >> 20
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(match http_error_code(&error) {
                    Some(code) => reading_failure(shown, &code),
                    None => Error::Failure(format!(
                        "outbound request to {shown} failed: reading the response: {}",
                        error.to_debug_string()
                    )),
                });
            }
        }
    }
}

fn reading_failure(shown: &str, code: &ErrorCode) -> Error {
    match transport_failure(shown, code) {
        Error::Failure(message) => {
            Error::Failure(format!("{message} (while reading the response)"))
        }
        other => other,
    }
}

fn stream_problem(error: &StreamError) -> String {
    match error {
        StreamError::Closed => "the connection was closed".to_owned(),
        StreamError::LastOperationFailed(error) => match http_error_code(error) {
            Some(code) => describe(&code),
            None => error.to_debug_string(),
        },
    }
}
