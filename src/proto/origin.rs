//! Which web origins may open a WebSocket here. A browser sends `Origin` with every WebSocket
//! and lets any page open one to any host, with the visitor's network position: a page on
//! another site could read a camera that only the visitor's address may watch (a route with
//! `allow = ["10.0.0.0/8"]`). So a WebSocket whose `Origin` is neither the relay's own (the
//! request's `Host`) nor listed in `[web] allowed_origins` is refused. A client that sends no
//! `Origin` is not a browser acting for someone else, and is judged as any other client.
//!
//! Origins compare as RFC 6454 says: scheme, host (case-insensitively) and port, a missing port
//! being the scheme's default.

/// A parsed `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Lowercase: `http` or `https`.
    scheme: String,
    /// Lowercase; an IPv6 address keeps its brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// Parses a serialized origin (`https://example.com:8443`, `http://[::1]`): nothing after
    /// the authority but an optional `/`, no user info, an `http` or `https` scheme.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = default_port(&scheme)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_authority(authority)?;
        Some(Origin { scheme, host, port: port.unwrap_or(default_port) })
    }

    /// Whether this origin names the host a request was sent to (its `Host` header): same host,
    /// same port (the origin scheme's default when `Host` has none).
    fn is_host(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_authority(host_header.trim()) else {
            return false;
        };
        let default = default_port(&self.scheme).unwrap_or(0);
        host == self.host && port.unwrap_or(default) == self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` or `[v6][:port]`, the host lowercased; None when malformed.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether a WebSocket upgrade with this `Origin` (None: the header is absent) and `Host` may
/// go on: no `Origin`, the relay's own origin, or one of `allowed`.
pub fn websocket_origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[Origin]) -> bool {
    let Some(origin) = origin else { return true };
    // `null` (a sandboxed frame, a file) and anything unparsable is no origin we trust.
    let Some(origin) = Origin::parse(origin.trim()) else { return false };
    host.is_some_and(|h| origin.is_host(h)) || allowed.contains(&origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed(list: &[&str]) -> Vec<Origin> {
        list.iter().map(|o| Origin::parse(o).unwrap()).collect()
    }

    #[test]
    fn no_origin_is_judged_as_today() {
        assert!(websocket_origin_allowed(None, Some("relay:8554"), &[]));
        assert!(websocket_origin_allowed(None, None, &[]));
    }

    #[test]
    fn the_relays_own_origin_is_the_requests_host() {
        let ok = |o: &str, h: &str| websocket_origin_allowed(Some(o), Some(h), &[]);
        assert!(ok("http://127.0.0.1:8554", "127.0.0.1:8554"));
        assert!(ok("http://Relay.Example", "relay.example"));
        assert!(ok("https://relay.example", "relay.example:443"));
        assert!(ok("http://relay.example:80", "relay.example"));
        assert!(ok("http://[::1]:8554", "[::1]:8554"));
        // Another port on the same host is another origin (another site).
        assert!(!ok("http://127.0.0.1:9000", "127.0.0.1:8554"));
        assert!(!ok("http://127.0.0.2:8554", "127.0.0.1:8554"));
        assert!(!ok("https://relay.example", "relay.example:80"));
        assert!(!ok("http://evil.example", "relay.example"));
        assert!(!ok("http://relay.example.evil.example", "relay.example"));
        assert!(!websocket_origin_allowed(Some("http://relay.example"), None, &[]));
    }

    #[test]
    fn listed_origins_are_allowed_and_nothing_else() {
        let list = allowed(&["https://nvr.example", "http://10.0.0.7:8080"]);
        let ok = |o: &str| websocket_origin_allowed(Some(o), Some("relay:8554"), &list);
        assert!(ok("https://nvr.example"));
        assert!(ok("https://NVR.example:443"));
        assert!(ok("http://10.0.0.7:8080"));
        assert!(!ok("http://nvr.example"));
        assert!(!ok("http://10.0.0.7"));
        assert!(!ok("null"));
        assert!(!ok(""));
        assert!(!ok("https://nvr.example.evil"));
    }

    #[test]
    fn configured_origins_must_be_scheme_host_and_port() {
        for good in ["http://a", "https://a.b:8443", "http://[::1]:80", "https://a/"] {
            assert!(Origin::parse(good).is_some(), "{good}");
        }
        for bad in
            ["a.b", "ftp://a", "http://", "http://a/x", "http://u@a", "http://a:x", "http://a:99999", "*", "null"]
        {
            assert!(Origin::parse(bad).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_header_values_are_safe(origin in ".{0,80}", host in ".{0,80}") {
            let _ = websocket_origin_allowed(Some(&origin), Some(&host), &[]);
            let _ = Origin::parse(&origin);
        }
    }
}
