//! RTSP messages: the value type and its streaming parser.
//!
//! The parser is fed arbitrary pieces of a byte stream (retina-style) and yields whole messages,
//! requests or responses, with their bodies (`Content-Length`).

use bytes::Bytes;

/// Request line or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String, version: String },
    Response { version: String, status: u16, reason: String },
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
            start: StartLine::Response { version: "RTSP/1.0".to_owned(), status, reason: reason.to_owned() },
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
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All headers with this name (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
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
            StartLine::Request { method, uri, version } => {
                out.extend_from_slice(method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.as_bytes());
                out.push(b' ');
                out.extend_from_slice(version.as_bytes());
            }
            StartLine::Response { version, status, reason } => {
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
        MessageLimits { max_head_bytes: 16 * 1024, max_body_bytes: 64 * 1024 }
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

/// A parsed head: the message without its body, the head's length and the body's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub message: Message,
    pub head_len: usize,
    pub body_len: usize,
}

/// Finds the end of a head (the blank line, CRLF or bare LF) in `buf`, starting the search at
/// `from` (so a streaming caller scans each byte once). Returns the length including it.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(3);
    while let Some(nl) = memchr::memchr(b'\n', &buf[i..]) {
        let at = i + nl;
        // The line that ends here is empty if the previous byte is a LF, or CR then LF.
        let prev_line_end = match at {
            0 => true,
            _ if buf[at - 1] == b'\n' => true,
            _ if at >= 2 && buf[at - 1] == b'\r' && buf[at - 2] == b'\n' => true,
            1 if buf[0] == b'\r' => true,
            _ => false,
        };
        if prev_line_end && at > 0 {
            return Some(at + 1);
        }
        i = at + 1;
    }
    None
}

/// Longest method accepted (the longest standard one, GET_PARAMETER, has 13 bytes).
pub const MAX_METHOD_LEN: usize = 32;

pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

fn malformed(what: impl Into<String>) -> ParseError {
    ParseError::Malformed(what.into())
}

/// Parses a head from the start of `buf`: `Ok(None)` when its end has not arrived yet.
pub fn parse_head(buf: &[u8], limits: &MessageLimits) -> Result<Option<Head>, ParseError> {
    let Some(head_len) = find_head_end(buf, 0) else {
        if buf.len() > limits.max_head_bytes {
            return Err(ParseError::HeadTooLarge(limits.max_head_bytes));
        }
        return Ok(None);
    };
    if head_len > limits.max_head_bytes {
        return Err(ParseError::HeadTooLarge(limits.max_head_bytes));
    }
    let text = std::str::from_utf8(&buf[..head_len]).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let start = parse_start_line(first)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: the line continues the previous header's value.
            let Some((_, v)) = headers.last_mut() else { return Err(malformed("continuation before any header")) };
            // Joined with one space, none around an empty part (found by the rtsp_message fuzz
            // target: a leading or trailing space did not survive a round trip).
            let more = line.trim();
            if !more.is_empty() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
            continue;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("header line without ':': {line:.40}")))?;
        let name = name.trim_end();
        if !is_token(name) {
            return Err(malformed(format!("bad header name {name:.40}")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut body_len: Option<usize> = None;
    for (n, v) in &headers {
        if n.eq_ignore_ascii_case("Content-Length") {
            let len: usize = v
                .parse()
                .ok()
                .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| malformed(format!("bad Content-Length {v:.20}")))?;
            if body_len.is_some_and(|l| l != len) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            body_len = Some(len);
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge(limits.max_body_bytes));
    }
    Ok(Some(Head { message: Message { start, headers, body: Bytes::new() }, head_len, body_len }))
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("RTSP/") {
        // Status line: RTSP/1.0 200 OK (the reason may be empty or hold spaces).
        let (version, rest) = rest.split_once(' ').ok_or_else(|| malformed("status line without code"))?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 =
            code.parse().ok().filter(|c| (100..=999).contains(c)).ok_or_else(|| malformed("bad status code"))?;
        if !matches!(version, "1.0" | "2.0") {
            return Err(malformed(format!("unsupported RTSP version {version:.10}")));
        }
        return Ok(StartLine::Response {
            version: format!("RTSP/{version}"),
            status,
            reason: reason.trim().to_owned(),
        });
    }
    // A request line starts with its method: the demultiplexer judges a message's first bytes
    // by that rule before the line is whole, so the parser must not be laxer (fuzz finding).
    if line.starts_with(' ') {
        return Err(malformed(format!("request line starts with a space {line:.60}")));
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(format!("bad request line {line:.60}")));
    };
    if !is_token(method) || method.len() > MAX_METHOD_LEN || !matches!(version, "RTSP/1.0" | "RTSP/2.0") {
        return Err(malformed(format!("bad request line {line:.60}")));
    }
    Ok(StartLine::Request { method: method.to_owned(), uri: uri.to_owned(), version: version.to_owned() })
}

/// Parses one message from the start of `buf`: `Ok(Some((message, consumed)))` when complete,
/// `Ok(None)` when more bytes are needed.
pub fn parse_message(buf: &[u8], limits: &MessageLimits) -> Result<Option<(Message, usize)>, ParseError> {
    let Some(Head { mut message, head_len, body_len }) = parse_head(buf, limits)? else { return Ok(None) };
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    message.body = Bytes::copy_from_slice(&buf[head_len..total]);
    Ok(Some((message, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
        crate::test_fixtures::dir(dir)
    }

    #[test]
    fn every_camera_fixture_parses_and_round_trips() {
        let limits = MessageLimits::default();
        let cams = fixtures("cameras");
        assert!(cams.len() > 30);
        for (name, bytes) in cams {
            let (m, used) = parse_message(&bytes, &limits).unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert!(m.status().is_some(), "{name}");
            assert!(bytes[used..].iter().all(|b| b.is_ascii_whitespace()), "{name}: trailing bytes");
            // `write_to` writes Content-Length itself, last: compare without it.
            let mut again = parse_message(&m.to_bytes(), &limits).unwrap().unwrap().0;
            let mut m = m;
            again.remove_header("Content-Length");
            m.remove_header("Content-Length");
            assert_eq!(again, m, "{name}");
        }
    }

    #[test]
    fn requests_with_junk_and_duplicate_headers() {
        // GStreamer's OPTIONS: RealMedia headers and a duplicated User-Agent.
        let raw = b"OPTIONS rtsp://127.0.0.1:8554/cam RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: GStreamer/1.22.0\r\nClientChallenge: 9e26d33f2984236010ef6253fb1887f7\r\nPlayerStarttime: [28/03/2003:22:50:23 00:00]\r\nCompanyID: KnKV4M4I/B2FjJ1TToLycw==\r\nGUID: 00000000-0000-0000-0000-000000000000\r\nRegionData: 0\r\nClientID: Linux_2.4_6.0.9.1235_play32_RN01_EN_586\r\nUser-Agent: GStreamer/1.22.0\r\nDate: Tue, 24 Nov 2026 00:40:00 GMT\r\n\r\n";
        let (m, used) = parse_message(raw, &MessageLimits::default()).unwrap().unwrap();
        assert_eq!(used, raw.len());
        assert_eq!((m.method(), m.cseq()), (Some("OPTIONS"), Some(1)));
        assert_eq!(m.headers_named("user-agent").count(), 2);
    }

    #[test]
    fn lf_only_folded_headers_and_empty_reasons() {
        let (m, _) =
            parse_message(b"RTSP/1.0 200\nCSeq: 3\nX-Long: a\n  b\n\n", &MessageLimits::default()).unwrap().unwrap();
        assert_eq!((m.status(), m.cseq(), m.header("x-long")), (Some(200), Some(3), Some("a b")));
        let (m, _) =
            parse_message(b"RTSP/1.0 454 Session Not Found\r\n\r\n", &MessageLimits::default()).unwrap().unwrap();
        assert!(
            matches!(m.start, StartLine::Response { status: 454, ref reason, .. } if reason == "Session Not Found")
        );
    }

    /// Fuzz finding: serialising normalises, so a bare-LF head just under the limit comes back
    /// over it; the relay writes what it forwards without applying its own read limits.
    #[test]
    fn serialising_normalises_bare_lf_and_may_grow_the_head() {
        let limits = MessageLimits { max_head_bytes: 36, max_body_bytes: 0 };
        let input = b"RTSP/1.0 200 OK\nCSeq:3\nSession:8\n\n";
        let (m, _) = parse_message(input, &limits).unwrap().unwrap();
        let out = m.to_bytes();
        assert_eq!(out, b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 8\r\n\r\n");
        assert!(out.len() > limits.max_head_bytes);
        assert!(parse_message(&out, &limits).is_err());
        let roomy = MessageLimits { max_head_bytes: 3 * limits.max_head_bytes, ..limits };
        assert_eq!(parse_message(&out, &roomy).unwrap().unwrap().0, m);
    }

    #[test]
    fn a_folded_header_with_an_empty_first_line_round_trips() {
        let (m, _) =
            parse_message(b"RTSP/1.0 200 OK\r\nCSeq:\r\n nRa4ge: npt=0.000-\r\n\r\n", &MessageLimits::default())
                .unwrap()
                .unwrap();
        assert_eq!(m.header("CSeq"), Some("nRa4ge: npt=0.000-"));
        let again = parse_message(&m.to_bytes(), &MessageLimits::default()).unwrap().unwrap().0;
        assert_eq!(again, m);
        let (m, _) =
            parse_message(b"RTSP/1.0 200 OK\r\nRTP-Info: url=trackID=0;s35\r\n\t \r\n\r\n", &MessageLimits::default())
                .unwrap()
                .unwrap();
        assert_eq!(m.header("RTP-Info"), Some("url=trackID=0;s35"));
    }

    #[test]
    fn incomplete_and_hostile_inputs() {
        let l = MessageLimits { max_head_bytes: 64, max_body_bytes: 10 };
        assert_eq!(parse_message(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n", &l), Ok(None));
        assert_eq!(parse_message(b"RTSP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nabc", &l), Ok(None));
        let cases: [(&[u8], &str); 8] = [
            (b"RTSP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n", "rtsp_body_too_large"),
            (b"RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed_rtsp"),
            (b"RTSP/1.0 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "malformed_rtsp"),
            (b"HTTP/1.1 200 OK\r\n\r\n", "malformed_rtsp"),
            (b"GET / HTTP/1.1\r\n\r\n", "malformed_rtsp"),
            (b"RTSP/1.0 200 OK\r\nno colon here\r\n\r\n", "malformed_rtsp"),
            (b"RTSP/1.0 200 OK\r\nX: \xff\xfe\r\n\r\n", "malformed_rtsp"),
            (&[b'A'; 100], "rtsp_head_too_large"),
        ];
        for (raw, reason) in cases {
            let e = parse_message(raw, &l).unwrap_err();
            assert_eq!(e.reason(), reason, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn head_end_is_found_incrementally() {
        let raw = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\nbody";
        let end = raw.len() - 4;
        for from in 0..raw.len() {
            let found = find_head_end(raw, from);
            if from <= end {
                assert_eq!(found, Some(end), "from {from}");
            }
        }
        assert_eq!(find_head_end(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n", 0), None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_message(&bytes, &MessageLimits::default());
        }

        #[test]
        fn any_prefix_of_a_fixture_is_incomplete_not_an_error(cut in 0usize..2000) {
            let bytes = crate::test_fixtures::bytes("cameras/hikvision_describe.txt");
            let (_, used) = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap();
            let cut = cut % used;
            prop_assert_eq!(parse_message(&bytes[..cut], &MessageLimits::default()), Ok(None));
        }
    }
}
