//! `wasi:http` transport errors in words, for `kubectl describe`.

use wasip2::http::types::{ErrorCode, HeaderError};

use crate::Error;

/// The failure of a request to `url` (shown without its query) that ended
/// with `code` instead of a response.
pub(crate) fn transport_failure(url: &str, code: &ErrorCode) -> Error {
    Error::Failure(match code {
        ErrorCode::HttpRequestDenied => format!(
            "outbound request to {url} was denied by the host (not in this driver's [http] \
             allow list, or its address is not allowed)"
        ),
        ErrorCode::DestinationIpProhibited => format!(
            "outbound request to {url} was denied by the host: the address it resolves to is \
             not allowed (loopback, link-local and cloud metadata addresses each need their \
             own grant in the driver's [http] policy)"
        ),
        other => format!("outbound request to {url} failed: {}", describe(other)),
    })
}

/// What happened, as the end of a sentence.
pub(crate) fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "the host denied it".to_owned(),
        ErrorCode::DestinationIpProhibited => "the host does not allow its address".to_owned(),
        ErrorCode::DnsTimeout => "looking up the host name timed out".to_owned(),
        ErrorCode::DnsError(payload) => {
            let mut text = "looking up the host name failed".to_owned();
            if let Some(rcode) = &payload.rcode {
                text.push_str(&format!(" ({rcode})"));
            }
            text
        }
        ErrorCode::DestinationNotFound => "the host name does not resolve".to_owned(),
        ErrorCode::DestinationUnavailable => "the server is unavailable".to_owned(),
        ErrorCode::DestinationIpUnroutable => "the server's address is unreachable".to_owned(),
        ErrorCode::ConnectionRefused => {
            "the connection was refused (is the server running and listening on that port?)"
                .to_owned()
        }
        ErrorCode::ConnectionTerminated => "the server closed the connection".to_owned(),
        ErrorCode::ConnectionTimeout => "connecting to the server timed out".to_owned(),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            "the server did not answer in time".to_owned()
        }
        ErrorCode::ConnectionWriteTimeout => "sending the request timed out".to_owned(),
        ErrorCode::ConnectionLimitReached => "too many connections are open".to_owned(),
        ErrorCode::TlsProtocolError => "the TLS handshake failed".to_owned(),
        ErrorCode::TlsCertificateError => {
            "the server's TLS certificate was not accepted (for a private CA, the operator \
             sets ca_bundle in the driver's [http] policy)"
                .to_owned()
        }
        ErrorCode::TlsAlertReceived(payload) => {
            let mut text = "the server ended the TLS session".to_owned();
            match (&payload.alert_message, payload.alert_id) {
                (Some(message), _) => text.push_str(&format!(" with alert {message:?}")),
                (None, Some(id)) => text.push_str(&format!(" with alert {id}")),
                (None, None) => {}
            }
            text
        }
        ErrorCode::HttpRequestLengthRequired => {
            "the server requires a Content-Length on the request".to_owned()
        }
        ErrorCode::HttpRequestBodySize(_) => "the request body is too large".to_owned(),
        ErrorCode::HttpRequestMethodInvalid => "the request method is invalid".to_owned(),
        ErrorCode::HttpRequestUriInvalid => "the request URL is invalid".to_owned(),
        ErrorCode::HttpRequestUriTooLong => "the request URL is too long".to_owned(),
        ErrorCode::HttpRequestHeaderSectionSize(_) | ErrorCode::HttpRequestHeaderSize(_) => {
            "the request headers are too large".to_owned()
        }
        ErrorCode::HttpRequestTrailerSectionSize(_) | ErrorCode::HttpRequestTrailerSize(_) => {
            "the request trailers are too large".to_owned()
        }
        ErrorCode::HttpResponseIncomplete => "the response was cut short".to_owned(),
        ErrorCode::HttpResponseHeaderSectionSize(_) | ErrorCode::HttpResponseHeaderSize(_) => {
            "the response headers are too large".to_owned()
        }
        ErrorCode::HttpResponseBodySize(size) => {
            let size = size
                .map(|size| format!(" ({size} bytes)"))
                .unwrap_or_default();
            format!(
                "the response body{size} is larger than the host allows (the operator sets \
                 max_response_kib in the driver's [http] policy)"
            )
        }
        ErrorCode::HttpResponseTrailerSectionSize(_) | ErrorCode::HttpResponseTrailerSize(_) => {
            "the response trailers are too large".to_owned()
        }
        ErrorCode::HttpResponseTransferCoding(coding) => {
            unsupported_coding("transfer", coding.as_deref())
        }
        ErrorCode::HttpResponseContentCoding(coding) => {
            unsupported_coding("content", coding.as_deref())
        }
        ErrorCode::HttpUpgradeFailed => "the protocol upgrade failed".to_owned(),
        ErrorCode::HttpProtocolError => {
            "HTTP protocol error (the server's answer was not valid HTTP, or it closed the \
             connection mid-exchange)"
                .to_owned()
        }
        ErrorCode::LoopDetected => "a request loop was detected".to_owned(),
        ErrorCode::ConfigurationError => {
            "the host's HTTP configuration is invalid (ask the operator)".to_owned()
        }
        ErrorCode::InternalError(Some(message)) if !message.trim().is_empty() => {
            message.trim().to_owned()
        }
        ErrorCode::InternalError(_) => "an internal error in the host".to_owned(),
    }
}

fn unsupported_coding(kind: &str, coding: Option<&str>) -> String {
    match coding {
        Some(coding) => format!("the response uses the unsupported {kind} coding {coding:?}"),
        None => format!("the response uses an unsupported {kind} coding"),
    }
}

/// A request header the host refused. The value is never shown: it may be a
/// credential.
pub(crate) fn header_failure(url: &str, error: &HeaderError) -> Error {
    let why = match error {
        HeaderError::InvalidSyntax => "a header name or value is not valid HTTP",
        HeaderError::Forbidden => "it sets a header the host does not let plugins set",
        HeaderError::Immutable => "its headers cannot be changed",
    };
    Error::Failure(format!("outbound request to {url} was not sent: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasip2::http::types::{DnsErrorPayload, TlsAlertReceivedPayload};

    fn message(code: ErrorCode) -> String {
        transport_failure("https://array.example.com/api", &code).to_string()
    }

    #[test]
    fn denials_say_the_host_denied_the_request() {
        assert_eq!(
            message(ErrorCode::HttpRequestDenied),
            "outbound request to https://array.example.com/api was denied by the host (not in \
             this driver's [http] allow list, or its address is not allowed)"
        );
        let prohibited = message(ErrorCode::DestinationIpProhibited);
        assert!(
            prohibited.starts_with(
                "outbound request to https://array.example.com/api was denied by the host: "
            ),
            "{prohibited}"
        );
    }

    #[test]
    fn other_errors_say_what_happened() {
        for (code, expected) in [
            (ErrorCode::ConnectionRefused, "the connection was refused"),
            (
                ErrorCode::ConnectionTimeout,
                "connecting to the server timed out",
            ),
            (ErrorCode::ConnectionReadTimeout, "did not answer in time"),
            (ErrorCode::TlsCertificateError, "ca_bundle"),
            (
                ErrorCode::DnsError(DnsErrorPayload {
                    rcode: Some("NXDOMAIN".into()),
                    info_code: None,
                }),
                "looking up the host name failed (NXDOMAIN)",
            ),
            (
                ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
                    alert_id: Some(42),
                    alert_message: None,
                }),
                "alert 42",
            ),
            (
                ErrorCode::HttpResponseBodySize(Some(1024)),
                "the response body (1024 bytes) is larger than the host allows",
            ),
            (
                ErrorCode::InternalError(Some("  proxy said no ".into())),
                "failed: proxy said no",
            ),
            (
                ErrorCode::InternalError(None),
                "an internal error in the host",
            ),
        ] {
            let text = message(code);
            assert!(
                text.starts_with("outbound request to https://array.example.com/api failed: "),
                "{text}"
            );
            assert!(text.contains(expected), "{text}");
        }
    }

    #[test]
    fn header_failures_never_show_values() {
        let text = header_failure("http://h/", &HeaderError::Forbidden).to_string();
        assert!(text.contains("does not let plugins set"), "{text}");
    }
}
