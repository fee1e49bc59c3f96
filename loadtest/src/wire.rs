//! The load generator's own reader and writer of RTSP over TCP: interleaved `$` frames and RTSP
//! messages (requests or responses). Deliberately independent of the relay's demultiplexer and
//! message parser, so a framing bug in the relay cannot pass unnoticed through the same bug here.
//! The same goes for URLs ([`url_path`]) and headers (`Transport`, `Session`, `RTP-Info` in
//! `viewer.rs`): the relay's `proto::rtsp_url` and `proto::rtsp_headers` are not used on purpose,
//! since the load generator is an independent check of what the relay sends.

use std::fmt::Write as _;

/// Longest message head accepted (start line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// One RTSP message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("RTSP/1.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("RTSP/") { None } else { self.start.split(' ').next() }
    }

    /// The request-URI of a request.
    pub fn uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split(' ').nth(1)
    }

    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.trim().parse().ok()
    }
}

/// Why a byte stream could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Neither `$` nor the start of an RTSP message where one of them must begin.
    BadFraming,
    HeadTooLarge,
    BadHead,
}

impl WireError {
    pub fn reason(self) -> &'static str {
        match self {
            WireError::BadFraming => "bad_framing",
            WireError::HeadTooLarge => "head_too_large",
            WireError::BadHead => "bad_head",
        }
    }
}

/// Splits a byte stream into frames and messages, across reads.
#[derive(Default)]
pub struct Reader {
    pending: Vec<u8>,
}

impl Reader {
    /// Feeds received bytes: `frame(channel, payload)` for every whole frame, whole messages
    /// appended to `msgs`, in stream order relative to each other.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        frame: &mut impl FnMut(u8, &[u8]),
        msgs: &mut Vec<Msg>,
    ) -> Result<(), WireError> {
        if self.pending.is_empty() {
            let used = split(bytes, frame, msgs)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            self.pending.extend_from_slice(bytes);
            let used = split(&self.pending, frame, msgs)?;
            self.pending.drain(..used);
        }
        Ok(())
    }
}

/// Splits whole items off the front of `data`; returns the bytes used.
fn split(data: &[u8], frame: &mut impl FnMut(u8, &[u8]), msgs: &mut Vec<Msg>) -> Result<usize, WireError> {
    let mut at = 0;
    while at < data.len() {
        match data[at] {
            b'$' => {
                let Some(h) = data.get(at..at + 4) else { break };
                let len = u16::from_be_bytes([h[2], h[3]]) as usize;
                let Some(payload) = data.get(at + 4..at + 4 + len) else { break };
                frame(h[1], payload);
                at += 4 + len;
            }
            // Blank lines between messages are tolerated (RFC 2326 keep-alives).
            b'\r' | b'\n' => at += 1,
            b if b.is_ascii_uppercase() => match message(&data[at..])? {
                Some((m, used)) => {
                    msgs.push(m);
                    at += used;
                }
                None => break,
            },
            _ => return Err(WireError::BadFraming),
        }
    }
    Ok(at)
}

/// One whole message at the start of `data`, or `None` if more bytes are needed.
fn message(data: &[u8]) -> Result<Option<(Msg, usize)>, WireError> {
    let Some(end) = data.windows(4).take(MAX_HEAD).position(|w| w == b"\r\n\r\n") else {
        return if data.len() >= MAX_HEAD { Err(WireError::HeadTooLarge) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&data[..end]).map_err(|_| WireError::BadHead)?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let is_response = start.starts_with("RTSP/1.0 ") && start.len() >= 12;
    let is_request = {
        let parts: Vec<&str> = start.split(' ').collect();
        parts.len() == 3 && parts[2] == "RTSP/1.0" && parts[0].bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    };
    if !is_response && !is_request {
        return Err(WireError::BadFraming);
    }
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or(WireError::BadHead)?;
        if k.is_empty() || k.contains(' ') {
            return Err(WireError::BadHead);
        }
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let mut m = Msg { start: start.to_owned(), headers, body: Vec::new() };
    let len: usize = match m.header("Content-Length") {
        Some(v) => v.trim().parse().map_err(|_| WireError::BadHead)?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(WireError::HeadTooLarge);
    }
    let body_at = end + 4;
    let Some(body) = data.get(body_at..body_at + len) else { return Ok(None) };
    m.body = body.to_vec();
    Ok(Some((m, body_at + len)))
}

/// A request's bytes.
pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {uri} RTSP/1.0\r\n");
    for (k, v) in headers {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A response's bytes (a body gets its Content-Length).
pub fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("RTSP/1.0 {status} {reason}\r\n");
    for (k, v) in headers {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    if !body.is_empty() {
        let _ = write!(s, "Content-Length: {}\r\n", body.len());
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The path of an RTSP URL (`rtsp://host:port/a/b?q` → `/a/b`), or the argument if it is one.
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r.find('/').map_or("/", |i| &r[i..]));
    rest.split(['?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = Vec<(u8, Vec<u8>)>;

    fn all(chunks: &[&[u8]]) -> (Frames, Vec<Msg>, Result<(), WireError>) {
        let mut r = Reader::default();
        let (mut frames, mut msgs) = (Vec::new(), Vec::new());
        let mut res = Ok(());
        for c in chunks {
            res = r.feed(c, &mut |ch, p: &[u8]| frames.push((ch, p.to_vec())), &mut msgs);
            if res.is_err() {
                break;
            }
        }
        (frames, msgs, res)
    }

    #[test]
    fn splits_frames_and_messages_across_any_cut() {
        let mut stream = response(200, "OK", &[("CSeq", "3"), ("Session", "ab")], b"v=0\r\n");
        stream.extend_from_slice(&[b'$', 0, 0, 3, 1, 2, 3, b'$', 1, 0, 0]);
        stream.extend_from_slice(&request("GET_PARAMETER", "rtsp://h/x", &[("CSeq", "4")]));
        for cut in 0..stream.len() {
            let (frames, msgs, res) = all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(res, Ok(()));
            assert_eq!(frames, vec![(0, vec![1, 2, 3]), (1, vec![])], "cut {cut}");
            assert_eq!(msgs.len(), 2);
            assert_eq!((msgs[0].status(), msgs[0].cseq(), &msgs[0].body[..]), (Some(200), Some(3), &b"v=0\r\n"[..]));
            assert_eq!((msgs[1].method(), msgs[1].uri()), (Some("GET_PARAMETER"), Some("rtsp://h/x")));
        }
    }

    #[test]
    fn refuses_what_is_neither_a_frame_nor_a_message() {
        assert_eq!(all(&[b"\x00\x01garbage"]).2, Err(WireError::BadFraming));
        assert_eq!(all(&[b"HTTP/1.1 200 OK\r\n\r\n"]).2, Err(WireError::BadFraming));
        assert_eq!(all(&[b"RTSP/1.0 200 OK\r\nno colon\r\n\r\n"]).2, Err(WireError::BadHead));
        assert_eq!(all(&[&vec![b'A'; MAX_HEAD + 10]]).2, Err(WireError::HeadTooLarge));
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("rtsp://127.0.0.1:8554/cam3/trackID=0"), "/cam3/trackID=0");
        assert_eq!(url_path("rtsp://h"), "/");
        assert_eq!(url_path("/cam1?x"), "/cam1");
    }
}
