//! A hostile camera and hostile viewers against one shared route's camera session and fan-out,
//! driven by a script of bytes: the `shared_route` fuzz target and a property test run it.
//!
//! The camera plays, then sends whatever the script says: raw bytes, `$` frames on any channel
//! with any length (zero, or more than it ever sends), runs of empty frames, RTP that the GOP
//! cache keeps, in receives cut anywhere (a header across two receives among them); it closes
//! and comes back. Viewers join on any channels (shared, clashing, none), leave, and read only
//! when the script says (most never do). After every step:
//!
//! - nothing panicked;
//! - every delivery is exactly one whole `$` frame, non-empty pieces, chunk ranges within the
//!   chunk, on a channel its viewer set up, to a viewer in the fan-out;
//! - a replayed packet on the camera's channel is the cache's own memory (no copy per joiner);
//! - what is queued to a viewer stays within the slow-viewer bound (plus the replay burst it
//!   was allowed and one frame), and the GOP cache within its bytes and packets.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Body, Delivery, JoinParams, SharedFanout};
use crate::proto::camera_session::{CameraOutput, CameraParams, CameraSession};
use crate::proto::fanout_policy::{ENTRY_COST, FanoutLimits, QueueState};
use crate::proto::rtsp::{Message, MessageLimits, parse_message};

/// An H.264 video track and an audio track.
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=cam\r\nt=0 0\r\na=control:*\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n\
m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n";

const LIMITS: FanoutLimits =
    FanoutLimits { drop_above: 2048, disconnect_above: 8192, max_behind: Duration::from_secs(1) };
const GOP_BYTES: usize = 4096;
const GOP_PACKETS: usize = 24;
/// The most one frame adds to a queue: the largest `$` frame, as header and body.
const MAX_FRAME_COST: usize = 4 + 65535 + 2 * ENTRY_COST;

/// A 200 to the camera request `req`.
fn answer(req: &Message) -> Vec<u8> {
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

fn rtp(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x12, 0x34]);
    p.extend_from_slice(payload);
    p
}

fn frame(channel: u8, declared: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&declared.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A hostile viewer: never reads unless told.
struct Viewer {
    channels: Vec<Option<(u8, u8)>>,
    queue: QueueState,
    /// What the joiner was allowed as a burst (its replay), an upper bound of what is left.
    burst: usize,
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
    cam: CameraSession,
    fanout: SharedFanout<u8>,
    viewers: HashMap<u8, Viewer>,
    now: Instant,
    plan: Vec<Delivery<u8>>,
    /// Executions of [`World::receive`] that yielded media.
    planned: u64,
}

impl World {
    /// Carries out the camera's outputs: a connect is answered at once, every request with
    /// a 200, so the camera plays again after each failure the script causes.
    fn drive_camera(&mut self) {
        for _ in 0..64 {
            let Some(o) = self.cam.poll_output() else { return };
            match o {
                CameraOutput::Connect(_) => self.cam.handle_connected(self.now),
                CameraOutput::Send(bytes) => {
                    if let Ok(Some((m, _))) = parse_message(&bytes, &MessageLimits::default()) {
                        if m.is_request() && m.method() != Some("TEARDOWN") {
                            let mut a = answer(&m);
                            self.cam.handle_camera_bytes(self.now, &mut a, &mut Vec::new());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// One receive from the camera, planned and checked.
    fn receive(&mut self, bytes: &[u8]) {
        let mut chunk = bytes.to_vec();
        let mut media = Vec::new();
        self.cam.handle_camera_bytes(self.now, &mut chunk, &mut media);
        self.plan.clear();
        let viewers = &self.viewers;
        let stats = self.fanout.plan(&media, &chunk, self.now, |v| viewers.get(v).map(|v| v.queue), &mut self.plan);
        assert!(stats.forwarded <= (media.len() * self.viewers.len()) as u64);
        if !media.is_empty() {
            self.planned += 1;
        }
        self.check_plan(&chunk, None);
        self.drive_camera();
        if let Some(g) = self.cam.gop_cache() {
            assert!(g.bytes() <= GOP_BYTES && g.packets() <= GOP_PACKETS, "the GOP cache outgrew its bounds");
        }
    }

    /// Checks the plan just made and applies it to the viewers' queues.
    fn check_plan(&mut self, chunk: &[u8], cache: Option<&HashSet<*const u8>>) {
        let mut cut = Vec::new();
        for d in &self.plan {
            match d {
                Delivery::Deliver { viewer, header, body, .. } => {
                    let v = self.viewers.get_mut(viewer).expect("a delivery to a viewer not in the fan-out");
                    assert!(header.is_some() || body.is_some(), "an empty delivery");
                    let mut wire = header.as_ref().map(|h| h.to_vec()).unwrap_or_default();
                    match body {
                        Some(Body::Chunk(r)) => {
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
                        v.channels.iter().flatten().any(|(a, b)| wire[1] == *a || wire[1] == *b),
                        "channel {} was not set up by its viewer ({:?})",
                        wire[1],
                        v.channels
                    );
                    let entries = usize::from(header.is_some()) + usize::from(body.is_some());
                    v.queue = v.queue.plus(wire.len(), entries);
                }
                Delivery::FirstPicture { viewer, .. } => assert!(self.viewers.contains_key(viewer)),
                Delivery::Disconnect { viewer, .. } => cut.push(*viewer),
            }
        }
        for v in self.viewers.values() {
            let bound = LIMITS.disconnect_above + v.burst + MAX_FRAME_COST;
            assert!(v.queue.cost() <= bound, "a viewer holds {} (bound {bound})", v.queue.cost());
        }
        for v in cut {
            self.viewers.remove(&v);
            assert!(!self.fanout.contains(&v), "a cut viewer stays in the fan-out");
        }
    }

    fn join(&mut self, id: u8, channels: Vec<Option<(u8, u8)>>) {
        let key_track = self.cam.presentation().and_then(|p| p.key_track);
        let cache = self.cam.gop_cache();
        let replay: Vec<_> = cache
            .map(|g| g.frames().filter(|f| channels.get(f.track).copied().flatten().is_some()).cloned().collect())
            .unwrap_or_default();
        let cached: HashSet<*const u8> =
            cache.map(|g| g.frames().map(|f| f.frame.as_ptr()).collect()).unwrap_or_default();
        self.plan.clear();
        let params = JoinParams { channels: channels.clone(), key_track, limits: LIMITS, asked_at: self.now };
        self.fanout.join(id, params, &replay, self.now, &mut self.plan);
        // A rejoin starts a new queue model: what was queued stays with the old connection.
        self.viewers.insert(id, Viewer { channels, queue: QueueState::default(), burst: 0 });
        let burst: QueueState = self.plan.iter().fold(QueueState::default(), |q, d| match d {
            Delivery::Deliver { header, body, .. } => {
                q.plus(d.len(), usize::from(header.is_some()) + usize::from(body.is_some()))
            }
            _ => q,
        });
        if let Some(v) = self.viewers.get_mut(&id) {
            v.burst = burst.cost();
        }
        self.check_plan(&[], Some(&cached));
    }
}

/// Runs one script (see the module documentation); panics when a property breaks. Returns the
/// receives that yielded media (so a test can tell the camera really played).
pub fn run(data: &[u8]) -> u64 {
    let t0 = Instant::now();
    let mut params = CameraParams::new("rtsp://10.0.0.5:554/s", "10.0.0.5:554".parse().expect("an address"));
    params.limits = MessageLimits { max_head_bytes: 2048, max_body_bytes: 4096 };
    params.gop_cache_bytes = Some(GOP_BYTES);
    params.gop_cache_packets = GOP_PACKETS;
    params.seed = 7;
    let mut cam = CameraSession::new(params, t0);
    cam.set_viewers(1, t0);
    let mut w =
        World { cam, fanout: SharedFanout::new(), viewers: HashMap::new(), now: t0, plan: Vec::new(), planned: 0 };
    w.drive_camera();
    let mut s = Script(data);
    let (mut seq, mut ts) = (0u16, 0u32);
    while !s.is_empty() {
        w.now += Duration::from_millis(5);
        match s.byte() % 9 {
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
            // A viewer joins on any channels of its own choosing.
            3 => {
                let id = s.byte() % 6;
                let channels = (0..2)
                    .map(|_| {
                        let (a, b) = (s.byte(), s.byte());
                        (a % 5 != 0).then_some((a, b))
                    })
                    .collect();
                w.join(id, channels);
            }
            4 => {
                let id = s.byte() % 6;
                w.fanout.retain(|v| *v != id);
                w.viewers.remove(&id);
            }
            // A viewer reads everything queued to it (the rest never do).
            5 => {
                let id = s.byte() % 6;
                if let Some(v) = w.viewers.get_mut(&id) {
                    v.queue = QueueState::default();
                }
            }
            6 => {
                w.now += Duration::from_millis(u64::from(s.byte()) * 20);
                w.cam.handle_timeout(w.now);
                w.drive_camera();
            }
            7 => {
                w.cam.handle_camera_closed(w.now);
                w.drive_camera();
            }
            // A keyframe and a run of tiny packets in one receive (the cache's packet bound).
            _ => {
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
        }
    }
    w.planned
}
