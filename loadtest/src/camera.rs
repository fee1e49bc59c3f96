//! `loadtest camera`: N simulated cameras (`/cam0` .. `/camN-1`) in one process, each a real
//! RTSP/1.0 server over TCP (interleaved transport) sending paced, decodable H.264 after PLAY
//! (see [`payload`]). Counts the RTSP sessions each stream serves: how a benchmark shows that a
//! relay opened one camera session per camera.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::{payload, wire};

#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub listen: SocketAddr,
    pub streams: u32,
    pub media: payload::MediaOptions,
    /// Where the sessions report goes (rewritten every 5 s and at exit).
    pub json: Option<std::path::PathBuf>,
    /// The packet interval, stated in the SDP (set by [`run`]).
    pub period_ns: u64,
    /// Where accepted connections per second go, one line a second (`unix_ms accepted`,
    /// appended): how a reconnect storm is seen at the camera side, across camera restarts.
    pub accept_log: Option<std::path::PathBuf>,
    /// How often the accept log gets a line (a second by default; finer to see a burst within
    /// one).
    pub accept_log_every: Duration,
    pub gop_phase: GopPhase,
}

/// Where in its group of pictures each session's stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GopPhase {
    /// At a keyframe, when the session plays: sessions started together have their keyframes
    /// in step (and a relay's GOP caches fill and empty together).
    Play,
    /// At a uniformly random picture of its group (0 .. --gop pictures before the first
    /// keyframe), as a real camera is wherever its group happens to be when a session joins:
    /// the keyframes of cameras started together fall apart.
    Random,
}

/// How many pictures a session's stream sends before its first keyframe.
fn pictures_before_keyframe(phase: GopPhase, gop: u32, stream: u32) -> u64 {
    static SESSIONS: AtomicU64 = AtomicU64::new(0);
    match phase {
        GopPhase::Play => 0,
        GopPhase::Random => {
            let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
            let seed = payload::monotonic_ns() ^ (u64::from(stream) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            splitmix64(seed) % u64::from(gop.max(1))
        }
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value from a seed (no crate needed for
/// a phase per session).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One stream's RTSP sessions (a session: from its SETUP to its TEARDOWN or connection close).
#[derive(Default)]
struct StreamSessions {
    opened: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    plays: AtomicU64,
}

/// The JSON sessions report: per stream that served any session.
#[derive(serde::Serialize)]
struct SessionsReport {
    streams: u32,
    bitrate_bps: u64,
    gop: u32,
    fps: u32,
    /// Sessions opened, over every stream.
    sessions_opened: u64,
    /// The most sessions any one stream had open at once.
    max_concurrent_per_stream: u64,
    per_stream: Vec<StreamLine>,
}

#[derive(serde::Serialize)]
struct StreamLine {
    path: String,
    sessions_opened: u64,
    max_concurrent: u64,
    open_now: u64,
    plays: u64,
}

#[derive(Default)]
struct Counters {
    per_stream: Vec<StreamSessions>,
    sessions: AtomicU64,
    /// Connections accepted since the accept log's last line.
    accepted: AtomicU64,
    playing: AtomicU64,
    packets: AtomicU64,
    /// The latest any packet of the window was written after its due time, µs: the camera's own
    /// share of the viewers' media latency.
    late_us: AtomicU64,
}

pub async fn run(mut opts: CameraOptions) -> anyhow::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(opts.listen), socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&opts.listen.into())?;
    sock.listen(4096)?;
    let listener = TcpListener::from_std(sock.into())?;
    let counters = Arc::new(Counters {
        per_stream: (0..opts.streams).map(|_| StreamSessions::default()).collect(),
        ..Counters::default()
    });
    let probe = payload::StreamGen::new(0, &opts.media, 0)?;
    opts.period_ns = probe.period_ns();
    eprintln!(
        "loadtest camera: {} streams on rtsp://{}/cam0.. at {} bit/s ({} asked), {}-byte packets every {} ns, H.264 {} fps, a keyframe every {} pictures (each session's first: {}), SSRC salt {:08x}",
        opts.streams,
        listener.local_addr()?,
        probe.bitrate_bps(),
        opts.media.bitrate_bps,
        opts.media.packet_size,
        opts.period_ns,
        opts.media.fps,
        opts.media.gop,
        match opts.gop_phase {
            GopPhase::Play => "at its PLAY",
            GopPhase::Random => "after a random 0..gop pictures",
        },
        opts.media.ssrc_salt,
    );
    let (c2, o2) = (counters.clone(), opts.clone());
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            write_report(&o2, &c2);
            let p = c2.packets.load(Ordering::Relaxed);
            eprintln!(
                "camera: {} connections, {} playing, {:.0} packets/s, written up to {:.1} ms after due",
                c2.sessions.load(Ordering::Relaxed),
                c2.playing.load(Ordering::Relaxed),
                (p - last) as f64 / 5.0,
                c2.late_us.swap(0, Ordering::Relaxed) as f64 / 1000.0
            );
            last = p;
        }
    });
    if let Some(path) = opts.accept_log.clone() {
        tokio::spawn(log_accepts(path, opts.accept_log_every, counters.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted?.0,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (opts, counters) = (opts.clone(), counters.clone());
        tokio::spawn(async move {
            counters.sessions.fetch_add(1, Ordering::Relaxed);
            let _ = serve(stream, &opts, &counters).await;
            counters.sessions.fetch_sub(1, Ordering::Relaxed);
        });
    }
    if let Some(path) = &opts.accept_log {
        append_accepts(path, &counters);
    }
    let report = write_report(&opts, &counters);
    eprintln!(
        "camera sessions: {} opened; at most {} at once on one stream",
        report.sessions_opened, report.max_concurrent_per_stream
    );
    for l in &report.per_stream {
        eprintln!(
            "  {}: {} opened, at most {} at once, {} PLAYs",
            l.path, l.sessions_opened, l.max_concurrent, l.plays
        );
    }
    Ok(())
}

fn write_report(opts: &CameraOptions, counters: &Counters) -> SessionsReport {
    let per_stream: Vec<StreamLine> = counters
        .per_stream
        .iter()
        .enumerate()
        .filter(|(_, s)| s.opened.load(Ordering::Relaxed) > 0)
        .map(|(i, s)| StreamLine {
            path: format!("/cam{i}"),
            sessions_opened: s.opened.load(Ordering::Relaxed),
            max_concurrent: s.max_open.load(Ordering::Relaxed),
            open_now: s.open.load(Ordering::Relaxed),
            plays: s.plays.load(Ordering::Relaxed),
        })
        .collect();
    let report = SessionsReport {
        streams: opts.streams,
        bitrate_bps: opts.media.bitrate_bps,
        gop: opts.media.gop,
        fps: opts.media.fps,
        sessions_opened: per_stream.iter().map(|l| l.sessions_opened).sum(),
        max_concurrent_per_stream: per_stream.iter().map(|l| l.max_concurrent).max().unwrap_or(0),
        per_stream,
    };
    if let Some(path) = &opts.json {
        // Written aside and renamed, so a reader never sees half a report.
        let tmp = path.with_extension("tmp");
        if let Ok(text) = serde_json::to_string_pretty(&report)
            && std::fs::write(&tmp, text).is_ok()
        {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    report
}

/// Every `every`, the connections accepted in it as one line of the accept log.
async fn log_accepts(path: std::path::PathBuf, every: Duration, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        append_accepts(&path, &counters);
    }
}

/// `unix_ms accepted` for the connections accepted since the last line (wall time, so the lines
/// of a camera process and of the one restarted after it read as one timeline).
fn append_accepts(path: &std::path::Path, counters: &Counters) {
    use std::io::Write;
    let n = counters.accepted.swap(0, Ordering::Relaxed);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{ms} {n}");
    }
}

/// A session of one stream, counted open until dropped.
struct OpenSession<'a>(&'a StreamSessions);

impl<'a> OpenSession<'a> {
    fn new(s: &'a StreamSessions) -> Self {
        s.opened.fetch_add(1, Ordering::Relaxed);
        let now = s.open.fetch_add(1, Ordering::Relaxed) + 1;
        s.max_open.fetch_max(now, Ordering::Relaxed);
        OpenSession(s)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn stream_index(uri: &str, streams: u32) -> Option<u32> {
    let rest = wire::url_path(uri).strip_prefix("/cam")?;
    let n: u32 = rest.split('/').next()?.parse().ok()?;
    (n < streams).then_some(n)
}

async fn serve(stream: TcpStream, opts: &CameraOptions, counters: &Arc<Counters>) -> anyhow::Result<()> {
    let local = stream.local_addr()?;
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(Mutex::new(wr));
    let mut reader = wire::Reader::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut media: Option<tokio::task::JoinHandle<()>> = None;
    let session_id = format!("{:016x}", payload::monotonic_ns());
    let mut session: Option<OpenSession> = None;
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut requests = Vec::new();
        // Frames from the viewer (RTCP) are ignored.
        if reader.feed(&buf[..n], &mut |_, _| {}, &mut requests).is_err() {
            break;
        }
        for req in requests {
            let Some(method) = req.method() else { continue };
            let cseq = req.cseq().unwrap_or(0).to_string();
            let idx = stream_index(req.uri().unwrap_or(""), opts.streams);
            let ok = |headers: &[(&str, &str)], body: &[u8]| {
                let mut h = vec![("CSeq", cseq.as_str())];
                h.extend_from_slice(headers);
                wire::response(200, "OK", &h, body)
            };
            let error = |status, reason| wire::response(status, reason, &[("CSeq", cseq.as_str())], b"");
            let reply = match (method, idx) {
                ("OPTIONS", _) => ok(&[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN")], b""),
                (_, None) => error(404, "Not Found"),
                ("DESCRIBE", Some(i)) => {
                    let sdp = format!(
                        "v=0\r\no=- 0 0 IN IP4 {ip}\r\ns=loadtest camera {i}\r\nt=0 0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1{sprop}\r\n{ext}a={attr}:{period}\r\na=control:trackID=0\r\n",
                        ip = local.ip(),
                        sprop = sprop(),
                        ext = payload::SDP_EXTMAP,
                        attr = payload::SDP_PERIOD_ATTR,
                        period = opts.period_ns,
                    );
                    let base = format!("rtsp://{local}/cam{i}/");
                    ok(&[("Content-Base", &base), ("Content-Type", "application/sdp")], sdp.as_bytes())
                }
                ("SETUP", Some(i)) => {
                    let tcp = req.header("Transport").is_some_and(|t| t.contains("TCP") || t.contains("interleaved"));
                    if tcp {
                        // The SSRC is announced so viewers can check every packet against it.
                        let transport = format!(
                            "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc={:08X}",
                            payload::salted_ssrc(i, opts.media.ssrc_salt)
                        );
                        if session.is_none() {
                            session = Some(OpenSession::new(&counters.per_stream[i as usize]));
                        }
                        let session = format!("{session_id};timeout=60");
                        ok(&[("Transport", &transport), ("Session", &session)], b"")
                    } else {
                        error(461, "Unsupported Transport")
                    }
                }
                ("PLAY", Some(i)) => {
                    // Every camera connection's stream starts at sequence 0, RTP sequence 0.
                    let info = format!("url=rtsp://{local}/cam{i}/trackID=0;seq=0;rtptime=0");
                    let reply = ok(&[("Session", &session_id), ("RTP-Info", &info)], b"");
                    counters.per_stream[i as usize].plays.fetch_add(1, Ordering::Relaxed);
                    if media.is_none() {
                        let (wr, opts, counters) = (wr.clone(), opts.clone(), counters.clone());
                        // The reply goes out before the first packet: the task waits for the lock.
                        let mut guard = wr.clone().lock_owned().await;
                        media = Some(tokio::spawn(async move { send_media(wr, i, &opts, &counters).await }));
                        guard.write_all(&reply).await?;
                        continue;
                    }
                    reply
                }
                ("TEARDOWN", _) => {
                    if let Some(m) = media.take() {
                        m.abort();
                    }
                    session = None;
                    ok(&[], b"")
                }
                ("GET_PARAMETER" | "SET_PARAMETER", _) => ok(&[("Session", &session_id)], b""),
                _ => error(405, "Method Not Allowed"),
            };
            wr.lock().await.write_all(&reply).await?;
        }
    }
    if let Some(m) = media {
        m.abort();
    }
    Ok(())
}

/// The SDP's H.264 parameters, from the relay's embedded clip (real SPS/PPS).
fn sprop() -> String {
    match rtsp_tunnel_relay::demo_camera::clip() {
        Ok(c) => {
            format!(";profile-level-id={};sprop-parameter-sets={}", c.profile_level_id(), c.sprop_parameter_sets())
        }
        Err(_) => String::new(),
    }
}

/// Paces packets at the bitrate. A blocked socket (the viewer or relay behind) delays packets
/// rather than dropping them, so loss seen by viewers is loss in between, not here.
/// Counts a playing stream for as long as it lives (aborted tasks included).
struct Playing<'a>(&'a AtomicU64);

impl Drop for Playing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send_media(
    wr: Arc<Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    stream: u32,
    opts: &CameraOptions,
    counters: &Counters,
) {
    counters.playing.fetch_add(1, Ordering::Relaxed);
    let _playing = Playing(&counters.playing);
    // Packet k is due at t0 + k × period and carries that time, not the time it was built:
    // packets held up (a blocked socket, a paused process) show how late they are.
    let (t0, t0_ns) = (tokio::time::Instant::now(), payload::monotonic_ns());
    let Ok(media) = payload::StreamGen::new(stream, &opts.media, t0_ns) else { return };
    let mut media = media.with_first_keyframe_after(pictures_before_keyframe(opts.gop_phase, opts.media.gop, stream));
    let period_ns = media.period_ns();
    let mut batch = Vec::new();
    loop {
        let seq = media.next_seq();
        tokio::time::sleep_until(t0 + Duration::from_nanos(seq * period_ns)).await;
        // Several packets may be due (timer granularity, a late wake-up): one write for all.
        let now = t0.elapsed().as_nanos() as u64;
        batch.clear();
        let mut n = 0;
        while media.next_seq() * period_ns <= now {
            media.push_next(&mut batch);
            n += 1;
        }
        if wr.lock().await.write_all(&batch).await.is_err() {
            break;
        }
        counters.packets.fetch_add(n, Ordering::Relaxed);
        counters.late_us.fetch_max(payload::monotonic_ns().saturating_sub(media.due_ns(seq)) / 1000, Ordering::Relaxed);
    }
}
