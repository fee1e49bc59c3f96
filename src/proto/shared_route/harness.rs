//! A hostile camera and hostile viewers against one [`SharedRoute`], driven by a script of
//! bytes: the `shared_route` fuzz target and a property test run it. The harness plays the
//! shell: it hands out viewer ids, feeds bytes and time, carries out every action, and plays a
//! camera that answers each request with a 200.
//!
//! The camera then sends whatever the script says: raw bytes, `$` frames on any channel with
//! any length (zero, or more than it ever sends), runs of empty frames, RTP that the GOP cache
//! keeps, in receives cut anywhere (a header across two receives among them); it closes and
//! comes back; time jumps. The route has a fallback camera: a closed camera switches it there,
//! and the probe of the primary (a second connection) plays, sends frames, closes; its
//! keyframe brings the route back. Viewers attach, send any request (DESCRIBE, SETUP on any channels,
//! PLAY, PAUSE, TEARDOWN, garbage), detach, and read only when the script says (most never do,
//! some read part of their queue). After every step:
//!
//! - nothing panicked;
//! - every delivery is exactly one whole `$` frame, non-empty pieces, chunk ranges within the
//!   chunk, to a viewer whose last PLAY was answered 200 (and not paused or torn down since),
//!   on a channel an answer to its SETUP gave it;
//! - a replayed packet on the camera's channel is the cache's own memory (no copy per joiner);
//! - what is queued to a viewer stays within the slow-viewer bound (plus the replay burst it
//!   was allowed and one frame); the GOP cache within its bytes and packets; the route's
//!   viewers within those attached; `CameraUp` and `CameraDown` alternate;
//! - one camera connection and one probe connection at most; the probe's connection becomes the
//!   camera's only once the camera's was let go, and only while the fallback was live; the
//!   probe's receives reach viewers only when they brought the route back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, RouteEvent, RouteParams, SharedRoute};
use crate::proto::camera_session::{CameraParams, FallbackParams};
use crate::proto::camera_source::Source;
use crate::proto::fanout_policy::{ENTRY_COST, FanoutLimits, QueueState};
use crate::proto::rewrite::UrlMap;
use crate::proto::rtsp::{Message, MessageLimits, parse_message};
use crate::proto::rtsp_headers::Transport;
use crate::proto::shared_fanout::{Body, Delivery};
use crate::proto::shared_viewer::ViewerParams;

/// An H.264 video track and an audio track.
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=cam\r\nt=0 0\r\na=control:*\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n\
m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n";

pub(super) const CAMERA_URL: &str = "rtsp://10.0.0.5:554/s";
/// The route's fallback camera.
pub(super) const FALLBACK_URL: &str = "rtsp://10.0.0.6:554/sub";
/// The route as viewers address it.
pub(super) const ROUTE_URL: &str = "rtsp://127.0.0.1:8080/cam";
pub(super) const LIMITS: FanoutLimits =
    FanoutLimits { drop_above: 2048, disconnect_above: 8192, max_behind: Duration::from_secs(1) };
const GOP_BYTES: usize = 4096;
const GOP_PACKETS: usize = 24;
/// The most one frame adds to a queue: the largest `$` frame, as header and body.
const MAX_FRAME_COST: usize = 4 + 65535 + 2 * ENTRY_COST;
const VIEWERS: u8 = 6;

/// A 200 to the camera request `req`.
pub(super) fn answer(req: &Message) -> Vec<u8> {
    let mut m = Message::response(200, "OK");
    m.set_header("CSeq", req.cseq().unwrap_or(0).to_string());
    match req.method().unwrap_or("") {
        "OPTIONS" => m.set_header("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"),
        "DESCRIBE" => {
            m.set_header("Content-Base", "rtsp://10.0.0.5:554/s/");
            m.set_header("Content-Type", "application/sdp");
            m.body = Bytes::from_static(SDP.as_bytes());
        }
        "SETUP" => {
            m.set_header("Session", "F00D;timeout=30");
            m.set_header("Transport", req.header("Transport").unwrap_or("RTP/AVP/TCP;interleaved=0-1"));
        }
        _ => m.set_header("Session", "F00D"),
    }
    m.to_bytes()
}

pub(super) fn rtp(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x12, 0x34]);
    p.extend_from_slice(payload);
    p
}

pub(super) fn frame(channel: u8, declared: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&declared.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A hostile viewer, as the harness (its shell and its player) knows it.
#[derive(Default)]
struct Viewer {
    /// Channels answers to its SETUPs gave it (since its last TEARDOWN).
    channels: HashSet<u8>,
    /// Its last PLAY was answered 200, and no PAUSE or TEARDOWN since.
    playing: bool,
    queue: QueueState,
    /// What it was allowed as a burst (its replays), an upper bound of what is left of them.
    burst: usize,
    /// Requests sent and not yet answered, by CSeq: the method.
    asked: HashMap<u32, String>,
    cseq: u32,
    /// The session id its SETUP was answered with, sent with its later requests.
    session: Option<String>,
}

/// Reads the script one byte at a time; zeros once it runs out.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let Some((b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        *b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct World {
    route: SharedRoute<u8>,
    viewers: HashMap<u8, Viewer>,
    now: Instant,
    /// The camera connection is open (asked for and not let go).
    camera_open: bool,
    /// The probe's connection is open.
    probe_open: bool,
    up: bool,
    plan: Vec<Delivery<u8>>,
    /// The GOP cache's packets when a join's replay is checked (no packet arrives between a
    /// join and its deliveries).
    cached: HashSet<*const u8>,
    /// Receives planned that yielded at least one delivery.
    delivered: u64,
    /// Receives of the probe that brought the route back and reached viewers.
    switched_back: u64,
    /// Camera receives so far (every other one is handed over owned).
    receives: u64,
}

impl World {
    /// Taken only to check a replay: asking the cache for its frames shares what it wrote, and
    /// joins must find that done by the join itself, not by the harness at every step.
    fn note_cache(&mut self) {
        self.cached = self
            .route
            .camera()
            .and_then(|c| c.gop_cache())
            .map(|g| g.frames().map(|f| f.frame.as_ptr()).collect())
            .unwrap_or_default();
    }

    /// Carries out everything the route asks for, answering the camera's requests at once.
    fn pump(&mut self) {
        for _ in 0..256 {
            self.drain_events();
            let Some(a) = self.route.poll_action() else { return };
            match a {
                Action::Connect { .. } => {
                    assert!(!self.camera_open, "a second camera connection while one is open");
                    self.camera_open = true;
                    self.route.handle_connected(self.now);
                }
                Action::SendToCamera(bytes) => {
                    assert!(self.camera_open, "bytes for a camera connection that is not open");
                    if let Ok(Some((m, _))) = parse_message(&bytes, &MessageLimits::default()) {
                        if m.is_request() && m.method() != Some("TEARDOWN") {
                            let mut a = answer(&m);
                            self.receive_into(&mut a, false);
                        }
                    }
                }
                Action::ConnectProbe(_) => {
                    assert!(!self.probe_open, "a second probe connection while one is open");
                    self.probe_open = true;
                    self.route.handle_probe_connected(self.now);
                }
                Action::SendToProbe(bytes) => {
                    assert!(self.probe_open, "bytes for a probe connection that is not open");
                    if let Ok(Some((m, _))) = parse_message(&bytes, &MessageLimits::default()) {
                        if m.is_request() && m.method() != Some("TEARDOWN") {
                            let mut a = answer(&m);
                            self.receive_into(&mut a, true);
                        }
                    }
                }
                Action::CloseProbe => {
                    assert!(self.probe_open, "a probe connection closed twice");
                    self.probe_open = false;
                }
                Action::ProbeIsCamera => {
                    assert!(self.probe_open, "no probe connection to take over");
                    assert!(!self.camera_open, "the probe taken over while the camera's connection is open");
                    self.probe_open = false;
                    self.camera_open = true;
                }
                Action::CloseCamera => {
                    assert!(self.camera_open, "a camera connection closed twice");
                    self.camera_open = false;
                }
                Action::ToViewer { viewer, bytes } => self.answered(viewer, &bytes),
                Action::Deliver(d) => {
                    self.note_cache();
                    let cached = std::mem::take(&mut self.cached);
                    self.check(&d, &[], Some(&cached));
                    self.cached = cached;
                }
                Action::EndViewer { viewer, .. } => {
                    assert!(self.viewers.contains_key(&viewer), "ends a viewer not attached");
                    self.viewers.remove(&viewer);
                    assert!(self.route.detach(viewer, self.now), "an ended viewer was not attached");
                }
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.route.poll_event() {
            match e {
                RouteEvent::CameraUp => {
                    assert!(!self.up, "up twice");
                    self.up = true;
                }
                RouteEvent::CameraDown => {
                    assert!(self.up, "down twice");
                    self.up = false;
                }
                RouteEvent::ViewerExchange { viewer, .. }
                | RouteEvent::ViewerRefused { viewer, .. }
                | RouteEvent::ViewerPlaying { viewer, .. } => {
                    assert!(self.viewers.contains_key(&viewer), "an event of a viewer not attached")
                }
                RouteEvent::Health(r) => assert!(r.viewers <= u64::from(VIEWERS)),
                _ => {}
            }
        }
    }

    /// An answer to a viewer: what it now knows of its channels and whether it plays.
    fn answered(&mut self, viewer: u8, bytes: &[u8]) {
        let v = self.viewers.get_mut(&viewer).expect("an answer to a viewer not attached");
        let Ok(Some((m, used))) = parse_message(bytes, &MessageLimits::default()) else {
            panic!("an answer that is not one RTSP message: {:?}", String::from_utf8_lossy(bytes))
        };
        assert_eq!(used, bytes.len(), "more than one message in one answer");
        let method = m.cseq().and_then(|c| v.asked.remove(&c)).unwrap_or_default();
        if m.status() != Some(200) {
            return;
        }
        match method.as_str() {
            "SETUP" => {
                v.session = m.header("Session").map(|h| h.split(';').next().unwrap_or("").trim().to_owned());
                let t = Transport::parse(m.header("Transport").expect("a SETUP answer without Transport"));
                let (a, b) = t.specs.first().and_then(|s| s.interleaved()).expect("no interleaved channels");
                v.channels.extend([a, b]);
            }
            "PLAY" => v.playing = true,
            "PAUSE" => v.playing = false,
            "TEARDOWN" => {
                v.playing = false;
                v.channels.clear();
                v.session = None;
            }
            _ => {}
        }
    }

    /// One receive from the camera, planned frame by frame and checked.
    /// Every other one is handed over owned, as a replica's receive from its home shard
    /// (`handle_camera_owned`): its plans may then name no receive buffer at all.
    fn receive(&mut self, bytes: &[u8]) {
        self.receives += 1;
        if self.receives % 2 == 0 {
            self.receive_as(&mut [], Some(bytes::BytesMut::from(bytes)), false);
        } else {
            let mut chunk = bytes.to_vec();
            self.receive_into(&mut chunk, false);
        }
    }

    /// One receive of the camera's connection, or of the probe's (`probe`).
    fn receive_into(&mut self, chunk: &mut [u8], probe: bool) {
        self.receive_as(chunk, None, probe);
    }

    /// One receive, in `chunk` (read in place) or `owned` (then `chunk` is empty, and a plan
    /// naming a range of it fails the check).
    fn receive_as(&mut self, chunk: &mut [u8], owned: Option<bytes::BytesMut>, probe: bool) {
        let source = |r: &SharedRoute<u8>| r.camera().map(|c| c.live_source());
        let before = source(&self.route);
        if let Some(owned) = owned {
            self.route.handle_camera_owned(self.now, owned);
        } else if probe {
            self.route.handle_probe_bytes(self.now, chunk);
        } else {
            self.route.handle_camera_bytes(self.now, chunk);
        }
        // The one way the probe's frames reach viewers: its keyframe brought the route back.
        let switched_back = probe && before == Some(Source::Fallback) && source(&self.route) == Some(Source::Primary);
        let mut plan = std::mem::take(&mut self.plan);
        let mut any = false;
        loop {
            let viewers = &self.viewers;
            let Some(stats) = self.route.plan_next(chunk, |v| viewers.get(v).map(|v| v.queue), &mut plan) else {
                break;
            };
            assert!(stats.forwarded <= u64::from(VIEWERS));
            let delivers = plan.iter().any(|d| matches!(d, Delivery::Deliver { .. }));
            assert!(!(probe && delivers && !switched_back), "the probe's frames reached viewers without a switch");
            any |= delivers;
            let mut cut = Vec::new();
            for d in &plan {
                self.check(d, chunk, None);
                if let Delivery::Disconnect { viewer, .. } = d {
                    cut.push(*viewer);
                }
            }
            // As the shell does: a cut viewer's session ends at once, the receive goes on.
            for v in cut {
                self.viewers.remove(&v);
                assert!(self.route.detach(v, self.now));
                assert!(!self.route.is_playing(v), "a cut viewer stays in the fan-out");
                // What the detach asks for is carried out at once, the receive going on.
                self.pump();
            }
        }
        self.plan = plan;
        self.delivered += u64::from(any);
        self.switched_back += u64::from(switched_back && any);
        if let Some(g) = self.route.camera().and_then(|c| c.gop_cache()) {
            assert!(g.bytes() <= GOP_BYTES && g.packets() <= GOP_PACKETS, "the GOP cache outgrew its bounds");
        }
        self.pump();
    }

    /// Checks one delivery and applies it to its viewer's queue.
    fn check(&mut self, d: &Delivery<u8>, chunk: &[u8], cache: Option<&HashSet<*const u8>>) {
        match d {
            Delivery::Deliver { viewer, header, body, .. } => {
                let v = self.viewers.get_mut(viewer).expect("a delivery to a viewer not attached");
                assert!(v.playing, "a delivery to a viewer that does not play");
                assert!(header.is_some() || body.is_some(), "an empty delivery");
                let mut wire = header.as_ref().map(|h| h.to_vec()).unwrap_or_default();
                match body {
                    Some(Body::Chunk(r)) => {
                        assert!(cache.is_none(), "a join names a receive's buffer");
                        assert!(!r.is_empty() && r.end <= chunk.len(), "a bad range {r:?} of {}", chunk.len());
                        wire.extend_from_slice(&chunk[r.clone()]);
                    }
                    Some(Body::Shared(b)) => {
                        assert!(!b.is_empty(), "an empty body");
                        if let (None, Some(cache)) = (header, cache) {
                            assert!(cache.contains(&b.as_ptr()), "a replayed packet copied for its joiner");
                        }
                        wire.extend_from_slice(b);
                    }
                    None => {}
                }
                assert!(wire.len() >= 4 && wire[0] == b'$', "not a frame: {wire:?}");
                let len = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
                assert_eq!(len + 4, wire.len(), "not one whole frame");
                assert!(
                    v.channels.contains(&wire[1]),
                    "channel {} was not given to its viewer ({:?})",
                    wire[1],
                    v.channels
                );
                let entries = usize::from(header.is_some()) + usize::from(body.is_some());
                v.queue = v.queue.plus(wire.len(), entries);
                if cache.is_some() {
                    v.burst += wire.len() + entries * ENTRY_COST;
                }
                let bound = LIMITS.disconnect_above + v.burst + MAX_FRAME_COST;
                assert!(v.queue.cost() <= bound, "a viewer holds {} (bound {bound})", v.queue.cost());
            }
            Delivery::FirstPicture { viewer, .. } => assert!(self.viewers.contains_key(viewer)),
            Delivery::Disconnect { viewer, .. } => assert!(self.viewers.contains_key(viewer)),
        }
    }

    /// A viewer sends a request the script picks (attaching first, as its first admitted one).
    fn request(&mut self, id: u8, s: &mut Script<'_>) {
        if !self.viewers.contains_key(&id) {
            let map = UrlMap::new(ROUTE_URL, CAMERA_URL).ok();
            assert!(self.route.attach(id, map, self.now, self.now));
            self.viewers.insert(id, Viewer::default());
            self.pump();
        }
        let Some(v) = self.viewers.get_mut(&id) else { return };
        v.cseq += 1;
        let cseq = v.cseq;
        let (method, extra) = match s.byte() % 8 {
            0 => ("DESCRIBE", String::new()),
            1 | 2 => {
                let track = s.byte() % 3;
                let (a, b) = (s.byte(), s.byte());
                let url = format!("{ROUTE_URL}/trackID={track}");
                let extra = format!("Transport: RTP/AVP/TCP;unicast;interleaved={a}-{b}\r\n");
                return self.send(id, cseq, "SETUP", &url, &extra);
            }
            3 => ("PLAY", String::new()),
            4 => ("PAUSE", String::new()),
            5 => ("TEARDOWN", String::new()),
            6 => ("OPTIONS", String::new()),
            _ => {
                let n = usize::from(s.byte() % 32);
                let junk = String::from_utf8_lossy(s.bytes(n)).replace(['\r', '\n'], " ");
                ("GET_PARAMETER", format!("X-Junk: {junk}\r\n"))
            }
        };
        self.send(id, cseq, method, ROUTE_URL, &extra);
    }

    fn send(&mut self, id: u8, cseq: u32, method: &str, url: &str, extra: &str) {
        // The viewer's own session id, once it has one, as a player sends it.
        let text = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}{}\r\n", self.session_of(id));
        let Ok(Some((msg, _))) = parse_message(text.as_bytes(), &MessageLimits::default()) else { return };
        if let Some(v) = self.viewers.get_mut(&id) {
            v.asked.insert(cseq, method.to_owned());
        }
        self.route.handle_request(id, msg, self.now);
        self.pump();
    }

    /// The `Session` header the viewer's player sends, once an answer gave it one.
    fn session_of(&self, id: u8) -> String {
        let session = self.viewers.get(&id).and_then(|v| v.session.as_deref());
        session.map(|s| format!("Session: {s}\r\n")).unwrap_or_default()
    }
}

/// Runs one script (see the module documentation); panics when a property breaks. Returns the
/// receives that delivered frames (so a test can tell viewers really played).
pub fn run(data: &[u8]) -> u64 {
    run_counting(data).0
}

/// [`run`], and how many receives of the probe brought the route back to its primary and
/// reached viewers.
pub fn run_counting(data: &[u8]) -> (u64, u64) {
    let t0 = Instant::now();
    let mut camera = CameraParams::new(CAMERA_URL, "10.0.0.5:554".parse().expect("an address"));
    camera.limits = MessageLimits { max_head_bytes: 2048, max_body_bytes: 4096 };
    camera.gop_cache_bytes = Some(GOP_BYTES);
    camera.gop_cache_packets = GOP_PACKETS;
    camera.seed = 7;
    camera.fallback = Some(FallbackParams {
        url: FALLBACK_URL.into(),
        addr: "10.0.0.6:554".parse().expect("an address"),
        credentials: None,
    });
    let viewer = ViewerParams {
        session_seed: 11,
        session_timeout: Duration::from_secs(8),
        camera_wait: Duration::from_secs(3),
        max_pending: 4,
    };
    let params = RouteParams { camera, viewer, fanout: LIMITS, unresolved: None, fallback_unresolved: None };
    let mut w = World {
        route: SharedRoute::new(params, t0),
        viewers: HashMap::new(),
        now: t0,
        camera_open: false,
        probe_open: false,
        up: false,
        plan: Vec::new(),
        cached: HashSet::new(),
        delivered: 0,
        switched_back: 0,
        receives: 0,
    };
    w.pump();
    let mut s = Script(data);
    let (mut seq, mut ts) = (0u16, 0u32);
    while !s.is_empty() {
        w.now += Duration::from_millis(5);
        match s.byte() % 12 {
            // Raw bytes, in two receives cut anywhere.
            0 => {
                let n = usize::from(s.byte());
                let bytes = s.bytes(n).to_vec();
                let cut = usize::from(s.byte()) % (bytes.len() + 1);
                w.receive(&bytes[..cut]);
                w.receive(&bytes[cut..]);
            }
            // One frame on any channel: empty, short, longer than it says, or RTP the GOP
            // cache keeps; cut anywhere (its header too).
            1 => {
                let channel = s.byte();
                let bytes = match s.byte() % 4 {
                    0 => frame(channel, 0, &[]),
                    1 => {
                        let n = usize::from(s.byte());
                        let p = s.bytes(n).to_vec();
                        frame(channel, p.len() as u16, &p)
                    }
                    2 => {
                        // Declares up to 64 KiB; what follows in later receives completes it.
                        let declared = u16::from_be_bytes([s.byte(), s.byte()]);
                        let n = usize::from(s.byte());
                        let p = s.bytes(n).to_vec();
                        frame(channel, declared, &p)
                    }
                    _ => {
                        seq = seq.wrapping_add(1);
                        let kind = s.byte();
                        if kind % 3 == 0 {
                            ts = ts.wrapping_add(3000);
                        }
                        let nal: &[u8] = match kind % 4 {
                            0 => &[0x65, 0x88, 0x80],
                            1 => &[0x67, 0x42, 0, 0x1e],
                            2 => &[0x41, 0x9a],
                            _ => &[0xd5; 13],
                        };
                        let pt = if kind % 4 == 3 { 8 } else { 96 };
                        let p = rtp(seq, ts, pt, nal);
                        frame(channel % 4, p.len() as u16, &p)
                    }
                };
                let cut = usize::from(s.byte()) % (bytes.len() + 1);
                w.receive(&bytes[..cut]);
                w.receive(&bytes[cut..]);
            }
            // A run of empty frames, in one receive.
            2 => {
                let channel = s.byte() % 4;
                let n = usize::from(s.byte()) * 8;
                w.receive(&frame(channel, 0, &[]).repeat(n));
            }
            // A viewer's request (its first one attaches it).
            3 | 4 => {
                let id = s.byte() % VIEWERS;
                w.request(id, &mut s);
            }
            // A viewer's session ends.
            5 => {
                let id = s.byte() % VIEWERS;
                let attached = w.viewers.remove(&id).is_some();
                assert_eq!(w.route.detach(id, w.now), attached);
                w.pump();
            }
            // A viewer reads everything queued to it, or part of it (a slow one).
            6 => {
                let id = s.byte() % VIEWERS;
                let part = usize::from(s.byte());
                if let Some(v) = w.viewers.get_mut(&id) {
                    v.queue = if part % 2 == 0 {
                        QueueState::default()
                    } else {
                        QueueState { bytes: v.queue.bytes / 2, entries: v.queue.entries / 2 }
                    };
                }
            }
            // Time passes: the route's deadlines, if they came.
            7 => {
                w.now += Duration::from_millis(u64::from(s.byte()) * 40);
                if w.route.poll_timeout().is_some_and(|t| t <= w.now) {
                    w.route.handle_timeout(w.now);
                    w.pump();
                }
            }
            // The camera's connection closes (with a fallback live or not: the route switches),
            // or the probe's.
            8 => {
                if s.byte() % 2 == 0 {
                    if w.camera_open {
                        w.camera_open = false;
                        w.route.handle_camera_closed(w.now);
                        w.pump();
                    }
                } else if w.probe_open {
                    w.probe_open = false;
                    w.route.handle_probe_closed(w.now);
                    w.pump();
                }
            }
            // The probe's primary sends a frame, a keyframe or not (its first keyframe brings
            // the route back).
            11 if w.probe_open => {
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(3000);
                let nal: &[u8] = if s.byte() % 2 == 0 { &[0x65, 0x88, 0x80] } else { &[0x41, 0x9a] };
                let mut bytes = frame(0, 12 + nal.len() as u16, &rtp(seq, ts, 96, nal));
                let cut = usize::from(s.byte()) % (bytes.len() + 1);
                let mut rest = bytes.split_off(cut);
                w.receive_into(&mut bytes, true);
                if w.probe_open {
                    w.receive_into(&mut rest, true);
                } else if w.camera_open {
                    // Taken over: the rest comes on the camera's connection.
                    w.receive_into(&mut rest, false);
                }
            }
            // An RTCP report from a viewer.
            9 => {
                let id = s.byte() % VIEWERS;
                w.route.handle_viewer_frame(id, w.now);
            }
            // A keyframe and a run of tiny packets in one receive (the cache's packet bound).
            10 => {
                let n = usize::from(s.byte());
                ts = ts.wrapping_add(3000);
                seq = seq.wrapping_add(1);
                let mut bytes = frame(0, 15, &rtp(seq, ts, 96, &[0x65, 0x88, 0x80]));
                for _ in 0..n {
                    seq = seq.wrapping_add(1);
                    bytes.extend(frame(2, 25, &rtp(seq, ts, 8, &[0xd5; 13])));
                }
                w.receive(&bytes);
            }
            _ => {}
        }
        assert!(w.route.viewer_count() == w.viewers.len(), "the route and its shell disagree on who is attached");
    }
    (w.delivered, w.switched_back)
}
