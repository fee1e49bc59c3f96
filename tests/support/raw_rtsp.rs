//! A minimal RTSP viewer over plain TCP for tests that must see every RTP packet a viewer gets:
//! DESCRIBE, SETUP of the first video track on channels of its choosing, PLAY, then `$` frames
//! parsed one by one (sequence numbers, timestamps, SSRC, what the H.264 payload starts with).
//! FFmpeg and GStreamer hide gaps and restarts behind their jitter buffers; this does not.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An RTSP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One interleaved RTP packet as the viewer received it.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    pub channel: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload_type: u8,
    /// The RTP payload (after the fixed header, CSRCs and any extension).
    pub payload: Vec<u8>,
    pub at: Instant,
}

impl RtpPacket {
    /// Whether this H.264 packet starts an access unit a decoder can start from: parameter sets
    /// (SPS 7, PPS 8), an IDR slice (5), as a single NAL unit, inside a STAP-A (24), or the first
    /// fragment of an FU-A (28).
    pub fn starts_h264_keyframe(&self) -> bool {
        let p = &self.payload;
        let Some(&first) = p.first() else { return false };
        let key = |t: u8| matches!(t, 5 | 7 | 8);
        match first & 0x1f {
            24 => {
                let mut rest = &p[1..];
                while rest.len() >= 3 {
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if n == 0 || rest.len() < 2 + n {
                        return false;
                    }
                    if key(rest[2] & 0x1f) {
                        return true;
                    }
                    rest = &rest[2 + n..];
                }
                false
            }
            28 => p.len() >= 2 && p[1] & 0x80 != 0 && key(p[1] & 0x1f),
            t => key(t),
        }
    }
}

impl RtpPacket {
    /// The H.264 NAL unit types this packet starts: its own for a single NAL unit, those inside
    /// a STAP-A, the fragmented unit's for the first FU-A fragment, none for a later fragment.
    pub fn h264_nal_types(&self) -> Vec<u8> {
        let p = &self.payload;
        let Some(&first) = p.first() else { return Vec::new() };
        match first & 0x1f {
            24 => {
                let (mut out, mut rest) = (Vec::new(), &p[1..]);
                while rest.len() >= 3 {
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if n == 0 || rest.len() < 2 + n {
                        break;
                    }
                    out.push(rest[2] & 0x1f);
                    rest = &rest[2 + n..];
                }
                out
            }
            28 if p.len() >= 2 && p[1] & 0x80 != 0 => vec![p[1] & 0x1f],
            28 => Vec::new(),
            t => vec![t],
        }
    }
}

/// What came off the connection next.
#[derive(Debug)]
pub enum Incoming {
    Rtp(RtpPacket),
    /// A `$` frame on an odd channel, or too short to be RTP.
    Other(u8, Vec<u8>),
    Reply(Reply),
    /// The relay closed the connection.
    Closed,
    /// Nothing within the wait.
    Nothing,
}

/// A viewer speaking plain RTSP over TCP to the relay.
pub struct RawViewer {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    pub url: String,
    session: Option<String>,
    /// The video track's control URL (from DESCRIBE).
    pub video_url: Option<String>,
    /// Frames that arrived while waiting for an answer, served first by [`RawViewer::next`].
    early: std::collections::VecDeque<Incoming>,
}

impl RawViewer {
    pub fn connect(relay: SocketAddr, path: &str) -> RawViewer {
        RawViewer::connect_with_rcvbuf(relay, path, None)
    }

    /// Like [`RawViewer::connect`] with the socket's receive buffer set before connecting (so
    /// the window the relay sees is small from the start): a viewer that can be made slow.
    pub fn connect_with_rcvbuf(relay: SocketAddr, path: &str, rcvbuf: Option<usize>) -> RawViewer {
        RawViewer::connect_tuned(relay, path, rcvbuf, None)
    }

    /// A viewer on a slow link: a 4 KiB receive window and a 536-byte MSS. The small MSS keeps
    /// the relay's kernel send buffer to this viewer small too (Linux sizes it from the peer's
    /// MSS; on loopback's 64 KiB MSS it would absorb megabytes), so a viewer that stops reading
    /// backs up into the relay's own queue within a second.
    pub fn connect_slow(relay: SocketAddr, path: &str) -> RawViewer {
        RawViewer::connect_tuned(relay, path, Some(4096), Some(536))
    }

    fn connect_tuned(relay: SocketAddr, path: &str, rcvbuf: Option<usize>, mss: Option<u32>) -> RawViewer {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(bytes) = rcvbuf {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        if let Some(mss) = mss {
            socket.set_mss(mss).unwrap();
        }
        socket.connect_timeout(&relay.into(), Duration::from_secs(5)).expect("connect to the relay");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        RawViewer {
            stream,
            buf: Vec::new(),
            cseq: 0,
            url: format!("rtsp://{relay}{path}"),
            session: None,
            video_url: None,
            early: Default::default(),
        }
    }

    /// Sends a request and waits (up to `timeout`) for its answer; frames that come first are
    /// kept for [`RawViewer::next`].
    pub fn request(&mut self, method: &str, url: &str, extra: &str, timeout: Duration) -> Reply {
        self.cseq += 1;
        let session = self.session.as_ref().map(|s| format!("Session: {s}\r\n")).unwrap_or_default();
        let text = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: raw-rtsp-test\r\n{session}{extra}\r\n",
            self.cseq
        );
        self.stream.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{method}: {e}"));
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to {method} within {timeout:?}");
            match self.read_one(left) {
                Incoming::Reply(r) => {
                    if let Some(s) = r.header("Session") {
                        self.session = Some(s.split(';').next().unwrap().trim().to_owned());
                    }
                    return r;
                }
                Incoming::Closed => panic!("connection closed waiting for the answer to {method}"),
                Incoming::Nothing => {}
                other => self.early.push_back(other),
            }
        }
    }

    /// DESCRIBE, then SETUP of the first video track on `channels`, then PLAY. Returns the PLAY
    /// answer; panics on any non-200.
    pub fn play(&mut self, channels: (u8, u8)) -> Reply {
        let t = Duration::from_secs(15);
        let url = self.url.clone();
        let d = self.request("DESCRIBE", &url, "Accept: application/sdp\r\n", t);
        assert_eq!(d.status, 200, "DESCRIBE: {d:?}");
        let base = d.header("Content-Base").unwrap_or(&url).to_owned();
        let control = video_control(&d.body).expect("a video track in the SDP");
        let video_url = if control.starts_with("rtsp://") {
            control
        } else if control == "*" {
            base.clone()
        } else {
            format!("{}/{}", base.trim_end_matches('/'), control)
        };
        let s = self.request(
            "SETUP",
            &video_url,
            &format!("Transport: RTP/AVP/TCP;unicast;interleaved={}-{}\r\n", channels.0, channels.1),
            t,
        );
        assert_eq!(s.status, 200, "SETUP: {s:?}");
        self.video_url = Some(video_url);
        let p = self.request("PLAY", &base, "Range: npt=0.000-\r\n", t);
        assert_eq!(p.status, 200, "PLAY: {p:?}");
        p
    }

    pub fn teardown(&mut self) -> Reply {
        let url = self.url.clone();
        self.request("TEARDOWN", &url, "", Duration::from_secs(10))
    }

    /// The next thing from the relay, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Incoming {
        if let Some(i) = self.early.pop_front() {
            return i;
        }
        self.read_one(timeout)
    }

    /// The next RTP packet on `channel`, skipping everything else; `None` at the deadline or
    /// when the connection closes.
    pub fn next_rtp(&mut self, channel: u8, timeout: Duration) -> Option<RtpPacket> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.next(left) {
                Incoming::Rtp(p) if p.channel == channel => return Some(p),
                Incoming::Closed => return None,
                _ => {}
            }
        }
    }

    /// Reads until the relay closes the connection (true) or `timeout` passes (false).
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Incoming::Closed = self.next(left) {
                return true;
            }
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn read_one(&mut self, timeout: Duration) -> Incoming {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.parse() {
                return i;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Incoming::Nothing;
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Incoming::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => return Incoming::Closed,
            }
        }
    }

    /// One whole frame or message off the front of the buffer.
    fn parse(&mut self) -> Option<Incoming> {
        if self.buf.first() == Some(&b'$') {
            if self.buf.len() < 4 {
                return None;
            }
            let channel = self.buf[1];
            let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
            if self.buf.len() < 4 + len {
                return None;
            }
            let data: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
            return Some(match rtp(channel, &data) {
                Some(p) if channel % 2 == 0 => Incoming::Rtp(p),
                _ => Incoming::Other(channel, data),
            });
        }
        if self.buf.is_empty() {
            return None;
        }
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(status_line.starts_with("RTSP/1.0 "), "not an RTSP answer: {status_line:?}");
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if self.buf.len() < head_end + 4 + len {
            return None;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end + 4..head_end + 4 + len]).into_owned();
        self.buf.drain(..head_end + 4 + len);
        Some(Incoming::Reply(Reply { status, headers, body }))
    }
}

fn rtp(channel: u8, d: &[u8]) -> Option<RtpPacket> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(d[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    if d[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*d.get(off + 2)?, *d.get(off + 3)?]));
        off += 4 + 4 * words;
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*d.last()?))?;
    }
    Some(RtpPacket {
        channel,
        seq: u16::from_be_bytes([d[2], d[3]]),
        timestamp: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        marker: d[1] & 0x80 != 0,
        payload_type: d[1] & 0x7f,
        payload: d.get(off..end)?.to_vec(),
        at: Instant::now(),
    })
}

/// The `a=control:` of the first `m=video` section.
pub fn video_control(sdp: &str) -> Option<String> {
    let mut in_video = false;
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
        } else if in_video {
            if let Some(c) = line.strip_prefix("a=control:") {
                return Some(c.to_owned());
            }
        }
    }
    None
}

/// `seq=` of the `RTP-Info` entry whose URL ends like `track_url` (or the only entry).
pub fn rtp_info_seq(info: &str, track_url: &str) -> Option<u16> {
    let entries: Vec<&str> = info.split(',').collect();
    let tail = track_url.rsplit('/').next().unwrap_or(track_url);
    let entry = if entries.len() == 1 {
        entries[0]
    } else {
        entries
            .iter()
            .copied()
            .find(|e| e.split(';').any(|p| p.trim().strip_prefix("url=").is_some_and(|u| u.ends_with(tail))))?
    };
    entry.split(';').find_map(|p| p.trim().strip_prefix("seq=")?.parse().ok())
}

/// Sequence accounting for one RTP stream: packets seen, packets missing between them, and
/// steps backwards (a sequence number at or before the previous one).
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    pub packets: u64,
    pub missing: u64,
    pub backwards: u64,
    pub last: Option<u16>,
    pub ssrcs: Vec<u32>,
}

impl SeqTracker {
    pub fn add(&mut self, p: &RtpPacket) {
        if let Some(last) = self.last {
            let step = p.seq.wrapping_sub(last);
            if step == 0 || step >= 0x8000 {
                self.backwards += 1;
            } else {
                self.missing += u64::from(step - 1);
            }
        }
        if !self.ssrcs.contains(&p.ssrc) {
            self.ssrcs.push(p.ssrc);
        }
        self.last = Some(p.seq);
        self.packets += 1;
    }
}

/// What a [`Watch`]'s reader thread keeps of the packets on its channel; each test keeps what
/// its assertions need (first access unit, pauses, arrivals …) beside the sequence accounting.
pub trait Observe: Default + Clone + Send + 'static {
    fn add(&mut self, p: &RtpPacket);
    fn seq(&self) -> &SeqTracker;
    /// The relay closed the viewer's connection.
    fn set_closed(&mut self);
}

/// A raw viewer read on its own thread until stopped (or dropped), what it got kept in `S`.
pub struct Watch<S: Observe> {
    /// The viewer's own address (how the control API names its connection).
    pub local: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<S>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<RawViewer>>,
}

impl<S: Observe> Watch<S> {
    /// Reads `viewer` (already playing) on its own thread, keeping the RTP packets on `channel`.
    pub fn start(mut viewer: RawViewer, channel: u8) -> Watch<S> {
        use std::sync::atomic::Ordering;
        let local = viewer.stream().local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(S::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match viewer.next(Duration::from_millis(100)) {
                    Incoming::Rtp(p) if p.channel == channel => s.lock().unwrap().add(&p),
                    Incoming::Closed => {
                        s.lock().unwrap().set_closed();
                        break;
                    }
                    _ => {}
                }
            }
            viewer
        });
        Watch { local, seen, stop, handle: Some(handle) }
    }

    /// What it got so far.
    pub fn seen(&self) -> S {
        self.seen.lock().unwrap().clone()
    }

    pub fn packets(&self) -> u64 {
        self.seen.lock().unwrap().seq().packets
    }

    /// Waits until it has `n` more packets than `after`; false at the deadline.
    pub fn wait_packets(&self, after: u64, n: u64, timeout: Duration) -> bool {
        super::eventually(timeout, || self.packets() >= after + n)
    }

    /// Stops reading and hands the viewer back.
    pub fn finish(mut self) -> RawViewer {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl<S: Observe> Drop for Watch<S> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
