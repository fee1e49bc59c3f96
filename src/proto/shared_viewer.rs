//! One viewer of a shared camera: the relay is its RTSP server, and the camera never hears of
//! it.
//!
//! Every request is answered from what the [`CameraSession`](super::camera_session) already
//! knows ([`CameraView`]):
//! - OPTIONS: the methods below.
//! - DESCRIBE: the camera's SDP (tracks the camera would not set up left out), its URLs
//!   rewritten to the viewer's view of the route ([`rewrite_to_client`]): `Content-Base` and
//!   absolute `a=control:` lines mapped, relative controls kept relative as the camera wrote them.
//! - SETUP: the track named by the URL, over TCP interleaved only (UDP cannot cross the tunnel
//!   nor the relay: `461`), on the channels the viewer asks for (viewers choose different ones:
//!   each frame's `$` channel byte is rewritten per viewer, its RTP bytes are not), in a session
//!   whose id the relay makes up.
//! - PLAY: joins the fan-out. `RTP-Info` gives, per track, the sequence number and RTP time of
//!   the first packet this viewer will receive (FFmpeg and GStreamer align their streams with
//!   it): the first packet of the GOP cache when it holds a keyframe (the viewer gets the cache
//!   first, [`ViewerOutput::Play`]), else the next live packet. `Range` is answered
//!   `npt=now-` whatever was asked (a live camera has no other position), `Scale`/`Speed` other
//!   than 1 are ignored and the answer says `Scale: 1`.
//! - PAUSE: leaves the fan-out (nothing is buffered for a paused viewer of a live camera); the
//!   next PLAY rejoins at live, with the GOP cache.
//! - GET_PARAMETER / SET_PARAMETER without a body: keepalives (`451` for named parameters:
//!   the relay has none, and a camera's settings are not the viewer's to change).
//! - TEARDOWN: leaves and ends the session; the connection stays for the viewer to close.
//!
//! Requests that need the camera (DESCRIBE and SETUP its description, PLAY its media) wait
//! while it is starting, in order, for at most `camera_wait`; then `503`. The caller admits each
//! request first (route address lists and users), exactly as for the 1:1 session.
//!
//! The viewer must show signs of life (a request or an RTCP frame) within 1.25 × the session
//! timeout it was given, or it is closed: with a shared camera the camera no longer times
//! sessions out for the relay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::camera_request;
use super::camera_session::{CameraPhase, CameraView, Presentation};
use super::gop_cache::CachedFrame;
use super::outcome::Rejection;
use super::rewrite::{HandedOut, UriRefusal, UrlMap, rewrite_to_client};
use super::rng::SplitMix64;
use super::rtsp::Message;
use super::rtsp_headers::{RtpInfo, RtpInfoEntry, SessionHeader, Transport, TransportSpec};
use super::rtsp_url::RtspUrl;

const SERVER: &str = "rtsp-tunnel-relay";

/// Fixed parameters of a viewer.
#[derive(Debug, Clone)]
pub struct ViewerParams {
    /// Randomness from the shell for the session id.
    pub session_seed: u64,
    /// Announced as `Session: id;timeout=N`.
    pub session_timeout: Duration,
    /// How long a request may wait for the camera before `503`.
    pub camera_wait: Duration,
    /// Requests waiting at once; more are answered `503` at once.
    pub max_pending: usize,
}

/// Why a viewer was closed by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewerOutcome {
    /// Silent past its session timeout.
    Timeout,
    /// A request without `CSeq`.
    ProtocolError,
}

/// One request and its answer, for the operator's debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerExchange {
    pub method: String,
    /// The request URI as the viewer sent it.
    pub uri: String,
    pub status: u16,
    /// Time the request waited for the camera.
    pub waited: Duration,
}

/// What the shell must do for this viewer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerOutput {
    /// Queue this RTSP answer to the viewer.
    Send(Vec<u8>),
    /// The viewer joins the fan-out: queue `replay` (the GOP cache, this viewer's tracks only;
    /// `$` headers from [`SharedViewer::frame_header`]) then every live frame of its tracks.
    /// `replay_bytes` is what the slow-viewer policy should allow as a burst.
    Play {
        replay: Vec<CachedFrame>,
        replay_bytes: usize,
        /// When the PLAY arrived (time to first frame counts from here).
        asked_at: Instant,
    },
    /// The viewer leaves the fan-out (PAUSE, TEARDOWN); its connection stays.
    Stop,
    /// A request refused for this reason (counted), answered, the session going on.
    Refused(Rejection),
    Exchange(ViewerExchange),
    /// Close the viewer once the bytes queued to it are written.
    Close(ViewerOutcome),
}

/// A track this viewer set up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ViewerTrack {
    rtp: u8,
    rtcp: u8,
    /// The URL the viewer set it up with (what its `RTP-Info` entry names).
    uri: String,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SharedViewer {
    params: ViewerParams,
    map: UrlMap,
    session_id: Option<String>,
    sessions_made: u64,
    /// Per camera track.
    tracks: Vec<Option<ViewerTrack>>,
    playing: bool,
    pending: VecDeque<(Message, Instant)>,
    last_activity: Instant,
    out: VecDeque<ViewerOutput>,
    /// PLAY's join (the replay and its size), queued right after its answer.
    join: Option<(Vec<CachedFrame>, usize)>,
    closed: bool,
}

/// What became of a request.
enum Handled {
    Answered(Box<Message>),
    /// Needs the camera further along; try again later.
    Wait,
}

fn answered(reply: Message) -> Handled {
    Handled::Answered(Box::new(reply))
}

impl SharedViewer {
    /// `map`: the route as this viewer addresses it and the camera URL.
    pub fn new(params: ViewerParams, map: UrlMap, now: Instant) -> Self {
        SharedViewer {
            params,
            map,
            session_id: None,
            sessions_made: 0,
            tracks: Vec::new(),
            playing: false,
            pending: VecDeque::new(),
            last_activity: now,
            out: VecDeque::new(),
            join: None,
            closed: false,
        }
    }

    pub fn poll_output(&mut self) -> Option<ViewerOutput> {
        let next = self.out.pop_front();
        if next.is_none() {
            // Answers come a few times in a viewer's life: their room is not kept for it.
            super::room::release_if_empty(&mut self.out);
            super::room::release_if_empty(&mut self.pending);
        }
        next
    }

    /// When [`SharedViewer::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let idle = self.last_activity + self.idle_limit();
        let waiting = self.pending.front().map(|(_, at)| *at + self.params.camera_wait);
        Some(waiting.map_or(idle, |w| w.min(idle)))
    }

    fn idle_limit(&self) -> Duration {
        self.params.session_timeout + self.params.session_timeout / 4
    }

    /// The route now maps to another camera URL (a reload moved its camera): later requests
    /// and descriptions are mapped with `map`.
    pub fn set_url_map(&mut self, map: UrlMap) {
        self.map = map;
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether the viewer receives the camera's frames.
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// The interleaved channel this viewer receives `track`'s RTP (or RTCP) on, while playing.
    pub fn channel_for(&self, track: usize, rtcp: bool) -> Option<u8> {
        if !self.playing {
            return None;
        }
        let t = self.tracks.get(track)?.as_ref()?;
        Some(if rtcp { t.rtcp } else { t.rtp })
    }

    /// The `$` header of a frame of `track` for this viewer (`None`: not for this viewer).
    pub fn frame_header(&self, track: usize, rtcp: bool, len: usize) -> Option<[u8; 4]> {
        super::interleaved::frame_header(self.channel_for(track, rtcp)?, len)
    }

    /// The viewer sent an interleaved frame (RTCP receiver report): it is alive.
    pub fn handle_viewer_frame(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// An admitted request from the viewer.
    pub fn handle_request(&mut self, msg: Message, camera: &CameraView<'_>, now: Instant) {
        if self.closed || !msg.is_request() {
            return;
        }
        self.last_activity = now;
        if self.pending.len() >= self.params.max_pending.max(1) {
            let reply = self.reply(&msg, 503, "Service Unavailable");
            self.answer(&msg, reply, now, now);
            return;
        }
        self.pending.push_back((msg, now));
        self.run_pending(camera, now);
    }

    /// The camera changed (up, down, described): requests waiting for it are answered if they
    /// can be.
    pub fn handle_camera_change(&mut self, camera: &CameraView<'_>, now: Instant) {
        self.run_pending(camera, now);
    }

    /// Time passes: requests that waited too long for the camera, silent viewers.
    pub fn handle_timeout(&mut self, camera: &CameraView<'_>, now: Instant) {
        if self.closed {
            return;
        }
        while let Some((msg, at)) = self.pending.front() {
            if now < *at + self.params.camera_wait {
                break;
            }
            let at = *at;
            let msg = msg.clone();
            self.pending.pop_front();
            let reply = self.reply(&msg, 503, "Service Unavailable");
            self.answer(&msg, reply, at, now);
        }
        self.run_pending(camera, now);
        if now >= self.last_activity + self.idle_limit() {
            self.close(ViewerOutcome::Timeout);
        }
    }

    fn close(&mut self, outcome: ViewerOutcome) {
        if !self.closed {
            self.closed = true;
            self.pending.clear();
            if self.playing {
                self.playing = false;
                self.out.push_back(ViewerOutput::Stop);
            }
            self.out.push_back(ViewerOutput::Close(outcome));
        }
    }

    fn run_pending(&mut self, camera: &CameraView<'_>, now: Instant) {
        while let Some((msg, arrived)) = self.pending.pop_front() {
            match self.handle(&msg, camera) {
                Handled::Answered(reply) => {
                    self.answer(&msg, *reply, arrived, now);
                    if msg.cseq().is_none() {
                        // Nothing could be matched to its answers: the 1:1 session closes too.
                        self.close(ViewerOutcome::ProtocolError);
                    }
                }
                Handled::Wait => {
                    self.pending.push_front((msg, arrived));
                    return;
                }
            }
            if self.closed {
                return;
            }
        }
    }

    fn answer(&mut self, msg: &Message, reply: Message, arrived: Instant, now: Instant) {
        let e = ViewerExchange {
            method: msg.method().unwrap_or("").to_owned(),
            uri: msg.uri().unwrap_or("").to_owned(),
            status: reply.status().unwrap_or(0),
            waited: now.saturating_duration_since(arrived),
        };
        self.out.push_back(ViewerOutput::Send(reply.to_bytes()));
        self.out.push_back(ViewerOutput::Exchange(e));
        // PLAY's media follows its answer.
        if let Some((replay, replay_bytes)) = self.join.take() {
            self.out.push_back(ViewerOutput::Play { replay, replay_bytes, asked_at: arrived });
        }
    }

    /// An answer to `msg` with the headers every answer carries.
    fn reply(&self, msg: &Message, status: u16, reason: &str) -> Message {
        let mut r = Message::response(status, reason);
        if let Some(cseq) = msg.cseq() {
            r.headers.push(("CSeq".to_owned(), cseq.to_string()));
        }
        r.headers.push(("Server".to_owned(), SERVER.to_owned()));
        if let Some(id) = &self.session_id {
            let given = msg.header("Session").map(SessionHeader::id_of);
            if given == Some(id.as_str()) || status == 200 && msg.method() == Some("SETUP") {
                let session = SessionHeader { id, timeout: Some(self.params.session_timeout) };
                r.headers.push(("Session".to_owned(), session.to_string()));
            }
        }
        r
    }

    fn handle(&mut self, msg: &Message, camera: &CameraView<'_>) -> Handled {
        if msg.cseq().is_none() || !camera_request::is_clean(msg) {
            return answered(self.reply(msg, 400, "Bad Request"));
        }
        if let Some(required) = msg.header("Require") {
            // The relay implements no extensions (RFC 2326 §12.32).
            let mut r = self.reply(msg, 551, "Option not supported");
            r.headers.push(("Unsupported".to_owned(), required.trim().to_owned()));
            return answered(r);
        }
        let method = msg.method().unwrap_or("");
        // The same confinement as a request passed on to a camera: within the route (dot
        // segments resolved), or at or below a URL the camera's description gave out.
        let given: &[HandedOut] = camera.presentation.map_or(&[], |p| &p.handed_out);
        match self.map.camera_uri(msg.uri().unwrap_or(""), method == "OPTIONS", given) {
            Ok(_) => {}
            Err(UriRefusal::OutsideRoute) => {
                self.out.push_back(ViewerOutput::Refused(Rejection::OutsideRoute));
                return answered(self.reply(msg, 404, "Not Found"));
            }
            Err(UriRefusal::Malformed) => {
                self.out.push_back(ViewerOutput::Refused(Rejection::BadRequestUri));
                return answered(self.reply(msg, 400, "Bad Request"));
            }
        }
        let session_given = msg.header("Session").map(SessionHeader::id_of);
        let ours = session_given.is_some() && session_given == self.session_id.as_deref();
        if session_given.is_some() && !ours {
            return answered(self.reply(msg, 454, "Session Not Found"));
        }
        let reply = match method {
            "OPTIONS" => {
                let mut r = self.reply(msg, 200, "OK");
                r.headers.push(("Public".to_owned(), camera_request::public().to_string()));
                r
            }
            "DESCRIBE" => return self.describe(msg, camera),
            "SETUP" => return self.setup(msg, camera),
            "PLAY" if !ours => self.reply(msg, 454, "Session Not Found"),
            "PLAY" => return self.play(msg, camera),
            "PAUSE" | "TEARDOWN" if !ours => self.reply(msg, 454, "Session Not Found"),
            "PAUSE" => {
                self.leave();
                self.reply(msg, 200, "OK")
            }
            "TEARDOWN" => {
                self.leave();
                let r = self.reply(msg, 200, "OK");
                self.tracks.clear();
                self.session_id = None;
                r
            }
            "GET_PARAMETER" | "SET_PARAMETER" if msg.body.iter().any(|b| !b.is_ascii_whitespace()) => {
                self.reply(msg, 451, "Parameter Not Understood")
            }
            "GET_PARAMETER" | "SET_PARAMETER" => self.reply(msg, 200, "OK"),
            "ANNOUNCE" | "RECORD" | "REDIRECT" => {
                let mut r = self.reply(msg, 405, "Method Not Allowed");
                r.headers.push(("Allow".to_owned(), camera_request::public().to_string()));
                r
            }
            _ => self.reply(msg, 501, "Not Implemented"),
        };
        answered(reply)
    }

    fn leave(&mut self) {
        if self.playing {
            self.playing = false;
            self.out.push_back(ViewerOutput::Stop);
        }
    }

    /// The description, or why there is none yet.
    fn presentation<'a>(&self, msg: &Message, camera: &CameraView<'a>) -> Result<&'a Presentation, Handled> {
        match camera.presentation {
            Some(p) => Ok(p),
            None if matches!(camera.phase, CameraPhase::Starting) => Err(Handled::Wait),
            // Failed, retrying or stopped: the viewer learns now rather than after the wait.
            None => Err(answered(self.reply(msg, 503, "Service Unavailable"))),
        }
    }

    fn describe(&mut self, msg: &Message, camera: &CameraView<'_>) -> Handled {
        let p = match self.presentation(msg, camera) {
            Ok(p) => p,
            Err(h) => return h,
        };
        if let Some(accept) = msg.header("Accept") {
            let sdp = accept.split(',').any(|t| {
                let t = t.split(';').next().unwrap_or("").trim();
                t.eq_ignore_ascii_case("application/sdp") || t == "*/*" || t.eq_ignore_ascii_case("application/*")
            });
            if !sdp {
                return answered(self.reply(msg, 406, "Not Acceptable"));
            }
        }
        let mut r = self.reply(msg, 200, "OK");
        r.headers.push(("Content-Base".to_owned(), p.content_base.clone()));
        r.headers.push(("Content-Type".to_owned(), "application/sdp".to_owned()));
        r.body = bytes::Bytes::from(p.viewer_sdp.clone());
        rewrite_to_client(&mut r, &self.map);
        answered(r)
    }

    fn setup(&mut self, msg: &Message, camera: &CameraView<'_>) -> Handled {
        let p = match self.presentation(msg, camera) {
            Ok(p) => p,
            Err(h) => return h,
        };
        if self.playing {
            return answered(self.reply(msg, 455, "Method Not Valid in This State"));
        }
        let uri = msg.uri().unwrap_or("");
        let Some(track) = self.track_for(uri, p) else {
            return answered(self.reply(msg, 404, "Not Found"));
        };
        self.tracks.resize(p.tracks.len(), None);
        let taken: Vec<u8> = self
            .tracks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != track)
            .filter_map(|(_, t)| t.as_ref())
            .flat_map(|t| [t.rtp, t.rtcp])
            .collect();
        let Some((rtp, rtcp)) = msg.header("Transport").and_then(|t| choose_channels(t, &taken)) else {
            let mut r = self.reply(msg, 461, "Unsupported Transport");
            r.headers.push(("Transport".to_owned(), TransportSpec::interleaved_tcp(0, 1).to_string()));
            return answered(r);
        };
        self.tracks[track] = Some(ViewerTrack { rtp, rtcp, uri: uri.to_owned() });
        if self.session_id.is_none() {
            self.sessions_made += 1;
            self.session_id = Some(format!("{:016X}", SplitMix64::nth(self.params.session_seed, self.sessions_made)));
        }
        let mut r = self.reply(msg, 200, "OK");
        r.headers.push(("Transport".to_owned(), TransportSpec::interleaved_tcp(rtp, rtcp).to_string()));
        answered(r)
    }

    fn play(&mut self, msg: &Message, camera: &CameraView<'_>) -> Handled {
        if self.tracks.iter().all(Option::is_none) {
            return answered(self.reply(msg, 455, "Method Not Valid in This State"));
        }
        match camera.phase {
            CameraPhase::Playing => {}
            CameraPhase::Starting | CameraPhase::Retrying => return Handled::Wait,
            CameraPhase::Idle | CameraPhase::Stopped => {
                return answered(self.reply(msg, 503, "Service Unavailable"));
            }
        }
        let gop = camera.gop.filter(|g| g.is_ready());
        let mut info = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let Some(t) = t else { continue };
            let first = gop
                .and_then(|g| g.first_rtp(i))
                .or_else(|| camera.next_rtp.get(i).copied().flatten().map(|p| (p.seq, p.rtptime)));
            let (seq, rtptime) = first.map_or((None, None), |(seq, rtptime)| (Some(seq), Some(rtptime)));
            info.push(RtpInfoEntry { url: t.uri.clone(), seq, rtptime });
        }
        let mut r = self.reply(msg, 200, "OK");
        r.headers.push(("Range".to_owned(), "npt=now-".to_owned()));
        if msg.header("Scale").is_some() {
            r.headers.push(("Scale".to_owned(), "1".to_owned()));
        }
        r.headers.push(("RTP-Info".to_owned(), RtpInfo { entries: info }.to_string()));
        if !self.playing {
            self.playing = true;
            let replay: Vec<CachedFrame> = gop
                .map(|g| g.frames().filter(|f| self.tracks.get(f.track).is_some_and(Option::is_some)).collect())
                .unwrap_or_default();
            let replay_bytes = replay.iter().map(|f| f.frame.len()).sum();
            self.join = Some((replay, replay_bytes));
        }
        answered(r)
    }

    /// The camera track a SETUP URL names: the URL the viewer was given for it (scheme and
    /// authority aside), else (a URL without a query) the same path whatever the track's
    /// query, else one ending in the track's relative control, else the aggregate URL when
    /// there is one track. Cameras put controls in queries (`…?channel=1/trackID=0`), so paths
    /// alone decide only when the viewer sent no query.
    fn track_for(&self, uri: &str, p: &Presentation) -> Option<usize> {
        let want = path_and_query(uri).trim_end_matches('/');
        let set_up: Vec<usize> = (0..p.tracks.len()).filter(|&i| p.tracks[i].channels.is_some()).collect();
        let viewer_url = |i: usize| self.map.to_client(&p.tracks[i].url);
        let unique = |found: Vec<usize>| (found.len() == 1).then(|| found[0]);
        if let Some(i) = set_up.iter().copied().find(|&i| path_and_query(&viewer_url(i)).trim_end_matches('/') == want)
        {
            return Some(i);
        }
        if !want.contains('?') {
            let same_path = set_up
                .iter()
                .copied()
                .filter(|&i| {
                    let u = viewer_url(i);
                    let pq = path_and_query(&u);
                    pq.split('?').next().unwrap_or(pq).trim_end_matches('/') == want
                })
                .collect();
            if let Some(i) = unique(same_path) {
                return Some(i);
            }
        }
        let by_control = set_up
            .iter()
            .copied()
            .filter(|&i| {
                p.tracks[i].sdp.control.as_deref().is_some_and(|c| {
                    let c = c.trim_matches('/');
                    !c.is_empty() && !c.contains("://") && c != "*" && want.ends_with(&format!("/{c}"))
                })
            })
            .collect();
        if let Some(i) = unique(by_control) {
            return Some(i);
        }
        // A camera whose URLs lie outside the route (a Content-Base of its own), and a viewer
        // that put the control's last segment after the route instead of using the URL given:
        // the segment still names one track.
        let last = |u: &str| u.rsplit('/').next().unwrap_or("").to_owned();
        let by_segment = set_up
            .iter()
            .copied()
            .filter(|&i| {
                let seg = last(path_and_query(&p.tracks[i].url).trim_end_matches('/'));
                !seg.is_empty() && seg == last(want)
            })
            .collect();
        if let Some(i) = unique(by_segment) {
            return Some(i);
        }
        let aggregate = self.map.to_client(&p.aggregate_url);
        (set_up.len() == 1 && path_and_query(&aggregate).trim_end_matches('/') == want).then(|| set_up[0])
    }
}

/// The path and query of a URL or request target (`/` when it has none).
fn path_and_query(url: &str) -> &str {
    RtspUrl::parse(url).path_and_query()
}

/// The interleaved channels for a SETUP's `Transport`: the first TCP alternative for playing,
/// on the channels it names if they are free, else on the lowest free pair. `None`: no TCP
/// alternative (UDP, multicast or recording only).
pub(crate) fn choose_channels(transport: &str, taken: &[u8]) -> Option<(u8, u8)> {
    let transport = Transport::parse(transport);
    let spec = transport
        .specs
        .iter()
        .find(|s| s.protocol_is(&["RTP/AVP/TCP", "RTP/AVPF/TCP"]) && !s.has("multicast") && s.is_for_playing())?;
    match spec.interleaved() {
        Some((a, b)) if a != b && !taken.contains(&a) && !taken.contains(&b) => Some((a, b)),
        _ => (0..=127u8).map(|k| (2 * k, 2 * k + 1)).find(|(a, b)| !taken.contains(a) && !taken.contains(b)),
    }
}

#[cfg(test)]
mod tests;
