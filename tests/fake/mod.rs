//! Scripted peers for in-process relay tests: a fake RTSP camera and a raw tunnel viewer.
//!
//! Both speak the wire protocol byte by byte (no shortcuts through the relay's internals) so
//! the tests see what a real peer would see.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use rtsp_tunnel_relay::config::{Acl, Limits, ListenerSettings, Runtime, Settings};
use rtsp_tunnel_relay::metrics::ShardMetrics;
use rtsp_tunnel_relay::proto::interleaved::{Demux, Event};
use rtsp_tunnel_relay::proto::rtsp::{Message, MessageLimits};
use rtsp_tunnel_relay::shard::{Shards, StartOptions};

// The polling helper is support's; a test crate including `fake` includes `support` too.
#[allow(unused_imports)]
pub use crate::support::eventually;

/// What a fake camera observed.
#[derive(Default)]
pub struct CameraLog {
    pub requests: Vec<Message>,
    /// Interleaved frames received from the relay (viewer RTCP), payloads.
    pub frames: Vec<Vec<u8>>,
    pub connections: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CameraMode {
    /// Answers the dialogue and streams frames after PLAY.
    Normal,
    /// Streams as fast as the socket takes it after PLAY (backpressure tests).
    Flood,
    /// Requires Digest auth (user "admin", password "secret").
    DigestAuth,
    /// Plays, sends a few frames, then resets the connection.
    ResetAfterPlay,
    /// Answers every request with bytes that are not RTSP.
    Garbage,
    /// Accepts the connection and never answers.
    Silent,
    /// Accepts the connection and never reads from it.
    Deaf,
    /// 200 ms after PLAY, sends [`TINY_FRAMES`] one-byte frames (payload `A`), each followed by
    /// a line feed: every frame is a range of its own for the relay, a receive buffer's worth
    /// hundreds of thousands of them. Then nothing more.
    TinyFrames,
    /// 200 ms after PLAY, a normal frame every 10 ms with, in between, zero-length `$` frames:
    /// one alone, one whose header comes in two writes, runs of them on the video's RTP and
    /// RTCP channels and on a channel nothing was set up on ([`EMPTY_FRAMES`] in all).
    EmptyFrames,
    /// 200 ms after PLAY, one H.264 keyframe packet then [`TINY_PACKETS`] 13-byte RTP packets
    /// (a one-byte picture each), as fast as the relay takes them. Then nothing more.
    KeyframeThenTinyPackets,
}

/// Packets after the keyframe of a [`CameraMode::KeyframeThenTinyPackets`] camera.
pub const TINY_PACKETS: usize = 300_000;

/// The whole stream of a [`CameraMode::KeyframeThenTinyPackets`] camera.
pub fn keyframe_then_tiny_packets() -> Vec<u8> {
    let rtp = |seq: u32, ts: u32, payload: &[u8]| {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&(seq as u16).to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x42, 0x42]);
        p.extend_from_slice(payload);
        frame(0, &p)
    };
    let mut out = rtp(0, 0, &[0x65, 0x88, 0x84, 0x00, 0x33]);
    for i in 1..=TINY_PACKETS as u32 {
        out.extend(rtp(i, i * 3000, &[0x41]));
    }
    out
}

/// Zero-length frames a [`CameraMode::EmptyFrames`] camera sends.
pub const EMPTY_FRAMES: usize = 1 + 1 + 1000 + 100 + 100;

/// What a [`CameraMode::TinyFrames`] camera sends: `$`, channel 0, length 1, `A`, `\n`.
pub const TINY_FRAME: &[u8] = b"$\x00\x00\x01A\n";
/// Frames a [`CameraMode::TinyFrames`] camera sends (16 MiB of them).
pub const TINY_FRAMES: usize = 16 * 1024 * 1024 / TINY_FRAME.len();

pub struct FakeCamera {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<CameraLog>>,
    pub bytes_written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeCamera {
    pub fn start(mode: CameraMode) -> FakeCamera {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(CameraLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let bytes_written = Arc::new(AtomicU64::new(0));
        let (l2, s2, b2) = (log.clone(), stop.clone(), bytes_written.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        l2.lock().unwrap().connections += 1;
                        let (l3, s3, b3) = (l2.clone(), s2.clone(), b2.clone());
                        conns.push(std::thread::spawn(move || serve_camera(sock, mode, addr, l3, s3, b3)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        FakeCamera { addr, log, bytes_written, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}{path}", self.addr)
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn serve_camera(
    mut sock: TcpStream,
    mode: CameraMode,
    addr: SocketAddr,
    log: Arc<Mutex<CameraLog>>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) {
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut demux = Demux::new(MessageLimits::default());
    let mut frame_bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut playing = false;
    let mut played_at = Instant::now();
    let mut seq: u32 = 0;
    let mut last_frame = Instant::now();
    let flood = vec![0xabu8; 1400];
    if matches!(mode, CameraMode::Deaf) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut events = Vec::new();
                if demux.feed(&buf[..n], &mut events).is_err() {
                    return;
                }
                for ev in events {
                    match ev {
                        Event::Frames { range, .. } => {
                            // Frames may arrive in pieces: reassemble before logging payloads.
                            frame_bytes.extend_from_slice(&buf[range]);
                            while frame_bytes.len() >= 4 {
                                let len = u16::from_be_bytes([frame_bytes[2], frame_bytes[3]]) as usize;
                                if frame_bytes.len() < 4 + len {
                                    break;
                                }
                                let f: Vec<u8> = frame_bytes.drain(..4 + len).skip(4).collect();
                                log.lock().unwrap().frames.push(f);
                            }
                        }
                        Event::Message(req) => {
                            match mode {
                                CameraMode::Silent => {
                                    log.lock().unwrap().requests.push(req);
                                    continue;
                                }
                                CameraMode::Garbage => {
                                    let _ = sock.write_all(b"\x00\x01\x02 this is not RTSP\r\n\r\n");
                                    continue;
                                }
                                _ => {}
                            }
                            let reply = answer(&req, mode, addr);
                            if req.method() == Some("PLAY") && reply.starts_with(b"RTSP/1.0 200") {
                                // live555's quirk: an RTCP frame before the PLAY answer.
                                let _ = sock.write_all(&frame(1, b"rtcp-sr"));
                                playing = true;
                                played_at = Instant::now();
                            }
                            log.lock().unwrap().requests.push(req);
                            if sock.write_all(&reply).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return,
        }
        if playing {
            match mode {
                CameraMode::Flood => {
                    sock.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
                    for _ in 0..64 {
                        match sock.write(&frame(0, &flood)) {
                            Ok(n) => {
                                written.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                }
                // After a pause, so the viewer reads the PLAY answer alone.
                CameraMode::TinyFrames
                    if played_at.elapsed() >= Duration::from_millis(200)
                        && (written.load(Ordering::Relaxed) as usize) < TINY_FRAMES * TINY_FRAME.len() =>
                {
                    // All at once, as fast as the relay takes it: the relay falls behind and
                    // each receive fills a whole buffer.
                    let mut left = TINY_FRAMES;
                    while left > 0 {
                        let n = left.min((1 << 20) / TINY_FRAME.len());
                        if sock.write_all(&TINY_FRAME.repeat(n)).is_err() {
                            return;
                        }
                        written.fetch_add((n * TINY_FRAME.len()) as u64, Ordering::Relaxed);
                        left -= n;
                    }
                }
                CameraMode::TinyFrames => {}
                CameraMode::KeyframeThenTinyPackets
                    if played_at.elapsed() >= Duration::from_millis(200) && written.load(Ordering::Relaxed) == 0 =>
                {
                    let stream = keyframe_then_tiny_packets();
                    if sock.write_all(&stream).is_err() {
                        return;
                    }
                    written.fetch_add(stream.len() as u64, Ordering::Relaxed);
                }
                CameraMode::KeyframeThenTinyPackets => {}
                CameraMode::EmptyFrames if played_at.elapsed() >= Duration::from_millis(200) && seq == 5 => {
                    seq += 1;
                    sock.set_nodelay(true).unwrap();
                    let steps: [&[u8]; 6] = [
                        b"$\0\0\0",
                        b"$\0",
                        b"\0\0",
                        &b"$\0\0\0".repeat(1000),
                        &b"$\x01\0\0".repeat(100),
                        &b"$\x05\0\0".repeat(100),
                    ];
                    for step in steps {
                        if sock.write_all(step).is_err() {
                            return;
                        }
                        // Separate receives for the relay.
                        std::thread::sleep(Duration::from_millis(30));
                    }
                }
                CameraMode::EmptyFrames if played_at.elapsed() < Duration::from_millis(200) => {}
                CameraMode::ResetAfterPlay if seq >= 20 => {
                    // SO_LINGER 0: close with RST, as a crashing camera would.
                    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                    return;
                }
                _ if last_frame.elapsed() >= Duration::from_millis(10) => {
                    last_frame = Instant::now();
                    seq += 1;
                    let payload = format!("frame-{seq:08}");
                    if sock.write_all(&frame(0, payload.as_bytes())).is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
    let _ = sock.shutdown(Shutdown::Both);
}

fn answer(req: &Message, mode: CameraMode, addr: SocketAddr) -> Vec<u8> {
    let cseq = req.cseq().unwrap_or(0);
    if mode == CameraMode::DigestAuth && req.header("Authorization").is_none_or(|a| !a.starts_with("Digest ")) {
        return format!("RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"fakecam\", nonce=\"n0nce\"\r\n\r\n").into_bytes();
    }
    let base = format!("rtsp://{addr}/stream");
    match req.method().unwrap_or("") {
        "OPTIONS" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n\r\n").into_bytes(),
        "DESCRIBE" => {
            let sdp = format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake\r\nt=0 0\r\na=control:{base}/\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:{base}/trackID=0\r\n");
            format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()).into_bytes()
        }
        "SETUP" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n").into_bytes(),
        "PLAY" => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\nRTP-Info: url={base}/trackID=0;seq=1;rtptime=0\r\n\r\n").into_bytes(),
        _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 4242\r\n\r\n").into_bytes(),
    }
}

/// An in-process relay on an ephemeral port.
pub struct Relay {
    pub addr: SocketAddr,
    /// The HTTPS listener, when started with TLS.
    pub tls_addr: Option<SocketAddr>,
    pub metrics: Vec<Arc<ShardMetrics>>,
    shards: Option<Shards>,
}

impl Relay {
    pub fn start(routes: &[(&str, String)], shards: usize, limits: Limits) -> Relay {
        Relay::start_with_tls(routes, shards, limits, None)
    }

    /// Like [`Relay::start`], plus an HTTPS listener when `tls` is given.
    pub fn start_with_tls(
        routes: &[(&str, String)],
        shards: usize,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Relay {
        let mut text = String::from("[listen]\ntunnel=[\"127.0.0.1:0\"]\n");
        // Passthrough: these relays put each viewer's own dialogue through to the scripted
        // camera, whose every request and failure the tests look at.
        for (path, upstream) in routes {
            text.push_str(&format!("[[route]]\npath=\"{path}\"\nupstream=\"{upstream}\"\nmode=\"passthrough\"\n"));
        }
        Relay::from_config(&text, shards, limits, tls)
    }

    /// A relay from a whole configuration file (its listen addresses are replaced by
    /// ephemeral ones; `limits` replaces its `[limits]`).
    pub fn from_config(text: &str, shards: usize, limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Relay {
        Relay::with_runtime(text, shards, limits, tls, Runtime { recv_buffers: 1024, ..Runtime::default() })
    }

    /// [`Relay::from_config`] with its `[runtime]` (receive buffers) given.
    pub fn with_runtime(
        text: &str,
        shards: usize,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        runtime: Runtime,
    ) -> Relay {
        let mut settings = Settings::from_toml(text).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        // The plain listeners keep the file's address lists; `tls` is served without one.
        let plain_acl = settings.listeners.iter().find(|l| l.tls.is_none()).map(|l| l.acl.clone()).unwrap_or_default();
        settings.listeners = std::iter::once(ListenerSettings { addr: any, acl: plain_acl, tls: None })
            .chain(tls.map(|config| ListenerSettings { addr: any, acl: Acl::default(), tls: Some(config) }))
            .collect();
        settings.public_address = None;
        settings.set_limits(limits);
        settings.runtime = Runtime { shards, ..runtime };
        let metrics: Vec<_> = (0..shards).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let running = Shards::start(StartOptions { settings: Arc::new(settings), metrics: metrics.clone() }).unwrap();
        Relay {
            addr: running.local_addrs()[0],
            tls_addr: running.local_addrs().get(1).copied(),
            metrics,
            shards: Some(running),
        }
    }

    pub fn shards(&self) -> &Shards {
        self.shards.as_ref().unwrap()
    }

    pub fn stop(mut self) {
        if let Some(s) = self.shards.take() {
            s.shutdown(Duration::from_millis(200));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.shards.take() {
            s.shutdown(Duration::from_millis(200));
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to `dir`; returns the
/// server configuration and the certificate path.
pub fn test_tls(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let names = vec!["localhost".into(), "127.0.0.1".into()];
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
    (rtsp_tunnel_relay::tls::load_server_config(&c, &k).unwrap(), c)
}

/// A TLS client connection to `addr` trusting only the test certificate at `cert`.
pub fn tls_connect(
    addr: SocketAddr,
    cert: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(cert).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_from(None, addr)
}

/// Connects from `source` (a 127.0.0.x address, say) when given: a viewer of its own address.
pub fn connect_from(source: Option<std::net::IpAddr>, addr: SocketAddr) -> TcpStream {
    let s = match source {
        None => TcpStream::connect(addr).unwrap(),
        Some(ip) => {
            let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(ip, 0).into()).unwrap();
            sock.connect(&addr.into()).unwrap();
            sock.into()
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads an HTTP response head (up to the blank line) and returns it.
pub fn read_http_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads until EOF or timeout; returns what came.
pub fn read_to_close(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (all, true),
            Err(_) => return (all, false),
        }
    }
}

/// A raw tunnel viewer: GET for data, POST for base64 commands.
pub struct TunnelViewer {
    pub get: TcpStream,
    pub post: Option<TcpStream>,
    pub reply_head: String,
    cookie: String,
    relay: SocketAddr,
    demux: Demux,
    pending: std::collections::VecDeque<Event>,
    last_chunk: Vec<u8>,
    pub frames: u64,
    pub frame_bytes: Vec<u8>,
    cseq: u32,
    pub path: String,
    /// The address both connections come from (`None`: the system's choice).
    source: Option<std::net::IpAddr>,
    /// The RTSP session `play` set up.
    pub session: String,
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl TunnelViewer {
    /// Sends the GET and reads the relay's HTTP reply head.
    pub fn open_get(relay: SocketAddr, path: &str, cookie: &str) -> TunnelViewer {
        TunnelViewer::open_get_from(None, relay, path, cookie)
    }

    /// [`TunnelViewer::open_get`] from `source`; the POST comes from it too.
    pub fn open_get_from(
        source: Option<std::net::IpAddr>,
        relay: SocketAddr,
        path: &str,
        cookie: &str,
    ) -> TunnelViewer {
        let mut get = connect_from(source, relay);
        // A relay refusing at accept (`[limits] max_connections`) may have answered and closed
        // before the GET is written: the reply head read next says so.
        let _ = write!(
            get,
            "GET {path} HTTP/1.1\r\nHost: {relay}\r\nX-Sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n"
        );
        let reply_head = read_http_head(&mut get);
        TunnelViewer {
            get,
            post: None,
            reply_head,
            cookie: cookie.to_owned(),
            relay,
            demux: Demux::new(MessageLimits::default()),
            pending: Default::default(),
            last_chunk: Vec::new(),
            frames: 0,
            frame_bytes: Vec::new(),
            cseq: 0,
            path: path.to_owned(),
            source,
            session: String::new(),
        }
    }

    pub fn open_post(&mut self) {
        self.post = Some(open_post_from(self.source, self.relay, &self.path, &self.cookie, false));
    }

    /// Sends one RTSP request (base64 on the POST) and waits for its response.
    pub fn request(&mut self, method: &str, suffix: &str, extra: &str) -> Message {
        self.cseq += 1;
        let req = format!(
            "{method} rtsp://{}{}{suffix} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: fake\r\n{extra}\r\n",
            self.relay, self.path, self.cseq
        );
        self.send_command(req.as_bytes());
        let want = self.cseq;
        loop {
            let m = self.next_message().unwrap_or_else(|| panic!("no response to {method}"));
            if m.cseq() == Some(want) {
                return m;
            }
        }
    }

    pub fn send_command(&mut self, raw: &[u8]) {
        let post = self.post.as_mut().expect("POST open");
        post.write_all(b64(raw).as_bytes()).unwrap();
    }

    /// Reads from the GET until a whole RTSP message arrives (counting frames on the way).
    pub fn next_message(&mut self) -> Option<Message> {
        loop {
            while let Some(ev) = self.pending.pop_front() {
                match ev {
                    Event::Message(m) => return Some(m),
                    Event::Frames { range, frames_completed } => {
                        self.frames += frames_completed as u64;
                        self.frame_bytes.extend_from_slice(&self.last_chunk[range]);
                    }
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = self.get.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            buf.truncate(n);
            let mut events = Vec::new();
            self.demux.feed(&buf, &mut events).ok()?;
            self.last_chunk = buf;
            self.pending.extend(events);
        }
    }

    /// Reads media until `frames` frames arrived or the deadline passes.
    pub fn read_frames(&mut self, frames: u64, timeout: Duration) -> u64 {
        let end = Instant::now() + timeout;
        self.get.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        while self.frames < frames && Instant::now() < end {
            let mut buf = vec![0u8; 64 * 1024];
            match self.get.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    let mut events = Vec::new();
                    if self.demux.feed(&buf, &mut events).is_err() {
                        break;
                    }
                    for ev in events {
                        if let Event::Frames { range, frames_completed } = ev {
                            self.frames += frames_completed as u64;
                            self.frame_bytes.extend_from_slice(&buf[range]);
                        }
                    }
                }
                Err(_) => {}
            }
        }
        self.frames
    }

    /// OPTIONS, DESCRIBE, SETUP (interleaved), PLAY; returns the four responses.
    pub fn play(&mut self) -> Vec<Message> {
        let options = self.request("OPTIONS", "", "");
        let describe = self.request("DESCRIBE", "", "Accept: application/sdp\r\n");
        let setup = self.request("SETUP", "/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n");
        // The session the SETUP answer names (the camera's through a passthrough route, the
        // relay's own on a shared one).
        self.session = setup.header("Session").and_then(|s| s.split(';').next()).unwrap_or("4242").trim().to_owned();
        let play = self.request("PLAY", "/", &format!("Session: {}\r\nRange: npt=0.000-\r\n", self.session));
        vec![options, describe, setup, play]
    }
}

pub fn open_post(relay: SocketAddr, path: &str, cookie: &str, expect_continue: bool) -> TcpStream {
    open_post_from(None, relay, path, cookie, expect_continue)
}

pub fn open_post_from(
    source: Option<std::net::IpAddr>,
    relay: SocketAddr,
    path: &str,
    cookie: &str,
    expect_continue: bool,
) -> TcpStream {
    let mut post = connect_from(source, relay);
    let expect = if expect_continue { "Expect: 100-continue\r\n" } else { "" };
    // Refused at accept, the relay may have closed first: the POST's reader sees its answer.
    let _ = write!(
        post,
        "POST {path} HTTP/1.0\r\nHost: {relay}\r\nx-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n{expect}Pragma: no-cache\r\n\r\n"
    );
    post
}
