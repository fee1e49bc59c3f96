//! One simulated viewer: a tunnel client (GET + POST, base64 commands) or a plain RTSP/TCP
//! client, through the whole dialogue, then reading media and checking it (see `check`) until
//! told to stop or the connection fails. Every session that reaches PLAY is reported, whether it
//! played to the end or not, with what it received.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::check::{CheckParams, Checker, Tally};
use crate::payload;
use crate::report::{Latencies, SessionRecord, Shared};
use crate::wire::{self, Msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tunnel,
    Rtsp,
}

/// How much of a session's media is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCheck {
    /// Every frame, to the session's end (loss, stalls, latency, slices).
    Full,
    /// Everything up to and including the first RTP packet (its header, SSRC, stream, due time);
    /// after it the connection is only drained, every [`DRAIN_EVERY`], with bytes counted and a
    /// close or error still failing the session. A setup-rate run needs a session's first packet
    /// and its play time, not its per-packet figures, and the per-packet wake-ups, parsing and
    /// slice hashing (the GOP replay's keyframe) were a large share of the generator's cost.
    FirstPacket,
}

/// How often a [`MediaCheck::FirstPacket`] session reads what arrived since the last time: a few
/// reads instead of one per packet, well inside a socket's receive buffer at these bitrates.
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// One read's worth of a session's buffer (its capacity; never zeroed).
const READ_CAPACITY: usize = 32 * 1024;

/// Read buffers of ended sessions, for new ones: a setup-rate run starts thousands of sessions a
/// second, and allocating and freeing a buffer each (a large chunk: the allocator consolidates
/// its free lists for it) was a tenth of the generator's time.
static SPARE_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// At most this many kept (the most sessions a process has open at once is the usual need).
const MAX_SPARE_BUFFERS: usize = 4096;

fn take_buffer() -> Vec<u8> {
    let spare = SPARE_BUFFERS.lock().ok().and_then(|mut b| b.pop());
    spare.unwrap_or_else(|| Vec::with_capacity(READ_CAPACITY))
}

fn give_back_buffer(mut buf: Vec<u8>) {
    if buf.capacity() >= READ_CAPACITY {
        buf.clear();
        if let Ok(mut spare) = SPARE_BUFFERS.lock()
            && spare.len() < MAX_SPARE_BUFFERS
        {
            spare.push(buf);
        }
    }
}

/// Where a setup stands, so a timeout says which step it cut (`timeout_describe` ...).
const STAGES: [&str; 6] = ["connect", "get", "options", "describe", "setup", "play"];

pub struct ViewerSpec {
    pub index: usize,
    pub target: SocketAddr,
    pub source: Option<IpAddr>,
    pub path: String,
    /// The stream id every marked packet must carry (the path's number).
    pub expect_stream: Option<u32>,
    pub mode: Mode,
    /// When this session was due to start (CLOCK_MONOTONIC ns): setup latency counts from here.
    pub scheduled_ns: u64,
    pub stop_at: Instant,
    pub stop_ns: u64,
    /// `--session-time`: the session ends this long after its PLAY was answered (or at the
    /// common stop time, whichever comes first), so a setup-rate run keeps few sessions open.
    pub session_time: Option<Duration>,
    /// HTTPS tunnel (TLS on both GET and POST) when set.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub check: CheckParams,
    pub media_check: MediaCheck,
    /// An `Authorization` value sent with every request (`--token`: Basic with the token as
    /// the password, for `[auth] method = "http"` or `"jwt"`).
    pub authorization: Option<Arc<str>>,
}

/// How one viewer ended.
pub enum Outcome {
    /// Failed before PLAY was answered.
    NotPlayed { start_ns: u64, reason: String },
    /// Reached PLAY; `record.survived` says whether it played to the end.
    Played { start_ns: u64, play_ns: u64, record: Box<SessionRecord>, latency_us: Latencies },
}

type Rd = Box<dyn AsyncRead + Unpin + Send>;
type Wr = Box<dyn AsyncWrite + Unpin + Send>;

/// A client configuration that accepts any server certificate: load tests talk to a relay
/// with a throwaway self-signed certificate, and measure, not authenticate.
pub fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TCP write half that does not shut its connection down when dropped (tokio's does: a
/// `shutdown` syscall sending a FIN of its own, just before the `close` that follows anyway). The
/// socket is closed, with its FIN, when its read half goes too.
struct QuietWrite(Option<tokio::net::tcp::OwnedWriteHalf>);

impl QuietWrite {
    fn half(&mut self) -> std::io::Result<Pin<&mut tokio::net::tcp::OwnedWriteHalf>> {
        self.0.as_mut().map(Pin::new).ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl AsyncWrite for QuietWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.half() {
            Ok(w) => w.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self.half() {
            Ok(w) => w.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self.half() {
            Ok(w) => w.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for QuietWrite {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.forget();
        }
    }
}

/// A connection's two halves, inside TLS when the spec asks for it.
async fn open_stream(spec: &ViewerSpec) -> Result<(Rd, Wr), String> {
    let tcp = connect(spec.target, spec.source).await?;
    match &spec.tls {
        None => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(QuietWrite(Some(w)))))
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("static name");
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls_{:?}", e.kind()))?;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let sock = if target.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    // No timer of its own: the whole setup runs under one deadline (`run`).
    let s = sock.connect(target).await.map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Where the viewer's commands go and its replies and media come from.
struct Conn {
    data: Rd,
    commands: Wr,
    /// Halves that must stay open: closing a tunnel GET's write side would end the tunnel.
    _keep: (Option<Wr>, Option<Rd>),
    tunnel: bool,
    reader: wire::Reader,
    checker: Checker,
    shared: Arc<Shared>,
    latencies: Vec<u64>,
    cseq: u32,
    session: Option<String>,
    /// When PLAY was sent (time to first frame counts from here).
    play_sent_ns: u64,
    /// The session's read buffer: `READ_CAPACITY` of spare room that reads fill (never zeroed),
    /// cleared after each read is fed.
    buf: Vec<u8>,
    authorization: Option<Arc<str>>,
    /// The setup's step (an index into `STAGES`), read by `run` when the deadline cuts it.
    stage: Arc<AtomicU8>,
    media_check: MediaCheck,
}

async fn read_http_head(rd: &mut Rd) -> Result<(String, Vec<u8>), String> {
    // A small first capacity (the relay's 200 is ~100 bytes): the allocator's fast path.
    let mut head = Vec::with_capacity(512);
    loop {
        let n = rd.read_buf(&mut head).await.map_err(|e| format!("read_{:?}", e.kind()))?;
        if n == 0 {
            return Err("closed_before_reply".into());
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&head).into_owned(), rest));
        }
        if head.len() > 8192 {
            return Err("http_head_too_large".into());
        }
    }
}

fn io_err(e: std::io::Error) -> String {
    format!("io_{:?}", e.kind())
}

impl Drop for Conn {
    fn drop(&mut self) {
        give_back_buffer(std::mem::take(&mut self.buf));
    }
}

fn set_stage(stage: &AtomicU8, name: &str) {
    let i = STAGES.iter().position(|s| *s == name).unwrap_or(0);
    stage.store(i as u8, Ordering::Relaxed);
}

impl Conn {
    async fn open(spec: &ViewerSpec, shared: Arc<Shared>, stage: Arc<AtomicU8>) -> Result<(Conn, Vec<u8>), String> {
        let new = |data, commands, keep, tunnel, stage| Conn {
            data,
            commands,
            _keep: keep,
            tunnel,
            reader: wire::Reader::default(),
            checker: Checker::new(spec.check, spec.expect_stream),
            shared,
            latencies: Vec::new(),
            cseq: 0,
            session: None,
            play_sent_ns: 0,
            buf: take_buffer(),
            authorization: spec.authorization.clone(),
            stage,
            media_check: spec.media_check,
        };
        match spec.mode {
            Mode::Rtsp => {
                let (rd, wr) = open_stream(spec).await?;
                Ok((new(rd, wr, (None, None), false, stage), Vec::new()))
            }
            Mode::Tunnel => {
                let cookie = format!("lt{:08x}{:012x}", spec.index, payload::monotonic_ns() & 0xffff_ffff_ffff);
                let (mut grd, mut gwr) = open_stream(spec).await?;
                let get = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
                    spec.path, spec.target
                );
                gwr.write_all(get.as_bytes()).await.map_err(io_err)?;
                set_stage(&stage, "get");
                let (head, rest) = read_http_head(&mut grd).await?;
                let status = head.split_whitespace().nth(1).unwrap_or("none").to_owned();
                if status != "200" {
                    return Err(format!("http_{status}"));
                }
                set_stage(&stage, "connect");
                let (prd, mut pwr) = open_stream(spec).await?;
                let post = format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nx-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
                    spec.path, spec.target
                );
                pwr.write_all(post.as_bytes()).await.map_err(io_err)?;
                Ok((new(grd, pwr, (Some(gwr), Some(prd)), true, stage), rest))
            }
        }
    }

    async fn send(&mut self, method: &str, uri: &str, extra: &[(&str, &str)]) -> Result<u32, String> {
        self.cseq += 1;
        let cseq = self.cseq.to_string();
        let mut headers = vec![("CSeq", cseq.as_str()), ("User-Agent", "rtsp-tunnel-relay-loadtest")];
        if let Some(s) = &self.session {
            headers.push(("Session", s));
        }
        if let Some(a) = &self.authorization {
            headers.push(("Authorization", a));
        }
        headers.extend_from_slice(extra);
        let raw = wire::request(method, uri, &headers);
        let bytes = if self.tunnel { base64::engine::general_purpose::STANDARD.encode(&raw).into_bytes() } else { raw };
        self.commands.write_all(&bytes).await.map_err(io_err)?;
        Ok(self.cseq)
    }

    /// Feeds bytes received at `now_ns`: media is checked and counted, messages returned.
    fn feed(&mut self, bytes: &[u8], now_ns: u64) -> Result<Vec<Msg>, String> {
        let c = &mut self.checker;
        let before = (c.bytes, c.packets, c.rtp_seq_gaps, c.integrity.total());
        let mut msgs = Vec::new();
        let lat = &mut self.latencies;
        lat.clear();
        let first_only = self.media_check == MediaCheck::FirstPacket;
        let fed = self.reader.feed(
            bytes,
            &mut |channel, payload: &[u8]| {
                if first_only && c.first_packet_ns.is_some() {
                    // Past the first packet: counted, not checked (the rest of the read, the
                    // GOP replay's burst, would otherwise be hashed slice by slice).
                    c.bytes += 4 + payload.len() as u64;
                } else if let Some(us) = c.frame(channel, payload, now_ns) {
                    lat.push(us);
                }
            },
            &mut msgs,
        );
        let sh = &self.shared;
        sh.bytes.fetch_add(c.bytes - before.0, Ordering::Relaxed);
        sh.packets.fetch_add(c.packets - before.1, Ordering::Relaxed);
        sh.rtp_seq_gaps.fetch_add(c.rtp_seq_gaps - before.2, Ordering::Relaxed);
        sh.faults.fetch_add(c.integrity.total() - before.3, Ordering::Relaxed);
        sh.record_latencies(lat);
        fed.map_err(|e| e.reason().to_owned())?;
        Ok(msgs)
    }

    /// One request and its reply (no timer here: the setup's one deadline is in `run`).
    async fn request(&mut self, method: &str, uri: &str, extra: &[(&str, &str)]) -> Result<Msg, String> {
        set_stage(&self.stage, &method.to_ascii_lowercase());
        let want = self.send(method, uri, extra).await?;
        let mut buf = std::mem::take(&mut self.buf);
        let answer = self.await_reply(method, want, &mut buf).await;
        self.buf = buf;
        answer
    }

    async fn await_reply(&mut self, method: &str, want: u32, buf: &mut Vec<u8>) -> Result<Msg, String> {
        loop {
            buf.clear();
            let n = self.data.read_buf(buf).await.map_err(io_err)?;
            if n == 0 {
                return Err(format!("closed_during_{}", method.to_ascii_lowercase()));
            }
            for msg in self.feed(buf, payload::monotonic_ns())? {
                if msg.cseq() == Some(want) {
                    return match msg.status() {
                        Some(200) => Ok(msg),
                        s => Err(format!("rtsp_{}_{}", s.unwrap_or(0), method.to_ascii_lowercase())),
                    };
                }
            }
        }
    }

    /// OPTIONS → DESCRIBE → SETUP → PLAY; the base URL on success.
    async fn set_up(&mut self, spec: &ViewerSpec) -> Result<String, String> {
        let base = format!("rtsp://{}{}", spec.target, spec.path);
        self.request("OPTIONS", &base, &[]).await?;
        let describe = self.request("DESCRIBE", &base, &[("Accept", "application/sdp")]).await?;
        let content_base = describe.header("Content-Base").unwrap_or(&base).trim_end_matches('/').to_owned();
        let track = track_url(&describe.body, &content_base);
        // The stream's rate as the camera states it (never guessed from the packets).
        self.checker.set_period(payload::sdp_period_ns(&describe.body));
        let setup = self.request("SETUP", &track, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]).await?;
        if let Some(ssrc) = setup.header("Transport").and_then(transport_ssrc) {
            self.checker.expect_ssrc(ssrc);
        }
        self.session = setup.header("Session").map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
        self.play_sent_ns = payload::monotonic_ns();
        self.checker.play_sent(self.play_sent_ns);
        let play = self.request("PLAY", &format!("{content_base}/"), &[("Range", "npt=0.000-")]).await?;
        self.checker.playing(play.header("RTP-Info").and_then(rtp_info_seq), payload::monotonic_ns());
        Ok(base)
    }

    /// Past the checked part of a [`MediaCheck::FirstPacket`] session: its first packet came,
    /// what follows is only drained.
    fn only_draining(&self) -> bool {
        self.media_check == MediaCheck::FirstPacket && self.checker.first_packet_ns.is_some()
    }

    /// Reads and checks media until the stop time (`Ok`) or the connection fails. One timer per
    /// keepalive period (not one per read): the read loop runs under it until it fires.
    async fn play(&mut self, spec: &ViewerSpec, base: &str) -> Result<(), String> {
        let mut keepalive = Instant::now() + Duration::from_secs(20);
        loop {
            let until = keepalive.min(spec.stop_at);
            let read = if self.only_draining() { self.drain_until(until).await } else { self.read_until(until).await };
            read?;
            if Instant::now() >= spec.stop_at {
                return Ok(());
            }
            if Instant::now() >= keepalive {
                self.send("GET_PARAMETER", base, &[]).await?;
                keepalive = Instant::now() + Duration::from_secs(20);
            }
        }
    }

    /// Reads and checks every frame until `until` (`Ok`), or until the first packet came when
    /// only it is checked (`Ok`, early), or the connection fails.
    async fn read_until(&mut self, until: Instant) -> Result<(), String> {
        let mut buf = std::mem::take(&mut self.buf);
        let read_all = async {
            loop {
                buf.clear();
                match self.data.read_buf(&mut buf).await {
                    Ok(0) => return Err("closed_by_peer".to_owned()),
                    Ok(_) => {
                        self.feed(&buf, payload::monotonic_ns())?;
                        if self.only_draining() {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
        };
        let r = tokio::time::timeout_at(until, read_all).await.unwrap_or(Ok(()));
        self.buf = buf;
        r
    }

    /// After the first packet of a [`MediaCheck::FirstPacket`] session: every `DRAIN_EVERY`
    /// until `until`, reads whatever arrived without parsing it, counting its bytes. A close or
    /// an error fails the session as in a checked one.
    async fn drain_until(&mut self, until: Instant) -> Result<(), String> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = loop {
            // Sleep first: the read that brought the first packet took what was there.
            tokio::time::sleep_until((Instant::now() + DRAIN_EVERY).min(until)).await;
            let r = self.drain_ready(&mut buf).await;
            if r.is_err() || Instant::now() >= until {
                break r;
            }
        };
        self.buf = buf;
        r
    }

    /// Reads what is there now, without waiting for more.
    async fn drain_ready(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        loop {
            buf.clear();
            let data = &mut self.data;
            let ready = std::future::poll_fn(|cx| {
                let mut rb = tokio::io::ReadBuf::uninit(buf.spare_capacity_mut());
                match Pin::new(&mut *data).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(rb.filled().len()))),
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Pending => Poll::Ready(None),
                }
            })
            .await;
            match ready {
                None => return Ok(()),
                Some(Ok(0)) => return Err("closed_by_peer".into()),
                Some(Ok(n)) => {
                    self.checker.bytes += n as u64;
                    self.shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Some(Err(e)) => return Err(io_err(e)),
            }
        }
    }
}

/// `ssrc=` of a Transport header (hexadecimal, RFC 2326).
fn transport_ssrc(t: &str) -> Option<u32> {
    t.split(';').find_map(|p| p.trim().strip_prefix("ssrc=")).and_then(|v| u32::from_str_radix(v.trim(), 16).ok())
}

/// `seq=` of the first RTP-Info entry.
fn rtp_info_seq(info: &str) -> Option<u16> {
    info.split(',').next()?.split(';').find_map(|p| p.trim().strip_prefix("seq="))?.trim().parse().ok()
}

/// The first media's control URL from an SDP (absolute, or relative to the content base).
fn track_url(sdp: &[u8], content_base: &str) -> String {
    let text = String::from_utf8_lossy(sdp);
    // Lines after the first `m=` line belong to the first media.
    let control = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=control:"))
        .unwrap_or("trackID=0")
        .trim();
    if control.contains("://") { control.to_owned() } else { format!("{content_base}/{control}") }
}

/// Why a session that reached PLAY failed, if it did: how it ended, else a fault in what it
/// received, else receiving nothing (or nothing that could be checked), else its figures (no
/// stated rate, loss or a stall over the thresholds).
fn verdict(ended: Result<(), String>, c: &Checker, t: &Tally) -> Option<String> {
    match ended {
        Err(e) => Some(e),
        Ok(()) => c.integrity.first_fault().map(str::to_owned).or_else(|| {
            if c.packets == 0 {
                Some("no_media".into())
            } else if c.timed == 0 {
                Some("no_timed_media".into())
            } else {
                c.judge(t).map(str::to_owned)
            }
        }),
    }
}

/// Runs one viewer to `spec.stop_at`.
pub async fn run(mut spec: ViewerSpec, shared: Arc<Shared>) -> Outcome {
    let start_ns = payload::monotonic_ns();
    // One deadline for the whole setup (connections, GET, every request to PLAY answered): one
    // timer per session, not one per read.
    let setup_deadline = Instant::now() + Duration::from_secs(20);
    let stage = Arc::new(AtomicU8::new(0));
    let set_up = async {
        let (mut conn, early) = Conn::open(&spec, shared.clone(), stage.clone()).await?;
        conn.feed(&early, payload::monotonic_ns())?;
        let base = conn.set_up(&spec).await?;
        Ok::<_, String>((conn, base))
    };
    let (mut conn, base) = match tokio::time::timeout_at(setup_deadline, set_up).await {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => return Outcome::NotPlayed { start_ns, reason },
        Err(_) => {
            let reason = match STAGES.get(usize::from(stage.load(Ordering::Relaxed))).copied() {
                Some("connect") | None => "connect_timeout".to_owned(),
                Some(s) => format!("timeout_{s}"),
            };
            return Outcome::NotPlayed { start_ns, reason };
        }
    };
    let play_ns = payload::monotonic_ns();
    if let Some(t) = spec.session_time {
        let own_stop_ns = play_ns.saturating_add(t.as_nanos() as u64);
        if own_stop_ns < spec.stop_ns {
            spec.stop_ns = own_stop_ns;
            spec.stop_at = crate::instant_of(own_stop_ns);
        }
    }
    shared.established.fetch_add(1, Ordering::Relaxed);
    shared.playing.fetch_add(1, Ordering::Relaxed);
    let ended = conn.play(&spec, &base).await;
    shared.playing.fetch_sub(1, Ordering::Relaxed);
    // A session that played to the stop time is counted to the stop time; one that failed, to
    // when it failed.
    let end_ns = if ended.is_ok() { spec.stop_ns } else { payload::monotonic_ns() };
    if ended.is_ok() {
        let _ = conn.send("TEARDOWN", &base, &[]).await;
    }
    let c = &mut conn.checker;
    // A session checked only to its first packet has figures for that stretch alone.
    let checked_until = match (spec.media_check, c.last_arrival()) {
        (MediaCheck::FirstPacket, Some(t)) => t.min(end_ns),
        _ => end_ns,
    };
    let tally = c.finish(checked_until);
    let reason = verdict(ended, c, &tally);
    if reason.is_some() {
        shared.failed_after_play.fetch_add(1, Ordering::Relaxed);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let record = SessionRecord {
        index: spec.index,
        path: spec.path.clone(),
        survived: reason.is_none(),
        reason,
        setup_ms: ms(play_ns.saturating_sub(spec.scheduled_ns)),
        play_s: end_ns.saturating_sub(play_ns) as f64 / 1e9,
        bytes: c.bytes,
        packets: c.packets,
        timed: c.timed,
        unmarked: c.unmarked,
        rtcp: c.rtcp,
        expected: tally.expected,
        lost: tally.lost,
        rtp_seq_gaps: c.rtp_seq_gaps,
        stalls: tally.stalls,
        stalled_ms: ms(tally.stalled_ns),
        longest_stall_ms: ms(tally.longest_stall_ns),
        rate_unknown: tally.rate_unknown,
        start_unknown: tally.start_unknown,
        start_offset: tally.start_offset,
        discontinuities: c.discontinuities,
        period_ns: c.period_ns(),
        replayed_bytes: c.replayed_bytes,
        slices_verified: c.slices.slices_verified,
        pictures_unverified: c.slices.pictures_unverified,
        integrity: c.integrity,
        latency_ms: c.latency_us.quantiles(),
        from_before_play: c.from_before_play,
        ttff_ms: c.first_keyframe_ns.map(|t| ms(t.saturating_sub(conn.play_sent_ns))),
        first_packet_ms: c.first_packet_ns.map(|t| ms(t.saturating_sub(conn.play_sent_ns))),
        ready_ms: c.first_packet_ns.map(|t| ms(t.saturating_sub(spec.scheduled_ns))),
    };
    let latency_us = std::mem::take(&mut c.latency_us);
    Outcome::Played { start_ns, play_ns, record: Box::new(record), latency_us }
}

#[cfg(test)]
mod tests {
    #[test]
    fn setup_uses_the_first_media_control() {
        let sdp = b"v=0\r\ns=Session streamed with GStreamer\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=control:stream=0\r\n";
        assert_eq!(super::track_url(sdp, "rtsp://h/cam0"), "rtsp://h/cam0/stream=0");
        assert_eq!(super::track_url(b"m=video 0 RTP/AVP 96\na=control:rtsp://x/t1\n", "rtsp://h/c"), "rtsp://x/t1");
        assert_eq!(super::track_url(b"", "rtsp://h/c"), "rtsp://h/c/trackID=0");
    }

    #[test]
    fn a_session_without_checked_media_fails() {
        use crate::check::{CheckParams, Checker, StreamStart};
        let params = CheckParams {
            start: StreamStart::Zero,
            stall_ns: 200_000_000,
            grace_ns: 0,
            max_loss: 0.01,
            max_stall_ns: 1_000_000_000,
        };
        let mut c = Checker::new(params, Some(0));
        c.set_period(Some(1_000_000));
        let t = crate::check::Tally::default();
        assert_eq!(super::verdict(Ok(()), &c, &t).as_deref(), Some("no_media"));
        c.frame(0, &[0x80, 96, 0, 1, 0, 0, 0, 0, 0x50, 0, 0, 0, 0x67, 1], 0);
        assert_eq!(super::verdict(Ok(()), &c, &t).as_deref(), Some("no_timed_media"), "parameter sets only");
        let mut p = Vec::new();
        crate::payload::push_packet(&mut p, 100, 0, 0, 2, 0);
        c.frame(0, &p[4..], 0);
        assert_eq!(super::verdict(Ok(()), &c, &t), None);
        assert_eq!(super::verdict(Err("closed_by_peer".into()), &c, &t).as_deref(), Some("closed_by_peer"));
    }

    #[test]
    fn reads_the_ssrc_and_the_starting_sequence() {
        assert_eq!(super::transport_ssrc("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=50000003"), Some(0x5000_0003));
        assert_eq!(super::transport_ssrc("RTP/AVP/TCP;interleaved=0-1"), None);
        assert_eq!(super::rtp_info_seq("url=rtsp://h/c/trackID=0;seq=4711;rtptime=0,url=x;seq=1"), Some(4711));
        assert_eq!(super::rtp_info_seq("url=rtsp://h/c"), None);
    }
}
