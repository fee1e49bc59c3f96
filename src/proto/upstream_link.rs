//! How the relay reaches a route's camera under RTSP: plain TCP, TLS (`rtsps://`), or Apple's
//! RTSP-over-HTTP tunnel (`rtsp+http://`, `rtsp+https://`). The configuration builds this
//! (`config::RouteConfig::validate`, with `tls::load_client_config`); the shard carries it out.

use std::sync::Arc;

use rustls::pki_types::ServerName;

/// What a camera's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerification {
    /// The system's trust store (the distribution's CA bundle).
    SystemRoots,
    /// The route's `upstream_ca` file.
    Ca(String),
    /// `upstream_fingerprint`: the SHA-256 of the camera's own certificate, whoever signed it.
    Fingerprint([u8; 32]),
    /// `upstream_insecure_tls = true`: anything (signatures still checked).
    Insecure,
}

/// TLS towards a camera.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (the URL's host, an IP address included).
    pub server_name: ServerName<'static>,
    pub verification: TlsVerification,
}

/// Under RTSP, towards one camera.
#[derive(Debug, Clone, Default)]
pub struct UpstreamLink {
    pub tls: Option<UpstreamTls>,
    /// `rtsp+http(s)://`: the relay opens the tunnel's GET and POST itself.
    pub http_tunnel: Option<HttpTunnelTarget>,
}

/// Where the tunnel's GET and POST go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTunnelTarget {
    /// Path and query of the camera URL.
    pub target: String,
    /// `host[:port]` as the `Host` header names it.
    pub host: String,
}

impl UpstreamLink {
    /// Whether `other` reaches the camera the same way (a reload compares these).
    pub fn same_as(&self, other: &UpstreamLink) -> bool {
        self.http_tunnel == other.http_tunnel
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => a.verification == b.verification && a.server_name == b.server_name,
                _ => false,
            }
    }

    /// The scheme for logs and the camera's state.
    pub fn scheme(&self) -> &'static str {
        match (self.http_tunnel.is_some(), self.tls.is_some()) {
            (false, false) => "rtsp",
            (false, true) => "rtsps",
            (true, false) => "rtsp+http",
            (true, true) => "rtsp+https",
        }
    }
}

/// Parses `upstream_fingerprint`: `sha256:` then 32 bytes in hex, with or without `:` between
/// the bytes (as `openssl x509 -fingerprint -sha256` prints them).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:"))?;
    let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = format!("sha256:{}", "ab".repeat(32));
        let colons = format!("sha256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(parse_fingerprint(&plain), Some([0xab; 32]));
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(parse_fingerprint("sha1:abcd"), None);
        assert_eq!(parse_fingerprint(&format!("sha256:{}", "ab".repeat(31))), None);
        assert_eq!(parse_fingerprint(&format!("sha256:{}", "zz".repeat(32))), None);
        assert_eq!(parse_fingerprint("sha256:é"), None);
    }
}
