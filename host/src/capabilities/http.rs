//! `wasi:http/outgoing-handler` + `wasi:http/types`: outbound HTTP, only
//! where the grant's `[http]` allows.
//!
//! Threat model. A plugin is a vendor's code talking to the vendor's
//! storage API; it must not become a way to reach anything else from a
//! node running as root: the node's own services on loopback, the cloud
//! metadata service (credentials!), link-local neighbours, or any host the
//! operator did not list. So, for every request:
//! - the origin (`scheme://host:port`) must match an `allow` entry (exact
//!   host, or `*.suffix` for subdomains; an empty list denies everything);
//! - the host name is resolved here, and **every** address it resolves to
//!   is checked; loopback, link-local and cloud metadata addresses
//!   (169.254.169.254, fd00:ec2::254, 169.254.170.2, 100.100.100.200,
//!   168.63.129.16) are refused unless the grant allows that class
//!   explicitly; unspecified, multicast and broadcast addresses never;
//!   IPv4-mapped and NAT64 (64:ff9b::/96) IPv6 forms are checked as the
//!   IPv4 address they carry;
//! - the connection goes to an address that was checked (no second lookup
//!   a DNS answer could change: no rebinding window);
//! - redirects are not followed here: a 3xx goes back to the plugin, and a
//!   follow-up request is checked like any other;
//! - connect, first-byte and between-bytes timeouts are clamped to what is
//!   left of the call's deadline, and the whole exchange ends at it;
//! - response bodies beyond `max_response_kib` end in an error;
//! - TLS trusts the node's CA store plus the grant's optional `ca_bundle`;
//! - every request, allowed or denied and why, goes to the call log.

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Serialize;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView,
};

use crate::policy::HttpGrant;

/// One outbound request as the call log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HttpLogEntry {
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the host refused to send it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// Set while the exchange is still running: a call that ends (its
    /// deadline, a trap) before a request finishes still logs it.
    #[serde(skip)]
    pub pending_since: Option<Instant>,
}

/// The send hook: shared by every request of one call.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<EgressInner>,
}

struct EgressInner {
    grant: HttpGrant,
    deadline: Instant,
    log: Mutex<Vec<HttpLogEntry>>,
    /// Requests beyond [`MAX_LOGGED_REQUESTS`], counted, not logged.
    unlogged: std::sync::atomic::AtomicUsize,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// What an address is, for the grant's address rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Public or private-network unicast: allowed when the origin is.
    Routable,
    Loopback,
    LinkLocal,
    Metadata,
    /// Never allowed.
    Forbidden(&'static str),
}

/// Requests of one call that the call log shows; more are counted.
const MAX_LOGGED_REQUESTS: usize = 100;
/// Longest method and URL the call log keeps of a request.
const MAX_LOGGED_URL: usize = 1024;

/// At most `max` bytes of `s`, cut on a character boundary, marked.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Cloud metadata / host-agent endpoints reachable from instances.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, Oracle
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure wire server
];
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

pub fn classify(ip: IpAddr) -> AddressClass {
    let ip = match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix: the last 32 bits are an IPv4 address.
                let o = v6.octets();
                IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                IpAddr::V6(v6)
            }
        }
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if METADATA_V4.contains(&v4) {
                AddressClass::Metadata
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                AddressClass::Forbidden("an unspecified address")
            } else if v4.is_broadcast() || v4.is_multicast() {
                AddressClass::Forbidden("a broadcast or multicast address")
            } else if v4.is_loopback() {
                AddressClass::Loopback
            } else if v4.is_link_local() {
                AddressClass::LinkLocal
            } else {
                AddressClass::Routable
            }
        }
        IpAddr::V6(v6) => {
            if METADATA_V6.contains(&v6) {
                AddressClass::Metadata
            } else if v6.is_unspecified() {
                AddressClass::Forbidden("an unspecified address")
            } else if v6.is_multicast() {
                AddressClass::Forbidden("a multicast address")
            } else if v6.is_loopback() {
                AddressClass::Loopback
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                AddressClass::LinkLocal
            } else {
                AddressClass::Routable
            }
        }
    }
}

/// The addresses of this node's interfaces (read once per process).
fn node_addresses() -> &'static [IpAddr] {
    static ADDRS: OnceLock<Vec<IpAddr>> = OnceLock::new();
    ADDRS.get_or_init(|| {
        nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Whether `ip` (IPv4-mapped forms included) is one of the node's own.
pub fn is_node_address(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    node_addresses().contains(&ip)
}

impl Egress {
    pub fn new(grant: HttpGrant, deadline: Instant) -> Self {
        Egress {
            inner: Arc::new(EgressInner {
                grant,
                deadline,
                log: Mutex::new(Vec::new()),
                unlogged: std::sync::atomic::AtomicUsize::new(0),
                tls: OnceLock::new(),
            }),
        }
    }

    /// Requests made so far, in order; one still running says so.
    pub fn log(&self) -> Vec<HttpLogEntry> {
        let mut entries = match self.inner.log.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for e in &mut entries {
            if let Some(since) = e.pending_since.take() {
                e.duration_ms = since.elapsed().as_secs_f64() * 1000.0;
                e.error = Some(
                    "it had not finished when the call ended (at its deadline, or the plugin \
                     stopped)"
                        .into(),
                );
            }
        }
        let unlogged = self
            .inner
            .unlogged
            .load(std::sync::atomic::Ordering::Relaxed);
        if unlogged > 0 {
            entries.push(HttpLogEntry {
                method: String::new(),
                url: String::new(),
                address: None,
                status: None,
                denied: None,
                error: Some(format!(
                    "{unlogged} more requests were made and not logged (at most \
                     {MAX_LOGGED_REQUESTS} per call are)"
                )),
                duration_ms: 0.0,
                pending_since: None,
            });
        }
        entries
    }

    /// Log `entry` as running; its slot, for [`Egress::finish`] (none past
    /// [`MAX_LOGGED_REQUESTS`]: a plugin must not grow the log, held in the
    /// host until the call ends, without bound).
    fn start(&self, entry: &HttpLogEntry) -> Option<usize> {
        let mut pending = entry.clone();
        pending.pending_since = Some(Instant::now());
        let mut log = match self.inner.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if log.len() >= MAX_LOGGED_REQUESTS {
            self.inner
                .unlogged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        log.push(pending);
        Some(log.len() - 1)
    }

    fn finish(&self, slot: Option<usize>, entry: HttpLogEntry) {
        let mut log = match self.inner.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = slot.and_then(|slot| log.get_mut(slot)) {
            *e = entry;
        }
    }

    /// Why `ip` may not be contacted under this grant, if it may not.
    pub fn address_refusal(&self, ip: IpAddr) -> Option<String> {
        let g = &self.inner.grant;
        // The node's own addresses reach the same services as loopback
        // (kubelet's API, anything bound to 0.0.0.0): treated as loopback.
        if classify(ip) == AddressClass::Routable && is_node_address(ip) {
            return (!g.allow_loopback).then(|| {
                format!(
                    "{ip} is one of this node's own addresses, treated as loopback \
                     (allow_loopback is not granted)"
                )
            });
        }
        match classify(ip) {
            AddressClass::Routable => None,
            AddressClass::Loopback if g.allow_loopback => None,
            AddressClass::LinkLocal if g.allow_link_local => None,
            AddressClass::Metadata if g.allow_metadata => None,
            AddressClass::Loopback => Some(format!(
                "{ip} is a loopback address (allow_loopback is not granted)"
            )),
            AddressClass::LinkLocal => Some(format!(
                "{ip} is a link-local address (allow_link_local is not granted)"
            )),
            AddressClass::Metadata => Some(format!(
                "{ip} is a cloud metadata address (allow_metadata is not granted)"
            )),
            AddressClass::Forbidden(what) => Some(format!("{ip} is {what}, never allowed")),
        }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.inner
            .tls
            .get_or_init(|| build_tls(self.inner.grant.ca_bundle.as_deref()))
            .clone()
    }

    fn remaining(&self) -> Duration {
        self.inner
            .deadline
            .saturating_duration_since(Instant::now())
    }

    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<
        (
            http::Response<WasiBody>,
            Box<dyn Future<Output = Result<(), HttpError>> + Send>,
        ),
        HttpError,
    > {
        let started = Instant::now();
        let method = request.method().to_string();
        let uri = request.uri().clone();
        // The query and any user:password@ may carry credentials; log the
        // scheme, host, port and path only.
        let url = format!(
            "{}://{}{}{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?"),
            uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
            uri.path()
        );
        let mut entry = HttpLogEntry {
            method: cut(&method, 32),
            url: cut(&url, MAX_LOGGED_URL),
            address: None,
            status: None,
            denied: None,
            error: None,
            duration_ms: 0.0,
            pending_since: None,
        };
        let slot = self.start(&entry);
        let result = self.exchange(request, options, &mut entry).await;
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok((res, _)) => entry.status = Some(res.status().as_u16()),
            // Keep the more precise reason `exchange` may have recorded.
            Err(e) if entry.denied.is_none() && entry.error.is_none() => {
                entry.error = Some(e.to_string())
            }
            Err(_) => {}
        }
        self.finish(slot, entry);
        result
    }

    async fn exchange(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        entry: &mut HttpLogEntry,
    ) -> Result<
        (
            http::Response<WasiBody>,
            Box<dyn Future<Output = Result<(), HttpError>> + Send>,
        ),
        HttpError,
    > {
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => {
                entry.denied = Some("only http and https are allowed".into());
                return Err(HttpError::HttpRequestDenied);
            }
        };
        let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let g = &self.inner.grant;
        if !g.allow.iter().any(|a| a.allows(https, &host, port)) {
            entry.denied = Some(format!(
                "{}://{host}:{port} is not in this driver's [http] allow list",
                if https { "https" } else { "http" }
            ));
            return Err(HttpError::HttpRequestDenied);
        }

        // Resolve here, check every address, connect only to checked ones.
        let remaining = self.remaining();
        if remaining.is_zero() {
            entry.denied = Some("the call's deadline has passed".into());
            return Err(HttpError::ConnectionTimeout);
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(
                remaining,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            {
                Err(_) => return Err(HttpError::DnsTimeout),
                Ok(Err(e)) => {
                    entry.error = Some(format!("resolving {host}: {e}"));
                    return Err(HttpError::DnsError {
                        rcode: None,
                        info_code: None,
                    });
                }
                Ok(Ok(a)) => a.collect(),
            },
        };
        if addrs.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        if let Some(why) = addrs.iter().find_map(|a| self.address_refusal(a.ip())) {
            entry.denied = Some(format!("{host} resolves to {why}"));
            return Err(HttpError::DestinationIpProhibited);
        }

        let clamp = |d: Option<Duration>| d.unwrap_or(Duration::MAX).min(self.remaining());
        let connect_timeout = clamp(options.as_ref().and_then(|o| o.connect_timeout));
        let first_byte_timeout = clamp(options.as_ref().and_then(|o| o.first_byte_timeout));
        let between_bytes = clamp(options.as_ref().and_then(|o| o.between_bytes_timeout));

        let mut stream = None;
        let mut last_err = None;
        for addr in &addrs {
            match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    entry.address = Some(addr.to_string());
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last_err = Some(e),
                Err(_) => return Err(HttpError::ConnectionTimeout),
            }
        }
        let Some(tcp) = stream else {
            return Err(match last_err {
                Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    HttpError::ConnectionRefused
                }
                Some(e) => HttpError::Connect(e),
                None => HttpError::DestinationUnavailable,
            });
        };

        let io: Box<dyn Io> = if https {
            let config = self.tls_config().map_err(|e| {
                entry.error = Some(e);
                HttpError::TlsCertificateError
            })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| HttpError::HttpRequestUriInvalid)?;
            let tls = tokio::time::timeout(
                connect_timeout,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(|e| tls_error(e, entry))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };

        let (mut sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io)),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::from)?;
        let deadline = tokio::time::Instant::from_std(self.inner.deadline);
        let conn_task = tokio::spawn(async move {
            match tokio::time::timeout_at(deadline, conn).await {
                Ok(r) => r.map_err(HttpError::from),
                Err(_) => Err(HttpError::HttpResponseTimeout),
            }
        });

        // Origin-form request target (no scheme/authority: this is not a proxy).
        parts.uri = http::Uri::builder()
            .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let outgoing = http::Request::from_parts(parts, body);

        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(outgoing))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(|e| {
                // At the deadline the connection task ends too, and hyper
                // reports that as a dropped dispatch: it is a timeout.
                if Instant::now() >= self.inner.deadline {
                    HttpError::ConnectionReadTimeout
                } else {
                    HttpError::from(e)
                }
            })?;

        let max = self.inner.grant.max_response_bytes;
        if let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > max
        {
            entry.denied = Some(format!(
                "the response is {len} bytes, over this driver's max_response_kib ({} KiB)",
                max >> 10
            ));
            return Err(HttpError::HttpResponseBodySize(Some(len)));
        }
        let response = response.map(|incoming| {
            CappedBody {
                inner: incoming,
                left: max,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                between: between_bytes,
                idle: Box::pin(tokio::time::sleep(between_bytes)),
            }
            .boxed_unsync()
        });
        let io_done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
            Box::new(async move {
                match conn_task.await {
                    Ok(r) => r,
                    Err(_) => Err(HttpError::InternalError(Some(
                        "connection task failed".into(),
                    ))),
                }
            });
        Ok((response, io_done))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The response body: ends in an error past the byte cap, the call's
/// deadline, or an idle gap longer than the between-bytes timeout.
struct CappedBody {
    inner: hyper::body::Incoming,
    left: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    between: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        self.left = 0;
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(None))));
                    }
                    self.left -= n;
                }
                let next = tokio::time::Instant::now() + self.between;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A failed TLS handshake: the reason, for the log and the call's Failure
/// (the plugin only gets an error code), and the code. A certificate rustls
/// refused (unknown issuer, wrong name, expired) is `TlsCertificateError`,
/// anything else `TlsProtocolError`.
fn tls_error(e: std::io::Error, entry: &mut HttpLogEntry) -> HttpError {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
            )
        });
    entry.error = Some(format!("TLS handshake failed: {e}"));
    if certificate {
        HttpError::TlsCertificateError
    } else {
        HttpError::Tls(e)
    }
}

/// A bundle of a few hundred CAs is well under this.
const MAX_CA_BUNDLE_BYTES: u64 = 4 << 20;

/// The node's CA store plus the grant's bundle.
fn build_tls(ca_bundle: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_bundle {
        // Whoever can change the bundle can add a CA and read every request
        // (tokens included), so it must be as protected as the host itself.
        let pem = crate::trust::read(path, true, MAX_CA_BUNDLE_BYTES)
            .map_err(|e| format!("ca_bundle is not trusted: {e}"))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(CertificateDer::into_owned))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("parsing ca_bundle {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_bundle {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_bundle {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: the node has no CA store and the grant names no ca_bundle"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The hooks object wasmtime-wasi-http calls for every request.
pub struct EgressHooks(pub Egress);

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop(fut);
        let egress = self.0.clone();
        Box::new(egress.send(request, options))
    }
}

/// Link `wasi:http/outgoing-handler` and `wasi:http/types` (only ever
/// called when the grant has `[http]`).
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("8.8.8.8"), AddressClass::Routable);
        assert_eq!(c("10.1.2.3"), AddressClass::Routable);
        assert_eq!(c("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("127.9.9.9"), AddressClass::Loopback);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("169.254.169.254"), AddressClass::Metadata);
        assert_eq!(c("fd00:ec2::254"), AddressClass::Metadata);
        assert_eq!(c("::ffff:169.254.169.254"), AddressClass::Metadata);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("64:ff9b::a9fe:a9fe"), AddressClass::Metadata);
        assert!(matches!(c("0.0.0.0"), AddressClass::Forbidden(_)));
        assert!(matches!(c("::"), AddressClass::Forbidden(_)));
        assert!(matches!(c("224.0.0.1"), AddressClass::Forbidden(_)));
        assert!(matches!(c("255.255.255.255"), AddressClass::Forbidden(_)));
    }

    #[test]
    fn the_nodes_own_addresses_are_loopback() {
        let own: Vec<IpAddr> = node_addresses()
            .iter()
            .copied()
            .filter(|ip| classify(*ip) == AddressClass::Routable)
            .collect();
        let mut g = HttpGrant::deny_all();
        let e = Egress::new(g.clone(), Instant::now());
        for ip in &own {
            let why = e
                .address_refusal(*ip)
                .expect("the node's own address is refused");
            assert!(why.contains("this node's own"), "{why}");
        }
        g.allow_loopback = true;
        let e = Egress::new(g, Instant::now());
        for ip in &own {
            assert_eq!(e.address_refusal(*ip), None);
        }
        // Any machine running this has at least one address besides
        // loopback in CI; say so if not, rather than pass vacuously.
        assert!(
            !own.is_empty(),
            "no routable interface address to test with"
        );
    }

    #[test]
    fn refusals_follow_the_grant() {
        let mut g = HttpGrant {
            allow: vec![],
            allow_loopback: false,
            allow_link_local: false,
            allow_metadata: false,
            ca_bundle: None,
            max_response_bytes: 1024,
        };
        let e = Egress::new(g.clone(), Instant::now());
        assert!(e.address_refusal("127.0.0.1".parse().unwrap()).is_some());
        assert!(e.address_refusal("10.0.0.1".parse().unwrap()).is_none());
        g.allow_loopback = true;
        g.allow_link_local = true;
        let e = Egress::new(g, Instant::now());
        assert!(e.address_refusal("127.0.0.1".parse().unwrap()).is_none());
        assert!(e.address_refusal("169.254.1.1".parse().unwrap()).is_none());
        // Link-local does not include the metadata service.
        assert!(
            e.address_refusal("169.254.169.254".parse().unwrap())
                .is_some()
        );
    }
}
