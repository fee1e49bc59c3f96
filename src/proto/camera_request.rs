//! What a camera receives from a viewer: messages rebuilt from what the relay understood,
//! never the viewer's bytes passed on.
//!
//! The relay holds the camera's credentials, so whatever it sends is sent with its authority.
//! A viewer's request is parsed strictly, then a new one is written: a method from a short
//! list, the URI the route allows ([`UrlMap::camera_uri`](super::rewrite::UrlMap::camera_uri)),
//! the relay's `CSeq`, and only the headers a camera needs to stream, each value free of
//! control characters (a bare CR is a line end to many camera firmwares: a second request
//! hidden in a header value would otherwise reach the camera).

use super::rtsp::Message;
use super::rtsp_headers::Public;

/// Methods a viewer may send a camera. ANNOUNCE/RECORD (publishing), REDIRECT and anything
/// else are answered `405` by the relay.
pub const METHODS: [&str; 8] =
    ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"];

/// `Public` (and `Allow`) as the relay answers viewers: [`METHODS`].
pub fn public() -> Public<'static> {
    Public::of(&METHODS)
}

/// Headers passed on to the camera (values checked), in the spelling the camera gets.
/// `CSeq` is rewritten from the parsed number, `Content-Length` from the body, `Authorization`
/// is the relay's own; everything else the viewer sent stays at the relay.
const FORWARDED_HEADERS: &[&str] = &[
    "Session",
    "Transport",
    "Range",
    "Scale",
    "Speed",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Type",
    "User-Agent",
    "Require",
    "Proxy-Require",
    "Bandwidth",
    "Blocksize",
    // ONVIF replay (NVR playback through passthrough routes).
    "Rate-Control",
    "Frames",
    "Immediate",
];

/// Largest request body passed on (GET_PARAMETER's parameter names).
const MAX_PARAMETER_BODY: usize = 4096;

/// Why a viewer's message is answered by the relay instead of reaching the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `405`: a method outside [`METHODS`], or SET_PARAMETER with a body (it would change the
    /// camera's settings with the relay's credentials).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `400`: a control character (CR, LF, NUL, …) in the request URI or a header value, or a
    /// body that is not plain parameter text.
    #[error("control character or bad body")]
    BadHeaderValue,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::MethodNotAllowed => (405, "Method Not Allowed"),
            Refusal::BadHeaderValue => (400, "Bad Request"),
        }
    }
}

/// No control characters but horizontal tab (C0, DEL and C1 all refused).
pub fn is_clean_value(v: &str) -> bool {
    !v.chars().any(|c| c.is_control() && c != '\t')
}

/// Every header value of `msg` (forwarded or not) and its start line are free of control
/// characters. A client sending them is broken or hostile; either way the answer is `400`.
pub fn is_clean(msg: &Message) -> bool {
    let start_clean = match &msg.start {
        super::rtsp::StartLine::Request { uri, .. } => is_clean_value(uri),
        super::rtsp::StartLine::Response { reason, .. } => is_clean_value(reason),
    };
    start_clean && msg.headers.iter().all(|(n, v)| is_clean_value(n) && is_clean_value(v))
}

/// The request the camera receives for a viewer's `msg`: `camera_uri` (already confined to the
/// route) and `cseq` as the relay tracks them, and the allowed headers of `msg`, first of each
/// name only (a duplicated `Session` or `Transport` would leave the camera to choose).
pub fn rebuild_request(msg: &Message, cseq: u32, camera_uri: &str) -> Result<Message, Refusal> {
    let method = msg.method().unwrap_or("");
    let Some(method) = METHODS.iter().find(|m| **m == method) else {
        return Err(Refusal::MethodNotAllowed);
    };
    if !is_clean(msg) {
        return Err(Refusal::BadHeaderValue);
    }
    let mut out = Message::request(method, camera_uri);
    out.headers.push(("CSeq".to_owned(), cseq.to_string()));
    for &name in FORWARDED_HEADERS {
        if let Some(value) = msg.header(name) {
            out.headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    if !msg.body.is_empty() {
        match *method {
            "GET_PARAMETER" if is_parameter_text(&msg.body) => out.body = msg.body.clone(),
            "SET_PARAMETER" => return Err(Refusal::MethodNotAllowed),
            "GET_PARAMETER" => return Err(Refusal::BadHeaderValue),
            // Nothing else a viewer sends a camera has a body; it is not passed on.
            _ => {}
        }
    }
    Ok(out)
}

/// The camera receives, for a viewer's answer to a request the camera sent it, only the status,
/// `CSeq` and `Session`.
pub fn rebuild_response(msg: &Message) -> Result<Message, Refusal> {
    let (Some(status), Some(cseq)) = (msg.status(), msg.cseq()) else {
        return Err(Refusal::BadHeaderValue);
    };
    if !is_clean(msg) {
        return Err(Refusal::BadHeaderValue);
    }
    let reason = if (200..300).contains(&status) { "OK" } else { "Error" };
    let mut out = Message::response(status, reason);
    out.headers.push(("CSeq".to_owned(), cseq.to_string()));
    if let Some(session) = msg.header("Session") {
        out.headers.push(("Session".to_owned(), session.trim().to_owned()));
    }
    Ok(out)
}

/// GET_PARAMETER's body: parameter names, one a line (`text/parameters`), printable ASCII.
fn is_parameter_text(body: &[u8]) -> bool {
    body.len() <= MAX_PARAMETER_BODY && body.iter().all(|&b| b.is_ascii_graphic() || b" \t\r\n".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtsp::{MessageLimits, parse_message};

    fn parse(text: &str) -> Message {
        parse_message(text.as_bytes(), &MessageLimits::default()).unwrap().unwrap().0
    }

    #[test]
    fn only_known_headers_reach_the_camera_in_a_new_message() {
        let m = parse(
            "SETUP rtsp://relay/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\
             User-Agent: a\r\nUser-Agent: b\r\nX-Forwarded-For: 1.2.3.4\r\nAuthorization: Basic eDp5\r\n\
             Host: camera.internal\r\nSession: 12345678\r\n\r\n",
        );
        let out = rebuild_request(&m, 3, "rtsp://10.0.0.5:554/s/trackID=1").unwrap();
        assert_eq!(
            String::from_utf8(out.to_bytes()).unwrap(),
            "SETUP rtsp://10.0.0.5:554/s/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nSession: 12345678\r\n\
             Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nUser-Agent: a\r\n\r\n"
        );
    }

    #[test]
    fn control_characters_anywhere_are_refused() {
        for (name, value) in [
            ("User-Agent", "x\rDESCRIBE rtsp://10.0.0.5/other RTSP/1.0"),
            ("X-Junk", "a\0b"),
            ("Session", "1\u{7f}"),
            ("Range", "npt=0-\u{85}"),
        ] {
            let mut m = Message::request("DESCRIBE", "rtsp://relay/cam1");
            m.headers.push(("CSeq".into(), "2".into()));
            m.headers.push((name.into(), value.into()));
            assert_eq!(rebuild_request(&m, 2, "rtsp://c/s"), Err(Refusal::BadHeaderValue), "{value:?}");
        }
        let mut tab = Message::request("OPTIONS", "*");
        tab.headers.push(("User-Agent".into(), "a\tb".into()));
        assert!(rebuild_request(&tab, 1, "*").is_ok(), "a tab is whitespace, not a control");
    }

    #[test]
    fn methods_outside_the_list_and_settings_changes_are_refused() {
        for method in ["ANNOUNCE", "RECORD", "REDIRECT", "options", "FOO"] {
            let m = Message::request(method, "rtsp://relay/cam1");
            assert_eq!(rebuild_request(&m, 1, "rtsp://c/s"), Err(Refusal::MethodNotAllowed), "{method}");
        }
        let mut set = Message::request("SET_PARAMETER", "rtsp://relay/cam1");
        set.body = "Brightness: 100\r\n".into();
        assert_eq!(rebuild_request(&set, 1, "rtsp://c/s"), Err(Refusal::MethodNotAllowed));
        set.body = bytes::Bytes::new();
        assert!(rebuild_request(&set, 1, "rtsp://c/s").is_ok(), "an empty SET_PARAMETER is a keepalive");
        let mut get = Message::request("GET_PARAMETER", "rtsp://relay/cam1");
        get.body = "position\r\n".into();
        assert_eq!(rebuild_request(&get, 1, "rtsp://c/s").unwrap().body, get.body);
        get.body = vec![b'a', 0, b'\r'].into();
        assert_eq!(rebuild_request(&get, 1, "rtsp://c/s"), Err(Refusal::BadHeaderValue));
        let mut describe = Message::request("DESCRIBE", "rtsp://relay/cam1");
        describe.body = "DESCRIBE rtsp://c/other RTSP/1.0\r\n\r\n".into();
        assert!(rebuild_request(&describe, 1, "rtsp://c/s").unwrap().body.is_empty());
    }

    #[test]
    fn a_viewer_answer_keeps_status_cseq_and_session_only() {
        let m = parse("RTSP/1.0 200 Whatever\r\nCSeq: 9\r\nSession: abc\r\nX-Extra: 1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(
            String::from_utf8(rebuild_response(&m).unwrap().to_bytes()).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 9\r\nSession: abc\r\n\r\n"
        );
        let no_cseq = parse("RTSP/1.0 200 OK\r\n\r\n");
        assert_eq!(rebuild_response(&no_cseq), Err(Refusal::BadHeaderValue));
    }
}
