//! `[http]`: grants `wasi:http`; the origins a plugin may reach and the
//! address classes and limits its requests are held to.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub allow: Option<Vec<String>>,
    pub allow_loopback: Option<bool>,
    pub allow_link_local: Option<bool>,
    pub allow_metadata: Option<bool>,
    pub ca_bundle: Option<String>,
    pub max_response_kib: Option<u64>,
}

/// One `[http] allow` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedOrigin {
    pub https: bool,
    /// Lowercase host or IP literal; `*.` prefix for a subdomain wildcard.
    pub host: String,
    pub port: u16,
}

impl AllowedOrigin {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("http.allow entry '{entry}' {why}; expected scheme://host[:port]");
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("has no scheme"))?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad("has a scheme other than http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad("must be an origin only (no path, query or user info)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed ["))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("has an invalid port"))?,
            None if https => 443,
            None => 80,
        };
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && (name.parse::<std::net::IpAddr>().is_ok()
                || name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid || (host.starts_with("*.") && name.parse::<std::net::IpAddr>().is_ok()) {
            return Err(bad("has an invalid host"));
        }
        Ok(AllowedOrigin { https, host, port })
    }

    /// Whether a request to `https`/`host`/`port` is covered by this entry.
    pub fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        if self.https != https || self.port != port {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpGrant {
    pub allow: Vec<AllowedOrigin>,
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    pub allow_metadata: bool,
    pub ca_bundle: Option<PathBuf>,
    pub max_response_bytes: u64,
}

impl HttpGrant {
    /// Nothing allowed (what a plugin without `[http]` would get, were
    /// wasi:http linked at all — it is not).
    pub fn deny_all() -> Self {
        HttpGrant {
            allow: Vec::new(),
            allow_loopback: false,
            allow_link_local: false,
            allow_metadata: false,
            ca_bundle: None,
            max_response_bytes: 0,
        }
    }
}

/// `[http]`, checked: its allow entries and the rest, with defaults.
pub(super) fn validate(h: RawHttp) -> Result<HttpGrant, String> {
    let allow = h
        .allow
        .unwrap_or_default()
        .iter()
        .map(|e| AllowedOrigin::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let kib = h.max_response_kib.unwrap_or(1024);
    if !(1..=1 << 20).contains(&kib) {
        return Err(format!(
            "http.max_response_kib = {kib} is out of range 1..=1048576"
        ));
    }
    let ca_bundle = match h.ca_bundle {
        Some(p) if Path::new(&p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            return Err(format!("http.ca_bundle '{p}' must be an absolute path"));
        }
        None => None,
    };
    Ok(HttpGrant {
        allow,
        allow_loopback: h.allow_loopback.unwrap_or(false),
        allow_link_local: h.allow_link_local.unwrap_or(false),
        allow_metadata: h.allow_metadata.unwrap_or(false),
        ca_bundle,
        max_response_bytes: kib << 10,
    })
}
