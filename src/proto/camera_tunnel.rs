//! The client end of Apple's RTSP-over-HTTP tunnel, towards a camera (`rtsp+http://`,
//! `rtsp+https://`): the relay opens the GET (the camera's answers and media come down it) and
//! the POST (its requests go up it, base64), both carrying one `x-sessioncookie`. This value
//! writes both heads, encodes what goes up, and reads the GET's HTTP answer off the front of
//! what comes down; after it, the GET carries the camera's RTSP stream unchanged.

use base64::Engine;

/// The GET's answer could not open the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraTunnelError {
    #[error("the camera answered the tunnel GET with HTTP {0}")]
    Status(u16),
    #[error("the camera's answer to the tunnel GET is not HTTP")]
    NotHttp,
    #[error("the camera's answer to the tunnel GET is larger than {0} bytes")]
    TooLarge(usize),
}

/// What [`CameraTunnelClient::receive_get`] made of received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetProgress {
    /// The answer is not complete yet (all bytes taken).
    Waiting,
    /// The answer was 200 and ended `consumed` bytes into this input: the POST may go now, and
    /// the rest is RTSP.
    Open { consumed: usize },
    /// The tunnel is open: all of this input is RTSP.
    Rtsp,
}

#[derive(Debug, Clone)]
pub struct CameraTunnelClient {
    /// The request target (path and query of the camera URL).
    target: String,
    /// `host[:port]` for the `Host` header.
    host: String,
    cookie: String,
    /// The GET's answer head so far; `None` once it is read.
    head: Option<Vec<u8>>,
    max_head: usize,
}

impl CameraTunnelClient {
    /// `cookie_seed`: randomness from the shell (the cookie is 22 characters of it, base64).
    pub fn new(target: &str, host: &str, cookie_seed: u128, max_head: usize) -> Self {
        let cookie = base64::engine::general_purpose::STANDARD_NO_PAD.encode(cookie_seed.to_le_bytes());
        let cookie = cookie.replace(['+', '/'], "x");
        CameraTunnelClient {
            target: if target.is_empty() { "/".to_owned() } else { target.to_owned() },
            host: host.to_owned(),
            cookie,
            head: Some(Vec::new()),
            max_head,
        }
    }

    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The GET that opens the tunnel (sent first, on its own connection).
    pub fn get_head(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: rtsp-tunnel-relay\r\nx-sessioncookie: {}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
            self.target, self.host, self.cookie
        )
        .into_bytes()
    }

    /// The POST that carries requests (sent once the GET is answered: the camera pairs it by
    /// the cookie of a GET it already holds).
    pub fn post_head(&self) -> Vec<u8> {
        format!(
            "POST {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: rtsp-tunnel-relay\r\nx-sessioncookie: {}\r\nContent-Type: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nContent-Length: 32767\r\nExpires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n",
            self.target, self.host, self.cookie
        )
        .into_bytes()
    }

    /// RTSP bytes (whole requests, interleaved RTCP) as they go up the POST: base64, padded
    /// per call as FFmpeg and VLC send them (cameras decode each piece on its own).
    pub fn encode(&self, rtsp: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.encode(rtsp).into_bytes()
    }

    /// Bytes from the GET connection.
    pub fn receive_get(&mut self, bytes: &[u8]) -> Result<GetProgress, CameraTunnelError> {
        let Some(head) = self.head.as_mut() else { return Ok(GetProgress::Rtsp) };
        let before = head.len();
        head.extend_from_slice(bytes);
        let Some(end) = memchr::memmem::find(head, b"\r\n\r\n").map(|e| e + 4) else {
            if head.len() > self.max_head {
                return Err(CameraTunnelError::TooLarge(self.max_head));
            }
            return Ok(GetProgress::Waiting);
        };
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = std::str::from_utf8(line).map_err(|_| CameraTunnelError::NotHttp)?.trim_end();
        let mut parts = line.split(' ');
        let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
            return Err(CameraTunnelError::NotHttp);
        };
        if !version.starts_with("HTTP/1.") {
            return Err(CameraTunnelError::NotHttp);
        }
        let status: u16 = status.parse().map_err(|_| CameraTunnelError::NotHttp)?;
        if status != 200 {
            return Err(CameraTunnelError::Status(status));
        }
        self.head = None;
        Ok(GetProgress::Open { consumed: end.saturating_sub(before) })
    }

    /// Whether the GET's answer has been read.
    pub fn is_open(&self) -> bool {
        self.head.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_share_one_cookie_and_name_the_target() {
        let t = CameraTunnelClient::new("/cam1?x=1", "10.0.0.5:80", 42, 4096);
        let get = String::from_utf8(t.get_head()).unwrap();
        let post = String::from_utf8(t.post_head()).unwrap();
        let cookie = format!("x-sessioncookie: {}\r\n", t.cookie());
        assert!(get.starts_with("GET /cam1?x=1 HTTP/1.0\r\n") && get.contains(&cookie), "{get}");
        assert!(post.starts_with("POST /cam1?x=1 HTTP/1.0\r\n") && post.contains(&cookie), "{post}");
        assert!(get.contains("Accept: application/x-rtsp-tunnelled") && get.ends_with("\r\n\r\n"));
        assert!(post.contains("Content-Type: application/x-rtsp-tunnelled") && post.ends_with("\r\n\r\n"));
        assert!(t.cookie().bytes().all(|b| b.is_ascii_alphanumeric()), "{}", t.cookie());
    }

    #[test]
    fn the_get_answer_is_read_off_the_front_in_any_pieces() {
        let answer = b"HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\nRTSP/1.0 200 OK\r\n";
        for split in 0..answer.len() {
            let mut t = CameraTunnelClient::new("/", "h", 1, 4096);
            let (a, b) = answer.split_at(split);
            let mut rtsp = Vec::new();
            for piece in [a, b] {
                match t.receive_get(piece).unwrap() {
                    GetProgress::Waiting => {}
                    GetProgress::Open { consumed } => rtsp.extend_from_slice(&piece[consumed..]),
                    GetProgress::Rtsp => rtsp.extend_from_slice(piece),
                }
            }
            assert_eq!(rtsp, b"RTSP/1.0 200 OK\r\n", "split at {split}");
            assert!(t.is_open());
        }
    }

    #[test]
    fn a_refused_or_foreign_answer_is_an_error() {
        let mut t = CameraTunnelClient::new("/", "h", 1, 64);
        assert_eq!(t.receive_get(b"HTTP/1.1 401 Unauthorized\r\n\r\n"), Err(CameraTunnelError::Status(401)));
        let mut t = CameraTunnelClient::new("/", "h", 1, 64);
        assert_eq!(t.receive_get(b"RTSP/1.0 200 OK\r\n\r\n"), Err(CameraTunnelError::NotHttp));
        let mut t = CameraTunnelClient::new("/", "h", 1, 64);
        assert_eq!(t.receive_get(&[b'a'; 65]), Err(CameraTunnelError::TooLarge(64)));
        let mut t = CameraTunnelClient::new("/", "h", 1, 64);
        assert_eq!(t.receive_get(b"HTTP/1.0 2\xff0 OK\r\n\r\n"), Err(CameraTunnelError::NotHttp));
    }

    #[test]
    fn requests_go_up_as_padded_base64() {
        let t = CameraTunnelClient::new("/", "h", 1, 64);
        assert_eq!(t.encode(b"OPTIONS * RTSP/1.0\r\n\r\n"), b"T1BUSU9OUyAqIFJUU1AvMS4wDQoNCg==");
    }

    proptest::proptest! {
        #[test]
        fn any_get_answer_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut t = CameraTunnelClient::new("/", "h", 7, 128);
            let _ = t.receive_get(&bytes);
        }
    }
}
