//! Test plugin for the host's outbound HTTP: denials, timeouts, size caps,
//! redirects.
//!
//! `init` reports node-only capabilities. `getvolumename <json>` sends
//! `GET <url>` and answers `"<status> <body length>"`, or fails with the
//! SDK's message (e.g. "outbound request to … was denied by the host …"),
//! so a test sees exactly what a driver author would.
//!
//! Options:
//!
//! | option | meaning |
//! |---|---|
//! | `url` | required: the URL to GET |
//! | `timeout_ms` | the request's timeout (connect, first byte, between bytes) |
//! | `follow` | `1`: if the answer is a redirect, GET its `Location` once (the host checks that request like any other) |

use std::time::Duration;

use flexwasm_sdk::http::{Request, Response};
use flexwasm_sdk::prelude::*;

#[derive(Default)]
struct HttpProbe;

impl Driver for HttpProbe {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::node_only())
    }

    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let Some(url) = options.get("url").filter(|url| !url.is_empty()) else {
            fail!("option \"url\" is required");
        };
        let timeout = timeout(options)?;
        let mut response = get(url, timeout)?;
        if options.get("follow") == Some("1") && response.is_redirect() {
            let Some(location) = response.location() else {
                fail!(
                    "{} answered {} without a usable Location",
                    response.url,
                    response.status
                );
            };
            response = get(&location, timeout)?;
        }
        Ok(format!("{} {}", response.status, response.body.len()))
    }
}

export_driver!(HttpProbe);

fn get(url: &str, timeout: Option<Duration>) -> Result<Response> {
    let request = Request::get(url);
    match timeout {
        Some(timeout) => request.timeout(timeout),
        None => request,
    }
    .send()
}

/// The `timeout_ms` option, if set.
fn timeout(options: &Options) -> Result<Option<Duration>> {
    options
        .get("timeout_ms")
        .map(|text| {
            text.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    Error::failure(format!(
                        "option \"timeout_ms\" must be a whole number of milliseconds, not {text:?}"
                    ))
                })
        })
        .transpose()
}
