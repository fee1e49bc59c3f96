//! Classification of the first bytes a client sends: a tunnel GET, a tunnel POST, plain RTSP on
//! the same port, or something else; plus the HTTP replies the relay writes.

use super::outcome::Rejection;

/// Limits applied while reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head accepted, request line and headers included.
    pub max_header_bytes: usize,
    /// Longest `x-sessioncookie` accepted.
    pub max_cookie_len: usize,
}

/// What kind of connection a head opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `GET` with `x-sessioncookie`: the tunnel's data socket (server→client).
    TunnelGet,
    /// `POST` with `x-sessioncookie`: the tunnel's command socket (client→server, base64).
    TunnelPost,
    /// The first line is an RTSP request (`... RTSP/1.0`): a plain RTSP/TCP client.
    PlainRtsp,
    /// Any other HTTP request (answered with an HTTP error by the shell).
    OtherHttp,
}

/// A classified request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub kind: HeadKind,
    pub method: String,
    /// The request target as sent (path plus optional query); for plain RTSP the request URI.
    pub target: String,
    /// HTTP minor version (0 or 1); 0 for plain RTSP.
    pub http_minor: u8,
    /// `x-sessioncookie`, validated against the limits (length, charset).
    pub cookie: Option<String>,
    /// POST carried `Expect: 100-continue`.
    pub expect_continue: bool,
    pub user_agent: Option<String>,
    /// Bytes of the input that make up the head. For [`HeadKind::PlainRtsp`] this is 0: the
    /// whole input belongs to the RTSP stream.
    pub consumed: usize,
}

/// Why a head was refused. [`HeadError::rejection`] is what the shell counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("invalid x-sessioncookie: {0}")]
    BadCookie(String),
}

impl HeadError {
    /// The rejection to count (`relay_rejections_total{reason}`): the shell takes the value
    /// itself, never a label text mapped back.
    pub fn rejection(&self) -> Rejection {
        match self {
            HeadError::TooLarge { .. } => Rejection::HeaderTooLarge,
            HeadError::Malformed(_) => Rejection::MalformedHead,
            HeadError::BadCookie(_) => Rejection::BadCookie,
        }
    }

    /// The label text of [`HeadError::rejection`].
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::TooLarge { .. } => "header_too_large",
            HeadError::Malformed(_) => "malformed_head",
            HeadError::BadCookie(_) => "bad_cookie",
        }
    }
}

/// Parses a head from the start of `buf`. `Ok(None)`: more bytes are needed (and `buf` is still
/// under the limit).
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Option<RequestHead>, HeadError> {
    let too_large = HeadError::TooLarge { limit: limits.max_header_bytes };
    // Plain RTSP on the tunnel port: only the request line is needed to tell.
    let Some(first_nl) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > limits.max_header_bytes { Err(too_large) } else { Ok(None) };
    };
    let first = buf[..first_nl].strip_suffix(b"\r").unwrap_or(&buf[..first_nl]);
    if first.ends_with(b" RTSP/1.0") || first.ends_with(b" RTSP/2.0") {
        let mut parts = first.split(|b| *b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        return Ok(Some(RequestHead {
            kind: HeadKind::PlainRtsp,
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            http_minor: 0,
            cookie: None,
            expect_continue: false,
            user_agent: None,
            consumed: 0,
        }));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_header_bytes => return Err(too_large),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => return Err(too_large),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Malformed("more than 64 headers".into())),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let method = req.method.unwrap_or_default().to_owned();
    let mut cookie = None;
    let mut expect_continue = false;
    let mut user_agent = None;
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_owned();
        if h.name.eq_ignore_ascii_case("x-sessioncookie") {
            cookie = Some(validate_cookie(h.value, limits)?);
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue |= value().eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = Some(value());
        }
        // Content-Length is ignored on purpose: GETs may carry one (gortsplib: 30000) and the
        // POST's (32767) is an arbitrary number clients exceed.
    }
    let kind = match (method.as_str(), &cookie) {
        ("GET", Some(_)) => HeadKind::TunnelGet,
        ("POST", Some(_)) => HeadKind::TunnelPost,
        _ => HeadKind::OtherHttp,
    };
    Ok(Some(RequestHead {
        kind,
        method,
        target: req.path.unwrap_or("/").to_owned(),
        http_minor: req.version.unwrap_or(0),
        cookie,
        expect_continue,
        user_agent,
        consumed,
    }))
}

/// Cookies seen: 16 hex (FFmpeg), 23 letters (GStreamer), 22 base64-ish (QuickTime), 23 hex
/// (live555). Anything outside that alphabet, empty or too long is refused.
fn validate_cookie(raw: &[u8], limits: &HeadLimits) -> Result<String, HeadError> {
    let cookie = std::str::from_utf8(raw).map_err(|_| HeadError::BadCookie("not UTF-8".into()))?.trim();
    if cookie.is_empty() {
        return Err(HeadError::BadCookie("empty".into()));
    }
    if cookie.len() > limits.max_cookie_len {
        return Err(HeadError::BadCookie(format!("longer than {} bytes", limits.max_cookie_len)));
    }
    if let Some(c) = cookie.chars().find(|c| !(c.is_ascii_alphanumeric() || "+/=_-.~".contains(*c))) {
        return Err(HeadError::BadCookie(format!("character {c:?}")));
    }
    Ok(cookie.to_owned())
}

/// The reply to a tunnel GET: HTTP/1.0 whatever the request's version, Darwin format, no
/// Content-Length. `date` is an RFC 7231 date the shell formats; `server_ip` is sent as
/// `x-server-ip-address` only when configured (GStreamer would redirect its POST to it).
pub fn tunnel_get_reply(date: &str, server_ip: Option<&str>) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.0 200 OK\r\nServer: rtsp-tunnel-relay\r\nConnection: close\r\nDate: {date}\r\nCache-Control: no-store\r\nPragma: no-cache\r\nContent-Type: application/x-rtsp-tunnelled\r\n"
    );
    if let Some(ip) = server_ip {
        reply.push_str(&format!("x-server-ip-address: {ip}\r\n"));
    }
    reply.push_str("\r\n");
    reply.into_bytes()
}

/// The interim reply to a POST carrying `Expect: 100-continue`.
pub const CONTINUE_REPLY: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A short HTTP/1.0 error reply (`Connection: close`, empty body).
pub fn http_error_reply(status: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.0 {status} {reason}\r\nServer: rtsp-tunnel-relay\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

/// What the tunnel port is, for a person who opened it with `curl` (GET with no tunnel headers):
/// the answer to HTTP that is neither a tunnel nor a page.
pub const NOT_A_TUNNEL_TEXT: &str = "\
This is rtsp-tunnel-relay's tunnel port: RTSP for video players, over HTTP or plain TCP.
It is not a web page, and this request was no tunnel (no x-sessioncookie header).
Play a route:   ffplay -rtsp_transport http rtsp://HOST:PORT/ROUTE   (RTSP over HTTP)
           or:  ffplay rtsp://HOST:PORT/ROUTE                         (plain RTSP)
In a browser, http://HOST:PORT/ lists the routes (unless [web] is off).
";

/// `400` with [`NOT_A_TUNNEL_TEXT`] (no body for `HEAD`).
pub fn not_a_tunnel_reply(head_only: bool) -> Vec<u8> {
    let mut reply = format!(
        "HTTP/1.0 400 Bad Request\r\nServer: rtsp-tunnel-relay\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        NOT_A_TUNNEL_TEXT.len()
    )
    .into_bytes();
    if !head_only {
        reply.extend_from_slice(NOT_A_TUNNEL_TEXT.as_bytes());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_that_is_no_tunnel_is_told_what_the_port_is() {
        let reply = String::from_utf8(not_a_tunnel_reply(false)).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
        assert!(body.contains("tunnel port") && body.contains("rtsp://HOST:PORT/ROUTE"), "{body}");
        let head_only = String::from_utf8(not_a_tunnel_reply(true)).unwrap();
        assert!(head_only.ends_with("\r\n\r\n") && head_only.len() + body.len() == reply.len());
    }

    const LIMITS: HeadLimits = HeadLimits { max_header_bytes: 8192, max_cookie_len: 128 };

    /// Every client head in the captures, with its expected kind and cookie.
    fn fixture_heads() -> Vec<(String, HeadKind, String)> {
        let text = String::from_utf8(crate::test_fixtures::bytes("clients/HEADERS.txt")).unwrap();
        let mut heads = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            let starts = line.starts_with("GET ") || line.starts_with("POST ");
            if starts || line.starts_with("#####") || line.starts_with("(server") || line.starts_with("HTTP/") {
                if let Some(h) = cur.take() {
                    heads.push(h);
                }
            }
            if starts {
                cur = Some(String::new());
            }
            if let Some(h) = cur.as_mut() {
                h.push_str(line);
                h.push_str("\r\n");
            }
        }
        heads.extend(cur);
        heads
            .into_iter()
            .map(|h| {
                let kind = if h.starts_with("GET") { HeadKind::TunnelGet } else { HeadKind::TunnelPost };
                let cookie = h
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().starts_with("x-sessioncookie:").then(|| l[16..].trim().to_owned())
                    })
                    .unwrap_or_default();
                (h + "\r\n", kind, cookie)
            })
            .collect()
    }

    #[test]
    fn every_captured_client_head_is_classified() {
        let heads = fixture_heads();
        assert!(heads.len() >= 8, "{}", heads.len());
        for (raw, kind, cookie) in heads {
            let h = parse_head(raw.as_bytes(), &LIMITS).unwrap().unwrap();
            assert_eq!((h.kind, h.cookie.as_deref(), h.consumed), (kind, Some(cookie.as_str()), raw.len()), "{raw}");
            // Split anywhere: incomplete until the blank line.
            for cut in 0..raw.len() {
                assert_eq!(parse_head(&raw.as_bytes()[..cut], &LIMITS), Ok(None), "cut {cut} of {raw}");
            }
        }
    }

    #[test]
    fn header_names_match_case_insensitively_and_expect_is_seen() {
        let raw = b"POST /cam1?token=x HTTP/1.1\r\nX-Sessioncookie: Abc123==\r\nEXPECT: 100-Continue\r\nContent-Length: 32767\r\n\r\nQUJD";
        let h = parse_head(raw, &LIMITS).unwrap().unwrap();
        assert_eq!((h.kind, h.target.as_str(), h.expect_continue), (HeadKind::TunnelPost, "/cam1?token=x", true));
        assert_eq!(&raw[h.consumed..], b"QUJD");
    }

    #[test]
    fn plain_rtsp_and_other_http() {
        let h = parse_head(b"OPTIONS rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\n", &LIMITS).unwrap().unwrap();
        assert_eq!((h.kind, h.consumed, h.target.as_str()), (HeadKind::PlainRtsp, 0, "rtsp://h/cam1"));
        let h = parse_head(b"GET /cam1 HTTP/1.1\r\nHost: x\r\n\r\n", &LIMITS).unwrap().unwrap();
        assert_eq!(h.kind, HeadKind::OtherHttp);
        let h = parse_head(b"PUT /x HTTP/1.0\r\nx-sessioncookie: abc\r\n\r\n", &LIMITS).unwrap().unwrap();
        assert_eq!(h.kind, HeadKind::OtherHttp);
    }

    #[test]
    fn hostile_heads_are_refused_with_a_reason() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        use Rejection::{BadCookie, HeaderTooLarge, MalformedHead};
        let cases: Vec<(Vec<u8>, Rejection, &str)> = vec![
            (long.into_bytes(), HeaderTooLarge, "header_too_large"),
            (vec![b'A'; 9000], HeaderTooLarge, "header_too_large"),
            (b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(), MalformedHead, "malformed_head"),
            (b"GET / HTTP/1.1\r\nx-sessioncookie: a b<c\r\n\r\n".to_vec(), BadCookie, "bad_cookie"),
            (b"GET / HTTP/1.1\r\nx-sessioncookie: \r\n\r\n".to_vec(), BadCookie, "bad_cookie"),
            (
                format!("GET / HTTP/1.1\r\nx-sessioncookie: {}\r\n\r\n", "a".repeat(129)).into_bytes(),
                BadCookie,
                "bad_cookie",
            ),
            (
                (0..70)
                    .map(|i| format!("H{i}: v\r\n"))
                    .fold("GET / HTTP/1.1\r\n".to_owned(), |a, b| a + &b)
                    .into_bytes(),
                MalformedHead,
                "malformed_head",
            ),
        ];
        for (raw, rejection, reason) in cases {
            let e = parse_head(&raw, &LIMITS).unwrap_err();
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(60)]);
            assert_eq!(e.rejection(), rejection, "{shown:?}");
            assert_eq!(e.reason(), reason, "{shown:?}");
        }
    }

    #[test]
    fn replies_follow_the_darwin_format() {
        let r = String::from_utf8(tunnel_get_reply("Tue, 24 Nov 2026 00:40:00 GMT", None)).unwrap();
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n") && r.ends_with("\r\n\r\n"));
        assert!(
            r.contains("Content-Type: application/x-rtsp-tunnelled\r\n") && r.contains("Cache-Control: no-store\r\n")
        );
        assert!(!r.to_ascii_lowercase().contains("content-length") && !r.contains("x-server-ip-address"));
        let r = String::from_utf8(tunnel_get_reply("d", Some("203.0.113.7"))).unwrap();
        assert!(r.contains("x-server-ip-address: 203.0.113.7\r\n"));
        let e = String::from_utf8(http_error_reply(404, "Not Found")).unwrap();
        assert!(e.starts_with("HTTP/1.0 404 Not Found\r\n") && e.contains("Content-Length: 0\r\n"));
    }

    proptest! {
        #[test]
        fn never_panics_and_respects_the_limit(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let small = HeadLimits { max_header_bytes: 512, max_cookie_len: 16 };
            if let Ok(Some(h)) = parse_head(&bytes, &small) {
                prop_assert!(h.consumed <= 512);
            }
        }
    }
}
