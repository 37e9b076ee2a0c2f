//! Just enough URL handling for the HTTP client: absolute `http` and `https`
//! URLs split into what `wasi:http` wants (scheme, authority, path with
//! query), query encoding, and resolving a redirect's `Location`.

/// An absolute `http://` or `https://` URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    /// `host[:port]`, host lower-cased; no user info.
    pub(crate) authority: String,
    /// Starts with `/`; the fragment is dropped.
    pub(crate) path_and_query: String,
}

impl Url {
    /// Parses an absolute URL. Surrounding whitespace is ignored (values read
    /// from files often end with a newline). The error says what is wrong,
    /// for a message that also names the URL.
    pub(crate) fn parse(text: &str) -> Result<Url, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err("not an absolute URL; expected http://host[:port]/path or \
                        https://host[:port]/path"
                .to_owned());
        };
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(format!(
                "unsupported scheme {scheme:?}; only http and https are supported"
            ));
        };
        if let Some(bad) = rest.chars().find(|c| !c.is_ascii_graphic() || *c == '\\') {
            return Err(format!(
                "it contains {bad:?}; percent-encode spaces, control and non-ASCII \
                 characters"
            ));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        let authority = check_authority(authority)?;
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else {
            format!("/{path_and_query}")
        };
        Ok(Url {
            https,
            authority,
            path_and_query,
        })
    }

    pub(crate) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The path, without the query.
    pub(crate) fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(path, _)| path)
    }

    /// `scheme://authority/path`, without the query: what messages show, as
    /// a query may carry credentials.
    pub(crate) fn display(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.path())
    }

    /// The absolute URL a `Location` header value refers to, relative to
    /// this URL; `None` if it is empty or not http(s).
    pub(crate) fn resolve(&self, location: &str) -> Option<String> {
        let location = location.trim();
        let origin = format!("{}://{}", self.scheme(), self.authority);
        let absolute = if location.is_empty() {
            return None;
        } else if location.contains("://") {
            location.to_owned()
        } else if let Some(rest) = location.strip_prefix("//") {
            format!("{}://{rest}", self.scheme())
        } else if location.starts_with('/') {
            format!("{origin}{location}")
        } else if location.starts_with('?') {
            format!("{origin}{}{location}", self.path())
        } else {
            let path = self.path();
            let directory = &path[..path.rfind('/').map_or(0, |slash| slash + 1)];
            format!("{origin}{directory}{location}")
        };
        Url::parse(&absolute).ok().map(|_| absolute)
    }
}

/// Checks `host[:port]` (an IPv6 host in brackets) and lower-cases the host.
fn check_authority(authority: &str) -> Result<String, String> {
    if authority.is_empty() {
        return Err("it has no host".to_owned());
    }
    if authority.contains('@') {
        return Err(
            "user names and passwords in URLs are not supported; send credentials \
                    in a header (e.g. Request::bearer)"
                .to_owned(),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("its IPv6 address has no closing ']'".to_owned());
        };
        if address.is_empty()
            || !address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("[{address}] is not an IPv6 address"));
        }
        match after {
            "" => (&authority[..address.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&authority[..address.len() + 2], Some(port)),
                None => return Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("it has no host".to_owned());
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port
                .parse::<u32>()
                .is_ok_and(|port| (1..=65535).contains(&port));
        if !valid {
            return Err(format!("port {port:?} is not a number from 1 to 65535"));
        }
    }
    Ok(authority.to_ascii_lowercase())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for one
/// query name or value.
pub(crate) fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `text` as messages show an unparseable URL: without a query, which may
/// carry credentials, and not overlong.
pub(crate) fn shown(text: &str) -> String {
    let text = text.trim();
    let text = text.split_once('?').map_or(text, |(before, _)| before);
    let mut shown: String = text.chars().take(200).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap_or_else(|problem| panic!("{text}: {problem}"))
    }

    #[test]
    fn splits_scheme_authority_path_and_query() {
        assert_eq!(
            url("https://Array.Example.com:8443/api/v1/volumes?name=pv-1#frag"),
            Url {
                https: true,
                authority: "array.example.com:8443".into(),
                path_and_query: "/api/v1/volumes?name=pv-1".into(),
            }
        );
        let bare = url(" HTTP://127.0.0.1:8080\n");
        assert!(!bare.https);
        assert_eq!(bare.authority, "127.0.0.1:8080");
        assert_eq!(bare.path_and_query, "/");
        assert_eq!(url("http://h?x=1").path_and_query, "/?x=1");
        assert_eq!(url("http://[::1]:80/a").authority, "[::1]:80");
        assert_eq!(url("http://[fe80::1]").authority, "[fe80::1]");
    }

    #[test]
    fn display_drops_the_query() {
        let u = url("https://h:1/a/b?token=secret");
        assert_eq!(u.display(), "https://h:1/a/b");
        assert_eq!(u.path(), "/a/b");
    }

    #[test]
    fn rejects_what_is_not_a_plain_http_url() {
        for (text, expected) in [
            ("example.com/x", "not an absolute URL"),
            ("ftp://h/x", "unsupported scheme \"ftp\""),
            ("http:///x", "no host"),
            ("http://user:pw@h/x", "user names and passwords"),
            ("http://h:0/", "port \"0\""),
            ("http://h:65536/", "port \"65536\""),
            ("http://h:/", "port \"\""),
            ("http://h:8o/", "port \"8o\""),
            ("http://h/a b", "percent-encode"),
            ("http://h/\u{e9}", "percent-encode"),
            ("http://h/\r\nX: y", "percent-encode"),
            ("http://[::1/", "closing ']'"),
            ("http://[zz]/", "not an IPv6 address"),
            ("http://[::1]x/", "after the IPv6 address"),
            ("http://h!st/", "not a host name"),
        ] {
            let problem = Url::parse(text).expect_err(text);
            assert!(problem.contains(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn resolves_locations() {
        let base = url("https://h:8443/api/v1/volumes?name=x");
        for (location, expected) in [
            ("http://other/x", Some("http://other/x")),
            ("//other:1/y", Some("https://other:1/y")),
            ("/z?q=1", Some("https://h:8443/z?q=1")),
            ("?page=2", Some("https://h:8443/api/v1/volumes?page=2")),
            ("vol-1", Some("https://h:8443/api/v1/vol-1")),
            ("", None),
            ("ftp://x/", None),
        ] {
            assert_eq!(base.resolve(location).as_deref(), expected, "{location}");
        }
    }

    #[test]
    fn encodes_query_components() {
        assert_eq!(encode_component("pv-1_a.b~c"), "pv-1_a.b~c");
        assert_eq!(encode_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn shown_urls_lose_their_query() {
        assert_eq!(shown("http://h/x?token=s"), "http://h/x");
        assert_eq!(shown(&"a".repeat(300)).chars().count(), 201);
    }
}
