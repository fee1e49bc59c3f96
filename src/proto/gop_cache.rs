//! The packets of one camera since its last keyframe, so a viewer who joins a shared camera can
//! decode a picture at once instead of waiting up to a whole group of pictures.
//!
//! The cache starts at the first packet of the access unit holding the keyframe (all video
//! packets share its RTP timestamp), or earlier when the camera sends its parameter sets in-band
//! as an access unit of their own just before it. It then keeps every RTP packet of every
//! track in arrival order (audio after the keyframe too, so the joiner's audio and video start
//! together) until the next keyframe replaces it. RTCP is not kept: the live stream brings
//! sender reports soon enough, and stale ones would only be replayed to be superseded.
//!
//! It is bounded by what it really costs, not only by the RTP bytes: each packet counts its
//! bytes plus [`PACKET_OVERHEAD`], and the number of packets is bounded too, so a camera sending
//! hundreds of thousands of tiny packets cannot make a "4 MiB" cache hold forty. A group of
//! pictures that outgrows either bound is dropped whole and the cache waits for the next
//! keyframe (counted in [`GopCache::overflows`], by bound in [`GopCache::take_overflow`]);
//! joiners meanwhile start with live packets.
//!
//! A joiner gets each packet as one [`Bytes`] holding its `$` header (the camera's channel) and
//! the RTP packet: a joiner on the camera's channels (the usual case) queues it as one segment,
//! and every joiner names the same memory (reference counts, not copies).
//!
//! The packets are copied back to back into blocks ([`Blocks`]) rather than each into an
//! allocation of its own: a group of pictures is dropped whole at the next keyframe, so its
//! blocks are freed whole and the next camera's packets reuse them. One allocation per packet
//! left the allocator with pages of short- and long-lived packets of hundreds of cameras
//! interleaved, and a cache cost about twice the bytes it held. Blocks grow with the cache (a
//! camera sending a trickle holds a few KiB, not a fixed block) and are what the relay-wide
//! budget counts ([`super::gop_budget`]).
//!
//! A cached packet is only a place in a block ([`Entry`]), not a [`Bytes`] of its own: pushing
//! one is a copy and a few stores, with no atomic operation and no allocation. Splitting each
//! packet off its block as a `Bytes` took a reference count per packet, an atomic
//! read-modify-write that waits for the copy's stores to drain, and with hundreds of cameras
//! those stores go to memory last touched a group of pictures ago: it was most of the cache's
//! cost (docs/perf/README.md). The bytes written are made shareable only when a joiner asks
//! ([`GopCache::frames`]): each block's written part is split off its unused room as one frozen
//! segment (the same memory), so a block is a few frozen segments and a writable tail, and a
//! joiner's `Bytes` are slices of those segments that keep the memory alive after the cache
//! drops the group. Joiners are rare next to packets; a block nobody joined is never shared
//! and is freed as the plain allocation it is. What a push still costs is the copy itself
//! (`benches/gop_cache.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::gop_budget::GopAccount;

use super::interleaved;
use super::keyframe::{RtpHeader, VideoPacket};

/// What one cached packet costs beyond its bytes: its entry in the cache and its allocation's
/// header and rounding.
pub const PACKET_OVERHEAD: usize = 64;

/// One interleaved frame as the camera sent it: its channel, the track it belongs to and the
/// whole frame (`$` header on the camera's channel, then the RTP packet). A viewer on other
/// channels gets a header of its own and [`CachedFrame::payload_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFrame {
    pub channel: u8,
    pub track: usize,
    pub frame: Bytes,
}

impl CachedFrame {
    /// The RTP packet.
    pub fn payload(&self) -> &[u8] {
        self.frame.get(4..).unwrap_or_default()
    }

    /// The RTP packet as shared bytes (a reference count, not a copy).
    pub fn payload_bytes(&self) -> Bytes {
        if self.frame.len() > 4 { self.frame.slice(4..) } else { Bytes::new() }
    }
}

/// The cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    /// Most bytes held, each packet counted with [`PACKET_OVERHEAD`] (`gop_cache_bytes`).
    pub bytes: usize,
    /// Most packets held (`gop_cache_packets`).
    pub packets: usize,
}

/// Which bound dropped the cache: `relay_gop_cache_overflows_total{bound}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GopBound {
    Bytes,
    Packets,
}

/// One cached packet: where its frame (`$` header, then the RTP packet) lies in the blocks.
/// 16 bytes: a group of pictures is hundreds of these (208 at 1 Mbit/s with a keyframe every
/// 2 s), held per camera all the time, so the narrower fields save ~6 KB a camera. A frame is
/// at most 65,539 bytes (16-bit `$` length) and a block at most that or [`MAX_BLOCK`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The block's [`Block::number`].
    block: u32,
    /// Where the frame starts in its block, and its length.
    offset: u32,
    len: u32,
    track: u16,
    channel: u8,
}

impl Entry {
    /// Where the frame starts in its block, and its length.
    fn place(&self) -> (usize, usize) {
        (self.offset as usize, self.len as usize)
    }
}

/// One block: how many cached packets lie in it, what it costs, and its memory.
#[derive(Debug, Default)]
struct Block {
    /// One more than the block before it (wrapping): an [`Entry`] finds its block by its
    /// distance from the oldest one's number.
    number: u32,
    frames: usize,
    capacity: usize,
    /// In a `RefCell` so that [`GopCache::frames`] can share what is written through the
    /// `&GopCache` a viewer's PLAY reads the camera with. Pushing reaches it through
    /// `RefCell::get_mut`, which checks nothing at run time; every borrow ends within the
    /// method that takes it.
    bytes: RefCell<BlockBytes>,
}

/// A block's memory: the part shared with joiners so far, as frozen segments back to back
/// from the block's start, then `tail`: bytes written since (not shared yet) and the room left.
#[derive(Debug, Default)]
struct BlockBytes {
    shared: Vec<Bytes>,
    /// The segments' lengths summed: where `tail` starts in the block.
    shared_len: usize,
    tail: BytesMut,
}

impl BlockBytes {
    fn room(&self) -> usize {
        self.tail.capacity().saturating_sub(self.tail.len())
    }

    /// Makes every byte written shareable: the tail's written part becomes a segment of its
    /// own, the same memory (one reference count for the segment, none per packet).
    fn share(&mut self) {
        if !self.tail.is_empty() {
            let segment = self.tail.split().freeze();
            self.shared_len += segment.len();
            self.shared.push(segment);
        }
    }

    /// The shared segment holding `offset..offset + len`, and where that range starts in it.
    fn segment(&self, offset: usize, len: usize) -> Option<(&Bytes, usize)> {
        let mut start = 0;
        for segment in &self.shared {
            let end = start + segment.len();
            if offset < end {
                let at = offset - start;
                // A frame never straddles segments: they are split at frame ends.
                return (at.checked_add(len)? <= segment.len()).then_some((segment, at));
            }
            start = end;
        }
        None
    }

    /// The frame at `offset`, shared or not.
    fn read(&self, offset: usize, len: usize) -> Option<&[u8]> {
        match offset.checked_sub(self.shared_len) {
            Some(at) => self.tail.get(at..at.checked_add(len)?),
            None => {
                let (segment, at) = self.segment(offset, len)?;
                segment.get(at..at + len)
            }
        }
    }
}

/// The smallest and largest block the packets are copied into: a block is sized like what the
/// cache already holds, within these.
const MIN_BLOCK: usize = 4 * 1024;
/// Powers of two, which allocators serve without rounding; 16 KiB wastes ~5% at the end of
/// each block with 1,200-byte packets and leaves half a block unused on average.
const MAX_BLOCK: usize = 16 * 1024;

/// The memory the cached packets are copied into: the blocks filled, oldest first, then the
/// open one, which new packets go into while they fit in its room.
#[derive(Debug, Default)]
struct Blocks {
    filled: VecDeque<Block>,
    /// Kept apart from `filled` so that a push touches only the cache's own fields, not a
    /// block elsewhere in memory. `capacity` 0: none open (nothing cached).
    open: Block,
    /// The blocks' capacities summed: what the cache's packets really occupy.
    held: usize,
    account: Option<GopAccount>,
}

/// Why a block could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoRoom {
    /// The relay-wide budget refused the start of a group of pictures.
    Budget,
    /// A place that does not fit an [`Entry`] (never: a frame is at most 65,539 bytes).
    TooLarge,
}

impl Blocks {
    /// Copies `header` and `payload` into the open block (a new one if they do not fit) and
    /// returns where they lie: the block's number and the offset in it. The first block of a
    /// cache must fit the relay-wide budget; later blocks of a started group are taken even
    /// past it, and the shell evicts the caches idle longest.
    fn store(&mut self, header: &[u8], payload: &[u8]) -> Result<(u32, u32), NoRoom> {
        let need = header.len() + payload.len();
        if self.open.bytes.get_mut().room() < need {
            self.open_block(need)?;
        }
        let bytes = self.open.bytes.get_mut();
        // Within the block (at most a frame or MAX_BLOCK): fits, but checked rather than cut.
        let offset = u32::try_from(bytes.shared_len + bytes.tail.len()).map_err(|_| NoRoom::TooLarge)?;
        // Within the room checked above: never reallocates, so earlier offsets stay valid.
        bytes.tail.extend_from_slice(header);
        bytes.tail.extend_from_slice(payload);
        self.open.frames += 1;
        Ok((self.open.number, offset))
    }

    /// Opens a block with room for `need` bytes; the open block's remaining room goes unused.
    fn open_block(&mut self, need: usize) -> Result<(), NoRoom> {
        // Numbers run on from the block before, so a block's place follows from its number.
        let number = if self.open.frames > 0 { self.open.number.wrapping_add(1) } else { self.open.number };
        if self.open.capacity > 0 && self.open.frames == 0 {
            // An open block whose packets all left the cache has nothing to keep.
            let empty = std::mem::take(&mut self.open);
            self.give_back(empty);
        }
        let capacity = self.held.clamp(MIN_BLOCK, MAX_BLOCK).max(need);
        if let Some(account) = &self.account {
            if self.held == 0 {
                if !account.try_take(capacity) {
                    return Err(NoRoom::Budget);
                }
            } else {
                account.take(capacity);
            }
        }
        let bytes = BlockBytes { tail: BytesMut::with_capacity(capacity), ..BlockBytes::default() };
        let open = Block { number, frames: 0, capacity, bytes: RefCell::new(bytes) };
        let filled = std::mem::replace(&mut self.open, open);
        if filled.capacity > 0 {
            self.filled.push_back(filled);
        }
        self.held += capacity;
        Ok(())
    }

    fn block(&self, e: &Entry) -> Option<&Block> {
        if e.block == self.open.number {
            return Some(&self.open);
        }
        let oldest = self.filled.front()?.number;
        self.filled.get(usize::try_from(e.block.wrapping_sub(oldest)).ok()?)
    }

    /// Makes every byte written so far shareable (a joiner asks for the frames).
    fn share(&self) {
        for b in self.filled.iter().chain([&self.open]) {
            if let Ok(mut bytes) = b.bytes.try_borrow_mut() {
                bytes.share();
            }
        }
    }

    /// The frames of `entries` (in cache order) as shared bytes, once [`Blocks::share`] made
    /// them shareable; `None` if one is not found. Entries and each block's segments run in
    /// the same order, so each segment is passed once: a viewer that joins again and again
    /// between packets leaves many segments, and must not make every join slower by them.
    fn frames<'a>(&self, entries: impl Iterator<Item = &'a Entry>) -> Option<Vec<CachedFrame>> {
        let mut out = Vec::with_capacity(entries.size_hint().0);
        // The block being read: its number, bytes, the segment reached and where it starts.
        let mut at: Option<(u32, std::cell::Ref<'_, BlockBytes>, usize, usize)> = None;
        for e in entries {
            if at.as_ref().is_none_or(|(number, ..)| *number != e.block) {
                at = Some((e.block, self.block(e)?.bytes.try_borrow().ok()?, 0, 0));
            }
            let (_, bytes, i, start) = at.as_mut()?;
            let (offset, len) = e.place();
            let segment = loop {
                let segment = bytes.shared.get(*i)?;
                if offset < *start + segment.len() {
                    break segment;
                }
                *start += segment.len();
                *i += 1;
            };
            let from = offset.checked_sub(*start)?;
            let to = from.checked_add(len).filter(|&to| to <= segment.len())?;
            out.push(CachedFrame { channel: e.channel, track: usize::from(e.track), frame: segment.slice(from..to) });
        }
        Some(out)
    }

    /// `f` of the frame of `e`, shared or not.
    fn read<R>(&self, e: &Entry, f: impl FnOnce(&[u8]) -> Option<R>) -> Option<R> {
        let (offset, len) = e.place();
        f(self.block(e)?.bytes.try_borrow().ok()?.read(offset, len)?)
    }

    /// The oldest cached packet left the cache: its block is given back once none of its
    /// packets is cached and it is not the open one.
    fn release_front_frame(&mut self) {
        let Some(front) = self.filled.front_mut() else {
            self.open.frames = self.open.frames.saturating_sub(1);
            return;
        };
        front.frames = front.frames.saturating_sub(1);
        if front.frames == 0 {
            if let Some(b) = self.filled.pop_front() {
                self.give_back(b);
            }
        }
    }

    fn give_back(&mut self, b: Block) {
        self.held -= b.capacity;
        if let Some(account) = &self.account {
            account.give_back(b.capacity);
        }
    }

    /// Every block given back (the cache was dropped). Their memory is freed now, or when the
    /// last joiner holding a part of it lets go.
    fn clear(&mut self) {
        while let Some(b) = self.filled.pop_front() {
            self.give_back(b);
        }
        let open = std::mem::take(&mut self.open);
        if open.capacity > 0 {
            self.give_back(open);
        }
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.clear();
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct GopCache {
    limits: GopLimits,
    frames: VecDeque<Entry>,
    blocks: Blocks,
    /// What `frames` costs: bytes plus [`PACKET_OVERHEAD`] each.
    bytes: usize,
    /// `frames` begins at a keyframe access unit (or its parameter sets): replayable.
    ready: bool,
    /// Where the latest video access unit begins in `frames` (moved back over an access unit
    /// of parameter sets only just before it).
    au_start: usize,
    au_timestamp: Option<u32>,
    /// Every video packet of the latest access unit so far carries parameter sets and nothing
    /// that starts a picture.
    au_parameter_sets_only: bool,
    /// The latest access unit was discarded for size: its remaining packets are not kept.
    au_discarded: bool,
    overflows: u64,
    /// The bound that last dropped the cache, until the shell takes it for its metric.
    overflowed: Option<GopBound>,
    /// When a joiner last started from the cache (`None`: none yet): the relay-wide budget
    /// evicts the caches idle longest first.
    used_at: Option<std::time::Instant>,
    /// The relay-wide budget refused the cache's start and it has not started since: counted
    /// once, not again at every access unit that tries.
    refused: bool,
}

impl GopCache {
    pub fn new(limits: GopLimits) -> Self {
        GopCache {
            limits,
            frames: VecDeque::new(),
            blocks: Blocks::default(),
            bytes: 0,
            ready: false,
            au_start: 0,
            au_timestamp: None,
            au_parameter_sets_only: false,
            au_discarded: false,
            overflows: 0,
            overflowed: None,
            used_at: None,
            refused: false,
        }
    }

    /// A cache whose blocks count against the relay-wide budget `account`.
    pub fn with_account(limits: GopLimits, account: Option<GopAccount>) -> Self {
        let mut c = GopCache::new(limits);
        c.blocks.account = account;
        c
    }

    /// A packet of the track keyframes are found in, read by [`super::keyframe::Classifier`].
    pub fn push_video(&mut self, channel: u8, track: usize, payload: &[u8], packet: &VideoPacket) {
        if self.au_timestamp != Some(packet.timestamp) {
            // A new access unit begins. An access unit of parameter sets only stays with it.
            let keep_prefix = self.au_timestamp.is_some() && self.au_parameter_sets_only && !self.au_discarded;
            if !keep_prefix {
                self.au_start = self.frames.len();
            }
            self.au_timestamp = Some(packet.timestamp);
            self.au_parameter_sets_only = true;
            self.au_discarded = false;
            if !self.ready {
                // Nothing before a candidate access unit is of use to anyone.
                self.drop_front(self.au_start);
            }
        }
        if self.au_discarded {
            return;
        }
        self.au_parameter_sets_only &= packet.parameter_sets && !packet.keyframe;
        if packet.keyframe && (self.au_start > 0 || !self.ready) {
            // A new group of pictures: the previous one is no longer needed. (A later slice of
            // the same keyframe finds `au_start` at 0 and changes nothing.)
            self.drop_front(self.au_start);
            self.ready = true;
        }
        self.push(channel, track, payload);
    }

    /// A packet of any other track (audio, metadata, a second video track): kept after the
    /// keyframe, or provisionally while an access unit that may hold one is arriving.
    pub fn push_other(&mut self, channel: u8, track: usize, payload: &[u8]) {
        if self.ready || (self.au_timestamp.is_some() && !self.au_discarded) {
            self.push(channel, track, payload);
        }
    }

    fn push(&mut self, channel: u8, track: usize, payload: &[u8]) {
        // A `$` frame's payload always fits its 16-bit length.
        let Some(header) = interleaved::frame_header(channel, payload.len()) else { return };
        // Tracks are a camera's few SDP media; one past 65,535 is not cached (and never seen).
        let Ok(track) = u16::try_from(track) else { return };
        let cost = header.len() + payload.len() + PACKET_OVERHEAD;
        let over = if self.bytes.saturating_add(cost) > self.limits.bytes {
            Some(GopBound::Bytes)
        } else if self.frames.len() >= self.limits.packets {
            Some(GopBound::Packets)
        } else {
            None
        };
        if let Some(bound) = over {
            self.discard();
            self.overflows += 1;
            self.overflowed = Some(bound);
            return;
        }
        let (block, offset) = match self.blocks.store(&header, payload) {
            Ok(at) => at,
            Err(NoRoom::TooLarge) => {
                self.discard();
                return;
            }
            Err(NoRoom::Budget) => {
                // Not started: joiners meanwhile start with live packets, as with no cache.
                self.discard();
                if let (Some(account), false) = (&self.blocks.account, self.refused) {
                    account.refused();
                }
                self.refused = true;
                return;
            }
        };
        self.refused = false;
        self.bytes += cost;
        // At most 65,539: the `$` header and a 16-bit length.
        let len = (header.len() + payload.len()) as u32;
        self.frames.push_back(Entry { block, offset, len, track, channel });
    }

    /// Drops every packet; the cache waits for the next keyframe.
    fn discard(&mut self) {
        self.frames.clear();
        self.blocks.clear();
        self.bytes = 0;
        self.ready = false;
        self.au_start = 0;
        self.au_discarded = true;
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.frames.len());
        for f in self.frames.drain(..n) {
            self.bytes -= f.place().1 + PACKET_OVERHEAD;
            self.blocks.release_front_frame();
        }
        if self.frames.is_empty() {
            // A new group of pictures starts in a block of its own: the old group's last block
            // is freed now rather than kept alive by the new group's first packets.
            self.blocks.clear();
        } else if n > 0 {
            self.move_kept_to_own_block();
        }
        self.au_start = self.au_start.saturating_sub(n);
        if self.frames.capacity() > 4 * self.frames.len().max(64) {
            // A burst (a huge keyframe) must not pin its room for good.
            self.frames.shrink_to(2 * self.frames.len().max(64));
        }
    }

    /// The packets kept when a group of pictures is dropped are those of the new keyframe's
    /// access unit that came before the keyframe was seen (its parameter sets, an audio packet
    /// or two): they sit behind the old group's bytes in its last block, and would keep that
    /// whole block alive until the next keyframe (half a block a camera on average, with the
    /// in-band parameter sets most cameras send). They are copied into a block of their own
    /// when they are fewer bytes than the dead part they free, so the copy never exceeds what
    /// it frees. If the budget has no room for the new block, they stay where they are.
    fn move_kept_to_own_block(&mut self) {
        let Some(first) = self.frames.front() else { return };
        let dead = first.place().0;
        let kept: usize = self.frames.iter().map(|e| e.place().1).sum();
        if kept > dead {
            return;
        }
        let mut fresh = Blocks::default();
        fresh.account = self.blocks.account.clone();
        let mut places = Vec::with_capacity(self.frames.len());
        for e in &self.frames {
            let stored = self.blocks.read(e, |frame| {
                let (header, payload) = frame.split_at_checked(4)?;
                fresh.store(header, payload).ok()
            });
            match stored {
                Some(at) => places.push(at),
                // `fresh` gives back what it took when dropped.
                None => return,
            }
        }
        for (e, (block, offset)) in self.frames.iter_mut().zip(places) {
            (e.block, e.offset) = (block, offset);
        }
        // The old blocks (and their budget) are given back as they drop.
        self.blocks = fresh;
    }

    /// Forgets everything (the camera connection was replaced: new SSRCs, new sequence numbers).
    pub fn clear(&mut self) {
        let (overflows, overflowed, used_at) = (self.overflows, self.overflowed, self.used_at);
        self.blocks.clear();
        let account = self.blocks.account.take();
        *self = GopCache::with_account(self.limits, account);
        (self.overflows, self.overflowed, self.used_at) = (overflows, overflowed, used_at);
    }

    /// The relay-wide budget needs room: the packets are dropped and the cache waits for the
    /// next keyframe (which starts it again only if the budget then has room).
    pub fn evict(&mut self) {
        self.discard();
    }

    /// A joiner started from the cache at `now`.
    pub fn touch(&mut self, now: std::time::Instant) {
        self.used_at = Some(now);
    }

    /// When a joiner last started from the cache; `None`: never.
    pub fn used_at(&self) -> Option<std::time::Instant> {
        self.used_at
    }

    /// The memory the cached packets occupy (their blocks), what the relay-wide budget counts.
    pub fn held(&self) -> usize {
        self.blocks.held
    }

    /// The bound that dropped the cache since the last call, if one did.
    pub fn take_overflow(&mut self) -> Option<GopBound> {
        self.overflowed.take()
    }

    /// Whether a joiner can start from the cache (it begins at a keyframe).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The frames a joiner gets first, in camera order; empty unless [`GopCache::is_ready`].
    /// Their bytes are the cache's own memory (what was written is shared now, see the module
    /// documentation), and stay valid after the cache drops them.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = CachedFrame> + use<> {
        self.snapshot().into_iter()
    }

    /// [`GopCache::frames`] as a list (reference counts, not copies).
    pub fn snapshot(&self) -> Vec<CachedFrame> {
        if !self.ready {
            return Vec::new();
        }
        self.blocks.share();
        // A frame not found would be a bookkeeping error: the joiner then starts with live
        // packets, as with no cache, rather than with a replay that has a hole.
        self.blocks.frames(self.frames.iter()).unwrap_or_default()
    }

    /// RTP sequence number and timestamp of the first cached packet of `track` (what a joiner's
    /// `RTP-Info` announces), if the cache is ready and holds one.
    pub fn first_rtp(&self, track: usize) -> Option<(u16, u32)> {
        if !self.ready {
            return None;
        }
        let e = self.frames.iter().find(|e| usize::from(e.track) == track)?;
        let h = self.blocks.read(e, |frame| RtpHeader::parse(frame.get(4..)?))?;
        Some((h.seq, h.timestamp))
    }

    /// What the packets held cost (ready or not): bytes plus [`PACKET_OVERHEAD`] each.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held (ready or not).
    pub fn packets(&self) -> usize {
        self.frames.len()
    }

    /// Times the bound forced the cache to be dropped.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    pub fn max_bytes(&self) -> usize {
        self.limits.bytes
    }

    pub fn limits(&self) -> GopLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::keyframe::tests::rtp;
    use crate::proto::keyframe::{Classifier, VideoCodec};
    use proptest::prelude::*;

    const VIDEO: usize = 0;

    fn lim(bytes: usize) -> GopLimits {
        GopLimits { bytes, packets: usize::MAX }
    }
    const AUDIO: usize = 1;

    /// Feeds a video packet; returns its bytes.
    fn video(c: &mut GopCache, seq: u16, ts: u32, payload: &[u8]) -> Bytes {
        let p = Bytes::from(rtp(seq, ts, false, payload));
        let v = Classifier::new(VideoCodec::H264).classify(&p).unwrap();
        c.push_video(0, VIDEO, &p, &v);
        p
    }

    fn audio(c: &mut GopCache, seq: u16, ts: u32) -> Bytes {
        let p = Bytes::from(rtp(seq, ts, true, &[0xaa; 20]));
        c.push_other(2, AUDIO, &p);
        p
    }

    fn seqs(c: &GopCache) -> Vec<(usize, u16)> {
        c.frames().map(|f| (f.track, RtpHeader::parse(f.payload()).unwrap().seq)).collect()
    }

    const SPS: &[u8] = &[0x67, 0x42, 0, 0x1e];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c];
    const IDR_START: &[u8] = &[0x7c, 0x85, 1, 2, 3];
    const IDR_REST: &[u8] = &[0x7c, 0x45, 4, 5, 6];
    const P: &[u8] = &[0x41, 0x9a, 7];

    #[test]
    fn starts_at_the_keyframe_access_unit_with_its_parameter_sets_and_keeps_audio() {
        let mut c = GopCache::new(lim(1 << 20));
        video(&mut c, 1, 0, P);
        audio(&mut c, 100, 0);
        assert!(!c.is_ready() && c.frames().len() == 0, "no keyframe yet: nothing to replay");
        video(&mut c, 2, 3000, SPS);
        audio(&mut c, 101, 1);
        video(&mut c, 3, 3000, PPS);
        video(&mut c, 4, 3000, IDR_START);
        video(&mut c, 5, 3000, IDR_REST);
        audio(&mut c, 102, 2);
        video(&mut c, 6, 6000, P);
        assert!(c.is_ready());
        assert_eq!(seqs(&c), vec![(0, 2), (1, 101), (0, 3), (0, 4), (0, 5), (1, 102), (0, 6)]);
        assert_eq!((c.first_rtp(VIDEO), c.first_rtp(AUDIO)), (Some((2, 3000)), Some((101, 1))));
        // The next keyframe replaces the group of pictures.
        video(&mut c, 7, 9000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 7)]);
        assert_eq!(c.first_rtp(AUDIO), None);
        assert_eq!(c.bytes(), c.frames().map(|f| f.frame.len() + PACKET_OVERHEAD).sum::<usize>());
        assert!(c.frames().all(|f| f.frame[..2] == [b'$', f.channel] && f.payload_bytes()[..] == *f.payload()));
    }

    #[test]
    fn parameter_sets_in_their_own_access_unit_stay_with_the_keyframe() {
        // Some cameras stamp SPS/PPS with a timestamp of their own just before the IDR.
        let mut c = GopCache::new(lim(1 << 20));
        video(&mut c, 1, 0, IDR_START);
        video(&mut c, 2, 3000, P);
        video(&mut c, 3, 5000, SPS);
        video(&mut c, 4, 5000, PPS);
        audio(&mut c, 50, 9);
        video(&mut c, 5, 6000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 3), (0, 4), (1, 50), (0, 5)]);
        // But a picture between the parameter sets and the keyframe cuts them off.
        video(&mut c, 6, 8000, SPS);
        video(&mut c, 7, 9000, P);
        video(&mut c, 8, 12000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 8)]);
    }

    #[test]
    fn a_second_slice_of_the_same_keyframe_does_not_restart_the_cache() {
        let mut c = GopCache::new(lim(1 << 20));
        video(&mut c, 1, 0, SPS);
        video(&mut c, 2, 0, &[0x65, 0x88, 0x80]);
        video(&mut c, 3, 0, &[0x65, 0x88, 0x00]);
        assert_eq!(seqs(&c), vec![(0, 1), (0, 2), (0, 3)]);
    }

    #[test]
    fn over_the_bound_the_cache_is_dropped_until_the_next_keyframe_and_counted() {
        // The keyframe and four pictures cost 417, each audio packet 100.
        let mut c = GopCache::new(lim(560));
        video(&mut c, 1, 0, IDR_START);
        for i in 0..4 {
            video(&mut c, 2 + i, 3000 * (1 + u32::from(i)), P);
        }
        assert!(c.is_ready());
        let held = c.bytes();
        audio(&mut c, 9, 9);
        audio(&mut c, 10, 10);
        assert!(held <= 560 && c.bytes() == 0 && !c.is_ready(), "dropped whole, not trimmed");
        assert_eq!((c.overflows(), c.take_overflow(), c.take_overflow()), (1, Some(GopBound::Bytes), None));
        // Audio and pictures before the next keyframe are not kept.
        audio(&mut c, 11, 11);
        video(&mut c, 20, 30000, P);
        assert_eq!(c.frames().len(), 0);
        video(&mut c, 21, 33000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 21)]);
    }

    #[test]
    fn a_keyframe_larger_than_the_bound_is_skipped_entirely() {
        let mut c = GopCache::new(lim(200));
        video(&mut c, 1, 0, IDR_START);
        video(&mut c, 2, 0, IDR_REST);
        video(&mut c, 3, 0, IDR_REST);
        assert_eq!((c.is_ready(), c.overflows()), (false, 1));
        // Its last fragment must not start a cache that lacks the keyframe's beginning.
        video(&mut c, 4, 0, IDR_REST);
        audio(&mut c, 5, 0);
        assert_eq!(c.bytes(), 0);
        video(&mut c, 6, 3000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 6)]);
    }

    #[test]
    fn tiny_packets_meet_the_packet_bound_and_cost_their_overhead() {
        // 13-byte RTP packets: a byte bound alone would hold hundreds of thousands of them.
        let mut c = GopCache::new(GopLimits { bytes: 4 << 20, packets: 100 });
        video(&mut c, 1, 0, IDR_START);
        for i in 0..99 {
            audio(&mut c, 10 + i, 1);
        }
        assert_eq!((c.packets(), c.is_ready()), (100, true));
        assert!(c.bytes() >= 100 * PACKET_OVERHEAD, "each packet costs more than its bytes");
        audio(&mut c, 200, 2);
        assert_eq!((c.packets(), c.is_ready(), c.take_overflow()), (0, false, Some(GopBound::Packets)));
        video(&mut c, 300, 3000, IDR_START);
        assert_eq!(seqs(&c), vec![(0, 300)]);
    }

    #[test]
    fn clear_forgets_everything_but_the_count() {
        let mut c = GopCache::new(lim(100));
        video(&mut c, 1, 0, IDR_START);
        video(&mut c, 2, 0, IDR_REST);
        video(&mut c, 3, 0, IDR_REST);
        c.clear();
        assert_eq!((c.bytes(), c.is_ready(), c.overflows()), (0, false, 1));
        video(&mut c, 4, 0, IDR_START);
        assert!(c.is_ready());
    }

    #[test]
    fn the_demo_clip_replays_from_its_latest_keyframe() {
        let clip = crate::demo_camera::clip().unwrap();
        let mut pk = crate::demo_camera::rtp::Packetizer::new(7, 100);
        let cls = Classifier::new(VideoCodec::H264);
        let mut c = GopCache::new(lim(4 << 20));
        let mut last_key_seq = None;
        for (i, au) in clip.frames.iter().enumerate() {
            if au.is_keyframe() {
                last_key_seq = Some(pk.next_seq());
            }
            pk.packetize(&au.nals, i as u32 * 3600, |p| {
                let p = Bytes::copy_from_slice(p);
                c.push_video(0, 0, &p, &cls.classify(&p).unwrap());
            });
        }
        assert_eq!(c.first_rtp(0).map(|(s, _)| s), last_key_seq);
        let first = c.frames().next().unwrap();
        assert!(matches!(first.payload()[12] & 0x1f, 7 | 5 | 24 | 28), "starts at SPS or the IDR");
    }

    fn account(limit: usize) -> GopAccount {
        use crate::proto::gop_budget::{GopBudget, GopShardTally};
        GopAccount::new(GopBudget::new(limit), std::sync::Arc::new(GopShardTally::default()))
    }

    /// A group of pictures as the load-test camera sends it at 1 Mbit/s: a keyframe, then
    /// 1,200-byte packets, 208 of them in 2 s.
    fn feed_gop(c: &mut GopCache, seq: &mut u16, ts: u32) {
        *seq += 1;
        video(c, *seq, ts, IDR_START);
        for i in 0..207u32 {
            *seq += 1;
            video(c, *seq, ts + 3600 * (1 + i / 4), &[&[0x41u8, 0x9a][..], &[0xff; 1186][..]].concat());
        }
    }

    #[test]
    fn the_cache_costs_what_it_holds_and_gives_it_all_back() {
        let a = account(usize::MAX);
        let mut c = GopCache::with_account(lim(4 << 20), Some(a.clone()));
        let mut seq = 0;
        for g in 0..3 {
            feed_gop(&mut c, &mut seq, g * 90_000);
            let stored: usize = c.frames().map(|f| f.frame.len()).sum();
            assert_eq!(c.packets(), 208, "one group of pictures");
            // Packets share blocks: the memory held is the bytes, the room left at each block's
            // end by a packet that did not fit, and the open block's room.
            assert!(c.held() >= stored && c.held() <= stored + stored / 16 + MAX_BLOCK, "{} for {stored}", c.held());
            assert_eq!(a.budget().held(), c.held(), "the account follows the blocks");
        }
        // The next keyframe frees the whole group at once.
        seq += 1;
        video(&mut c, seq, 900_000, IDR_START);
        assert_eq!((c.packets(), c.held()), (1, MIN_BLOCK));
        c.clear();
        assert_eq!(a.budget().held(), 0);
        feed_gop(&mut c, &mut seq, 990_000);
        drop(c);
        assert_eq!(a.budget().held(), 0, "a dropped cache gives its memory back");
    }

    #[test]
    fn a_keyframes_parameter_sets_do_not_keep_the_old_groups_last_block_alive() {
        // Most cameras send SPS and PPS in band, in the keyframe's access unit and before it:
        // they are cached before the keyframe shows that a new group has begun.
        let a = account(usize::MAX);
        let mut c = GopCache::with_account(lim(4 << 20), Some(a.clone()));
        let mut seq = 0;
        for g in 0..3 {
            for nal in [SPS, PPS] {
                seq += 1;
                video(&mut c, seq, g * 90_000, nal);
            }
            feed_gop(&mut c, &mut seq, g * 90_000);
            assert_eq!(c.packets(), 210);
        }
        let fed: Vec<Bytes> = [SPS, PPS, IDR_START]
            .iter()
            .map(|nal| {
                seq += 1;
                video(&mut c, seq, 900_000, nal)
            })
            .collect();
        // The group is three small packets: one small block, not the old group's last one.
        assert_eq!((c.packets(), c.held(), a.budget().held()), (3, MIN_BLOCK, MIN_BLOCK));
        let frames: Vec<Bytes> = c.frames().map(|f| f.payload_bytes()).collect();
        assert_eq!(frames, fed, "the replay is the access unit as it came");
        let mut shorter = GopCache::new(lim(4 << 20));
        feed_gop(&mut shorter, &mut seq, 990_000);
        feed_gop(&mut c, &mut seq, 990_000);
        assert!(c.held() <= shorter.held() + MIN_BLOCK, "{} against {}", c.held(), shorter.held());
    }

    #[test]
    fn a_cached_packets_place_is_16_bytes() {
        // Hundreds a camera, held all the time (see `Entry`).
        assert!(std::mem::size_of::<Entry>() <= 16, "{}", std::mem::size_of::<Entry>());
    }

    #[test]
    fn a_joiner_gets_the_blocks_memory_and_keeps_it_after_the_cache_lets_go() {
        let a = account(usize::MAX);
        let mut c = GopCache::with_account(lim(4 << 20), Some(a.clone()));
        let mut seq = 0;
        feed_gop(&mut c, &mut seq, 0);
        let first = c.snapshot();
        // Packets of one block lie back to back in it: slices of one allocation, not copies.
        let adjacent =
            first.windows(2).filter(|w| w[0].frame.as_ptr().wrapping_add(w[0].frame.len()) == w[1].frame.as_ptr());
        assert!(adjacent.count() >= first.len() * 9 / 10);
        // Packets written after a join go on into the block's room; a later joiner gets the
        // same memory for the packets the first one got.
        seq += 1;
        video(&mut c, seq, 800_000, P);
        let second = c.snapshot();
        assert_eq!(second.len(), first.len() + 1);
        assert!(first.iter().zip(&second).all(|(a, b)| a == b && a.frame.as_ptr() == b.frame.as_ptr()));
        assert_eq!(RtpHeader::parse(second[first.len()].payload()).map(|h| h.seq), Some(seq));
        // The next keyframe frees the group for the cache and its budget; the joiners' frames
        // keep their memory until they let go.
        let copies: Vec<Vec<u8>> = second.iter().map(|f| f.frame.to_vec()).collect();
        seq += 1;
        video(&mut c, seq, 900_000, IDR_START);
        assert_eq!((c.packets(), c.held(), a.budget().held()), (1, MIN_BLOCK, MIN_BLOCK));
        drop(c);
        assert_eq!(a.budget().held(), 0);
        assert!(second.iter().zip(&copies).all(|(f, copy)| f.frame[..] == copy[..]));
    }

    #[test]
    fn over_the_relay_wide_budget_a_cache_does_not_start_and_an_evicted_one_waits_for_room() {
        let a = account(64 * 1024);
        let mut busy = GopCache::with_account(lim(4 << 20), Some(a.clone()));
        let mut idle = GopCache::with_account(lim(4 << 20), Some(a.clone()));
        let (mut s1, mut s2) = (0, 0);
        feed_gop(&mut idle, &mut s2, 0);
        assert!(a.budget().is_over(), "a started cache grows past the budget: the shard evicts");
        idle.evict();
        assert_eq!((idle.is_ready(), idle.held(), a.budget().held()), (false, 0, 0));
        // The busy camera starts within the budget and grows past it again.
        feed_gop(&mut busy, &mut s1, 0);
        assert!(busy.is_ready() && a.budget().is_over());
        // The evicted one's next keyframe finds no room: it is not cached, and counted.
        s2 += 1;
        video(&mut idle, s2, 90_000, IDR_START);
        s2 += 1;
        video(&mut idle, s2, 93_600, P);
        assert_eq!((idle.is_ready(), idle.held()), (false, 0));
        assert_eq!(a.tally_evictions(), 1, "counted once, not at every access unit that tries");
        // Once the busy one is evicted too, the next keyframe starts a cache again.
        busy.evict();
        s2 += 1;
        video(&mut idle, s2, 180_000, IDR_START);
        assert!(idle.is_ready());
        assert_eq!(seqs(&idle), vec![(0, s2)]);
    }

    #[derive(Debug, Clone)]
    enum Item {
        /// A video access unit: keyframe or not, with in-band parameter sets or not, fragments.
        Au {
            key: bool,
            params: bool,
            fragments: u8,
            /// Bytes of each fragment's payload: larger ones fill blocks.
            size: usize,
        },
        Audio,
        /// A viewer joins: it takes the frames, which the cache then shares.
        Join,
    }

    fn items() -> impl Strategy<Value = Vec<Item>> {
        proptest::collection::vec(
            prop_oneof![
                (any::<bool>(), any::<bool>(), 1u8..4, 8usize..1400)
                    .prop_map(|(key, params, fragments, size)| { Item::Au { key, params, fragments, size } }),
                Just(Item::Audio),
                Just(Item::Join),
            ],
            1..60,
        )
    }

    proptest! {
        /// Against a model: with room enough, the cache is exactly the stream from the first
        /// packet of the last keyframe access unit; with any bound, it is a contiguous run of
        /// the stream that starts at such an access unit and fits. What a joiner took stays as
        /// it was after the cache moves on or drops it, and names the cache's memory: a packet
        /// still cached has the same address in every later join.
        #[test]
        fn matches_the_model(items in items(), max in 100usize..4000, packets in 1usize..40) {
            let mut big = GopCache::new(lim(usize::MAX));
            let acct = account(usize::MAX);
            let mut small = GopCache::with_account(GopLimits { bytes: max, packets }, Some(acct.clone()));
            let mut pushed: Vec<Bytes> = Vec::new();
            let mut key_starts: Vec<usize> = Vec::new();
            let (mut seq, mut ts) = (0u16, 0u32);
            let model = |pushed: &[Bytes], key_starts: &[usize]| match key_starts.last() {
                Some(&s) => pushed[s..].to_vec(),
                None => Vec::new(),
            };
            let mut joins: Vec<(Vec<CachedFrame>, Vec<Bytes>)> = Vec::new();
            for item in &items {
                match item {
                    Item::Audio => {
                        seq += 1;
                        let p = audio(&mut big, seq, ts);
                        small.push_other(2, AUDIO, &p);
                        pushed.push(p);
                    }
                    Item::Join => {
                        let frames = big.snapshot();
                        let want = model(&pushed, &key_starts);
                        let got: Vec<Bytes> = frames.iter().map(CachedFrame::payload_bytes).collect();
                        prop_assert_eq!(&got, &want);
                        joins.push((frames, want));
                    }
                    Item::Au { key, params, fragments, size } => {
                        ts += 3000;
                        let start = pushed.len();
                        let mut units: Vec<Vec<u8>> = Vec::new();
                        if *params {
                            units.push(SPS.to_vec());
                            units.push(PPS.to_vec());
                        }
                        for f in 0..*fragments {
                            let t = if *key { 5 } else { 1 };
                            let s = if f == 0 { 0x80 } else { 0 };
                            let mut u = vec![0x7c, s | t];
                            u.resize(*size, seq as u8);
                            units.push(u);
                        }
                        for u in units {
                            seq += 1;
                            let p = video(&mut big, seq, ts, &u);
                            small.push_video(0, VIDEO, &p, &Classifier::new(VideoCodec::H264).classify(&p).unwrap());
                            pushed.push(p);
                        }
                        if *key {
                            key_starts.push(start);
                        }
                    }
                }
            }
            let last = big.snapshot();
            let got: Vec<Bytes> = last.iter().map(CachedFrame::payload_bytes).collect();
            prop_assert_eq!(got, model(&pushed, &key_starts));
            let address = |f: &CachedFrame| (RtpHeader::parse(f.payload()).map(|h| h.seq), f.frame.as_ptr());
            let now: std::collections::HashMap<_, _> = last.iter().map(address).collect();
            for (frames, want) in &joins {
                let got: Vec<Bytes> = frames.iter().map(CachedFrame::payload_bytes).collect();
                prop_assert_eq!(&got, want, "a joiner's frames outlive their place in the cache");
                for (seq, ptr) in frames.iter().map(address) {
                    prop_assert!(now.get(&seq).is_none_or(|p| *p == ptr), "the same memory, not a copy");
                }
            }
            prop_assert!(small.bytes() <= max && small.packets() <= packets);
            let got: Vec<Bytes> = small.frames().map(|f| f.payload_bytes()).collect();
            if !got.is_empty() {
                let at = pushed.iter().position(|p| p == &got[0]).unwrap();
                prop_assert!(key_starts.contains(&at), "starts at a keyframe access unit");
                prop_assert_eq!(&pushed[at..at + got.len()], &got[..]);
                prop_assert_eq!(at + got.len(), pushed.len(), "runs up to now");
            }
            prop_assert_eq!(acct.budget().held(), small.held());
            let stored: usize = small.frames.iter().map(|e| e.place().1).sum();
            prop_assert!(small.held() >= stored);
            drop(small);
            prop_assert_eq!(acct.budget().held(), 0);
        }
    }
}
