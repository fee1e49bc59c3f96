//! Bytes waiting to go out on one socket, and the single `sendmsg` in flight for it.
//!
//! One send at a time per socket keeps the byte order and makes short sends easy to resume;
//! each send gathers up to [`MAX_IOV`] queued segments, so a busy socket still moves many frames
//! per system call. Camera media is queued as references into receive-ring buffers (no copy).

use std::collections::VecDeque;
use std::time::Instant;

use super::buf_ring::BufRing;

pub const MAX_IOV: usize = 64;
/// Copied media ranges are appended to the previous copy up to this size, so a camera sending
/// tiny frames costs a few large segments rather than one allocation per frame.
const COALESCE_BYTES: usize = 64 * 1024;
/// A queue drained after a burst gives back all but this many segments' room: thousands of
/// viewers each keeping the room of their longest backlog would cost more than the media. A
/// live viewer's queue holds a few segments between sends, and each joiner's GOP cache replay
/// (hundreds of segments) used to leave 16 (768 B) with it.
const KEPT_SEGMENTS: usize = 8;
/// A queue using less than a quarter of its room gives back all but twice what it uses: a
/// viewer of a busy camera is rarely empty, and the room of its GOP cache replay (a segment per
/// cached packet, hundreds) stayed with it for good, ~18 KiB per viewer at 2 Mbit/s.
const SHRINK_BELOW: usize = 4;

/// When a piece of camera media was received and how many `$` frames end in it: the forward
/// latency is recorded once per frame (per packet), so a chunk carrying many packets weighs as
/// many samples as it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub received_at: Instant,
    pub frames: u32,
}

/// The instant segments count their receive times from: a [`Timed`] is kept in a segment as
/// nanoseconds since it (8 bytes, not an `Instant`'s 16), so a segment is 48 bytes, not 72. A
/// viewer behind by a few hundred packets holds a segment per packet.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `timed` as a segment keeps it: nanoseconds since [`epoch`] and its frames (0: not timed).
fn stamp(timed: Option<Timed>) -> (u64, u32) {
    match timed {
        Some(t) => {
            let ns = t.received_at.saturating_duration_since(epoch()).as_nanos();
            (u64::try_from(ns).unwrap_or(u64::MAX), t.frames)
        }
        None => (0, 0),
    }
}

/// What [`stamp`] kept, back as a [`Timed`] (`None` for no frames: nothing to record).
fn unstamp(at_ns: u64, frames: u32) -> Option<Timed> {
    (frames > 0).then(|| Timed { received_at: epoch() + std::time::Duration::from_nanos(at_ns), frames })
}

pub enum Segment {
    /// Bytes the relay produced (HTTP replies, rewritten RTSP messages, viewer→camera data),
    /// or camera media copied out of the ring or encrypted for TLS (with its [`Timed`]).
    Owned { data: Vec<u8>, offset: usize, at_ns: u64, frames: u32 },
    /// `start..end` of ring buffer `bid`.
    Ring { bid: u16, start: u32, end: u32, at_ns: u64, frames: u32 },
    /// Bytes shared by several connections' queues (a shared camera's `$` headers, frames
    /// reassembled across receives, the GOP cache): reference counted, never copied per viewer.
    /// What was sent of it is cut off its front.
    Shared { data: bytes::Bytes, at_ns: u64, frames: u32 },
}

impl Segment {
    fn remaining(&self) -> usize {
        match self {
            // Invariant: `complete` advances an offset by less than what remains, so offset <= len.
            Segment::Owned { data, offset, .. } => data.len() - offset,
            Segment::Shared { data, .. } => data.len(),
            Segment::Ring { start, end, .. } => (end - start) as usize,
        }
    }

    /// Its receive time and frames, if timed.
    fn timed(&self) -> Option<Timed> {
        match *self {
            Segment::Owned { at_ns, frames, .. }
            | Segment::Ring { at_ns, frames, .. }
            | Segment::Shared { at_ns, frames, .. } => unstamp(at_ns, frames),
        }
    }
}

/// The `msghdr` and iovecs of the send in flight. Boxed (and the iovecs on the heap) so their
/// addresses stay fixed while the kernel reads them, however the owning connection moves. The
/// iovecs take the room the sends need, up to [`MAX_IOV`]: a viewer of a live camera sends a few
/// segments at a time, and 64 iovecs a viewer (1 KiB) was an eighth of its memory.
struct SendMsg {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
}

/// Iovec room a drained queue keeps: what a viewer of a live camera uses per send.
const KEPT_IOV: usize = 4;

#[derive(Default)]
pub struct SendQueue {
    segments: VecDeque<Segment>,
    queued: usize,
    in_flight: bool,
    /// Segments named by the send in flight (the kernel may be reading them).
    in_flight_segments: usize,
    /// Ring segments queued.
    ring_segments: usize,
    /// Allocated at the first send: a tunnel's POST never sends, and a kilobyte per idle
    /// connection adds up at thousands of viewers.
    msg: Option<Box<SendMsg>>,
}

fn new_send_msg() -> Box<SendMsg> {
    Box::new(SendMsg { hdr: empty_msghdr(), iov: Vec::new() })
}

fn empty_msghdr() -> libc::msghdr {
    libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    }
}

impl SendQueue {
    /// Bytes queued, including those of the send in flight.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Segments queued, including those of the send in flight: each costs its slot and what it
    /// holds beyond its bytes, which the slow-viewer bounds count.
    pub fn entries(&self) -> usize {
        self.segments.len()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn push_owned(&mut self, data: Vec<u8>) {
        self.push_bytes(data, None);
    }

    /// Queues camera media the relay had to copy (TLS ciphertext), timed like ring media.
    pub fn push_media(&mut self, data: Vec<u8>, timed: Timed) {
        self.push_bytes(data, Some(timed));
    }

    fn push_bytes(&mut self, data: Vec<u8>, timed: Option<Timed>) {
        if data.is_empty() {
            return;
        }
        self.queued += data.len();
        let (at_ns, frames) = stamp(timed);
        self.segments.push_back(Segment::Owned { data, offset: 0, at_ns, frames });
    }

    /// Queues camera media copied out of a ring buffer, appended to the last queued copy when
    /// no send in flight names it (its bytes may move when it grows).
    pub fn push_media_copy(&mut self, bytes: &[u8], timed: Timed) {
        self.push_small(bytes, Some(timed));
    }

    /// Appends `bytes` to the last queued copy when no send in flight names it and it stays
    /// within [`COALESCE_BYTES`]; false (nothing queued) otherwise. The segment keeps the first
    /// receive time of its media and carries the frames of all.
    fn try_append(&mut self, bytes: &[u8], timed: Option<Timed>) -> bool {
        let not_in_flight = self.segments.len() > self.in_flight_segments;
        let Some(Segment::Owned { data, at_ns, frames, .. }) = self.segments.back_mut() else { return false };
        if !not_in_flight || data.len() + bytes.len() > COALESCE_BYTES {
            return false;
        }
        let (new_at, new_frames) = stamp(timed);
        if *frames == 0 {
            *at_ns = new_at;
        }
        *frames = frames.saturating_add(new_frames);
        data.extend_from_slice(bytes);
        self.queued += bytes.len();
        true
    }

    /// Queues a copy of `bytes`, appended to the last queued copy when possible: for pieces no
    /// larger than a segment (a WebSocket header, a tiny packet), a segment naming each would
    /// cost more than its bytes, per viewer.
    pub fn push_small(&mut self, bytes: &[u8], timed: Option<Timed>) {
        if !bytes.is_empty() && !self.try_append(bytes, timed) {
            self.push_bytes(bytes.to_vec(), timed);
        }
    }

    /// Whether `data` is smaller than the segment that would name it: cheaper copied.
    pub fn is_small(data: &[u8]) -> bool {
        data.len() <= std::mem::size_of::<Segment>()
    }

    /// Queues shared bytes (a `$` header shared by viewers): appended to the last queued copy
    /// when small and possible, else by reference.
    pub fn push_shared_or_append(&mut self, data: &bytes::Bytes, timed: Option<Timed>) {
        if data.is_empty() || (SendQueue::is_small(data) && self.try_append(data, timed)) {
            return;
        }
        self.push_shared(data.clone(), timed);
    }

    /// Queues shared bytes (reference counted: every viewer's queue names the same memory).
    pub fn push_shared(&mut self, data: bytes::Bytes, timed: Option<Timed>) {
        if data.is_empty() {
            return;
        }
        self.queued += data.len();
        let (at_ns, frames) = stamp(timed);
        self.segments.push_back(Segment::Shared { data, at_ns, frames });
    }

    /// Extends the last queued segment when it is `start..` 's predecessor in the same ring
    /// buffer and no send in flight names it: consecutive frames of one receive go out as one
    /// iovec and hold one reference. Returns false (nothing queued) otherwise.
    pub fn extend_ring(&mut self, bid: u16, start: u32, end: u32, timed: Timed) -> bool {
        if self.segments.len() <= self.in_flight_segments {
            return false;
        }
        match self.segments.back_mut() {
            Some(Segment::Ring { bid: b, end: e, frames, .. }) if *b == bid && *e == start && start < end => {
                *e = end;
                *frames = frames.saturating_add(timed.frames);
                self.queued += (end - start) as usize;
                true
            }
            _ => false,
        }
    }

    /// Queues a slice of a ring buffer; the caller has retained `bid` for this segment.
    pub fn push_ring(&mut self, bid: u16, start: u32, end: u32, timed: Timed) {
        // Memory safety: the demultiplexer reports only non-empty ranges, and `queue_frame` skips empty ones.
        assert!(start < end, "empty or reversed ring segment");
        // start < end checked above.
        self.queued += (end - start) as usize;
        self.ring_segments += 1;
        let (at_ns, frames) = stamp(Some(timed));
        self.segments.push_back(Segment::Ring { bid, start, end, at_ns, frames });
    }

    /// Prepares the next `sendmsg` if none is in flight and bytes wait: returns the `msghdr`
    /// to submit. It stays valid until [`SendQueue::complete`] or [`SendQueue::clear`].
    pub fn prepare(&mut self, bufs: &BufRing) -> Option<*const libc::msghdr> {
        if self.in_flight || self.segments.is_empty() {
            return None;
        }
        let msg = &mut **self.msg.get_or_insert_with(new_send_msg);
        // No send is in flight: nothing reads the iovecs, so they may move while refilled.
        msg.iov.clear();
        for seg in self.segments.iter().take(MAX_IOV) {
            // Both arms cut the iovec from a bounds-checked slice (the kernel only reads it).
            msg.iov.push(match seg {
                Segment::Owned { data, offset, .. } => {
                    let bytes = &data[*offset..];
                    libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() }
                }
                Segment::Ring { bid, start, end, .. } => bufs.iovec(*bid, *start, *end),
                Segment::Shared { data, .. } => {
                    libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() }
                }
            });
        }
        let n = msg.iov.len();
        msg.hdr = empty_msghdr();
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = n as _;
        self.in_flight = true;
        self.in_flight_segments = n;
        Some(&msg.hdr as *const libc::msghdr)
    }

    /// The send in flight wrote `written` bytes: drop what was sent, releasing ring buffers.
    pub fn complete(&mut self, mut written: usize, bufs: &mut BufRing, done: &mut Vec<Timed>) {
        self.in_flight = false;
        self.in_flight_segments = 0;
        self.queued -= written.min(self.queued);
        while written > 0 {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            let rem = front.remaining();
            if written < rem {
                match front {
                    Segment::Owned { offset, .. } => *offset += written,
                    Segment::Shared { data, .. } => bytes::Buf::advance(data, written),
                    // written < rem, the segment's length (a u32 range): no overflow.
                    Segment::Ring { start, .. } => *start += written as u32,
                }
                break;
            }
            written -= rem;
            let Some(seg) = self.segments.pop_front() else { break };
            if let Segment::Ring { bid, .. } = seg {
                bufs.release(bid);
                // Counted by `push_ring` for each ring segment: never below zero.
                self.ring_segments -= 1;
            }
            done.extend(seg.timed());
        }
        let (len, room) = (self.segments.len(), self.segments.capacity());
        if room > KEPT_SEGMENTS && len < room / SHRINK_BELOW {
            // No iovec points into the deque itself (only into what its segments own).
            self.segments.shrink_to((2 * len).max(KEPT_SEGMENTS));
        }
        // A burst's iovec room goes back once the queue is drained (no send is in flight now).
        if let Some(msg) = self.msg.as_mut().filter(|m| len == 0 && m.iov.capacity() > KEPT_IOV) {
            msg.iov = Vec::with_capacity(KEPT_IOV);
        }
    }

    /// The send in flight failed: the socket is going away.
    pub fn abort_in_flight(&mut self) {
        self.in_flight = false;
        self.in_flight_segments = 0;
    }

    pub fn ring_segments(&self) -> usize {
        self.ring_segments
    }

    /// Copies queued ring segments that no send in flight names into owned memory and releases
    /// their buffers. Returns how many buffers were released.
    pub fn copy_out_ring_segments(&mut self, bufs: &mut BufRing) -> usize {
        let mut released = 0;
        for seg in self.segments.iter_mut().skip(self.in_flight_segments) {
            if let Segment::Ring { bid, start, end, at_ns, frames } = *seg {
                let len = (end - start) as usize;
                let data = bufs.bytes_at(bid, start, len).to_vec();
                bufs.release(bid);
                *seg = Segment::Owned { data, offset: 0, at_ns, frames };
                released += 1;
            }
        }
        // Each released segment was counted by `push_ring`.
        self.ring_segments -= released;
        released
    }

    /// Drops everything queued (the connection is closing), releasing ring buffers. Only call
    /// when no send is in flight: the kernel may still be reading those bytes.
    pub fn clear(&mut self, bufs: &mut BufRing) {
        debug_assert!(!self.in_flight);
        for seg in self.segments.drain(..) {
            if let Segment::Ring { bid, .. } = seg {
                bufs.release(bid);
            }
        }
        self.queued = 0;
        self.ring_segments = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed() -> Option<Timed> {
        Some(Timed { received_at: Instant::now(), frames: 1 })
    }

    #[test]
    fn a_queued_segment_costs_48_bytes_and_keeps_its_receive_time() {
        // A viewer behind by a few hundred packets holds a segment per packet.
        assert!(std::mem::size_of::<Segment>() <= 48, "{}", std::mem::size_of::<Segment>());
        let t = Timed { received_at: Instant::now() + std::time::Duration::from_millis(3), frames: 2 };
        let back = unstamp(stamp(Some(t)).0, 2).unwrap();
        assert_eq!((back.received_at, back.frames), (t.received_at, 2));
        assert_eq!(unstamp(stamp(None).0, 0), None);
    }

    #[test]
    fn a_drained_burst_gives_its_room_back_even_while_media_keeps_coming() {
        let uring = io_uring::IoUring::new(8).unwrap();
        let mut bufs = BufRing::register(&uring.submitter(), 3, 64, 4096).unwrap();
        let mut q = SendQueue::default();
        let mut done = Vec::new();
        // A joiner's GOP cache replay: a segment per cached packet.
        let packet = bytes::Bytes::from(vec![7u8; 1200]);
        for _ in 0..400 {
            q.push_shared(packet.clone(), timed());
        }
        assert!(q.segments.capacity() >= 400);
        // Sent 64 segments at a time while live packets keep arriving: never empty.
        for _ in 0..20 {
            let n = q.entries().min(MAX_IOV);
            assert!(q.prepare(&bufs).is_some());
            // Live packets arrive while the send is in flight.
            q.push_shared(packet.clone(), timed());
            q.complete(n * 1200, &mut bufs, &mut done);
        }
        assert!(!q.is_empty());
        assert!(q.segments.capacity() <= 2 * KEPT_SEGMENTS, "room kept: {}", q.segments.capacity());
        assert_eq!(q.queued(), q.entries() * 1200);
    }

    #[test]
    fn a_drained_queue_keeps_a_few_iovecs_not_sixty_four() {
        let uring = io_uring::IoUring::new(8).unwrap();
        let mut bufs = BufRing::register(&uring.submitter(), 3, 64, 4096).unwrap();
        let mut q = SendQueue::default();
        let mut done = Vec::new();
        let packet = bytes::Bytes::from(vec![7u8; 1200]);
        // A live viewer: one packet a send.
        q.push_shared(packet.clone(), timed());
        assert!(q.prepare(&bufs).is_some());
        q.complete(1200, &mut bufs, &mut done);
        let room = |q: &SendQueue| q.msg.as_ref().map_or(0, |m| m.iov.capacity());
        assert!(room(&q) <= KEPT_IOV, "{}", room(&q));
        // A burst fills a whole send; once drained, its room goes back.
        for _ in 0..100 {
            q.push_shared(packet.clone(), timed());
        }
        while !q.is_empty() {
            let n = q.entries().min(MAX_IOV);
            assert!(q.prepare(&bufs).is_some());
            assert!(room(&q) >= n);
            q.complete(n * 1200, &mut bufs, &mut done);
        }
        assert!(room(&q) <= KEPT_IOV, "{}", room(&q));
        // The message itself: a header and a pointer, not 64 iovecs.
        assert!(std::mem::size_of::<SendMsg>() <= 96, "{}", std::mem::size_of::<SendMsg>());
    }
}
