//! The relay's own RTSP client session with a camera, for a shared route: one connection to
//! the camera whose media every viewer of the route receives.
//!
//! The dialogue is the ordinary one of an RTSP client: OPTIONS (the `Public` list decides the
//! keepalive method), DESCRIBE (the SDP and its base URL are kept for the viewers), SETUP of
//! every track over TCP interleaved channels `2i`/`2i+1` in one session, PLAY (the `RTP-Info`
//! positions are kept), then keepalives every half of the camera's `Session: …;timeout=`
//! (GET_PARAMETER if listed, else OPTIONS) and TEARDOWN when the camera is no longer wanted.
//! Camera challenges are answered with the route's credentials ([`UpstreamAuth`]); a request
//! left unanswered, a connection that fails or closes, or media that stops ends the connection,
//! and [`camera_demand`](super::camera_demand) decides whether and when to reconnect (capped
//! backoff) and when to close (the linger after the last viewer, or never for always-on).
//!
//! # Why it looks like the 1:1 session
//! It is a second value of the same shape as [`super::session::Session`]: inputs carry `now`,
//! results are outputs the shell drains ([`CameraSession::poll_output`]), and the shell asks
//! for the next deadline ([`CameraSession::poll_timeout`]) and reports when it passes. The
//! shell therefore drives both the same way — bytes in, bytes and actions out, one timer per
//! value — and this file never touches a socket, a clock or an entropy source, so every rule
//! below (timeouts, backoff, linger) is tested with made-up instants.
//!
//! # Media
//! Camera media is not queued with the other outputs: [`CameraSession::handle_camera_bytes`]
//! appends one [`MediaFrame`] per whole interleaved frame to a list the caller passes, because
//! the common [`FramePayload::InChunk`] payload is a range of the chunk just fed and is only
//! meaningful while the caller still holds that chunk (as the 1:1 session's `ForwardToViewer`).
//! Each frame names its track, whether it is RTCP, and its [`FrameKind`] (H.264/H.265 packets
//! of the first video track are read for keyframes); RTP packets also go to the [`GopCache`].
//! The chunk is mutable because, after a reconnect, RTP and RTCP headers are rewritten in place
//! so viewers keep one continuous stream ([`super::rtp_continuity`]): once per packet, before
//! every viewer is sent the same bytes.
//! The shell should fan out a chunk's frames before it handles any viewer input, so that the
//! cache and [`CameraView::next_rtp`] describe exactly what a joining viewer receives next.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::camera_demand::{Backoff, Demand, Mode};
use super::camera_source::{AfterFailure, Source, SourcePolicy};
use super::fanout_policy::FrameKind;
use super::frame_split::{FramePayload, FrameSplitter, SplitFrame};
use super::gop_budget::GopAccount;
use super::gop_cache::{GopBound, GopCache, GopLimits};
use super::interleaved::{Demux, Event};
use super::keyframe::{Classifier, RtpHeader};
use super::rewrite::HandedOut;
use super::rtp_continuity::{RtcpVerdict, TrackContinuity};
use super::rtsp::{Message, MessageLimits};
use super::rtsp_headers::{Public, RtpInfo, SessionHeader, Transport, TransportSpec};
use super::sdp::{self, Sdp, SdpTrack};
use super::upstream_auth::{AuthVerdict, Credentials, UpstreamAuth};

/// The session timeout RTSP assumes when the camera announces none (RFC 2326 §12.37).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Tracks set up at most (two interleaved channels each).
pub const MAX_TRACKS: usize = 64;
const USER_AGENT: &str = concat!("rtsp-tunnel-relay/", env!("CARGO_PKG_VERSION"));

/// Fixed parameters of a shared camera.
#[derive(Debug, Clone)]
pub struct CameraParams {
    /// The camera URL without credentials (what DESCRIBE asks for).
    pub url: String,
    pub addr: SocketAddr,
    pub credentials: Option<Credentials>,
    pub mode: Mode,
    /// The GOP cache's bound; `None`: no cache (joiners start with live packets).
    pub gop_cache_bytes: Option<usize>,
    /// The GOP cache's bound in packets.
    pub gop_cache_packets: usize,
    /// The relay-wide budget the GOP cache draws from (`[limits] gop_cache_total_bytes`);
    /// `None`: only the bounds above.
    pub gop_account: Option<GopAccount>,
    pub limits: MessageLimits,
    /// How long opening the TCP connection may take.
    pub connect_timeout: Duration,
    /// How long the camera may take to answer one request.
    pub response_timeout: Duration,
    /// No frame at all from a playing camera for this long: it is gone.
    pub media_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Randomness from the shell: Digest cnonces, backoff jitter.
    pub seed: u64,
    /// The route's second camera (`fallback`), live while this one fails
    /// ([`super::camera_source`]).
    pub fallback: Option<FallbackParams>,
}

/// Where the fallback camera is and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackParams {
    /// Its URL without credentials.
    pub url: String,
    pub addr: SocketAddr,
    pub credentials: Option<Credentials>,
}

impl CameraParams {
    /// The GOP cache these parameters ask for, if any.
    fn gop_cache(&self) -> Option<GopCache> {
        let packets = self.gop_cache_packets;
        self.gop_cache_bytes.map(|bytes| GopCache::with_account(GopLimits { bytes, packets }, self.gop_account.clone()))
    }

    /// Parameters with the defaults: on demand with a 10 s linger, a 4 MiB (8192-packet) GOP
    /// cache, 10 s to
    /// connect, to answer and between frames, reconnects after 1 s doubling to 30 s.
    pub fn new(url: &str, addr: SocketAddr) -> Self {
        CameraParams {
            url: url.to_owned(),
            addr,
            credentials: None,
            mode: Mode::OnDemand { linger: Duration::from_secs(10) },
            gop_cache_bytes: Some(4 << 20),
            gop_cache_packets: 8192,
            gop_account: None,
            limits: MessageLimits::default(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            media_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            seed: 0,
            fallback: None,
        }
    }
}

/// How one camera connection ended: `relay_camera_sessions_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraOutcome {
    /// Closed by the relay: nobody wanted the camera any more (linger), or shutdown.
    Completed,
    ConnectFailed,
    ConnectTimeout,
    /// The camera refused the route's credentials (or asked for some and the route has none).
    AuthFailed,
    /// A non-2xx answer to DESCRIBE, PLAY, every SETUP, or a keepalive (session lost).
    Refused,
    /// The DESCRIBE answer held no usable SDP.
    BadDescription,
    ResponseTimeout,
    /// The camera stopped sending while playing.
    MediaTimeout,
    ClosedByCamera,
    /// Bytes that are neither RTSP nor interleaved frames.
    ProtocolError,
    /// Left by the relay because a reload changed the camera (URL, address or credentials): a
    /// new connection with the new settings follows at once.
    Reloaded,
    /// The TLS handshake failed: the camera's certificate did not verify (see the camera's
    /// last error), or it does not speak TLS.
    TlsFailed,
}

impl CameraOutcome {
    pub const ALL: [CameraOutcome; 12] = [
        CameraOutcome::Completed,
        CameraOutcome::ConnectFailed,
        CameraOutcome::ConnectTimeout,
        CameraOutcome::AuthFailed,
        CameraOutcome::Refused,
        CameraOutcome::BadDescription,
        CameraOutcome::ResponseTimeout,
        CameraOutcome::MediaTimeout,
        CameraOutcome::ClosedByCamera,
        CameraOutcome::ProtocolError,
        CameraOutcome::Reloaded,
        CameraOutcome::TlsFailed,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CameraOutcome::Completed => "completed",
            CameraOutcome::ConnectFailed => "connect_failed",
            CameraOutcome::ConnectTimeout => "connect_timeout",
            CameraOutcome::AuthFailed => "auth_failed",
            CameraOutcome::Refused => "refused",
            CameraOutcome::BadDescription => "bad_description",
            CameraOutcome::ResponseTimeout => "response_timeout",
            CameraOutcome::MediaTimeout => "media_timeout",
            CameraOutcome::ClosedByCamera => "closed_by_camera",
            CameraOutcome::ProtocolError => "protocol_error",
            CameraOutcome::Reloaded => "reloaded",
            CameraOutcome::TlsFailed => "tls_failed",
        }
    }
}

/// One request to the camera and its answer, for the operator's debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraExchange {
    pub method: &'static str,
    pub uri: String,
    pub status: u16,
    pub latency: Duration,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraOutput {
    /// Open the camera connection; report with `handle_connected` or `handle_connect_failed`.
    Connect(SocketAddr),
    /// Queue these bytes to the camera.
    Send(Vec<u8>),
    /// Close the camera connection once the bytes queued to it are written.
    Disconnect,
    /// The camera plays: viewers waiting to PLAY can be answered (`relay_cameras_active` +1).
    Up,
    /// The camera stopped playing (`relay_cameras_active` -1); viewers stay and see no media
    /// until the next `Up`.
    Down,
    /// The camera came back with a different description (tracks, codecs): viewers set up on
    /// the old one cannot continue and must be closed.
    PresentationChanged,
    /// One camera connection ended: `relay_camera_sessions_total{outcome}`.
    Ended(CameraOutcome),
    /// A reconnect attempt starts: `relay_camera_reconnects_total`.
    Reconnecting,
    /// Another of the route's cameras is live from now on (its next connection, or the probe's
    /// just taken over): a log line, `relay_route_camera_source`.
    SourceChanged(Source),
    /// One debug log line.
    Exchange(CameraExchange),
    /// The GOP cache outgrew this bound and was dropped: `relay_gop_cache_overflows_total{bound}`.
    GopCacheOverflow(GopBound),
}

/// What a reload did to a camera ([`CameraSession::reconfigure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// The same camera: the session goes on with the new settings.
    Kept,
    /// Another camera: the old connection was left and a new one opened with the new settings.
    Reopened,
}

/// Where the camera is, as viewers need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraPhase {
    /// Not connected, and nobody wants it to be.
    Idle,
    /// Connecting, or in the dialogue before PLAY is answered.
    Starting,
    Playing,
    /// Waiting to reconnect after a failure.
    Retrying,
    /// Closed for good (`close`).
    Stopped,
}

/// One track of the camera's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedTrack {
    pub sdp: SdpTrack,
    /// Absolute camera URL of the track (its control resolved).
    pub url: String,
    /// RTP and RTCP interleaved channels the camera sends it on; `None`: SETUP failed.
    pub channels: Option<(u8, u8)>,
}

/// What the camera's DESCRIBE and SETUPs established; kept across reconnects so viewers can
/// be answered while the camera is briefly away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The SDP as the camera sent it.
    pub sdp: String,
    /// The URL relative controls resolve against: `Content-Base`, else `Content-Location`,
    /// else the DESCRIBE URL.
    pub content_base: String,
    /// The URL of PLAY, keepalives and TEARDOWN (the session-level control resolved).
    pub aggregate_url: String,
    pub tracks: Vec<PresentedTrack>,
    /// The SDP viewers get (in camera URLs, rewritten per viewer): sections of tracks the
    /// camera would not set up are left out.
    pub viewer_sdp: String,
    /// The track keyframes are read from: the first H.264/H.265 track set up.
    pub key_track: Option<usize>,
    /// How that track's packets are read, found once here rather than from the SDP's text
    /// for every packet.
    pub key_classifier: Option<Classifier>,
    /// The URLs above as a viewer may ask for them (content base, aggregate, each track):
    /// taken apart once here, not for every viewer request that is confined to them.
    pub handed_out: Vec<HandedOut>,
}

impl Presentation {
    /// Reads a 2xx answer to DESCRIBE of `request_url`; `None` without any `m=` section.
    pub fn from_describe(response: &Message, request_url: &str) -> Option<Presentation> {
        let text = std::str::from_utf8(&response.body).ok()?;
        let parsed = Sdp::parse(text);
        if parsed.tracks.is_empty() {
            return None;
        }
        let base = ["Content-Base", "Content-Location"]
            .iter()
            .filter_map(|h| response.header(h))
            .map(str::trim)
            .find(|v| v.contains("://"))
            .unwrap_or(request_url)
            .to_owned();
        let aggregate_url = sdp::join_control(&base, parsed.control.as_deref());
        let tracks = parsed
            .tracks
            .into_iter()
            .take(MAX_TRACKS)
            .map(|t| PresentedTrack { url: sdp::join_control(&base, t.control.as_deref()), sdp: t, channels: None })
            .collect();
        let mut p = Presentation {
            sdp: text.to_owned(),
            content_base: base,
            aggregate_url,
            tracks,
            viewer_sdp: String::new(),
            key_track: None,
            key_classifier: None,
            handed_out: Vec::new(),
        };
        p.handed_out = p.urls_handed_out();
        Some(p)
    }

    fn urls_handed_out(&self) -> Vec<HandedOut> {
        let urls = [&self.content_base, &self.aggregate_url].into_iter().chain(self.tracks.iter().map(|t| &t.url));
        urls.filter_map(|u| HandedOut::of(u)).collect()
    }

    /// Fills what follows from the SETUP results (`channels` of each track): the viewers' SDP
    /// and the key track.
    pub fn finish(&mut self) {
        let tracks = &self.tracks;
        self.viewer_sdp = sdp::keep_sections(&self.sdp, |i| tracks.get(i).is_some_and(|t| t.channels.is_some()));
        self.key_track = tracks.iter().position(|t| t.channels.is_some() && t.sdp.classifier().is_some());
        self.key_classifier = self.key_track.and_then(|t| tracks.get(t)).and_then(|t| t.sdp.classifier());
        self.handed_out = self.urls_handed_out();
    }

    /// Whether viewers set up on `self` can go on receiving a camera described by `other`.
    pub fn compatible(&self, other: &Presentation) -> bool {
        self.tracks.len() == other.tracks.len()
            && self.tracks.iter().zip(&other.tracks).all(|(a, b)| {
                a.sdp.media == b.sdp.media
                    && a.sdp.payload_type == b.sdp.payload_type
                    && a.sdp.clock_rate == b.sdp.clock_rate
                    && a.sdp.encoding.as_deref().map(str::to_ascii_lowercase)
                        == b.sdp.encoding.as_deref().map(str::to_ascii_lowercase)
                    && a.channels.is_some() == b.channels.is_some()
            })
    }
}

/// The next live packet of a track: its sequence number and (approximately, the timestamp of
/// the packet before it) its RTP time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPosition {
    pub seq: u16,
    pub rtptime: u32,
}

/// What a viewer needs of the camera to answer its requests.
#[derive(Debug, Clone, Copy)]
pub struct CameraView<'a> {
    pub phase: CameraPhase,
    pub presentation: Option<&'a Presentation>,
    pub gop: Option<&'a GopCache>,
    /// Per track: the next live packet, from the PLAY answer's `RTP-Info` then each packet.
    pub next_rtp: &'a [Option<RtpPosition>],
}

/// One whole interleaved frame from the camera, for fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The channel the camera sent it on.
    pub channel: u8,
    pub track: usize,
    pub rtcp: bool,
    pub kind: FrameKind,
    pub payload: FramePayload,
}

/// Counters of one camera since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CameraStats {
    pub frames: u64,
    pub bytes: u64,
    /// Frames on channels no track was set up on (dropped).
    pub unknown_channel_frames: u64,
    /// RTCP from the camera not passed on (BYE; reports of a new connection before its RTP).
    pub rtcp_dropped: u64,
    /// Key-track RTP of a later connection held back until its first keyframe.
    pub resync_dropped: u64,
    pub connections: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Options,
    Describe,
    Setup(usize),
    Play,
    Keepalive,
}

#[derive(Debug)]
struct Pending {
    cseq: u32,
    purpose: Purpose,
    /// Without `Authorization`, to be answered again after a challenge.
    request: Message,
    authorized: bool,
    sent_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connecting {
        deadline: Instant,
    },
    /// Connected; the dialogue before PLAY is answered.
    Starting,
    Playing,
    Retrying {
        at: Instant,
    },
    Stopped,
}

/// Everything that lives as long as one camera connection.
#[derive(Debug)]
struct Conn {
    demux: Demux,
    splitter: FrameSplitter,
    auth: Option<UpstreamAuth>,
    cseq: u32,
    pending: Option<Pending>,
    session: Option<String>,
    session_timeout: Duration,
    get_parameter: bool,
    /// The description being set up (moved to `presentation` once every SETUP is answered).
    building: Option<Presentation>,
    /// Camera channel → (track, is RTCP).
    channels: Box<[Option<(usize, bool)>; 256]>,
    next_keepalive: Option<Instant>,
    last_frame: Instant,
    playing_since: Option<Instant>,
    /// Timestamp of the key track's current access unit, and whether it already had its
    /// keyframe start.
    key_timestamp: Option<u32>,
    key_start_seen: bool,
    /// A later connection (viewers may be mid-stream): the key track's packets are held back
    /// until its first keyframe, so viewers resume with a picture they can decode, their
    /// sequence numbers continuing from it.
    resync: bool,
    events: Vec<Event>,
    split: Vec<SplitFrame>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct CameraSession {
    params: CameraParams,
    demand: Demand,
    backoff: Backoff,
    state: State,
    conn: Option<Conn>,
    presentation: Option<Presentation>,
    gop: Option<GopCache>,
    next_rtp: Vec<Option<RtpPosition>>,
    /// Per track, what viewers see across reconnects.
    continuity: Vec<TrackContinuity>,
    out: VecDeque<CameraOutput>,
    stats: CameraStats,
    /// When [`CameraSession::phase`] last changed (for the control API's `since`).
    phase_since: Instant,
    /// How the last connection that failed ended, and when.
    last_failure: Option<(CameraOutcome, Instant)>,
    /// Whether the last connection ended by failing (not closed by the relay).
    last_end_failed: bool,
    /// Which camera is live: the primary or the fallback.
    source: SourcePolicy,
    /// Bumped when a reload changes the primary: a probe of the old one is replaced.
    probe_epoch: u64,
}

/// A camera's health as an operator reads it (the control API's `/v1/cameras`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraHealth {
    pub state: HealthState,
    /// When `state` was entered.
    pub since: Instant,
    /// The last failed connection's outcome and when it ended.
    pub last_failure: Option<(CameraOutcome, Instant)>,
    pub reconnects: u64,
    /// Media bytes received from the camera since the session was created.
    pub bytes_in: u64,
    /// Which of the route's cameras is live.
    pub source: Source,
}

/// `idle`, `connecting`, `ready`, `retrying`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Nobody wants the camera, and its last connection did not fail.
    Idle,
    /// Connecting, or in the dialogue before PLAY is answered.
    Connecting,
    /// Playing: media flows.
    Ready,
    /// Its connection failed; the next attempt is scheduled.
    Retrying,
    /// Its last connection failed and no attempt is scheduled (nobody wants it any more, or
    /// it was closed for good).
    Failed,
}

impl HealthState {
    pub fn label(self) -> &'static str {
        match self {
            HealthState::Idle => "idle",
            HealthState::Connecting => "connecting",
            HealthState::Ready => "ready",
            HealthState::Retrying => "retrying",
            HealthState::Failed => "failed",
        }
    }
}

impl CameraOutcome {
    /// The outcome in words, for an operator.
    pub fn describe(self) -> &'static str {
        match self {
            CameraOutcome::Completed => "closed by the relay",
            CameraOutcome::ConnectFailed => "the camera refused or did not answer the connection",
            CameraOutcome::ConnectTimeout => "the connection to the camera timed out",
            CameraOutcome::AuthFailed => "the camera refused the route's credentials",
            CameraOutcome::Refused => "the camera refused a request (DESCRIBE, SETUP, PLAY or a keepalive)",
            CameraOutcome::BadDescription => "the camera's description (SDP) was unusable",
            CameraOutcome::ResponseTimeout => "the camera did not answer a request in time",
            CameraOutcome::MediaTimeout => "the camera stopped sending media",
            CameraOutcome::ClosedByCamera => "the camera closed the connection",
            CameraOutcome::ProtocolError => "the camera sent bytes that are not RTSP",
            CameraOutcome::Reloaded => "left for a changed configuration",
            CameraOutcome::TlsFailed => "the camera's TLS certificate did not verify, or TLS failed",
        }
    }
}

impl CameraSession {
    /// An always-on camera starts connecting at once (see [`CameraSession::poll_output`]);
    /// an on-demand one waits for its first viewer.
    pub fn new(params: CameraParams, now: Instant) -> Self {
        let backoff = Backoff::new(params.backoff_initial, params.backoff_max, params.seed.rotate_left(29));
        let params_has_fallback = params.fallback.is_some();
        let mut s = CameraSession {
            demand: Demand::new(params.mode),
            gop: params.gop_cache(),
            params,
            backoff,
            state: State::Idle,
            conn: None,
            presentation: None,
            next_rtp: Vec::new(),
            continuity: Vec::new(),
            out: VecDeque::new(),
            stats: CameraStats::default(),
            phase_since: now,
            last_failure: None,
            last_end_failed: false,
            source: SourcePolicy::new(params_has_fallback),
            probe_epoch: 0,
        };
        if s.demand.wants_camera(now) {
            s.connect(now);
        }
        s
    }

    /// The next thing the shell must do.
    pub fn poll_output(&mut self) -> Option<CameraOutput> {
        self.out.pop_front()
    }

    /// When [`CameraSession::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let linger = self.demand.linger_deadline();
        let own = match self.state {
            State::Idle | State::Stopped => return None,
            State::Connecting { deadline } => Some(deadline),
            State::Retrying { at } => Some(at),
            State::Starting | State::Playing => {
                let conn = self.conn.as_ref()?;
                match &conn.pending {
                    Some(p) => Some(p.sent_at + self.params.response_timeout),
                    None if self.state == State::Playing => {
                        let stall = conn.last_frame + self.params.media_timeout;
                        Some(conn.next_keepalive.map_or(stall, |k| k.min(stall)))
                    }
                    None => None,
                }
            }
        };
        [own, linger].into_iter().flatten().min()
    }

    pub fn phase(&self) -> CameraPhase {
        match self.state {
            State::Idle => CameraPhase::Idle,
            State::Connecting { .. } | State::Starting => CameraPhase::Starting,
            State::Playing => CameraPhase::Playing,
            State::Retrying { .. } => CameraPhase::Retrying,
            State::Stopped => CameraPhase::Stopped,
        }
    }

    /// What viewers need to know of the camera.
    pub fn view(&self) -> CameraView<'_> {
        CameraView {
            phase: self.phase(),
            presentation: self.presentation.as_ref(),
            gop: self.gop.as_ref(),
            next_rtp: &self.next_rtp,
        }
    }

    pub fn presentation(&self) -> Option<&Presentation> {
        self.presentation.as_ref()
    }

    pub fn gop_cache(&self) -> Option<&GopCache> {
        self.gop.as_ref()
    }

    /// A viewer joined from the GOP cache at `now`: it is in use (evicted last).
    pub fn gop_cache_used(&mut self, now: Instant) {
        if let Some(gop) = self.gop.as_mut() {
            gop.touch(now);
        }
    }

    /// The relay-wide GOP cache budget needs room: this camera's cache is dropped; joiners
    /// start with live packets until it starts again.
    pub fn evict_gop_cache(&mut self) {
        if let Some(gop) = self.gop.as_mut() {
            gop.evict();
        }
    }

    pub fn stats(&self) -> CameraStats {
        self.stats
    }

    /// The camera's health for an operator.
    pub fn health(&self) -> CameraHealth {
        let state = match self.state {
            State::Connecting { .. } | State::Starting => HealthState::Connecting,
            State::Playing => HealthState::Ready,
            State::Retrying { .. } => HealthState::Retrying,
            State::Idle | State::Stopped if self.last_end_failed => HealthState::Failed,
            State::Idle | State::Stopped => HealthState::Idle,
        };
        CameraHealth {
            state,
            since: self.phase_since,
            last_failure: self.last_failure,
            reconnects: self.stats.reconnects,
            bytes_in: self.stats.bytes,
            source: self.source.live(),
        }
    }

    /// Moves to `next`, noting when the phase an operator sees changed.
    fn enter(&mut self, next: State, now: Instant) {
        if std::mem::discriminant(&self.state) != std::mem::discriminant(&next) {
            self.phase_since = now;
        }
        self.state = next;
    }

    pub fn viewers(&self) -> usize {
        self.demand.viewers()
    }

    /// The number of viewers attached to the route changed (count them from the moment their
    /// connection is handed to the camera's shard, before their first request is handled, so
    /// an on-demand camera starts for them).
    pub fn set_viewers(&mut self, viewers: usize, now: Instant) {
        self.demand.set_viewers(viewers, now);
        if self.state == State::Idle && self.demand.wants_camera(now) {
            self.connect(now);
        }
    }

    /// The route was reloaded, still shared the same way: `params` replace the camera's own (the
    /// mode and the randomness are kept). Timeouts apply from now on, message limits from the
    /// next connection, a new GOP cache bound empties the cache.
    ///
    /// Another camera — URL, address or credentials — is a new camera session, as after a
    /// camera reconnect but at once (a reload is no failure: no backoff): the relay leaves the
    /// old one (TEARDOWN, `Ended(Reloaded)`) and connects with the new settings, keeping what
    /// viewers were told. If the new camera describes the same tracks and codecs the viewers
    /// carry on from its first keyframe, their RTP continuing (SSRC, sequence numbers,
    /// timestamps); if not, `PresentationChanged` ends them (`camera_changed`). Either way no
    /// viewer is left attached to a camera nobody reopens.
    pub fn reconfigure(&mut self, mut params: CameraParams, now: Instant) -> Reconfigured {
        params.mode = self.params.mode;
        params.seed = self.params.seed;
        let live = self.source.live();
        if params.url != self.params.url
            || params.addr != self.params.addr
            || params.credentials != self.params.credentials
        {
            self.probe_epoch = self.probe_epoch.wrapping_add(1);
        }
        let fallback_gone = self.source.reconfigure(params.fallback.is_some());
        let changed = match live {
            Source::Primary => {
                params.url != self.params.url
                    || params.addr != self.params.addr
                    || params.credentials != self.params.credentials
            }
            Source::Fallback => fallback_gone || params.fallback != self.params.fallback,
        };
        if fallback_gone {
            self.out.push_back(CameraOutput::SourceChanged(Source::Primary));
        }
        if params.gop_cache_bytes != self.params.gop_cache_bytes
            || params.gop_cache_packets != self.params.gop_cache_packets
        {
            self.gop = params.gop_cache();
        }
        self.params = params;
        let open =
            matches!(self.state, State::Connecting { .. } | State::Starting | State::Playing | State::Retrying { .. });
        if !changed || !open {
            // Nothing open (or closed for good): the next connection, if any, uses the new settings.
            return Reconfigured::Kept;
        }
        self.teardown();
        self.drop_connection(CameraOutcome::Reloaded, now, true);
        self.backoff.reset();
        if self.demand.wants_camera(now) {
            self.stats.reconnects += 1;
            self.out.push_back(CameraOutput::Reconnecting);
            self.connect(now);
        }
        Reconfigured::Reopened
    }

    /// Closes for good (shutdown, route removed or changed): TEARDOWN if a session is up.
    pub fn close(&mut self, now: Instant) {
        if self.state != State::Stopped {
            self.end_connection(now);
            self.enter(State::Stopped, now);
        }
    }

    /// The camera connection is open.
    pub fn handle_connected(&mut self, now: Instant) {
        let State::Connecting { .. } = self.state else { return };
        self.enter(State::Starting, now);
        let req = self.request("OPTIONS", self.live_url());
        self.send(Purpose::Options, req, now);
    }

    /// The camera connection could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if let State::Connecting { .. } = self.state {
            self.fail(CameraOutcome::ConnectFailed, now, false);
        }
    }

    /// What lies under RTSP failed: TLS (`CameraOutcome::TlsFailed`, a certificate that does
    /// not verify, usually) or the HTTP tunnel's GET (`Refused`, `ProtocolError`). Retried
    /// with the backoff like any failure; the outcome is the camera's last failure (the shell
    /// keeps the reason in words with its route's health).
    pub fn handle_link_failed(&mut self, outcome: CameraOutcome, now: Instant) {
        if matches!(self.state, State::Starting | State::Playing | State::Connecting { .. }) {
            self.fail(outcome, now, false);
        }
    }

    /// The camera closed the connection (or reset it).
    pub fn handle_camera_closed(&mut self, now: Instant) {
        if matches!(self.state, State::Starting | State::Playing | State::Connecting { .. }) {
            self.fail(CameraOutcome::ClosedByCamera, now, false);
        }
    }

    /// Bytes from the camera. Media frames go to `media` (payload ranges index `chunk`); the
    /// rest to the output queue.
    pub fn handle_camera_bytes(&mut self, now: Instant, chunk: &mut [u8], media: &mut Vec<MediaFrame>) {
        if !matches!(self.state, State::Starting | State::Playing) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let mut events = std::mem::take(&mut conn.events);
        let mut split = std::mem::take(&mut conn.split);
        events.clear();
        if conn.demux.feed(&*chunk, &mut events).is_err() {
            self.fail(CameraOutcome::ProtocolError, now, true);
            return;
        }
        for event in events.drain(..) {
            match event {
                Event::Frames { range, .. } => {
                    let Some(conn) = self.conn.as_mut() else { break };
                    conn.splitter.split(&*chunk, range, &mut split);
                    for frame in split.drain(..) {
                        self.on_frame(frame, chunk, now, media);
                    }
                }
                Event::Message(msg) if msg.is_request() => self.answer_camera_request(&msg),
                Event::Message(msg) => self.on_response(msg, now),
            }
            if self.conn.is_none() {
                return;
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.events = events;
            conn.split = split;
        }
    }

    /// Time passes: timeouts, keepalives, reconnects, the end of the linger.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Idle | State::Stopped) {
            return;
        }
        if !self.demand.wants_camera(now) {
            self.end_connection(now);
            self.enter(State::Idle, now);
            return;
        }
        match self.state {
            State::Retrying { at } if now >= at => {
                if self.demand.wants_reconnect() {
                    self.stats.reconnects += 1;
                    self.out.push_back(CameraOutput::Reconnecting);
                    self.connect(now);
                } else {
                    self.enter(State::Idle, now);
                }
            }
            State::Connecting { deadline } if now >= deadline => self.fail(CameraOutcome::ConnectTimeout, now, true),
            State::Starting | State::Playing => {
                let Some(conn) = self.conn.as_ref() else { return };
                if let Some(p) = &conn.pending {
                    if now >= p.sent_at + self.params.response_timeout {
                        self.fail(CameraOutcome::ResponseTimeout, now, true);
                    }
                    return;
                }
                if self.state != State::Playing {
                    return;
                }
                if now >= conn.last_frame + self.params.media_timeout {
                    self.fail(CameraOutcome::MediaTimeout, now, true);
                } else if conn.next_keepalive.is_some_and(|k| now >= k) {
                    self.keepalive(now);
                }
            }
            _ => {}
        }
    }

    fn connect(&mut self, now: Instant) {
        self.stats.connections += 1;
        let seed = self.params.seed ^ self.stats.connections.wrapping_mul(super::rng::GOLDEN_GAMMA);
        self.conn = Some(Conn {
            demux: Demux::new(self.params.limits),
            splitter: FrameSplitter::new(),
            auth: self.live_credentials().cloned().map(|c| UpstreamAuth::new(c, seed)),
            cseq: 0,
            pending: None,
            session: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            get_parameter: false,
            building: None,
            channels: Box::new([None; 256]),
            next_keepalive: None,
            last_frame: now,
            playing_since: None,
            key_timestamp: None,
            key_start_seen: false,
            // Viewers got packets of an earlier connection (continuity kept): they are mid-stream.
            resync: !self.continuity.is_empty(),
            events: Vec::new(),
            split: Vec::new(),
        });
        self.continuity.iter_mut().for_each(TrackContinuity::reconnected);
        self.enter(State::Connecting { deadline: now + self.params.connect_timeout }, now);
        self.out.push_back(CameraOutput::Connect(self.live_addr()));
    }

    /// The relay leaves the camera on purpose: TEARDOWN (if a session exists), disconnect.
    fn end_connection(&mut self, now: Instant) {
        self.teardown();
        self.drop_connection(CameraOutcome::Completed, now, true);
        self.backoff.reset();
        // Nobody watches any more: the next viewer may start on the camera's own numbering.
        self.continuity.clear();
        // And on the primary.
        if self.source.live() == Source::Fallback {
            self.source.reset();
            self.out.push_back(CameraOutput::SourceChanged(Source::Primary));
        }
    }

    /// Queues a TEARDOWN of the camera's session, if one exists.
    fn teardown(&mut self) {
        let Some(conn) = self.conn.as_ref() else { return };
        // Mid-SETUP the session already exists at the camera: its URL is in the description
        // being set up.
        if let (Some(_), Some(p)) = (&conn.session, conn.building.as_ref().or(self.presentation.as_ref())) {
            let mut req = self.request("TEARDOWN", &p.aggregate_url.clone());
            if let Some(conn) = self.conn.as_mut() {
                conn.cseq += 1;
                req.set_header("CSeq", conn.cseq.to_string());
                if let Some(auth) = conn.auth.as_mut() {
                    auth.authorize(&mut req);
                }
            }
            self.out.push_back(CameraOutput::Send(req.to_bytes()));
        }
    }

    /// The connection ended badly: reconnect later if someone still wants the camera.
    fn fail(&mut self, outcome: CameraOutcome, now: Instant, disconnect: bool) {
        if self
            .conn
            .as_ref()
            .and_then(|c| c.playing_since)
            .is_some_and(|t| now.saturating_duration_since(t) >= self.backoff.max())
        {
            // It played long enough: this is a new failure, not the same one again.
            self.backoff.reset();
        }
        self.drop_connection(outcome, now, disconnect);
        let next = if self.demand.wants_reconnect() {
            if self.source.on_failure() == AfterFailure::SwitchedToFallback {
                // Another camera: no reason to wait (from the next tick, not inside the
                // handling of the failed connection's bytes); its failures start the backoff
                // afresh.
                self.backoff.reset();
                self.out.push_back(CameraOutput::SourceChanged(Source::Fallback));
                State::Retrying { at: now }
            } else {
                State::Retrying { at: now + self.backoff.next_delay() }
            }
        } else {
            State::Idle
        };
        self.enter(next, now);
    }

    fn drop_connection(&mut self, outcome: CameraOutcome, now: Instant, disconnect: bool) {
        let Some(conn) = self.conn.take() else { return };
        if disconnect {
            self.out.push_back(CameraOutput::Disconnect);
        }
        if conn.playing_since.is_some() {
            self.out.push_back(CameraOutput::Down);
        }
        self.out.push_back(CameraOutput::Ended(outcome));
        self.last_end_failed = !matches!(outcome, CameraOutcome::Completed | CameraOutcome::Reloaded);
        if self.last_end_failed {
            self.last_failure = Some((outcome, now));
        }
        if let Some(gop) = self.gop.as_mut() {
            gop.clear();
        }
        self.next_rtp.iter_mut().for_each(|p| *p = None);
        self.enter(State::Idle, now);
    }

    /// A request with the headers every request carries (not yet its CSeq).
    fn request(&self, method: &str, url: &str) -> Message {
        let mut m = Message::request(method, url);
        m.headers.push(("User-Agent".to_owned(), USER_AGENT.to_owned()));
        if let Some(session) = self.conn.as_ref().and_then(|c| c.session.clone()) {
            m.headers.push(("Session".to_owned(), session));
        }
        m
    }

    fn send(&mut self, purpose: Purpose, mut request: Message, now: Instant) {
        let Some(conn) = self.conn.as_mut() else { return };
        conn.cseq += 1;
        request.set_header("CSeq", conn.cseq.to_string());
        let mut wire = request.clone();
        let authorized = conn.auth.as_mut().is_some_and(|a| a.authorize(&mut wire));
        conn.pending = Some(Pending { cseq: conn.cseq, purpose, request, authorized, sent_at: now });
        self.out.push_back(CameraOutput::Send(wire.to_bytes()));
    }

    fn keepalive(&mut self, now: Instant) {
        let (Some(conn), Some(p)) = (self.conn.as_mut(), self.presentation.as_ref()) else { return };
        conn.next_keepalive = Some(now + keepalive_interval(conn.session_timeout));
        let method = if conn.get_parameter { "GET_PARAMETER" } else { "OPTIONS" };
        let url = p.aggregate_url.clone();
        let req = self.request(method, &url);
        self.send(Purpose::Keepalive, req, now);
    }

    /// Cameras may send requests of their own (GET_PARAMETER, SET_PARAMETER as keepalives,
    /// ANNOUNCE): the harmless ones are acknowledged, the rest are declined.
    fn answer_camera_request(&mut self, msg: &Message) {
        let Some(cseq) = msg.cseq() else { return };
        let status = match msg.method() {
            Some("OPTIONS" | "GET_PARAMETER" | "SET_PARAMETER") => (200, "OK"),
            _ => (501, "Not Implemented"),
        };
        let mut r = Message::response(status.0, status.1);
        r.headers.push(("CSeq".to_owned(), cseq.to_string()));
        if let Some(s) = self.conn.as_ref().and_then(|c| c.session.clone()) {
            r.headers.push(("Session".to_owned(), s));
        }
        self.out.push_back(CameraOutput::Send(r.to_bytes()));
    }

    fn on_response(&mut self, msg: Message, now: Instant) {
        let live_url = self.live_url().to_owned();
        let Some(conn) = self.conn.as_mut() else { return };
        // A camera that leaves out CSeq can only be answering the one request outstanding.
        let matches = conn.pending.as_ref().is_some_and(|p| msg.cseq().is_none_or(|c| c == p.cseq));
        if !matches {
            return;
        }
        let Some(p) = conn.pending.take() else { return };
        let status = msg.status().unwrap_or(0);
        let exchange = CameraExchange {
            method: static_method(p.request.method().unwrap_or("")),
            uri: p.request.uri().unwrap_or("").to_owned(),
            status,
            latency: now.saturating_duration_since(p.sent_at),
        };
        self.out.push_back(CameraOutput::Exchange(exchange));
        if status == 401 {
            let retry = conn.auth.as_mut().is_some_and(|a| a.on_unauthorized(&msg, p.authorized) == AuthVerdict::Retry);
            if retry {
                self.send(p.purpose, p.request, now);
            } else {
                self.fail(CameraOutcome::AuthFailed, now, true);
            }
            return;
        }
        if p.authorized {
            if let Some(a) = conn.auth.as_mut() {
                a.on_accepted();
            }
        }
        let ok = (200..300).contains(&status);
        if let Some(s) = msg.header("Session") {
            let SessionHeader { id, timeout } = SessionHeader::parse(s);
            // Adopted from DESCRIBE (Wowza opens it there) or SETUP; a camera echoing some
            // other session in an OPTIONS answer does not give us one.
            let opens = matches!(p.purpose, Purpose::Describe | Purpose::Setup(_));
            if conn.session.is_none() && ok && opens && !id.is_empty() {
                conn.session = Some(id.to_owned());
            }
            if let Some(t) = timeout {
                conn.session_timeout = t;
            }
        }
        match p.purpose {
            Purpose::Options => {
                // A camera that refuses OPTIONS may still describe: only `Public` is lost.
                conn.get_parameter =
                    ok && msg.header("Public").is_some_and(|p| Public::parse(p).allows("GET_PARAMETER"));
                let mut req = self.request("DESCRIBE", &live_url);
                req.headers.push(("Accept".to_owned(), "application/sdp".to_owned()));
                self.send(Purpose::Describe, req, now);
            }
            Purpose::Describe if !ok => self.fail(CameraOutcome::Refused, now, true),
            Purpose::Describe => match Presentation::from_describe(&msg, &live_url) {
                Some(p) => {
                    conn.building = Some(p);
                    self.setup(0, now);
                }
                None => self.fail(CameraOutcome::BadDescription, now, true),
            },
            Purpose::Setup(i) => {
                let requested = channels_for(i);
                let channels = match msg.header("Transport").map(Transport::parse) {
                    _ if !ok => None,
                    None => Some(requested),
                    // The first `interleaved=` the camera chose, whichever alternative holds it.
                    Some(t) if t.specs.iter().any(TransportSpec::is_interleaved_tcp) => {
                        Some(t.specs.iter().find_map(TransportSpec::interleaved).unwrap_or(requested))
                    }
                    Some(_) => None,
                };
                // Two tracks on one channel could not be told apart.
                let taken = |c: (u8, u8)| {
                    conn.building.as_ref().is_some_and(|b| {
                        b.tracks[..i]
                            .iter()
                            .filter_map(|t| t.channels)
                            .any(|(r, s)| [r, s].contains(&c.0) || [r, s].contains(&c.1))
                    })
                };
                let channels = channels.filter(|c| c.0 != c.1 && !taken(*c));
                if let Some(t) = conn.building.as_mut().and_then(|b| b.tracks.get_mut(i)) {
                    t.channels = channels;
                }
                self.setup(i + 1, now);
            }
            Purpose::Play if !ok => self.fail(CameraOutcome::Refused, now, true),
            Purpose::Play => {
                conn.playing_since = Some(now);
                conn.last_frame = now;
                conn.next_keepalive = Some(now + keepalive_interval(conn.session_timeout));
                if let (Some(info), Some(p)) = (msg.header("RTP-Info"), self.presentation.as_ref()) {
                    for (track, pos) in rtp_info_positions(info, p) {
                        if self.next_rtp[track].is_none() {
                            self.next_rtp[track] = Some(pos);
                        }
                    }
                }
                self.enter(State::Playing, now);
                self.out.push_back(CameraOutput::Up);
            }
            // The camera no longer knows the session: the stream is gone with it.
            Purpose::Keepalive if status == 454 => self.fail(CameraOutcome::Refused, now, true),
            Purpose::Keepalive => {
                if !ok && conn.get_parameter {
                    // Listed but refused (seen on Dahua firmwares): OPTIONS from now on.
                    conn.get_parameter = false;
                }
            }
        }
    }

    /// SETUP of track `i` onwards (the next one), or PLAY when every track has been tried.
    fn setup(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conn.as_mut() else { return };
        let Some(building) = conn.building.as_ref() else { return };
        if let Some(track) = building.tracks.get(i) {
            let url = track.url.clone();
            let (rtp, rtcp) = channels_for(i);
            let mut req = self.request("SETUP", &url);
            req.headers.push(("Transport".to_owned(), TransportSpec::interleaved_tcp(rtp, rtcp).to_string()));
            self.send(Purpose::Setup(i), req, now);
            return;
        }
        let Some(mut p) = conn.building.take() else { return };
        if p.tracks.iter().all(|t| t.channels.is_none()) {
            self.fail(CameraOutcome::Refused, now, true);
            return;
        }
        p.finish();
        conn.channels.fill(None);
        for (i, t) in p.tracks.iter().enumerate() {
            if let Some((rtp, rtcp)) = t.channels {
                conn.channels[usize::from(rtp)] = Some((i, false));
                conn.channels[usize::from(rtcp)] = Some((i, true));
            }
        }
        if self.presentation.as_ref().is_some_and(|old| !old.compatible(&p)) {
            self.out.push_back(CameraOutput::PresentationChanged);
            self.continuity.clear();
        }
        if self.continuity.len() != p.tracks.len() {
            self.continuity =
                p.tracks.iter().map(|t| TrackContinuity::new(t.sdp.clock_rate.unwrap_or(90_000))).collect();
        }
        self.next_rtp = vec![None; p.tracks.len()];
        let url = p.aggregate_url.clone();
        self.presentation = Some(p);
        if let Some(gop) = self.gop.as_mut() {
            gop.clear();
        }
        let mut req = self.request("PLAY", &url);
        req.headers.push(("Range".to_owned(), "npt=0.000-".to_owned()));
        self.send(Purpose::Play, req, now);
    }

    fn on_frame(&mut self, mut frame: SplitFrame, chunk: &mut [u8], now: Instant, media: &mut Vec<MediaFrame>) {
        let Some(conn) = self.conn.as_mut() else { return };
        self.stats.frames += 1;
        self.stats.bytes += frame.payload.len() as u64;
        conn.last_frame = now;
        let Some((track, rtcp)) = conn.channels[usize::from(frame.channel)] else {
            self.stats.unknown_channel_frames += 1;
            return;
        };
        if conn.resync && !rtcp {
            // Read before any rewriting, so the held-back packets leave no gap in the
            // sequence numbers viewers see.
            let key = self.presentation.as_ref().filter(|p| p.key_track == Some(track));
            if let Some(p) = key {
                let starts = p
                    .key_classifier
                    .and_then(|c| c.classify(frame.payload.bytes(chunk)))
                    .is_some_and(|v| v.keyframe || v.parameter_sets);
                if !starts {
                    self.stats.resync_dropped += 1;
                    return;
                }
                conn.resync = false;
            }
        }
        if let Some(c) = self.continuity.get_mut(track) {
            let mut assembled = None;
            let bytes: &mut [u8] = match &mut frame.payload {
                FramePayload::InChunk(r) => &mut chunk[r.clone()],
                FramePayload::Assembled(b) => assembled.insert(Vec::from(std::mem::take(b))),
            };
            let forward = if rtcp {
                c.rtcp(bytes) == RtcpVerdict::Forward
            } else {
                c.rtp(bytes, now);
                true
            };
            if let Some(v) = assembled {
                frame.payload = FramePayload::Assembled(bytes::Bytes::from(v));
            }
            if !forward {
                self.stats.rtcp_dropped += 1;
                return;
            }
        }
        let chunk: &[u8] = chunk;
        let bytes = frame.payload.bytes(chunk);
        let p = self.presentation.as_ref();
        let kind = if rtcp {
            FrameKind::Control
        } else if p.is_some_and(|p| p.key_track == Some(track)) {
            match p.and_then(|p| p.key_classifier).and_then(|c| c.classify(bytes)) {
                Some(v) => {
                    let au_start = conn.key_timestamp != Some(v.timestamp);
                    if au_start {
                        conn.key_timestamp = Some(v.timestamp);
                        conn.key_start_seen = false;
                    }
                    if let Some(gop) = self.gop.as_mut() {
                        gop.push_video(frame.channel, track, bytes, &v);
                    }
                    if (v.keyframe || v.parameter_sets) && !conn.key_start_seen {
                        conn.key_start_seen = true;
                        FrameKind::KeyframeStart
                    } else if au_start {
                        FrameKind::AccessUnitStart
                    } else {
                        FrameKind::VideoContinuation
                    }
                }
                None => FrameKind::VideoContinuation,
            }
        } else {
            if let Some(gop) = self.gop.as_mut() {
                gop.push_other(frame.channel, track, bytes);
            }
            FrameKind::Other
        };
        if let Some(bound) = self.gop.as_mut().and_then(GopCache::take_overflow) {
            self.out.push_back(CameraOutput::GopCacheOverflow(bound));
        }
        if !rtcp {
            if let (Some(h), Some(slot)) = (RtpHeader::parse(bytes), self.next_rtp.get_mut(track)) {
                *slot = Some(RtpPosition { seq: h.seq.wrapping_add(1), rtptime: h.timestamp });
            }
        }
        media.push(MediaFrame { channel: frame.channel, track, rtcp, kind, payload: frame.payload });
    }
}

/// The methods this session sends, as static names for the log.
fn static_method(m: &str) -> &'static str {
    ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"].into_iter().find(|k| *k == m).unwrap_or("?")
}

/// Interleaved channels requested for track `i`.
fn channels_for(i: usize) -> (u8, u8) {
    let rtp = (2 * i).min(254) as u8;
    (rtp, rtp + 1)
}

/// Half the session timeout (at least a second): the camera hears from us twice per period.
fn keepalive_interval(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_secs(1))
}

/// The camera's `RTP-Info` matched to tracks: by URL (absolute, or relative to the track's),
/// else in order among the tracks set up.
fn rtp_info_positions(value: &str, p: &Presentation) -> Vec<(usize, RtpPosition)> {
    let entries = RtpInfo::parse(value).entries;
    let set_up: Vec<usize> = (0..p.tracks.len()).filter(|&i| p.tracks[i].channels.is_some()).collect();
    let mut out = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        let (Some(seq), Some(rtptime)) = (e.seq, e.rtptime) else { continue };
        let url = e.url.trim_end_matches('/');
        let by_url = set_up.iter().copied().find(|&i| {
            let t = &p.tracks[i];
            let mine = t.url.trim_end_matches('/');
            !url.is_empty()
                && (mine == url
                    || mine.ends_with(&format!("/{}", url.trim_start_matches('/')))
                    || t.sdp.control.as_deref().is_some_and(|c| url.ends_with(c.trim_end_matches('/'))))
        });
        if let Some(track) = by_url.or_else(|| (entries.len() == set_up.len()).then(|| set_up[n])) {
            out.push((track, RtpPosition { seq, rtptime }));
        }
    }
    out
}

mod fallback;

#[cfg(test)]
mod tests;
