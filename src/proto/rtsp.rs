//! RTSP messages: the value type and its streaming parser.
//!
//! The parser is fed arbitrary pieces of a byte stream (retina-style) and yields whole messages,
//! requests or responses, with their bodies (`Content-Length`).

use bytes::Bytes;

/// Request line or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: String,
        uri: String,
        version: String,
    },
    Response {
        version: String,
        status: u16,
        reason: String,
    },
}

/// One RTSP message. Header names keep their spelling; lookups are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Message {
    pub fn request(method: &str, uri: &str) -> Self {
        Message {
            start: StartLine::Request {
                method: method.to_owned(),
                uri: uri.to_owned(),
                version: "RTSP/1.0".to_owned(),
            },
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn response(status: u16, reason: &str) -> Self {
        Message {
            start: StartLine::Response {
                version: "RTSP/1.0".to_owned(),
                status,
                reason: reason.to_owned(),
            },
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers with this name (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `CSeq` header as a number.
    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.trim().parse().ok()
    }

    /// Replaces the first header with this name (dropping later duplicates), or appends it.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        let mut seen = false;
        self.headers.retain_mut(|(n, v)| {
            if !n.eq_ignore_ascii_case(name) {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *v = value.clone();
            true
        });
        if !seen {
            self.headers.push((name.to_owned(), value));
        }
    }

    /// Removes every header with this name.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Writes the message in wire format. `Content-Length` is written from the body (and
    /// omitted when the body is empty), whatever the headers said.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match &self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                out.extend_from_slice(method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.as_bytes());
                out.push(b' ');
                out.extend_from_slice(version.as_bytes());
            }
            StartLine::Response {
                version,
                status,
                reason,
            } => {
                out.extend_from_slice(version.as_bytes());
                out.extend_from_slice(format!(" {status} ").as_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(256 + self.body.len());
        self.write_to(&mut v);
        v
    }
}

/// Limits on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why bytes could not be parsed as RTSP. [`ParseError::reason`] is the metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("RTSP head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("RTSP body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("malformed RTSP message: {0}")]
    Malformed(String),
}

impl ParseError {
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::HeadTooLarge(_) => "rtsp_head_too_large",
            ParseError::BodyTooLarge(_) => "rtsp_body_too_large",
            ParseError::Malformed(_) => "malformed_rtsp",
        }
    }
}

/// Parses one message from the start of `buf`: `Ok(Some((message, consumed)))` when complete,
/// `Ok(None)` when more bytes are needed.
pub fn parse_message(
    buf: &[u8],
    limits: &MessageLimits,
) -> Result<Option<(Message, usize)>, ParseError> {
    let _ = (buf, limits);
    todo!("implemented by the proto-core work")
}
