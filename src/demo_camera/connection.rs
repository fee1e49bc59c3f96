//! One client connection of the demo camera, as a value: fed requests, client frames and the
//! time, it hands back responses and the interleaved media due. The server thread around it only
//! moves bytes and sleeps, which keeps every RTSP rule here testable without sockets or clocks.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::h264::Clip;
use super::rtp::{self, Packetizer, SenderInfo};
use crate::proto::rng::Rng;
use crate::proto::rtsp::{Message, StartLine};
use crate::proto::rtsp_headers::{
    Public, RtpInfo, RtpInfoEntry, SessionHeader, Transport, TransportSpec, channel_pair,
};
use crate::proto::rtsp_url::RtspUrl;

/// The path the camera serves.
pub const STREAM_PATH: &str = "/demo";
/// The control suffix of the only track (`a=control:` in the SDP).
pub const TRACK_CONTROL: &str = "trackID=0";
/// Frame rate of the embedded clip.
pub const FPS: u32 = 25;
/// Session timeout announced in `Session: ID;timeout=60`.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// When a connection is dropped for silence: the announced timeout plus slack, since clients
/// (FFmpeg) time their keepalives to timeout/2 and may run late under load.
pub const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// Interval between RTCP sender reports.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// A viewer further behind live than this (it reads too slowly) skips to the latest keyframe
/// rather than receiving stale video: what a live camera does, and it bounds the burst per poll.
pub const MAX_LAG_FRAMES: u64 = 2 * FPS as u64;

const FRAME_INTERVAL: Duration = Duration::from_millis(1000 / FPS as u64);
const RTP_TICKS_PER_FRAME: u32 = rtp::CLOCK_RATE / FPS;
const SERVER: &str = concat!("rtsp-tunnel-relay-demo-camera/", env!("CARGO_PKG_VERSION"));
const METHODS: [&str; 8] =
    ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"];

/// The camera's live timeline, shared by all its connections so that every viewer sees the same
/// picture at the same time (like a real camera): frame `k` of the endless loop is due at
/// `origin + k/25 s` and carries RTP timestamp `ts_base + k*3600`.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub origin: Instant,
    /// Random initial RTP timestamp (RFC 3550 §5.1).
    pub ts_base: u32,
}

impl Timeline {
    fn due(&self, frame: u64) -> Instant {
        self.origin + Duration::from_nanos(frame.saturating_mul(FRAME_INTERVAL.as_nanos() as u64))
    }

    /// Index of the latest frame due at `now`.
    fn live_frame(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / FRAME_INTERVAL.as_nanos()) as u64
    }

    fn rtp_time(&self, frame: u64) -> u32 {
        // Truncating the frame count is exact: the timestamp wraps modulo 2^32 anyway.
        self.ts_base.wrapping_add((frame as u32).wrapping_mul(RTP_TICKS_PER_FRAME))
    }

    /// The RTP clock at an arbitrary instant (for sender reports).
    fn rtp_time_at(&self, now: Instant) -> u32 {
        let ticks = now.saturating_duration_since(self.origin).as_nanos() * u128::from(rtp::CLOCK_RATE) / 1_000_000_000;
        self.ts_base.wrapping_add(ticks as u32)
    }
}

/// The current time, monotonic for scheduling and wall-clock for `Date` and RTCP.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn current() -> Self {
        Now { mono: Instant::now(), wall: SystemTime::now() }
    }
}

/// What the server should do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub response: Message,
    /// Close the connection once the response is written (unparseable or hostile input).
    pub close: bool,
}

/// Outcome of [`Connection::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Continue,
    /// Nothing heard from the client for [`IDLE_LIMIT`]: close the connection.
    Expired,
}

#[derive(Debug)]
struct Session {
    id: String,
    rtp_channel: u8,
    rtcp_channel: u8,
    packetizer: Packetizer,
    /// `Some(next frame index)` while playing.
    next_frame: Option<u64>,
    last_sr: Option<Instant>,
}

/// Per-connection RTSP state: at most one session (one track) per connection.
#[derive(Debug)]
pub struct Connection {
    clip: &'static Clip<'static>,
    timeline: Timeline,
    /// Used for URLs when a request carries a relative URI.
    local: SocketAddr,
    rng: Rng,
    session: Option<Session>,
    last_activity: Instant,
    sdp_session_id: u64,
}

enum Target {
    Any,
    Aggregate,
    Track,
}

impl Connection {
    /// `seed` makes the session id, SSRC and initial sequence number; pass fresh randomness.
    pub fn new(clip: &'static Clip<'static>, timeline: Timeline, local: SocketAddr, seed: u64, now: Instant) -> Self {
        let mut rng = Rng::new(seed);
        let sdp_session_id = rng.next_u64() >> 1;
        Connection { clip, timeline, local, rng, session: None, last_activity: now, sdp_session_id }
    }

    /// Whether a session is set up and streaming.
    pub fn is_playing(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.next_frame.is_some())
    }

    /// Interleaved channel of RTCP from the client (RTCP receiver reports), if set up.
    pub fn rtcp_channel(&self) -> Option<u8> {
        self.session.as_ref().map(|s| s.rtcp_channel)
    }

    /// The client sent an interleaved frame (an RTCP receiver report): proof of life, ignored
    /// otherwise.
    pub fn client_frame(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// When [`Connection::poll`] next has work: a frame due, a sender report, or expiry.
    pub fn next_deadline(&self) -> Instant {
        let mut at = self.last_activity + IDLE_LIMIT;
        if let Some(s) = &self.session
            && let Some(next) = s.next_frame
        {
            at = at.min(self.timeline.due(next));
            if let Some(last) = s.last_sr {
                at = at.min(last + SR_INTERVAL);
            }
        }
        at
    }

    /// Appends every interleaved frame due by `now` to `out`: RTP for the frames whose time
    /// has come, and an RTCP sender report every [`SR_INTERVAL`].
    pub fn poll(&mut self, now: Now, out: &mut Vec<u8>) -> Poll {
        if now.mono >= self.last_activity + IDLE_LIMIT {
            return Poll::Expired;
        }
        let (clip, timeline) = (self.clip, self.timeline);
        let Some(s) = self.session.as_mut() else {
            return Poll::Continue;
        };
        let Some(mut next) = s.next_frame else {
            return Poll::Continue;
        };
        let live = timeline.live_frame(now.mono);
        if live.saturating_sub(next) > MAX_LAG_FRAMES {
            let resync = start_frame(clip, live);
            tracing::debug!(
                session = %s.id,
                behind = live - next,
                "demo camera viewer lagging, skipping to the latest keyframe"
            );
            next = resync;
        }
        let mut sent = false;
        while next <= live {
            let au = &clip.frames[(next % clip.frames.len() as u64) as usize];
            let channel = s.rtp_channel;
            s.packetizer.packetize(&au.nals, timeline.rtp_time(next), |p| push_frame(out, channel, p));
            next += 1;
            sent = true;
        }
        s.next_frame = Some(next);
        let sr_due = s.last_sr.is_none_or(|t| now.mono >= t + SR_INTERVAL);
        if sr_due && (sent || s.last_sr.is_some()) {
            let since_epoch = now.wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let sr = rtp::sender_report(
                &SenderInfo {
                    ssrc: s.packetizer.ssrc(),
                    ntp: rtp::ntp_timestamp(since_epoch),
                    rtp_timestamp: timeline.rtp_time_at(now.mono),
                    packet_count: s.packetizer.packets_sent(),
                    octet_count: s.packetizer.octets_sent(),
                },
                "demo@rtsp-tunnel-relay",
            );
            push_frame(out, s.rtcp_channel, &sr);
            s.last_sr = Some(now.mono);
        }
        Poll::Continue
    }

    /// Answers one message from the client. Responses (the client answering a request we never
    /// sent) get no reply.
    pub fn handle(&mut self, msg: &Message, now: Now) -> Option<Reply> {
        let StartLine::Request { method, uri, version } = &msg.start else {
            return None;
        };
        self.last_activity = now.mono;
        let Some(cseq) = msg.header("CSeq").map(str::trim) else {
            // CSeq is mandatory (RFC 2326 §12.17) and without it no answer can be matched.
            let mut r = Message::response(400, reason(400));
            self.common_headers(&mut r, now);
            return Some(Reply { response: r, close: true });
        };
        let mut r = Message::response(200, reason(200));
        r.set_header("CSeq", cseq);
        self.common_headers(&mut r, now);
        let status = self.dispatch(method, uri, version, msg, now, &mut r);
        if status != 200 {
            set_status(&mut r, status);
            r.body = Default::default();
            r.remove_header("Content-Type");
        }
        tracing::debug!(%method, %uri, status, "demo camera request");
        Some(Reply { response: r, close: false })
    }

    fn common_headers(&self, r: &mut Message, now: Now) {
        r.set_header("Server", SERVER);
        r.set_header("Date", httpdate::fmt_http_date(now.wall));
    }

    /// Fills `r` for a successful answer and returns the status to send.
    fn dispatch(&mut self, method: &str, uri: &str, version: &str, req: &Message, now: Now, r: &mut Message) -> u16 {
        if version != "RTSP/1.0" {
            return 505;
        }
        if let Some(required) = req.header("Require") {
            // We implement no extensions (RFC 2326 §12.32).
            r.set_header("Unsupported", required.trim());
            return 551;
        }
        let Some(url) = RequestUrl::parse(uri, self.local) else {
            return 400;
        };
        let target = match (uri, url.path.as_str()) {
            ("*", _) => Target::Any,
            (_, p) if p == STREAM_PATH || p == "/demo/*" => Target::Aggregate,
            (_, p) if p.strip_prefix("/demo/") == Some(TRACK_CONTROL) => Target::Track,
            _ => return 404,
        };
        let matches_session = |conn: &Self| {
            let given = req.header("Session").map(SessionHeader::id_of);
            match (&conn.session, given) {
                (Some(s), Some(g)) => g == s.id,
                _ => false,
            }
        };
        match method {
            "OPTIONS" => {
                r.set_header("Public", Public::of(&METHODS).to_string());
                200
            }
            "DESCRIBE" => {
                if !matches!(target, Target::Aggregate) {
                    return 404;
                }
                if let Some(accept) = req.header("Accept")
                    && !accept.split(',').any(|t| {
                        let t = t.split(';').next().unwrap_or("").trim();
                        t.eq_ignore_ascii_case("application/sdp") || t == "*/*"
                    })
                {
                    return 406;
                }
                r.set_header("Content-Base", url.base());
                r.set_header("Content-Type", "application/sdp");
                r.body = self.sdp().into_bytes().into();
                200
            }
            "SETUP" => self.setup(&target, req, r, matches_session(self)),
            "PLAY" => {
                if !matches_session(self) {
                    return 454;
                }
                if matches!(target, Target::Any) {
                    return 400;
                }
                let (timeline, clip) = (self.timeline, self.clip);
                let Some(s) = self.session.as_mut() else {
                    return 454;
                };
                let next = *s.next_frame.get_or_insert_with(|| start_frame(clip, timeline.live_frame(now.mono)));
                r.set_header("Session", s.id.clone());
                r.set_header("Range", "npt=now-");
                let info = RtpInfoEntry {
                    url: format!("{}{TRACK_CONTROL}", url.base()),
                    seq: Some(s.packetizer.next_seq()),
                    rtptime: Some(timeline.rtp_time(next)),
                };
                r.set_header("RTP-Info", RtpInfo { entries: vec![info] }.to_string());
                tracing::debug!(session = %s.id, "demo camera: PLAY");
                200
            }
            "PAUSE" => {
                if !matches_session(self) {
                    return 454;
                }
                if let Some(s) = self.session.as_mut() {
                    s.next_frame = None;
                    r.set_header("Session", s.id.clone());
                }
                200
            }
            "TEARDOWN" => {
                if !matches_session(self) {
                    return 454;
                }
                if let Some(s) = self.session.take() {
                    tracing::debug!(session = %s.id, "demo camera: TEARDOWN");
                }
                200
            }
            "GET_PARAMETER" | "SET_PARAMETER" => {
                // Keepalives. A Session header, if any, must be ours; named parameters are
                // unknown, since the camera has none (RFC 2326 §10.8, §10.9).
                if req.header("Session").is_some() && !matches_session(self) {
                    return 454;
                }
                if let Some(s) = &self.session {
                    r.set_header("Session", s.id.clone());
                }
                if req.body.iter().any(|b| !b.is_ascii_whitespace()) {
                    return 451;
                }
                200
            }
            "ANNOUNCE" | "RECORD" | "REDIRECT" => {
                r.set_header("Allow", Public::of(&METHODS).to_string());
                405
            }
            _ => 501,
        }
    }

    fn setup(&mut self, target: &Target, req: &Message, r: &mut Message, ours: bool) -> u16 {
        if matches!(target, Target::Any) {
            return 400;
        }
        match (&self.session, req.header("Session")) {
            (Some(_), Some(_)) if !ours => return 454,
            (None, Some(_)) => return 454,
            // One session per connection: a second, independent SETUP is not supported.
            (Some(_), None) => return 455,
            (Some(s), Some(_)) if s.next_frame.is_some() => return 455,
            _ => {}
        }
        let Some((rtp_channel, rtcp_channel)) = req.header("Transport").and_then(choose_tcp_transport) else {
            return 461;
        };
        let session = match self.session.take() {
            Some(mut s) => {
                s.rtp_channel = rtp_channel;
                s.rtcp_channel = rtcp_channel;
                s
            }
            None => {
                let id = format!("{:016X}", self.rng.next_u64());
                let ssrc = self.rng.next_u64() as u32;
                let seq = self.rng.next_u64() as u16;
                tracing::debug!(session = %id, "demo camera: new session");
                Session {
                    id,
                    rtp_channel,
                    rtcp_channel,
                    packetizer: Packetizer::new(ssrc, seq),
                    next_frame: None,
                    last_sr: None,
                }
            }
        };
        let ssrc = format!("{:08X}", session.packetizer.ssrc());
        r.set_header(
            "Transport",
            TransportSpec::interleaved_tcp(rtp_channel, rtcp_channel).with("ssrc", Some(ssrc)).to_string(),
        );
        r.set_header("Session", SessionHeader { id: &session.id, timeout: Some(SESSION_TIMEOUT) }.to_string());
        self.session = Some(session);
        200
    }

    fn sdp(&self) -> String {
        let (ip_kind, ip) = match self.local.ip() {
            std::net::IpAddr::V4(a) => ("IP4", a.to_string()),
            std::net::IpAddr::V6(a) => ("IP6", a.to_string()),
        };
        let c = if ip_kind == "IP4" { "0.0.0.0" } else { "::" };
        format!(
            "v=0\r\n\
             o=- {id} 1 IN {ip_kind} {ip}\r\n\
             s=rtsp-tunnel-relay demo camera\r\n\
             c=IN {ip_kind} {c}\r\n\
             t=0 0\r\n\
             a=tool:{SERVER}\r\n\
             a=type:broadcast\r\n\
             a=control:*\r\n\
             a=range:npt=now-\r\n\
             m=video 0 RTP/AVP {pt}\r\n\
             a=rtpmap:{pt} H264/{rate}\r\n\
             a=fmtp:{pt} packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={sprop}\r\n\
             a=framerate:{FPS}\r\n\
             a=control:{TRACK_CONTROL}\r\n",
            id = self.sdp_session_id,
            pt = rtp::PAYLOAD_TYPE,
            rate = rtp::CLOCK_RATE,
            pli = self.clip.profile_level_id(),
            sprop = self.clip.sprop_parameter_sets(),
        )
    }
}

/// Where a new viewer starts: the last keyframe at or before the live frame, so it can decode
/// at once (the frames from there to live are sent as a burst).
fn start_frame(clip: &Clip<'_>, live: u64) -> u64 {
    let n = clip.frames.len() as u64;
    let pos = (live % n) as usize;
    live - (pos - clip.keyframe_at_or_before(pos)) as u64
}

fn push_frame(out: &mut Vec<u8>, channel: u8, payload: &[u8]) {
    // The packetiser never exceeds this (payload ≤ 1400); an SR is under 300 bytes.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.push(b'$');
    out.push(channel);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
}

/// Picks the first acceptable alternative from a `Transport` header (RFC 2326 §12.39): unicast
/// RTP/AVP over TCP, for playing. Returns the interleaved channels, `0-1` unless the client named
/// its own.
pub fn choose_tcp_transport(header: &str) -> Option<(u8, u8)> {
    Transport::parse(header).specs.iter().find_map(|spec| {
        if !spec.protocol_is(&["RTP/AVP/TCP"]) || spec.has("multicast") || !spec.is_for_playing() {
            return None;
        }
        // Strict, as a camera may be: every `interleaved=` must be readable, the last one wins.
        let mut channels = (0u8, 1u8);
        for value in spec.values("interleaved") {
            let (a, b) = channel_pair(value)?;
            if a == b {
                return None;
            }
            channels = (a, b);
        }
        Some(channels)
    })
}

/// The parts of a request URI the camera needs.
struct RequestUrl {
    /// `host[:port]`, credentials removed.
    authority: String,
    /// Path without query, trailing slash removed (`/` stays).
    path: String,
}

impl RequestUrl {
    fn parse(uri: &str, local: SocketAddr) -> Option<RequestUrl> {
        if uri == "*" {
            return Some(RequestUrl { authority: local.to_string(), path: "*".into() });
        }
        let url = RtspUrl::parse(uri);
        let rtsp = url.scheme().is_some_and(|s| s.eq_ignore_ascii_case("rtsp") || s.eq_ignore_ascii_case("rtsps"));
        let authority = match url.host_port() {
            Some(host) if rtsp && !host.is_empty() => host.to_owned(),
            None if uri.starts_with('/') => local.to_string(),
            _ => return None,
        };
        let mut path = url.path;
        while path.len() > 1 && path.ends_with('/') {
            path = &path[..path.len() - 1];
        }
        let path = if path.is_empty() { "/" } else { path };
        Some(RequestUrl { authority, path: path.to_owned() })
    }

    /// `Content-Base`: the stream URL as the client addressed it, with a trailing slash so that
    /// `trackID=0` resolves under it.
    fn base(&self) -> String {
        format!("rtsp://{}{STREAM_PATH}/", self.authority)
    }
}

fn set_status(r: &mut Message, code: u16) {
    if let StartLine::Response { status, reason: why, .. } = &mut r.start {
        *status = code;
        *why = reason(code).to_owned();
    }
}

/// Reason phrases of RFC 2326 §7.1.1.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        451 => "Parameter Not Understood",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        461 => "Unsupported Transport",
        501 => "Not Implemented",
        505 => "RTSP Version not supported",
        551 => "Option not supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:8554";
    const URL: &str = "rtsp://127.0.0.1:8554/demo";

    struct Fixture {
        conn: Connection,
        origin: Instant,
        wall: SystemTime,
        cseq: u32,
    }

    impl Fixture {
        fn new() -> Fixture {
            let origin = Instant::now();
            let timeline = Timeline { origin, ts_base: 0xFFFF_0000 };
            let clip = crate::demo_camera::clip().unwrap();
            Fixture {
                conn: Connection::new(clip, timeline, LOCAL.parse().unwrap(), 42, origin),
                origin,
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                cseq: 0,
            }
        }

        fn at(&self, ms: u64) -> Now {
            Now { mono: self.origin + Duration::from_millis(ms), wall: self.wall + Duration::from_millis(ms) }
        }

        fn request_at(&mut self, ms: u64, method: &str, uri: &str, headers: &[(&str, &str)]) -> Message {
            self.cseq += 1;
            let mut m = Message::request(method, uri);
            m.set_header("CSeq", self.cseq.to_string());
            for (n, v) in headers {
                m.set_header(n, *v);
            }
            let reply = self.conn.handle(&m, self.at(ms)).expect("a reply");
            assert!(!reply.close);
            assert_eq!(reply.response.cseq(), Some(self.cseq));
            reply.response
        }

        fn request(&mut self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Message {
            self.request_at(0, method, uri, headers)
        }

        /// SETUP over TCP; returns the session id.
        fn setup(&mut self) -> String {
            let r = self.request(
                "SETUP",
                &format!("{URL}/trackID=0"),
                &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
            );
            assert_eq!(r.status(), Some(200));
            let s = r.header("Session").unwrap();
            s.split(';').next().unwrap().to_owned()
        }

        fn poll(&mut self, ms: u64) -> Vec<(u8, Vec<u8>)> {
            let mut out = Vec::new();
            assert_eq!(self.conn.poll(self.at(ms), &mut out), Poll::Continue);
            frames(&out)
        }
    }

    fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[0], b'$');
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            v.push((b[1], b[4..4 + len].to_vec()));
            b = &b[4 + len..];
        }
        v
    }

    fn seq(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[2], p[3]])
    }

    fn ts(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    }

    fn marker_count(frames: &[(u8, Vec<u8>)]) -> usize {
        frames.iter().filter(|(c, p)| *c == 0 && p[1] & 0x80 != 0).count()
    }

    #[test]
    fn options_and_describe() {
        let mut f = Fixture::new();
        let r = f.request("OPTIONS", "*", &[]);
        assert_eq!(r.status(), Some(200));
        assert_eq!(
            r.header("Public"),
            Some("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER")
        );
        assert!(r.header("Date").is_some() && r.header("Server").is_some());

        let r = f.request("DESCRIBE", "rtsp://admin:pw@cam.example:9000/demo?x=1", &[]);
        assert_eq!(r.status(), Some(200));
        // The base follows the client's own address, credentials dropped.
        assert_eq!(r.header("Content-Base"), Some("rtsp://cam.example:9000/demo/"));
        let sdp = std::str::from_utf8(&r.body).unwrap();
        assert!(sdp.starts_with("v=0\r\n"));
        assert!(sdp.contains("\r\nm=video 0 RTP/AVP 96\r\n"));
        assert!(sdp.contains("packetization-mode=1;profile-level-id=42C01E;sprop-parameter-sets=Z0LAH"));
        assert!(sdp.ends_with("a=control:trackID=0\r\n"));

        let r = f.request("DESCRIBE", URL, &[("Accept", "text/html")]);
        assert_eq!(r.status(), Some(406));
        assert!(r.body.is_empty() && r.header("Content-Type").is_none());
        let r = f.request("DESCRIBE", URL, &[("Accept", "application/rtsl, application/sdp;q=1")]);
        assert_eq!(r.status(), Some(200));
        // A relative URI gets the local address as its base.
        let r = f.request("DESCRIBE", "/demo", &[]);
        assert_eq!(r.header("Content-Base"), Some("rtsp://127.0.0.1:8554/demo/"));
    }

    #[test]
    fn errors() {
        let mut f = Fixture::new();
        for (method, uri, headers, status) in [
            ("DESCRIBE", "rtsp://127.0.0.1:8554/other", vec![], 404),
            ("OPTIONS", "rtsp://127.0.0.1:8554/demox", vec![], 404),
            ("DESCRIBE", "http://127.0.0.1/demo", vec![], 400),
            ("PLAY", URL, vec![], 454),
            ("PLAY", URL, vec![("Session", "nope")], 454),
            ("PAUSE", URL, vec![], 454),
            ("TEARDOWN", URL, vec![], 454),
            ("GET_PARAMETER", URL, vec![("Session", "nope")], 454),
            ("SETUP", &format!("{URL}/trackID=0"), vec![("Session", "nope")], 454),
            ("RECORD", URL, vec![], 405),
            ("FLY", URL, vec![], 501),
            ("OPTIONS", URL, vec![("Require", "play.basic")], 551),
        ] {
            let r = f.request(method, uri, &headers);
            assert_eq!(r.status(), Some(status), "{method} {uri} {headers:?}");
        }
        let mut m = Message::request("RECORD", URL);
        m.set_header("CSeq", "1");
        let r = f.conn.handle(&m, f.at(0)).unwrap().response;
        assert_eq!(
            r.header("Allow"),
            Some("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER")
        );

        // Wrong version, missing CSeq, and responses from the client.
        let mut m = Message::request("OPTIONS", URL);
        m.set_header("CSeq", "7");
        if let StartLine::Request { version, .. } = &mut m.start {
            *version = "RTSP/2.0".into();
        }
        assert_eq!(f.conn.handle(&m, f.at(0)).unwrap().response.status(), Some(505));
        let reply = f.conn.handle(&Message::request("OPTIONS", URL), f.at(0)).unwrap();
        assert_eq!(reply.response.status(), Some(400));
        assert!(reply.close);
        assert!(f.conn.handle(&Message::response(200, "OK"), f.at(0)).is_none());

        // Keepalives with a body name parameters the camera does not have.
        let mut m = Message::request("SET_PARAMETER", URL);
        m.set_header("CSeq", "8");
        m.body = bytes::Bytes::from_static(b"brightness: 3\r\n");
        assert_eq!(f.conn.handle(&m, f.at(0)).unwrap().response.status(), Some(451));
    }

    #[test]
    fn setup_transports() {
        let mut f = Fixture::new();
        let track = format!("{URL}/trackID=0");
        for t in ["RTP/AVP;unicast;client_port=5000-5001", "RTP/AVP/TCP;multicast", ""] {
            let r = f.request("SETUP", &track, &[("Transport", t)]);
            assert_eq!(r.status(), Some(461), "{t}");
        }
        let r = f.request("SETUP", &track, &[]);
        assert_eq!(r.status(), Some(461));
        let r = f.request(
            "SETUP",
            &track,
            &[("Transport", "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=2-3")],
        );
        assert_eq!(r.status(), Some(200));
        let t = r.header("Transport").unwrap();
        assert!(t.starts_with("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc="), "{t}");
        let session = r.header("Session").unwrap().to_owned();
        assert!(session.ends_with(";timeout=60"), "{session}");
        let id = session.split(';').next().unwrap();
        // Re-SETUP within the session may change channels; an independent second one may not.
        let r = f.request("SETUP", &track, &[("Transport", "RTP/AVP/TCP;interleaved=0-1"), ("Session", id)]);
        assert_eq!(r.status(), Some(200));
        assert_eq!(f.conn.rtcp_channel(), Some(1));
        let r = f.request("SETUP", &track, &[("Transport", "RTP/AVP/TCP;interleaved=0-1")]);
        assert_eq!(r.status(), Some(455));
    }

    #[test]
    fn choose_transport() {
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;unicast;interleaved=0-1"), Some((0, 1)));
        assert_eq!(choose_tcp_transport("rtp/avp/tcp;unicast"), Some((0, 1)));
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;interleaved=4"), Some((4, 5)));
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;interleaved=255"), None);
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;interleaved=3-3"), None);
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;interleaved=x-1"), None);
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;mode=record"), None);
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;mode=\"PLAY\""), Some((0, 1)));
        assert_eq!(choose_tcp_transport("RTP/AVP;unicast;client_port=1-2"), None);
        assert_eq!(choose_tcp_transport("RTP/AVP/TCP;mode=record, RTP/AVP/TCP;interleaved=6-7"), Some((6, 7)));
    }

    #[test]
    fn play_starts_at_last_keyframe_and_paces() {
        let mut f = Fixture::new();
        let id = f.setup();
        // 1.5 s after the timeline began: live frame 37, last keyframe 25.
        let r = f.request_at(1500, "PLAY", &format!("{URL}/"), &[("Session", &id)]);
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.header("Session"), Some(id.as_str()));
        let info = r.header("RTP-Info").unwrap().to_owned();
        let first_ts = 0xFFFF_0000u32.wrapping_add(25 * 3600);
        assert!(info.starts_with(&format!("url={URL}/trackID=0;seq=")), "{info}");
        assert!(info.ends_with(&format!(";rtptime={first_ts}")), "{info}");
        assert!(f.conn.is_playing());

        let burst = f.poll(1500);
        // Frames 25..=37 at once, then a sender report.
        assert_eq!(marker_count(&burst), 13);
        let rtp: Vec<&Vec<u8>> = burst.iter().filter(|(c, _)| *c == 0).map(|(_, p)| p).collect();
        let announced: u16 = info.split("seq=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
        assert_eq!(seq(rtp[0]), announced);
        assert_eq!(ts(rtp[0]), first_ts);
        // The burst opens with the keyframe's parameter sets (single NAL unit packets).
        assert_eq!(rtp[0][12] & 0x1f, 7);
        for w in rtp.windows(2) {
            assert_eq!(seq(w[1]), seq(w[0]).wrapping_add(1));
        }
        assert_eq!(ts(rtp.last().unwrap()), 0xFFFF_0000u32.wrapping_add(37 * 3600));
        let (ch, sr) = burst.last().unwrap();
        assert_eq!((*ch, sr[1]), (1, 200));

        // Nothing more until the next frame is due; then exactly one frame.
        assert_eq!(f.conn.next_deadline(), f.origin + Duration::from_millis(1520));
        assert!(f.poll(1519).is_empty());
        let next = f.poll(1520);
        assert_eq!(marker_count(&next), 1);
        assert!(next.iter().all(|(c, _)| *c == 0));
        assert_eq!(seq(&next[0].1), seq(rtp.last().unwrap()).wrapping_add(1));

        // Across the loop point (frame 100 is frame 0 again) timestamps keep growing.
        let later = f.poll(4040);
        let last = later.iter().rfind(|(c, _)| *c == 0).unwrap();
        assert_eq!(ts(&last.1), 0xFFFF_0000u32.wrapping_add(101 * 3600));
        // A sender report every 5 s, not sooner.
        assert!(later.iter().all(|(c, _)| *c == 0));
        assert!(f.poll(6500).iter().any(|(c, _)| *c == 1));

        // A second PLAY reports where the stream is without restarting it.
        let r = f.request_at(6500, "PLAY", URL, &[("Session", &id)]);
        assert!(
            r.header("RTP-Info").unwrap().ends_with(&format!("rtptime={}", 0xFFFF_0000u32.wrapping_add(163 * 3600)))
        );
    }

    #[test]
    fn lagging_viewer_skips_to_live() {
        let mut f = Fixture::new();
        let id = f.setup();
        f.request_at(0, "PLAY", URL, &[("Session", &id)]);
        assert_eq!(marker_count(&f.poll(0)), 1);
        // The viewer did not take anything for 10 s: it resumes at the keyframe before live
        // (frame 250 is a keyframe: 250 % 100 = 50), not with 10 s of stale video.
        let burst = f.poll(10_000);
        assert_eq!(marker_count(&burst), 1);
        let first = burst.iter().find(|(c, _)| *c == 0).unwrap();
        assert_eq!(ts(&first.1), 0xFFFF_0000u32.wrapping_add(250 * 3600));
    }

    #[test]
    fn pause_teardown_and_expiry() {
        let mut f = Fixture::new();
        let id = f.setup();
        f.request_at(0, "PLAY", URL, &[("Session", &id)]);
        assert!(!f.poll(0).is_empty());
        let r = f.request_at(100, "PAUSE", URL, &[("Session", &id)]);
        assert_eq!(r.status(), Some(200));
        assert!(f.poll(2000).is_empty());
        // PLAY again resumes at the current keyframe, sequence numbers continuing.
        f.request_at(2000, "PLAY", URL, &[("Session", &id)]);
        assert_eq!(marker_count(&f.poll(2000)), 1);
        let r = f.request_at(2000, "GET_PARAMETER", URL, &[("Session", &id)]);
        assert_eq!(r.status(), Some(200));
        let r = f.request_at(2000, "TEARDOWN", URL, &[("Session", &id)]);
        assert_eq!(r.status(), Some(200));
        assert!(!f.conn.is_playing());
        assert!(f.poll(3000).is_empty());
        let r = f.request_at(3000, "PLAY", URL, &[("Session", &id)]);
        assert_eq!(r.status(), Some(454));

        // Silence for the idle limit ends the connection; client RTCP counts as activity.
        f.conn.client_frame(f.at(60_000).mono);
        let mut out = Vec::new();
        assert_eq!(f.conn.poll(f.at(100_000), &mut out), Poll::Continue);
        assert_eq!(f.conn.next_deadline(), f.at(60_000).mono + IDLE_LIMIT);
        assert_eq!(f.conn.poll(f.at(135_000), &mut out), Poll::Expired);
    }

    #[test]
    fn request_urls() {
        let local: SocketAddr = LOCAL.parse().unwrap();
        let u = RequestUrl::parse("RTSP://u:p@[::1]:554/demo/trackID=0?a=b#f", local).unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("[::1]:554", "/demo/trackID=0"));
        let u = RequestUrl::parse("rtsp://h//", local).unwrap();
        assert_eq!(u.path, "/");
        let u = RequestUrl::parse("rtsp://h", local).unwrap();
        assert_eq!(u.path, "/");
        assert!(RequestUrl::parse("rtsp:///demo", local).is_none());
        assert!(RequestUrl::parse("demo", local).is_none());
    }
}
