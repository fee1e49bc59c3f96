//! Classification of the first bytes a client sends: a tunnel GET, a tunnel POST, plain RTSP on
//! the same port, or something else; plus the HTTP replies the relay writes (DESIGN.md §1).

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

/// Why a head was refused. [`HeadError::reason`] is the metrics label.
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
    /// Stable label for `relay_rejections_total{reason}`.
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
    let _ = (buf, limits);
    todo!("implemented by the proto-core work")
}

/// The reply to a tunnel GET: HTTP/1.0 whatever the request's version, Darwin format, no
/// Content-Length. `date` is an RFC 7231 date the shell formats; `server_ip` is sent as
/// `x-server-ip-address` only when configured (GStreamer would redirect its POST to it).
pub fn tunnel_get_reply(date: &str, server_ip: Option<&str>) -> Vec<u8> {
    let _ = (date, server_ip);
    todo!()
}

/// The interim reply to a POST carrying `Expect: 100-continue`.
pub const CONTINUE_REPLY: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A short HTTP/1.0 error reply (`Connection: close`, empty body).
pub fn http_error_reply(status: u16, reason: &str) -> Vec<u8> {
    let _ = (status, reason);
    todo!()
}
