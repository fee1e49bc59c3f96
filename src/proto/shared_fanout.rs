//! What each viewer of a shared camera receives, as a pure value: the camera's media frames of
//! one receive (and each viewer's queue) in, a delivery plan out.
//!
//! The shell owns the sockets and the receive buffers; this owns the decisions. For each
//! receive it is handed the [`MediaFrame`]s the camera session read from the chunk, the chunk
//! itself (to find the camera's own `$` headers), and what is queued to each viewer (bytes and
//! entries, [`QueueState`]); it returns, in order, one [`Delivery`] per thing to do:
//!
//! - [`Delivery::Deliver`]: queue an optional `$` header, then an optional body (a range of the
//!   chunk or shared bytes) to a viewer. Together they are always exactly one whole `$` frame on
//!   a channel the viewer set up; never empty. A viewer on the camera's own channels gets the
//!   camera's header and payload as one range; a viewer on other channels gets a header shared
//!   by every viewer on that channel, then the payload. A zero-length frame (legal on the wire)
//!   is forwarded as its header alone.
//! - [`Delivery::FirstPicture`]: a viewer that waited for a keyframe got one (for the
//!   time-to-first-frame histogram).
//! - [`Delivery::Disconnect`]: a viewer fell too far behind ([`ViewerFanout`]); it gets nothing
//!   more and leaves the fan-out.
//!
//! A viewer's join is planned the same way: the GOP cache replayed first, each cached packet
//! queued as the one [`Bytes`] the cache holds when the viewer uses the camera's channels (no
//! allocation per joiner), its cost allowed as a burst by the slow-viewer policy.
//!
//! Within one receive the plan adds what it queues to each viewer's [`QueueState`] itself, so
//! the policy judges every frame against the queue as it will be; the shell reports the real
//! queue again at the next receive.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::camera_session::MediaFrame;
use super::fanout_policy::{FanoutLimits, FrameKind, QueueState, Verdict, ViewerFanout};
use super::frame_split::FramePayload;
use super::gop_cache::CachedFrame;
use super::interleaved;

#[cfg(test)]
mod tests;

/// The bytes after a delivery's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// This range of the chunk the plan was made for (never empty).
    Chunk(Range<usize>),
    /// Reference-counted bytes: a frame reassembled across receives, a cached packet (never
    /// empty).
    Shared(Bytes),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Chunk(r) => r.len(),
            Body::Shared(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a viewer leaves the fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Too much queued, or behind for too long (`relay_rejections_total{reason="slow_viewer"}`).
    SlowViewer,
}

/// One step of a plan, for the shell to carry out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery<V> {
    /// Queue `header`, then `body`, to `viewer`: one whole `$` frame. `live`: a frame of this
    /// receive (timed for the forward latency), not a replayed one.
    Deliver { viewer: V, header: Option<Bytes>, body: Option<Body>, live: bool },
    /// `viewer`'s first picture was queued, `waited` after its PLAY arrived.
    FirstPicture { viewer: V, waited: Duration },
    /// Close `viewer`; the camera and the other viewers carry on.
    Disconnect { viewer: V, reason: DisconnectReason },
}

impl<V> Delivery<V> {
    /// The bytes a [`Delivery::Deliver`] queues (0 for the others).
    pub fn len(&self) -> usize {
        match self {
            Delivery::Deliver { header, body, .. } => {
                header.as_ref().map_or(0, Bytes::len) + body.as_ref().map_or(0, Body::len)
            }
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a plan did besides its deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Live frames queued (one per viewer and frame).
    pub forwarded: u64,
    /// Frames a slow viewer skipped (`relay_frames_dropped_total`).
    pub dropped: u64,
}

/// How a viewer joins.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// Per camera track: the viewer's RTP and RTCP channels, if it set the track up.
    pub channels: Vec<Option<(u8, u8)>>,
    /// The track keyframes are read from, if the camera has one.
    pub key_track: Option<usize>,
    pub limits: FanoutLimits,
    /// When its PLAY arrived.
    pub asked_at: Instant,
}

/// A viewer in the fan-out.
#[derive(Debug, Clone)]
struct Member<V> {
    id: V,
    channels: Vec<Option<(u8, u8)>>,
    policy: ViewerFanout,
    /// When its PLAY arrived, until the first keyframe is queued to it.
    awaiting_keyframe: Option<Instant>,
}

impl<V> Member<V> {
    fn channel(&self, track: usize, rtcp: bool) -> Option<u8> {
        let (rtp, rtcp_channel) = self.channels.get(track).copied().flatten()?;
        Some(if rtcp { rtcp_channel } else { rtp })
    }
}

/// See the module documentation. `V` is the shell's name for a viewer.
#[derive(Debug, Clone)]
pub struct SharedFanout<V> {
    members: Vec<Member<V>>,
    /// Scratch of one plan: each member's queue, `None` when it takes nothing now.
    queues: Vec<Option<QueueState>>,
    /// Scratch of one frame: the `$` header made for each channel other than the camera's.
    headers: Vec<(u8, Bytes)>,
}

impl<V> Default for SharedFanout<V> {
    fn default() -> Self {
        SharedFanout { members: Vec::new(), queues: Vec::new(), headers: Vec::new() }
    }
}

/// The camera's own `$` header for an in-chunk payload, when the frame began in this chunk:
/// the range of header and payload together.
fn own_frame(chunk: &[u8], channel: u8, payload: &Range<usize>) -> Option<Range<usize>> {
    let start = payload.start.checked_sub(4)?;
    let h = chunk.get(start..payload.start)?;
    let len = u16::try_from(payload.len()).ok()?.to_be_bytes();
    (h == [b'$', channel, len[0], len[1]] && payload.end <= chunk.len()).then_some(start..payload.end)
}

impl<V: Clone + PartialEq> SharedFanout<V> {
    pub fn new() -> Self {
        SharedFanout::default()
    }

    /// Viewers in the fan-out.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, viewer: &V) -> bool {
        self.members.iter().any(|m| m.id == *viewer)
    }

    /// The viewers, in the order they joined.
    pub fn viewers(&self) -> impl Iterator<Item = &V> + '_ {
        self.members.iter().map(|m| &m.id)
    }

    /// Removes every viewer `keep` refuses (paused, torn down, gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.members.retain(|m| keep(&m.id));
    }

    /// A viewer's PLAY was answered: it joins (again, if it was in), `replay` (the GOP cache
    /// frames of its tracks) first.
    pub fn join(
        &mut self,
        viewer: V,
        params: JoinParams,
        replay: &[CachedFrame],
        now: Instant,
        out: &mut Vec<Delivery<V>>,
    ) {
        self.members.retain(|m| m.id != viewer);
        let watches_video = params.key_track.is_some_and(|t| params.channels.get(t).copied().flatten().is_some());
        let mut member = Member {
            id: viewer.clone(),
            channels: params.channels,
            policy: ViewerFanout::new(params.limits, params.key_track.is_some()),
            awaiting_keyframe: watches_video.then_some(params.asked_at),
        };
        let mut burst = QueueState::default();
        for f in replay {
            let Some(channel) = member.channel(f.track, false) else { continue };
            let delivery = if channel == f.channel {
                // The cached frame as it is: one segment, the same memory for every joiner.
                (None, Some(Body::Shared(f.frame.clone())))
            } else {
                let Some(h) = interleaved::frame_header(channel, f.payload().len()) else { continue };
                let body = f.payload_bytes();
                (Some(Bytes::copy_from_slice(&h)), (!body.is_empty()).then_some(Body::Shared(body)))
            };
            let d = Delivery::Deliver { viewer: viewer.clone(), header: delivery.0, body: delivery.1, live: false };
            burst = burst.plus(d.len(), entries(&d));
            out.push(d);
        }
        if !replay.is_empty() {
            if let Some(asked_at) = member.awaiting_keyframe.take() {
                // The cache starts with a keyframe (or the parameter sets just before it).
                out.push(Delivery::FirstPicture { viewer, waited: now.saturating_duration_since(asked_at) });
            }
        }
        member.policy.allow_burst(burst.cost());
        self.members.push(member);
    }

    /// Plans one receive: `media` read from `chunk`, received at `received_at`. `queue` tells
    /// what is queued to a viewer now, or `None` when it takes nothing (its connection is
    /// closing). Viewers disconnected here leave the fan-out.
    pub fn plan(
        &mut self,
        media: &[MediaFrame],
        chunk: &[u8],
        received_at: Instant,
        mut queue: impl FnMut(&V) -> Option<QueueState>,
        out: &mut Vec<Delivery<V>>,
    ) -> PlanStats {
        let mut stats = PlanStats::default();
        if media.is_empty() || self.members.is_empty() {
            return stats;
        }
        let mut queues = std::mem::take(&mut self.queues);
        queues.clear();
        queues.extend(self.members.iter().map(|m| queue(&m.id)));
        let mut headers = std::mem::take(&mut self.headers);
        for f in media {
            headers.clear();
            let own = match &f.payload {
                FramePayload::InChunk(r) => own_frame(chunk, f.channel, r),
                FramePayload::Assembled(_) => None,
            };
            let payload_len = f.payload.len();
            for (m, q) in self.members.iter_mut().zip(queues.iter_mut()) {
                let Some(state) = q else { continue };
                let Some(channel) = m.channel(f.track, f.rtcp) else { continue };
                match m.policy.decide(*state, f.kind, received_at) {
                    Verdict::Forward => {}
                    Verdict::Drop => {
                        stats.dropped += 1;
                        continue;
                    }
                    Verdict::Disconnect => {
                        out.push(Delivery::Disconnect { viewer: m.id.clone(), reason: DisconnectReason::SlowViewer });
                        *q = None;
                        continue;
                    }
                }
                let (header, body) = match (&f.payload, &own) {
                    (FramePayload::InChunk(_), Some(whole)) if channel == f.channel => {
                        (None, Body::Chunk(whole.clone()))
                    }
                    (payload, _) => {
                        let header = match headers.iter().find(|(c, _)| *c == channel) {
                            Some((_, h)) => h.clone(),
                            None => {
                                // A `$` frame's payload fits its 16-bit length.
                                let Some(h) = interleaved::frame_header(channel, payload_len) else { continue };
                                let h = Bytes::copy_from_slice(&h);
                                headers.push((channel, h.clone()));
                                h
                            }
                        };
                        let body = match payload {
                            FramePayload::InChunk(r) => Body::Chunk(r.clone()),
                            FramePayload::Assembled(b) => Body::Shared(b.clone()),
                        };
                        (Some(header), body)
                    }
                };
                // A zero-length frame is its header alone.
                let body = (!body.is_empty()).then_some(body);
                let d = Delivery::Deliver { viewer: m.id.clone(), header, body, live: true };
                *state = state.plus(d.len(), entries(&d));
                out.push(d);
                stats.forwarded += 1;
                if f.kind == FrameKind::KeyframeStart {
                    if let Some(asked_at) = m.awaiting_keyframe.take() {
                        out.push(Delivery::FirstPicture {
                            viewer: m.id.clone(),
                            waited: received_at.saturating_duration_since(asked_at),
                        });
                    }
                }
            }
        }
        // Those cut by this plan get nothing more.
        self.members.retain(|m| !m.policy.is_disconnected());
        self.queues = queues;
        self.headers = headers;
        stats
    }
}

/// Entries a delivery adds to a send queue (its header and body, each a segment).
fn entries<V>(d: &Delivery<V>) -> usize {
    match d {
        Delivery::Deliver { header, body, .. } => usize::from(header.is_some()) + usize::from(body.is_some()),
        _ => 0,
    }
}
