//! RFC 6455 WebSocket, server side, for RTSP over WebSocket as ONVIF defines it: subprotocol
//! `rtsp.onvif.org`, WebSocket version 13, RTSP messages and `$` interleaved frames carried in
//! **binary** frames only. The payloads of the client's binary frames form one byte stream (an
//! RTSP message may span frames, a frame may hold several), so the decoder streams them out
//! unmasked as they arrive and never buffers a whole message.
//!
//! Pieces, in the order the shell meets them:
//! - [`classify`] looks at an HTTP GET head (one without `x-sessioncookie`): a WebSocket upgrade
//!   to accept ([`accept_reply`]) or refuse ([`HandshakeError::reply`]), one of the player's
//!   files (under [`PLAYER_PREFIX`]), a browser asking for a page ([`wants_html`]), or anything
//!   else.
//! - [`WsEndpoint`] is one accepted connection: fed the client's bytes, it hands back the binary
//!   payload bytes (for the RTSP core), the bytes to write back (pongs, the close handshake) and
//!   whether the connection ended and why.
//! - [`binary_header`] / [`encode_binary`] frame what the relay sends: unmasked binary frames.
//!   Each chunk the shell would write to a tunnel viewer (an RTSP answer, or a range of a camera
//!   receive buffer holding any number of `$` frames, or part of one) goes out as one binary
//!   frame: the 2–10 byte header as its own iovec, then the chunk untouched, so media stays
//!   zero-copy. `rtsp.onvif.org` gives frame boundaries no meaning, and readers (the built-in
//!   player, gortsplib, Axis's media-stream-library, the tests' Python client) treat the
//!   payloads as one stream.
//!
//! Authentication is RTSP Digest inside the stream, never cookies, but a page from another
//! origin would still borrow the visitor's network position (a route open only to an office's
//! addresses): the shell refuses upgrades whose `Origin` [`super::origin`] does not allow.

use super::outcome::Rejection;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// The only subprotocol accepted.
pub const SUBPROTOCOL: &str = "rtsp.onvif.org";

/// Where the browser player's files are served (whatever the request's `Accept`): no route may
/// live under it.
pub const PLAYER_PREFIX: &str = "/_player/";

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest payload of one frame (its header's length field); larger: close 1009.
    pub max_frame_bytes: u64,
    /// Largest fragmented message (all its frames' payloads); larger: close 1009.
    pub max_message_bytes: u64,
}

impl Default for WsLimits {
    /// A viewer sends RTSP requests and RTCP reports: a few KiB per frame at most.
    fn default() -> Self {
        WsLimits { max_frame_bytes: 64 * 1024, max_message_bytes: 1024 * 1024 }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake

/// An upgrade request the relay accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request target (path and query): the route, as for a tunnel GET.
    pub target: String,
    /// `Sec-WebSocket-Accept` for the 101 answer.
    pub accept: String,
    pub user_agent: Option<String>,
    /// `Origin` (every browser sends it; several are joined, which no origin matches).
    pub origin: Option<String>,
    /// `Host`: what the relay's own origin is judged against.
    pub host: Option<String>,
}

/// Why an upgrade request was refused; [`HandshakeError::reply`] is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("WebSocket upgrade needs GET over HTTP/1.1")]
    NotGet11,
    #[error("WebSocket upgrade without Connection: Upgrade")]
    NoConnectionUpgrade,
    #[error("WebSocket version {0:?}, only 13 is spoken")]
    BadVersion(Option<String>),
    #[error("missing or malformed Sec-WebSocket-Key")]
    BadKey,
    #[error("no Sec-WebSocket-Protocol: only rtsp.onvif.org is served")]
    NoSubprotocol,
    #[error("subprotocols {0:?} offered: only rtsp.onvif.org is served")]
    WrongSubprotocol(String),
}

impl HandshakeError {
    /// RFC 6455 §4.2.2: a version the server does not speak gets 426 and the versions it does;
    /// any other bad handshake 400. No subprotocol we speak is a bad request for this resource
    /// (it only carries RTSP), so 400 too, naming the one we serve.
    pub fn reply(&self) -> Vec<u8> {
        let (status, extra) = match self {
            HandshakeError::BadVersion(_) => ("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n".to_owned()),
            HandshakeError::NoSubprotocol | HandshakeError::WrongSubprotocol(_) => {
                ("400 Bad Request", format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"))
            }
            _ => ("400 Bad Request", String::new()),
        };
        let body = format!("{self}\n");
        format!(
            "HTTP/1.1 {status}\r\nServer: rtsp-tunnel-relay\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// What the shell counts: every refused upgrade is one reason.
    pub fn rejection(&self) -> Rejection {
        Rejection::WebSocketHandshake
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The 101 answer to an accepted upgrade.
pub fn accept_reply(upgrade: &Upgrade) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nServer: rtsp-tunnel-relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
        upgrade.accept
    )
    .into_bytes()
}

fn header<'a>(req: &'a httparse::Request, name: &str) -> impl Iterator<Item = &'a str> {
    let name = name.to_owned();
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(&name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Whether a comma-separated header (all its occurrences) lists `token`, case-insensitively.
fn lists_token(req: &httparse::Request, name: &str, token: &str) -> bool {
    header(req, name).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A GET asking to become a WebSocket (`Upgrade: websocket`): the head classifier's hook. It
/// says nothing about whether the upgrade is acceptable; [`check_upgrade`] does.
pub fn is_websocket_upgrade(req: &httparse::Request) -> bool {
    req.method == Some("GET") && lists_token(req, "upgrade", "websocket")
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and the ONVIF subprotocol.
pub fn check_upgrade(req: &httparse::Request) -> Result<Upgrade, HandshakeError> {
    if req.method != Some("GET") || req.version != Some(1) {
        return Err(HandshakeError::NotGet11);
    }
    if !lists_token(req, "connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let version: Vec<&str> = header(req, "sec-websocket-version").map(str::trim).collect();
    if version != ["13"] {
        return Err(HandshakeError::BadVersion(version.first().map(|v| (*v).to_owned())));
    }
    let keys: Vec<&str> = header(req, "sec-websocket-key").map(str::trim).collect();
    let key = match keys.as_slice() {
        [k] if base64::engine::general_purpose::STANDARD.decode(k).is_ok_and(|d| d.len() == 16) => *k,
        _ => return Err(HandshakeError::BadKey),
    };
    let offered: Vec<&str> = header(req, "sec-websocket-protocol").collect();
    if offered.is_empty() {
        return Err(HandshakeError::NoSubprotocol);
    }
    // Subprotocol names are case-sensitive tokens (RFC 6455 §4.1).
    if !offered.iter().flat_map(|v| v.split(',')).any(|t| t.trim() == SUBPROTOCOL) {
        return Err(HandshakeError::WrongSubprotocol(offered.join(", ")));
    }
    Ok(Upgrade {
        target: req.path.unwrap_or("/").to_owned(),
        accept: accept_key(key),
        user_agent: header(req, "user-agent").next().map(|v| v.trim().to_owned()),
        origin: {
            let origins: Vec<&str> = header(req, "origin").map(str::trim).collect();
            (!origins.is_empty()).then(|| origins.join(", "))
        },
        host: header(req, "host").next().map(|v| v.trim().to_owned()),
    })
}

/// Whether an `Accept` header asks for HTML (a browser navigating) and not for the tunnel's
/// `application/x-rtsp-tunnelled`. Media ranges with `q=0` are refusals, not requests.
pub fn wants_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut html = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            // get(): a parameter may start with a multi-byte character.
            p.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
                && p[2..].trim().parse::<f32>().is_ok_and(|q| q == 0.0)
        });
        if media == "application/x-rtsp-tunnelled" {
            return false;
        }
        if !refused && (media == "text/html" || media == "application/xhtml+xml") {
            html = true;
        }
    }
    html
}

/// What an HTTP GET without `x-sessioncookie` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRequest {
    /// Write [`accept_reply`], then the connection is a [`WsEndpoint`] on `upgrade.target`.
    WebSocket(Upgrade),
    /// Write [`HandshakeError::reply`], count [`HandshakeError::rejection`], close.
    BadUpgrade(HandshakeError),
    /// A browser navigating to `target`: the player page or the route list.
    Page { target: String },
    /// A GET or HEAD under [`PLAYER_PREFIX`]: one of the player's files (`web_assets`).
    PlayerFile { target: String, head_only: bool },
    /// Neither: the shell's usual answer to other HTTP.
    Other,
}

/// Classifies a complete request head (the bytes `http_head::parse_head` consumed for an
/// `OtherHttp` request). Unparsable heads are [`WebRequest::Other`]: the head classifier has
/// already refused those.
pub fn classify(head: &[u8]) -> WebRequest {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return WebRequest::Other;
    }
    if is_websocket_upgrade(&req) {
        return match check_upgrade(&req) {
            Ok(u) => WebRequest::WebSocket(u),
            Err(e) => WebRequest::BadUpgrade(e),
        };
    }
    let target = req.path.unwrap_or("/");
    if matches!(req.method, Some("GET" | "HEAD")) && target.starts_with(PLAYER_PREFIX) {
        // Modules and styles are fetched with `Accept: */*` or `text/css`: not by `wants_html`.
        return WebRequest::PlayerFile { target: target.to_owned(), head_only: req.method == Some("HEAD") };
    }
    let accept: Vec<&str> = header(&req, "accept").collect();
    if req.method == Some("GET") && wants_html((!accept.is_empty()).then(|| accept.join(",")).as_deref()) {
        return WebRequest::Page { target: req.path.unwrap_or("/").to_owned() };
    }
    WebRequest::Other
}

/// The `Host` a browser used for a request head, if it is a plain authority (a name or an
/// address, and a port): the route list shows URLs on it, so nothing else gets into the page.
pub fn page_host(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let host = header(&req, "host").next()?.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    (!host.is_empty() && host.len() <= 255 && host.chars().all(plain)).then(|| host.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Frames

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close status codes the relay sends (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
}

/// A frame the client must not send; the connection is closed with [`WsError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set without an extension")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("text frame: rtsp.onvif.org carries binary frames only")]
    TextFrame,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    #[error("64-bit length with its top bit set")]
    LengthTopBit,
    #[error("frame of {len} bytes, limit {limit}")]
    FrameTooLarge { len: u64, limit: u64 },
    #[error("fragmented message over {limit} bytes")]
    MessageTooLarge { limit: u64 },
    #[error("close frame with a 1-byte payload")]
    BadClosePayload,
    #[error("close status code {0} may not be sent")]
    BadCloseCode(u16),
    #[error("close reason is not UTF-8")]
    CloseReasonNotUtf8,
}

impl WsError {
    /// The status of the close frame the relay answers with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TextFrame => close_code::UNSUPPORTED_DATA,
            WsError::FrameTooLarge { .. } | WsError::MessageTooLarge { .. } => close_code::TOO_BIG,
            WsError::CloseReasonNotUtf8 => close_code::INVALID_PAYLOAD,
            _ => close_code::PROTOCOL_ERROR,
        }
    }

    /// What the shell counts.
    pub fn rejection(&self) -> Rejection {
        match self {
            WsError::FrameTooLarge { .. } | WsError::MessageTooLarge { .. } => Rejection::WebSocketTooLarge,
            WsError::TextFrame => Rejection::WebSocketTextFrame,
            _ => Rejection::WebSocketProtocol,
        }
    }
}

/// A frame header the relay sends: at most 10 bytes (never masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    pub fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= 0xffff {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        FrameHeader { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The header of an unfragmented binary frame of `payload_len` bytes: write it, then the payload.
pub fn binary_header(payload_len: usize) -> FrameHeader {
    FrameHeader::new(OP_BINARY, payload_len)
}

/// Appends one binary frame carrying `payload`.
pub fn encode_binary(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(binary_header(payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a close frame; `code` None sends an empty payload.
pub fn encode_close(code: Option<u16>, reason: &str, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        // Control payloads are at most 125 bytes; cut the reason at a character boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    out.extend_from_slice(FrameHeader::new(OP_CLOSE, payload.len()).as_bytes());
    out.extend_from_slice(&payload);
}

fn encode_pong(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(FrameHeader::new(OP_PONG, payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// A complete control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Ping(Vec<u8>),
    Pong,
    /// Status code (None when the payload was empty) and reason.
    Close(Option<u16>, String),
}

#[derive(Debug, Clone)]
enum State {
    /// Collecting a header: up to 14 bytes.
    Header { buf: [u8; 14], have: usize },
    /// Reading a payload: `remaining` bytes, unmasked from `mask` at offset `pos`.
    Payload { opcode: u8, remaining: u64, mask: [u8; 4], pos: usize },
    /// A close frame or an error ended the stream: nothing after it is decoded (§5.5.1).
    Stopped,
}

/// Streaming decoder of client frames: any split of the input gives the same output.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limits: WsLimits,
    state: State,
    /// Bytes of the fragmented binary message in progress (None: between messages).
    message: Option<u64>,
    control: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(limits: WsLimits) -> Self {
        FrameDecoder { limits, state: State::Header { buf: [0; 14], have: 0 }, message: None, control: Vec::new() }
    }

    /// Decodes `input`: binary payload bytes are appended to `data` (unmasked), complete control
    /// frames to `controls`. After a close frame or an error nothing more is decoded.
    pub fn feed(&mut self, mut input: &[u8], data: &mut Vec<u8>, controls: &mut Vec<Control>) -> Result<(), WsError> {
        loop {
            match &mut self.state {
                State::Stopped => return Ok(()),
                State::Header { buf, have } => {
                    // Take bytes one header field at a time, so errors surface as early as possible.
                    let need = header_len(&buf[..*have]);
                    let take = (need - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    let (buf, have) = (*buf, *have);
                    if have >= 2 {
                        if let Err(e) = self.check_first_two(buf[0], buf[1]) {
                            self.state = State::Stopped;
                            return Err(e);
                        }
                    }
                    if have < header_len(&buf[..have]) || have < 2 {
                        if input.is_empty() {
                            return Ok(());
                        }
                        continue;
                    }
                    match self.start_payload(&buf[..have]) {
                        Ok(()) => {}
                        Err(e) => {
                            self.state = State::Stopped;
                            return Err(e);
                        }
                    }
                    // A zero-length payload is complete now.
                    if let State::Payload { remaining: 0, .. } = self.state {
                        self.finish_frame(controls)?;
                    }
                }
                State::Payload { opcode, remaining, mask, pos, .. } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let (chunk, rest) = input.split_at(take);
                    input = rest;
                    let sink = if *opcode >= OP_CLOSE { &mut self.control } else { &mut *data };
                    let start = sink.len();
                    sink.extend_from_slice(chunk);
                    for (i, b) in sink[start..].iter_mut().enumerate() {
                        *b ^= mask[(*pos + i) & 3];
                    }
                    *pos = (*pos + take) & 3;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.finish_frame(controls)?;
                    }
                }
            }
        }
    }

    /// Checks what the first two header bytes say, before the length is known.
    fn check_first_two(&self, b0: u8, b1: u8) -> Result<(), WsError> {
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        match opcode {
            OP_CONTINUATION | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            OP_TEXT => return Err(WsError::TextFrame),
            op => return Err(WsError::ReservedOpcode(op)),
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        if opcode >= OP_CLOSE {
            if !fin {
                return Err(WsError::FragmentedControl);
            }
            if b1 & 0x7f > 125 {
                return Err(WsError::ControlTooLong(u64::from(b1 & 0x7f)));
            }
        } else if opcode == OP_CONTINUATION && self.message.is_none() {
            return Err(WsError::UnexpectedContinuation);
        } else if opcode == OP_BINARY && self.message.is_some() {
            return Err(WsError::ExpectedContinuation);
        }
        Ok(())
    }

    /// A complete header: checks the length against the limits and enters the payload.
    fn start_payload(&mut self, h: &[u8]) -> Result<(), WsError> {
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            // Invariant: `h` is `header_len` bytes, which counts these 8 for a length code of 127.
            127 => (u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")), 10),
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(WsError::LengthTopBit);
        }
        if len > self.limits.max_frame_bytes {
            return Err(WsError::FrameTooLarge { len, limit: self.limits.max_frame_bytes });
        }
        if opcode < OP_CLOSE {
            let so_far = self.message.unwrap_or(0) + len;
            // Unfragmented messages are bounded by the frame limit alone.
            if !(fin && self.message.is_none()) && so_far > self.limits.max_message_bytes {
                return Err(WsError::MessageTooLarge { limit: self.limits.max_message_bytes });
            }
            self.message = if fin { None } else { Some(so_far) };
        }
        // Invariant: `h` is `header_len` bytes, which always counts the 4-byte masking key.
        let mask = h[mask_at..mask_at + 4].try_into().expect("4 bytes");
        self.state = State::Payload { opcode, remaining: len, mask, pos: 0 };
        Ok(())
    }

    fn finish_frame(&mut self, controls: &mut Vec<Control>) -> Result<(), WsError> {
        // Invariant: called only from the payload state, when its last byte arrived.
        let State::Payload { opcode, .. } = self.state else { unreachable!("finish_frame outside a payload") };
        self.state = State::Header { buf: [0; 14], have: 0 };
        let payload = std::mem::take(&mut self.control);
        match opcode {
            OP_PING => controls.push(Control::Ping(payload)),
            OP_PONG => controls.push(Control::Pong),
            OP_CLOSE => match parse_close(&payload) {
                Ok((code, reason)) => {
                    controls.push(Control::Close(code, reason));
                    self.state = State::Stopped;
                }
                Err(e) => {
                    self.state = State::Stopped;
                    return Err(e);
                }
            },
            _ => {}
        }
        Ok(())
    }
}

/// Header length given the bytes collected so far: 2 until the length byte is known.
fn header_len(have: &[u8]) -> usize {
    match have.get(1).map(|b| b & 0x7f) {
        None => 2,
        Some(126) => 2 + 2 + 4,
        Some(127) => 2 + 8 + 4,
        Some(_) => 2 + 4,
    }
}

fn parse_close(payload: &[u8]) -> Result<(Option<u16>, String), WsError> {
    match payload {
        [] => Ok((None, String::new())),
        [_] => Err(WsError::BadClosePayload),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            // RFC 6455 §7.4: 1000–1003, 1007–1014 registered, 3000–4999 for libraries and
            // applications; 1004–1006 and 1015 must never be sent.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(WsError::BadCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::CloseReasonNotUtf8)?;
            Ok((Some(code), reason.to_owned()))
        }
    }
}

/// How a WebSocket connection ended; after it the shell writes what is queued and closes TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEnd {
    /// The client started the close handshake; the relay's echo is queued.
    ClientClosed { code: Option<u16> },
    /// The client answered the relay's close.
    CloseAcknowledged,
    /// The client broke the protocol; a close frame with [`WsError::close_code`] is queued.
    ProtocolError(WsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The relay sent its close frame and waits for the client's.
    CloseSent,
    Closed,
}

/// One accepted WebSocket connection, server side.
#[derive(Debug, Clone)]
pub struct WsEndpoint {
    decoder: FrameDecoder,
    phase: Phase,
    controls: Vec<Control>,
}

impl WsEndpoint {
    pub fn new(limits: WsLimits) -> Self {
        WsEndpoint { decoder: FrameDecoder::new(limits), phase: Phase::Open, controls: Vec::new() }
    }

    /// Whether data frames may still be sent (no close frame sent yet).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Feeds the client's bytes. The binary payload goes to `data` (the RTSP byte stream), the
    /// frames to write back (pongs, close) to `to_client`. `Some` when the connection is over:
    /// write `to_client`, then close the socket (the server closes TCP first, RFC 6455 §7.1.1).
    pub fn on_bytes(&mut self, input: &[u8], data: &mut Vec<u8>, to_client: &mut Vec<u8>) -> Option<WsEnd> {
        if self.phase == Phase::Closed {
            return None;
        }
        // After the relay's close, the client's remaining data is of no use (§5.5.1).
        let mut discard = Vec::new();
        let sink = if self.phase == Phase::Open { data } else { &mut discard };
        let result = self.decoder.feed(input, sink, &mut self.controls);
        for control in std::mem::take(&mut self.controls) {
            match control {
                Control::Ping(payload) if self.phase == Phase::Open => encode_pong(&payload, to_client),
                Control::Ping(_) | Control::Pong => {}
                Control::Close(code, _reason) => {
                    let end = if self.phase == Phase::Open {
                        // Echo the client's status (§5.5.1); none received, none sent.
                        encode_close(code, "", to_client);
                        WsEnd::ClientClosed { code }
                    } else {
                        WsEnd::CloseAcknowledged
                    };
                    self.phase = Phase::Closed;
                    return Some(end);
                }
            }
        }
        match result {
            Ok(()) => None,
            Err(e) => {
                if self.phase == Phase::Open {
                    encode_close(Some(e.close_code()), &e.to_string(), to_client);
                }
                self.phase = Phase::Closed;
                Some(WsEnd::ProtocolError(e))
            }
        }
    }

    /// Starts the close handshake from the relay's side (session over: 1000; shutting down:
    /// 1001). The shell then keeps reading until [`WsEnd::CloseAcknowledged`] or a timeout.
    pub fn close(&mut self, code: u16, reason: &str, to_client: &mut Vec<u8>) {
        if self.phase == Phase::Open {
            encode_close(Some(code), reason, to_client);
            self.phase = Phase::CloseSent;
        }
    }
}

#[cfg(any(test, fuzzing))]
pub mod testing {
    //! A client's frame encoder, for tests and the fuzz target.

    /// Appends a masked client frame.
    pub fn client_frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8], out: &mut Vec<u8>) {
        out.push(if fin { 0x80 } else { 0 } | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }
}

#[cfg(test)]
mod tests {
    use super::testing::client_frame;
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn head(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    const UPGRADE: &str = "GET /cam1 HTTP/1.1\nHost: relay\nUpgrade: websocket\nConnection: keep-alive, Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\nSec-WebSocket-Protocol: rtsp.onvif.org\nOrigin: http://relay\n\n";

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_valid_upgrade_is_accepted_with_the_subprotocol() {
        let WebRequest::WebSocket(u) = classify(&head(UPGRADE)) else { panic!("not accepted") };
        assert_eq!(u.target, "/cam1");
        // What the origin check judges.
        assert_eq!((u.origin.as_deref(), u.host.as_deref()), (Some("http://relay"), Some("relay")));
        let twice = UPGRADE.replace("Origin: http://relay\n", "Origin: http://relay\nOrigin: http://evil\n");
        let WebRequest::WebSocket(u) = classify(&head(&twice)) else { panic!("not accepted") };
        assert_eq!(u.origin.as_deref(), Some("http://relay, http://evil"));
        let reply = String::from_utf8(accept_reply(&u)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(reply.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(reply.contains("\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n"));
        assert!(reply.ends_with("\r\n\r\n"));
        // Among others, in any case for the header names.
        let other = UPGRADE
            .replace("Sec-WebSocket-Protocol: rtsp.onvif.org", "sec-websocket-protocol: foo, rtsp.onvif.org")
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(matches!(classify(&head(&other)), WebRequest::WebSocket(_)));
    }

    fn refused(text: &str) -> HandshakeError {
        match classify(&head(text)) {
            WebRequest::BadUpgrade(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_or_wrong_subprotocol_is_refused_with_400() {
        let e = refused(&UPGRADE.replace("Sec-WebSocket-Protocol: rtsp.onvif.org\n", ""));
        assert_eq!(e, HandshakeError::NoSubprotocol);
        let e = refused(&UPGRADE.replace("rtsp.onvif.org", "chat, RTSP.ONVIF.ORG"));
        assert_eq!(e, HandshakeError::WrongSubprotocol("chat, RTSP.ONVIF.ORG".into()));
        let reply = String::from_utf8(e.reply()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("Sec-WebSocket-Protocol: rtsp.onvif.org\r\n"));
        assert_eq!(e.rejection(), Rejection::WebSocketHandshake);
    }

    #[test]
    fn other_bad_handshakes_get_426_or_400() {
        let e = refused(&UPGRADE.replace("Version: 13", "Version: 8"));
        assert_eq!(e, HandshakeError::BadVersion(Some("8".into())));
        let reply = String::from_utf8(e.reply()).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 426 Upgrade Required\r\n") && reply.contains("Sec-WebSocket-Version: 13\r\n")
        );
        assert_eq!(refused(&UPGRADE.replace("Sec-WebSocket-Version: 13\n", "")), HandshakeError::BadVersion(None));
        assert_eq!(refused(&UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")), HandshakeError::BadKey);
        assert_eq!(
            refused(&UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n", "")),
            HandshakeError::BadKey
        );
        assert_eq!(refused(&UPGRADE.replace("keep-alive, Upgrade", "keep-alive")), HandshakeError::NoConnectionUpgrade);
        assert_eq!(refused(&UPGRADE.replace("HTTP/1.1", "HTTP/1.0")), HandshakeError::NotGet11);
        for e in [HandshakeError::BadKey, HandshakeError::NotGet11] {
            assert!(String::from_utf8(e.reply()).unwrap().starts_with("HTTP/1.1 400 Bad Request\r\n"));
        }
    }

    #[test]
    fn browsers_navigating_want_html_and_tunnels_do_not() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(wants_html(Some(chrome)));
        assert!(wants_html(Some("TEXT/HTML")));
        assert!(!wants_html(Some("application/x-rtsp-tunnelled")));
        assert!(!wants_html(Some("text/html, application/x-rtsp-tunnelled")));
        assert!(!wants_html(Some("text/html;q=0, */*")));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(None));
        // Found by fuzzing: a parameter starting with a multi-byte character.
        assert!(wants_html(Some("text/html;:\u{1bf}")));
        assert!(!wants_html(Some("*/*;x\u{1bf}")));
        let page = format!("GET /cam1 HTTP/1.1\nHost: relay\nAccept: {chrome}\n\n");
        assert_eq!(classify(&head(&page)), WebRequest::Page { target: "/cam1".into() });
        assert_eq!(page_host(&head(&page)).as_deref(), Some("relay"));
        assert_eq!(page_host(&head("GET / HTTP/1.1\nHost: [::1]:8080\n\n")).as_deref(), Some("[::1]:8080"));
        assert_eq!(page_host(&head("GET / HTTP/1.1\nHost: a\"><script>\n\n")), None);
        assert_eq!(page_host(&head("GET / HTTP/1.1\n\n")), None);
        let tunnel = "GET /cam1 HTTP/1.0\nAccept: application/x-rtsp-tunnelled\n\n";
        assert_eq!(classify(&head(tunnel)), WebRequest::Other);
        let module = "GET /_player/player.js?x HTTP/1.1\nAccept: */*\n\n";
        let want = WebRequest::PlayerFile { target: "/_player/player.js?x".into(), head_only: false };
        assert_eq!(classify(&head(module)), want);
        let want = WebRequest::PlayerFile { target: "/_player/player.css".into(), head_only: true };
        assert_eq!(classify(&head("HEAD /_player/player.css HTTP/1.1\n\n")), want);
    }

    fn endpoint() -> WsEndpoint {
        WsEndpoint::new(WsLimits { max_frame_bytes: 1000, max_message_bytes: 3000 })
    }

    fn feed(ep: &mut WsEndpoint, input: &[u8]) -> (Vec<u8>, Vec<u8>, Option<WsEnd>) {
        let (mut data, mut out) = (Vec::new(), Vec::new());
        let end = ep.on_bytes(input, &mut data, &mut out);
        (data, out, end)
    }

    #[test]
    fn binary_frames_of_each_length_encoding_are_unmasked_into_one_stream() {
        let mut input = Vec::new();
        let (a, b) = (vec![7u8; 125], vec![9u8; 126]);
        client_frame(true, OP_BINARY, MASK, &a, &mut input);
        client_frame(true, OP_BINARY, MASK, &b, &mut input);
        client_frame(true, OP_BINARY, MASK, b"", &mut input);
        let mut ep = WsEndpoint::new(WsLimits { max_frame_bytes: 70_000, max_message_bytes: 70_000 });
        let c = vec![3u8; 65_536];
        client_frame(true, OP_BINARY, MASK, &c, &mut input);
        assert_eq!(input[2 + 4 + 125 + 1], 0x80 | 126);
        let (data, out, end) = feed(&mut ep, &input);
        assert_eq!(data, [a, b, c].concat());
        assert!(out.is_empty() && end.is_none());
    }

    #[test]
    fn fragmented_binary_messages_are_reassembled_with_pings_between() {
        let mut input = Vec::new();
        client_frame(false, OP_BINARY, MASK, b"DESCRIBE rtsp://", &mut input);
        client_frame(true, OP_PING, MASK, b"hi", &mut input);
        client_frame(false, OP_CONTINUATION, MASK, b"relay/cam1 ", &mut input);
        client_frame(true, OP_CONTINUATION, MASK, b"RTSP/1.0\r\n", &mut input);
        let mut ep = endpoint();
        let (data, out, end) = feed(&mut ep, &input);
        assert_eq!(data, b"DESCRIBE rtsp://relay/cam1 RTSP/1.0\r\n");
        assert_eq!(out, [0x8a, 2, b'h', b'i'], "one unmasked pong echoing the ping");
        assert_eq!(end, None);
    }

    fn error_of(frames: &[u8]) -> (WsError, Vec<u8>) {
        let mut ep = endpoint();
        let (_, out, end) = feed(&mut ep, frames);
        let Some(WsEnd::ProtocolError(e)) = end else { panic!("no error: {end:?}") };
        assert!(!ep.is_open());
        // Nothing more comes out once failed.
        let mut more = Vec::new();
        client_frame(true, OP_PING, MASK, b"x", &mut more);
        assert_eq!(feed(&mut ep, &more), (vec![], vec![], None));
        (e, out)
    }

    fn close_code_of(out: &[u8]) -> u16 {
        assert_eq!(out[0], 0x88, "a close frame");
        u16::from_be_bytes([out[2], out[3]])
    }

    #[test]
    fn text_frames_are_refused_with_1003() {
        let mut input = Vec::new();
        client_frame(true, OP_TEXT, MASK, b"OPTIONS * RTSP/1.0\r\n\r\n", &mut input);
        let (e, out) = error_of(&input);
        assert_eq!(e, WsError::TextFrame);
        assert_eq!(close_code_of(&out), 1003);
        assert_eq!(e.rejection(), Rejection::WebSocketTextFrame);
    }

    #[test]
    fn oversized_frames_and_messages_are_refused_with_1009_before_their_payload() {
        let mut header_only = vec![0x82, 0x80 | 126];
        header_only.extend_from_slice(&1001u16.to_be_bytes());
        header_only.extend_from_slice(&MASK);
        let (e, out) = error_of(&header_only);
        assert_eq!(e, WsError::FrameTooLarge { len: 1001, limit: 1000 });
        assert_eq!(close_code_of(&out), 1009);
        assert_eq!(e.rejection(), Rejection::WebSocketTooLarge);
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert!(matches!(error_of(&huge).0, WsError::FrameTooLarge { .. }));
        let mut input = Vec::new();
        for _ in 0..3 {
            client_frame(
                false,
                if input.is_empty() { OP_BINARY } else { OP_CONTINUATION },
                MASK,
                &[1; 1000],
                &mut input,
            );
        }
        client_frame(true, OP_CONTINUATION, MASK, &[1], &mut input);
        let (e, out) = error_of(&input);
        assert_eq!(e, WsError::MessageTooLarge { limit: 3000 });
        assert_eq!(close_code_of(&out), 1009);
    }

    #[test]
    fn framing_violations_are_refused_with_1002() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x82, 0x00], WsError::Unmasked),
            (vec![0xc2, 0x80], WsError::ReservedBits),
            (vec![0x83, 0x80], WsError::ReservedOpcode(3)),
            (vec![0x8b, 0x80], WsError::ReservedOpcode(0xb)),
            (vec![0x09, 0x80], WsError::FragmentedControl),
            (vec![0x89, 0x80 | 126], WsError::ControlTooLong(126)),
            (vec![0x80, 0x80], WsError::UnexpectedContinuation),
            (vec![0x02, 0x80, 0, 0, 0, 0, 0x82, 0x80], WsError::ExpectedContinuation),
            ([&[0x82, 0xff, 0x80][..], &[0; 7], &MASK].concat(), WsError::LengthTopBit),
            (vec![0x88, 0x81, 0, 0, 0, 0, 3], WsError::BadClosePayload),
            ([&[0x88, 0x82][..], &[0; 4], &1005u16.to_be_bytes()].concat(), WsError::BadCloseCode(1005)),
            ([&[0x88, 0x83][..], &[0; 4], &1000u16.to_be_bytes(), &[0xff]].concat(), WsError::CloseReasonNotUtf8),
        ];
        for (input, want) in cases {
            let (e, out) = error_of(&input);
            assert_eq!(e, want);
            let code = if want == WsError::CloseReasonNotUtf8 { 1007 } else { 1002 };
            assert_eq!(close_code_of(&out), code, "{want:?}");
            assert_eq!(e.rejection(), Rejection::WebSocketProtocol);
        }
    }

    #[test]
    fn a_client_close_is_echoed_and_ends_the_connection() {
        let mut input = Vec::new();
        client_frame(true, OP_BINARY, MASK, b"x", &mut input);
        client_frame(true, OP_CLOSE, MASK, &[&1001u16.to_be_bytes()[..], b"bye"].concat(), &mut input);
        client_frame(true, OP_BINARY, MASK, b"after", &mut input);
        let mut ep = endpoint();
        let (data, out, end) = feed(&mut ep, &input);
        assert_eq!(data, b"x");
        assert_eq!(out, [0x88, 2, 0x03, 0xe9]);
        assert_eq!(end, Some(WsEnd::ClientClosed { code: Some(1001) }));
        // An empty close is answered with an empty close.
        let mut ep = endpoint();
        let mut input = Vec::new();
        client_frame(true, OP_CLOSE, MASK, b"", &mut input);
        assert_eq!(feed(&mut ep, &input), (vec![], vec![0x88, 0], Some(WsEnd::ClientClosed { code: None })));
    }

    #[test]
    fn after_the_relay_closes_data_and_pings_are_dropped_until_the_client_answers() {
        let mut ep = endpoint();
        let mut out = Vec::new();
        ep.close(close_code::GOING_AWAY, "shutting down", &mut out);
        assert_eq!(close_code_of(&out), 1001);
        assert_eq!(&out[4..], b"shutting down");
        assert!(!ep.is_open());
        let mut input = Vec::new();
        client_frame(true, OP_BINARY, MASK, b"late", &mut input);
        client_frame(true, OP_PING, MASK, b"p", &mut input);
        client_frame(true, OP_CLOSE, MASK, &1001u16.to_be_bytes(), &mut input);
        assert_eq!(feed(&mut ep, &input), (vec![], vec![], Some(WsEnd::CloseAcknowledged)));
    }

    #[test]
    fn server_frames_use_the_shortest_length_and_no_mask() {
        for (len, header) in [(0usize, vec![0x82, 0]), (125, vec![0x82, 125]), (126, vec![0x82, 126, 0, 126])] {
            assert_eq!(binary_header(len).as_bytes(), header);
        }
        assert_eq!(binary_header(65_535).as_bytes(), [0x82, 126, 0xff, 0xff]);
        assert_eq!(binary_header(65_536).as_bytes(), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut out = Vec::new();
        encode_binary(b"$\x00\x00\x01z", &mut out);
        assert_eq!(out, b"\x82\x05$\x00\x00\x01z");
        let mut out = Vec::new();
        encode_close(Some(1000), &"é".repeat(100), &mut out);
        assert!(out.len() - 2 <= 125 && std::str::from_utf8(&out[4..]).is_ok());
    }

    #[derive(Debug, Clone)]
    enum Piece {
        Data(Vec<u8>, usize),
        Ping(Vec<u8>),
        Pong,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..300), 1usize..4).prop_map(|(d, n)| Piece::Data(d, n)),
            proptest::collection::vec(any::<u8>(), 0..126).prop_map(Piece::Ping),
            Just(Piece::Pong),
        ]
    }

    proptest! {
        /// Any sequence of messages (fragmented or not, pings between), cut anywhere, gives the
        /// same byte stream and the same pongs as fed whole.
        #[test]
        fn any_split_gives_the_same_stream(pieces in proptest::collection::vec(piece(), 0..12),
                                           mask in any::<[u8; 4]>(),
                                           cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let (mut input, mut want_data, mut want_out) = (Vec::new(), Vec::new(), Vec::new());
            for p in &pieces {
                match p {
                    Piece::Data(d, n) => {
                        let chunks: Vec<&[u8]> = if d.is_empty() { vec![&d[..]] } else { d.chunks(d.len().div_ceil(*n)).collect() };
                        for (i, c) in chunks.iter().enumerate() {
                            let op = if i == 0 { OP_BINARY } else { OP_CONTINUATION };
                            client_frame(i + 1 == chunks.len(), op, mask, c, &mut input);
                        }
                        want_data.extend_from_slice(d);
                    }
                    Piece::Ping(d) => {
                        client_frame(true, OP_PING, mask, d, &mut input);
                        encode_pong(d, &mut want_out);
                    }
                    Piece::Pong => client_frame(true, OP_PONG, mask, b"", &mut input),
                }
            }
            client_frame(true, OP_CLOSE, mask, &1000u16.to_be_bytes(), &mut input);
            encode_close(Some(1000), "", &mut want_out);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.push(0);
            points.push(input.len());
            points.sort_unstable();
            let mut ep = endpoint();
            let (mut data, mut out, mut ends) = (Vec::new(), Vec::new(), Vec::new());
            for w in points.windows(2) {
                ends.extend(ep.on_bytes(&input[w[0]..w[1]], &mut data, &mut out));
            }
            prop_assert_eq!(data, want_data);
            prop_assert_eq!(out, want_out);
            prop_assert_eq!(ends, vec![WsEnd::ClientClosed { code: Some(1000) }]);
        }

        /// Arbitrary bytes never panic, never produce more data than they hold, and once an
        /// error ends the connection nothing more is produced.
        #[test]
        fn arbitrary_bytes_are_safe(input in proptest::collection::vec(any::<u8>(), 0..400), cut in any::<prop::sample::Index>()) {
            let at = cut.index(input.len() + 1);
            let mut ep = endpoint();
            let (mut data, mut out) = (Vec::new(), Vec::new());
            let first = ep.on_bytes(&input[..at], &mut data, &mut out);
            let second = ep.on_bytes(&input[at..], &mut data, &mut out);
            prop_assert!(data.len() <= input.len());
            prop_assert!(first.is_none() || second.is_none());
        }
    }
}
