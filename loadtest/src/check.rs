//! What one viewer checks and counts on the media it receives: every frame's channel, every RTP
//! packet's version, SSRC and sequence, every mark's stream, due time (for latency) and stream
//! sequence (for loss), every padding unit's fill, every slice against its checksum
//! ([`SliceCheck`]); arrival gaps (stalls, in milliseconds); when the first packet and the first
//! keyframe packet came; discontinuities (a new SSRC, or a jump of the camera's schedule: a
//! camera that restarted).
//!
//! Loss is counted against the camera's schedule: packet *k* of a stream is due at
//! `t0 + k × period`, the period stated by the camera in its SDP (never guessed from the
//! packets: a session that got one packet and then silence must show the silence as loss). At
//! the end of the session each segment of the stream (the stretch between discontinuities) is
//! closed: the packets due from its start to its end (the next segment's first packet, or the
//! session's end minus the grace) minus those received. With marks from the payload only,
//! behind a relay that re-packetised the media, loss is the holes between the first and the
//! last padding unit received.

use serde::{Deserialize, Serialize};

use crate::payload::{self, MarkError, RtpError};
use crate::slices::SliceCheck;

/// Where a stream's packets are expected to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// At stream sequence 0, whatever the PLAY reply says: only right when each viewer has its
    /// own camera connection (a passthrough relay, HAProxy) and the camera starts every
    /// connection's stream at 0, as the loadtest camera does.
    Zero,
    /// At the packet the PLAY reply's `RTP-Info: seq=` names; without one, at the first packet
    /// received. Sessions where the two disagree are counted and warned about.
    RtpInfo,
}

#[derive(Debug, Clone, Copy)]
pub struct CheckParams {
    pub start: StreamStart,
    /// A gap between arrivals longer than this is a stall.
    pub stall_ns: u64,
    /// Packets due within this long before the session's end are not expected yet.
    pub grace_ns: u64,
    /// A session survives only with at most this share of its expected packets lost...
    pub max_loss: f64,
    /// ...and no stall longer than this.
    pub max_stall_ns: u64,
}

/// Integrity faults, counted per packet, frame or picture.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Integrity {
    /// Marked packets of another stream than the path asked for.
    pub wrong_stream: u64,
    /// RTP packets of the first SSRC whose SSRC is not the one SETUP announced.
    pub ssrc_mismatch: u64,
    /// RTP packets too short or not version 2.
    pub bad_rtp: u64,
    /// Marks or padding units cut short, or padding with damaged fill.
    pub bad_payload: u64,
    /// Pictures whose slices do not match the checksums the camera sent with them.
    #[serde(default)]
    pub bad_slice: u64,
    /// Pictures whose packets came under more than one RTP timestamp (a decoder splits them).
    #[serde(default)]
    pub split_picture: u64,
    /// Frames on a channel the SETUP did not ask for.
    pub unexpected_channel: u64,
    /// Frames on the RTCP channel that are not RTCP.
    pub bad_rtcp: u64,
    /// Marked packets whose stream sequence went backwards (duplicates or reordering).
    pub out_of_order: u64,
}

impl Integrity {
    pub fn add(&mut self, o: &Integrity) {
        self.wrong_stream += o.wrong_stream;
        self.ssrc_mismatch += o.ssrc_mismatch;
        self.bad_rtp += o.bad_rtp;
        self.bad_payload += o.bad_payload;
        self.bad_slice += o.bad_slice;
        self.split_picture += o.split_picture;
        self.unexpected_channel += o.unexpected_channel;
        self.bad_rtcp += o.bad_rtcp;
        self.out_of_order += o.out_of_order;
    }

    /// The most telling fault, as a failure reason.
    pub fn first_fault(&self) -> Option<&'static str> {
        [
            (self.wrong_stream, "wrong_stream"),
            (self.ssrc_mismatch, "ssrc_mismatch"),
            (self.bad_rtp, "bad_rtp"),
            (self.bad_payload, "bad_payload"),
            (self.bad_slice, "bad_slice"),
            (self.split_picture, "split_picture"),
            (self.unexpected_channel, "unexpected_channel"),
            (self.bad_rtcp, "bad_rtcp"),
            (self.out_of_order, "out_of_order"),
        ]
        .into_iter()
        .find_map(|(n, why)| (n > 0).then_some(why))
    }

    pub fn total(&self) -> u64 {
        self.wrong_stream
            + self.ssrc_mismatch
            + self.bad_rtp
            + self.bad_payload
            + self.bad_slice
            + self.split_picture
            + self.unexpected_channel
            + self.bad_rtcp
            + self.out_of_order
    }
}

/// One session's media, as counted while it plays.
pub struct Checker {
    params: CheckParams,
    expect_stream: Option<u32>,
    /// The SSRC SETUP announced; checked against the first SSRC received.
    announced_ssrc: Option<u32>,
    /// The SSRC of the packets now arriving.
    ssrc: Option<u32>,
    rtp_info_seq: Option<u16>,
    /// The packet interval the camera's SDP states.
    period_ns: Option<u64>,
    pub latency_us: crate::report::Latencies,
    /// Frame bytes (headers included) on any channel.
    pub bytes: u64,
    /// Frame bytes of timed packets due before PLAY was sent (a GOP cache's replay).
    pub replayed_bytes: u64,
    /// RTP packets on the media channel.
    pub packets: u64,
    /// Marked packets of the right stream: timed and sequence-checked.
    pub timed: u64,
    /// RTP packets without our mark (parameter sets, re-packetised media): header-checked only.
    pub unmarked: u64,
    pub rtcp: u64,
    pub integrity: Integrity,
    pub slices: SliceCheck,
    /// Missing RTP sequence numbers (every packet, marked or not, within one SSRC).
    pub rtp_seq_gaps: u64,
    last_rtp_seq: Option<u16>,
    /// RTP packets received before the first marked one.
    packets_before_mark: u64,
    /// A new SSRC began: the next marked packet opens a new segment.
    ssrc_changed: bool,
    /// The stretch of the stream since the last discontinuity, and the tallies of those closed.
    segment: Option<Segment>,
    closed: Closed,
    /// New SSRCs or jumps of the camera's schedule seen.
    pub discontinuities: u64,
    last_arrival_ns: Option<u64>,
    /// Arrival of the first RTP packet, and of the first that begins or carries a keyframe.
    pub first_packet_ns: Option<u64>,
    pub first_keyframe_ns: Option<u64>,
    /// When PLAY was sent: packets due before it are history (a relay's GOP cache replaying the
    /// picture so far), checked and counted but kept out of the media latency.
    play_sent_ns: Option<u64>,
    pub from_before_play: u64,
    /// Whether the session's marks come from the header extension (every packet, on a fixed
    /// schedule) or from padding units in the payload; decided by the first mark.
    scheduled: Option<bool>,
    stalls: Stalls,
}

/// The first marked packet of a segment.
#[derive(Debug, Clone, Copy)]
struct First {
    rtp_seq: u16,
    seq: u64,
}

/// A stretch of one camera stream between discontinuities.
#[derive(Debug, Clone)]
struct Segment {
    first: First,
    /// Due time of stream sequence 0 by this segment's schedule (scheduled marks, period known).
    t0: Option<i128>,
    /// Stream sequences seen, as bits from `base`.
    base: u64,
    seen: Vec<u64>,
    highest: u64,
}

/// What the segments closed so far add up to.
#[derive(Debug, Clone, Copy, Default)]
struct Closed {
    expected: u64,
    lost: u64,
    start: Start,
}

/// How the first segment's start was found.
#[derive(Debug, Clone, Copy, Default)]
struct Start {
    rate_unknown: bool,
    start_unknown: bool,
    offset: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stalls {
    count: u64,
    total_ns: u64,
    longest_ns: u64,
}

/// Loss, stalls and counts of a finished session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Packets due between the stream's start and the end minus the grace.
    pub expected: u64,
    /// Of those, how many did not arrive.
    pub lost: u64,
    /// Marks on the camera's schedule, but no period stated: loss cannot be counted.
    pub rate_unknown: bool,
    /// The PLAY reply had no `RTP-Info: seq=`: counted from the first packet.
    pub start_unknown: bool,
    /// First packet received minus the packet `RTP-Info` named, in packets (0: they agree;
    /// positive: packets named but never sent, counted lost; negative: the first packet came
    /// before the one named).
    pub start_offset: i64,
    pub stalls: u64,
    pub stalled_ns: u64,
    pub longest_stall_ns: u64,
}

/// Stream sequences further than this from a segment's first are refused as damage: bounds the
/// bitmap (2 MB; 22 hours at 2 Mbit/s in 1,200-byte packets).
const MAX_SEQ_SPAN: u64 = 1 << 24;

impl Checker {
    pub fn new(params: CheckParams, expect_stream: Option<u32>) -> Checker {
        Checker {
            params,
            expect_stream,
            announced_ssrc: None,
            ssrc: None,
            rtp_info_seq: None,
            period_ns: None,
            latency_us: crate::report::Latencies::default(),
            bytes: 0,
            replayed_bytes: 0,
            packets: 0,
            timed: 0,
            unmarked: 0,
            rtcp: 0,
            integrity: Integrity::default(),
            slices: SliceCheck::default(),
            rtp_seq_gaps: 0,
            last_rtp_seq: None,
            packets_before_mark: 0,
            ssrc_changed: false,
            segment: None,
            closed: Closed::default(),
            discontinuities: 0,
            last_arrival_ns: None,
            first_packet_ns: None,
            first_keyframe_ns: None,
            play_sent_ns: None,
            from_before_play: 0,
            scheduled: None,
            stalls: Stalls::default(),
        }
    }

    /// The SSRC the SETUP reply announced (`Transport: ...;ssrc=`).
    pub fn expect_ssrc(&mut self, ssrc: u32) {
        self.announced_ssrc = Some(ssrc);
    }

    /// The packet interval the camera's description states.
    pub fn set_period(&mut self, period_ns: Option<u64>) {
        self.period_ns = period_ns.filter(|&p| p > 0);
    }

    pub fn period_ns(&self) -> Option<u64> {
        self.period_ns
    }

    /// When the last frame was received (or PLAY answered, if none came yet).
    pub fn last_arrival(&self) -> Option<u64> {
        self.last_arrival_ns
    }

    /// PLAY is being sent now.
    pub fn play_sent(&mut self, now_ns: u64) {
        self.play_sent_ns = Some(now_ns);
    }

    /// The PLAY reply's `RTP-Info: seq=`; arrivals are timed from now on if none came yet.
    pub fn playing(&mut self, rtp_info_seq: Option<u16>, now_ns: u64) {
        self.rtp_info_seq = rtp_info_seq;
        self.last_arrival_ns.get_or_insert(now_ns);
    }

    /// One interleaved frame received at `now_ns`. Returns the media latency if it was timed.
    pub fn frame(&mut self, channel: u8, payload: &[u8], now_ns: u64) -> Option<u64> {
        self.bytes += 4 + payload.len() as u64;
        match channel {
            0 => self.rtp(payload, now_ns),
            1 => {
                // RTCP: version 2, packet types 200..=204 (SR, RR, SDES, BYE, APP).
                self.rtcp += 1;
                if payload.len() < 4 || payload[0] >> 6 != 2 || !(200..=204).contains(&payload[1]) {
                    self.integrity.bad_rtcp += 1;
                }
                None
            }
            _ => {
                self.integrity.unexpected_channel += 1;
                None
            }
        }
    }

    fn rtp(&mut self, packet: &[u8], now_ns: u64) -> Option<u64> {
        self.packets += 1;
        self.arrival(now_ns);
        let rtp = match payload::parse_rtp(packet) {
            Ok(r) => r,
            Err(RtpError::Short | RtpError::Version) => {
                self.integrity.bad_rtp += 1;
                return None;
            }
        };
        match self.ssrc {
            None => {
                if self.announced_ssrc.is_some_and(|s| s != rtp.ssrc) {
                    self.integrity.ssrc_mismatch += 1;
                }
                self.ssrc = Some(rtp.ssrc);
            }
            Some(s) if s != rtp.ssrc => {
                // A new source (a camera that restarted, passed on as it is): a discontinuity,
                // counted when its first marked packet shows where the new stream stands.
                self.ssrc = Some(rtp.ssrc);
                self.ssrc_changed = true;
                self.last_rtp_seq = None;
            }
            Some(_) => {}
        }
        let mut continuous = true;
        if let Some(last) = self.last_rtp_seq {
            let step = rtp.seq.wrapping_sub(last);
            // Steps past half the space are taken as going backwards, not as a huge gap.
            if step == 0 || step > 0x8000 {
                self.integrity.out_of_order += 1;
            } else {
                self.rtp_seq_gaps += u64::from(step - 1);
            }
            continuous = step == 1;
        }
        self.last_rtp_seq = Some(rtp.seq);
        let parsed = payload::parse_mark(&rtp);
        // A picture cut by a camera restart cannot be verified, even where a relay made the
        // RTP sequence continuous across it.
        let restarted = self.ssrc_changed
            || matches!(&parsed, Ok(Some(m)) if self.expect_stream.is_none_or(|s| s == m.stream) && self.jumps(m));
        let splits = self.slices.pictures_split;
        if self.slices.packet(&rtp, continuous && !restarted) {
            self.integrity.bad_slice += 1;
        }
        self.integrity.split_picture += self.slices.pictures_split - splits;
        self.first_packet_ns.get_or_insert(now_ns);
        if self.first_keyframe_ns.is_none() && payload::starts_keyframe(rtp.payload) {
            self.first_keyframe_ns = Some(now_ns);
        }
        let mark = match parsed {
            Ok(Some(m)) if *self.scheduled.get_or_insert(m.scheduled) == m.scheduled => m,
            Ok(_) => {
                self.unmarked += 1;
                if self.segment.is_none() {
                    self.packets_before_mark += 1;
                }
                return None;
            }
            Err(MarkError::Short | MarkError::Fill) => {
                self.integrity.bad_payload += 1;
                return None;
            }
        };
        if self.expect_stream.is_some_and(|s| s != mark.stream) {
            self.integrity.wrong_stream += 1;
            return None;
        }
        let (t0, jumped) = (self.origin(&mark), self.jumps(&mark));
        let new_ssrc = std::mem::take(&mut self.ssrc_changed);
        if self.segment.is_none() || jumped || new_ssrc {
            if let Some(seg) = self.segment.take() {
                // The old segment ends where the new one's first packet came.
                let ((expected, lost), start) = self.segment_loss(&seg, false, now_ns);
                self.closed.expected += expected;
                self.closed.lost += lost;
                if self.closed_none() {
                    self.closed.start = start;
                }
                self.discontinuities += 1;
            }
            let first = First { rtp_seq: rtp.seq, seq: mark.seq };
            let zero_start = self.params.start == StreamStart::Zero && self.closed_none();
            self.segment = Some(Segment {
                first,
                t0,
                // The start lies at most one RTP sequence space before the first packet.
                base: if zero_start { 0 } else { mark.seq.saturating_sub(1 << 16) },
                seen: Vec::new(),
                highest: mark.seq,
            });
        }
        let seg = self.segment.as_mut()?;
        if mark.seq < seg.base
            || mark.seq - seg.base >= MAX_SEQ_SPAN
            || mark.seq.abs_diff(seg.first.seq) >= MAX_SEQ_SPAN / 2
        {
            self.integrity.bad_payload += 1;
            return None;
        }
        let bit = mark.seq - seg.base;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if seg.seen.len() <= word {
            seg.seen.resize(word + 1, 0);
        }
        if seg.seen[word] & mask != 0 || mark.seq < seg.highest {
            self.integrity.out_of_order += 1;
        }
        seg.seen[word] |= mask;
        seg.highest = seg.highest.max(mark.seq);
        self.timed += 1;
        if self.play_sent_ns.is_some_and(|p| mark.due_ns < p) {
            self.from_before_play += 1;
            self.replayed_bytes += 4 + packet.len() as u64;
            return None;
        }
        let lat_us = now_ns.saturating_sub(mark.due_ns) / 1000;
        self.latency_us.record(lat_us);
        Some(lat_us)
    }

    /// Due time of stream sequence 0 by the schedule `m` is on (scheduled marks, period known).
    fn origin(&self, m: &payload::Mark) -> Option<i128> {
        let p = self.period_ns.filter(|_| m.scheduled)?;
        Some(i128::from(m.due_ns) - i128::from(m.seq) * i128::from(p))
    }

    /// Whether `m` is not on the open segment's schedule: the camera's stream started over.
    fn jumps(&self, m: &payload::Mark) -> bool {
        let Some(seg) = &self.segment else { return false };
        match (self.origin(m), seg.t0, self.period_ns) {
            (Some(t0), Some(s), Some(p)) => (s - t0).abs() > i128::from(p / 2),
            // Padding marks: a stream that starts over.
            (None, _, _) => !m.scheduled && m.seq < seg.first.seq,
            _ => false,
        }
    }

    /// No segment has been closed yet: the one open is the session's first.
    fn closed_none(&self) -> bool {
        self.discontinuities == 0
    }

    fn arrival(&mut self, now_ns: u64) {
        if let Some(last) = self.last_arrival_ns.replace(now_ns) {
            let g = now_ns.saturating_sub(last);
            if g > self.params.stall_ns {
                self.stalls.count += 1;
                self.stalls.total_ns += g;
                self.stalls.longest_ns = self.stalls.longest_ns.max(g);
            }
        }
    }

    /// A segment's (expected, lost), up to `end_ns` (the next segment's first arrival, or the
    /// session's end minus the grace); the first segment starts where `--stream-start` says.
    /// Also how the start was found (for the first segment).
    fn segment_loss(&self, seg: &Segment, last: bool, end_ns: u64) -> ((u64, u64), Start) {
        let first = seg.first;
        let seen_between = |lo: u64, hi: u64| -> u64 {
            let lo = lo.max(seg.base) - seg.base;
            let Some(hi) = hi.checked_sub(seg.base) else { return 0 };
            (lo..=hi)
                .map(|b| ((b / 64) as usize, b % 64))
                .filter(|&(w, bit)| seg.seen.get(w).is_some_and(|x| x & (1 << bit) != 0))
                .count() as u64
        };
        if self.scheduled == Some(false) {
            // Padding units are not evenly spaced: no schedule to extrapolate the ends from.
            let expected = seg.highest - first.seq + 1;
            return ((expected, expected - seen_between(first.seq, seg.highest)), Start::default());
        }
        let (Some(period), Some(t0)) = (self.period_ns, seg.t0) else {
            // No stated rate: only what came can be counted, and the session fails for it.
            let seen = seen_between(first.seq, seg.highest);
            return ((seen, 0), Start { rate_unknown: true, ..Start::default() });
        };
        let (mut start_unknown, mut offset) = (false, 0);
        let start = if !self.closed_none() {
            // After a discontinuity the new stream is counted from its first packet.
            first.seq
        } else {
            match (self.params.start, self.rtp_info_seq) {
                (StreamStart::Zero, _) => 0,
                (StreamStart::RtpInfo, Some(s)) => {
                    // Packets between the one RTP-Info names and the first marked one.
                    offset = i64::from(first.rtp_seq.wrapping_sub(s) as i16) - self.packets_before_mark as i64;
                    first.seq.saturating_sub(offset.max(0) as u64)
                }
                (StreamStart::RtpInfo, None) => {
                    start_unknown = true;
                    first.seq
                }
            }
        };
        let cutoff = i128::from(if last { end_ns.saturating_sub(self.params.grace_ns) } else { end_ns });
        let mut t = (0, 0);
        if cutoff >= t0 + i128::from(start) * i128::from(period) {
            let last_due = ((cutoff - t0) / i128::from(period)) as u64;
            let expected = last_due - start + 1;
            t = (expected, expected - seen_between(start, last_due));
        }
        (t, Start { rate_unknown: false, start_unknown, offset })
    }

    /// Closes the session's books at `end_ns` (the stop time, or when it failed).
    pub fn finish(&mut self, end_ns: u64) -> Tally {
        self.arrival(end_ns);
        let mut t = Tally {
            expected: self.closed.expected,
            lost: self.closed.lost,
            stalls: self.stalls.count,
            stalled_ns: self.stalls.total_ns,
            longest_stall_ns: self.stalls.longest_ns,
            ..Tally::default()
        };
        let start = match &self.segment {
            Some(seg) => {
                let ((expected, lost), start) = self.segment_loss(seg, true, end_ns);
                t.expected += expected;
                t.lost += lost;
                if self.closed_none() { start } else { self.closed.start }
            }
            None => {
                // Nothing timed: what was due from PLAY on is lost, if the rate is known.
                if let (Some(p), Some(play)) = (self.period_ns, self.play_sent_ns) {
                    t.expected = end_ns.saturating_sub(self.params.grace_ns).saturating_sub(play) / p;
                    t.lost = t.expected;
                }
                Start { rate_unknown: self.period_ns.is_none(), ..Start::default() }
            }
        };
        t.rate_unknown = start.rate_unknown;
        t.start_unknown = start.start_unknown;
        t.start_offset = start.offset;
        t
    }

    /// Why a session that played fails by its figures: a rate that was never stated, loss or a
    /// stall over the thresholds.
    pub fn judge(&self, t: &Tally) -> Option<&'static str> {
        if t.rate_unknown && self.scheduled != Some(false) {
            return Some("rate_unknown");
        }
        if t.lost as f64 > self.params.max_loss * t.expected as f64 {
            return Some("loss_above_threshold");
        }
        if t.longest_stall_ns > self.params.max_stall_ns {
            return Some("stall_above_threshold");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 10_000_000; // 10 ms between packets

    fn params(start: StreamStart) -> CheckParams {
        CheckParams { start, stall_ns: 100_000_000, grace_ns: 50_000_000, max_loss: 0.01, max_stall_ns: 1_000_000_000 }
    }

    /// A checker of stream 3 whose camera stated a 10 ms interval.
    fn checker(start: StreamStart) -> Checker {
        let mut c = Checker::new(params(start), Some(3));
        c.set_period(Some(P));
        c
    }

    fn pkt(stream: u32, seq: u64, rtp_seq: u16) -> Vec<u8> {
        let mut p = Vec::new();
        payload::push_packet(&mut p, 100, stream, seq, rtp_seq, 1_000_000_000 + seq * P);
        p[4..].to_vec()
    }

    /// Feeds packets `seqs` of stream 3, each arriving 1 ms after it was due.
    fn feed(c: &mut Checker, seqs: impl IntoIterator<Item = u64>) {
        for s in seqs {
            c.frame(0, &pkt(3, s, s as u16), 1_000_000_000 + s * P + 1_000_000);
        }
    }

    #[test]
    fn loss_counts_the_start_the_middle_and_the_end_against_the_schedule() {
        let mut c = checker(StreamStart::Zero);
        c.playing(None, 1_000_000_000);
        feed(&mut c, (2..50).filter(|s| !(20..25).contains(s)));
        // Ended at due(99) + grace: packets 0..=99 were due, 0-1, 20-24 and 50-99 never came.
        let t = c.finish(1_000_000_000 + 99 * P + 50_000_000);
        assert_eq!((t.expected, t.lost), (100, 2 + 5 + 50));
        assert_eq!(c.timed, 43);
        assert_eq!(c.rtp_seq_gaps, 5);
        assert!((c.latency_us.value_at_quantile(0.5) as i64 - 1000).abs() <= 1);
        // The tail: 500 ms without packets, past the 100 ms stall.
        assert_eq!(t.stalls, 1);
    }

    #[test]
    fn a_stall_is_told_apart_from_loss_and_shows_as_overdue_latency() {
        let mut c = checker(StreamStart::Zero);
        c.playing(None, 1_000_000_000);
        feed(&mut c, 0..30);
        // 30..60 held back for 300 ms past their due times, then delivered at once.
        let late = 1_000_000_000 + 60 * P + 1_000_000;
        for s in 30..60 {
            c.frame(0, &pkt(3, s, s as u16), late);
        }
        feed(&mut c, 60..100);
        let t = c.finish(1_000_000_000 + 99 * P + 50_000_000);
        assert_eq!((t.expected, t.lost), (100, 0));
        assert_eq!(t.stalls, 1);
        assert!(t.longest_stall_ns >= 300_000_000);
        assert!(c.latency_us.max() >= 300_000, "overdue packets keep their due time");
    }

    #[test]
    fn another_streams_packets_and_damage_are_caught() {
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
        c.expect_ssrc(payload::ssrc_of(3));
        c.frame(0, &pkt(4, 0, 0), 0);
        let mut bad = pkt(3, 1, 1);
        *bad.last_mut().unwrap() = 7;
        c.frame(0, &bad, 0);
        c.frame(2, b"x", 0);
        c.frame(1, b"not rtcp", 0);
        c.frame(0, &[0x40; 20], 0);
        let i = c.integrity;
        assert_eq!((i.wrong_stream, i.ssrc_mismatch, i.bad_payload), (1, 1, 1));
        assert_eq!((i.unexpected_channel, i.bad_rtcp, i.bad_rtp), (1, 1, 1));
        assert_eq!(i.first_fault(), Some("wrong_stream"));
        assert_eq!(c.timed, 0);
    }

    #[test]
    fn a_shared_stream_starts_where_rtp_info_says() {
        let mut c = checker(StreamStart::RtpInfo);
        // Joined at stream sequence 1000, RTP sequence 1000; 1000 and 1001 were lost.
        c.playing(Some(1000), 0);
        feed(&mut c, 1002..1100);
        let t = c.finish(1_000_000_000 + 1099 * P + 50_000_000);
        assert_eq!((t.expected, t.lost, t.start_offset), (100, 2, 2), "RTP-Info named 2 packets never sent");
        assert_eq!(c.judge(&t), Some("loss_above_threshold"), "2% lost");
    }

    #[test]
    fn without_rtp_info_the_first_packet_starts_the_stream() {
        let mut c = checker(StreamStart::RtpInfo);
        c.playing(None, 1_000_000_000 + 1002 * P);
        feed(&mut c, 1002..1100);
        let t = c.finish(1_000_000_000 + 1099 * P + 50_000_000);
        assert_eq!((t.expected, t.lost, t.start_unknown), (98, 0, true));
        assert_eq!(c.judge(&t), None);
    }

    #[test]
    fn one_packet_then_silence_is_loss_and_a_stall() {
        let mut c = checker(StreamStart::Zero);
        c.play_sent(1_000_000_000);
        c.playing(Some(0), 1_000_000_000);
        feed(&mut c, 0..1);
        // 12 s of nothing.
        let t = c.finish(13_000_000_000);
        assert_eq!(t.expected, 1196, "{t:?}");
        assert_eq!(t.lost, 1195);
        assert_eq!(t.stalls, 1);
        assert!(t.longest_stall_ns > 11_000_000_000);
        assert_eq!(c.judge(&t), Some("loss_above_threshold"));
        // The same with no stated rate: the session cannot be judged, and fails for it.
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
        c.playing(Some(0), 1_000_000_000);
        feed(&mut c, 0..1);
        let t = c.finish(13_000_000_000);
        assert!(t.rate_unknown);
        assert_eq!(c.judge(&t), Some("rate_unknown"));
    }

    #[test]
    fn a_stall_is_measured_in_milliseconds_whatever_the_rate() {
        for period in [P, 4 * P] {
            let mut c = Checker::new(params(StreamStart::Zero), Some(3));
            c.set_period(Some(period));
            c.playing(Some(0), 1_000_000_000);
            let mut at = 1_000_000_000;
            for s in 0..200u64 {
                // A 300 ms freeze after packet 100, then the backlog.
                at = at.max(1_000_000_000 + s * period + 1_000_000);
                if s == 100 {
                    at += 300_000_000;
                }
                let mut p = Vec::new();
                payload::push_packet(&mut p, 100, 3, s, s as u16, 1_000_000_000 + s * period);
                c.frame(0, &p[4..], at);
            }
            let t = c.finish(at + 10_000_000);
            assert_eq!((t.stalls, t.lost), (1, 0), "period {period}: {t:?}");
            assert!(t.longest_stall_ns >= 300_000_000);
        }
    }

    #[test]
    fn a_camera_restart_is_one_discontinuity_with_the_gap_lost() {
        let mut c = checker(StreamStart::Zero);
        c.playing(Some(0), 1_000_000_000);
        feed(&mut c, 0..50);
        // The camera dies after packet 49 (due at 1.49 s) and comes back at 3 s: a new stream
        // from sequence 0 on a new schedule and a new SSRC.
        let t1 = 3_000_000_000;
        for s in 0..50u64 {
            let mut p = Vec::new();
            payload::push_packet(&mut p, 100, 3, s, s as u16, t1 + s * P);
            p[4 + 8..4 + 12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            c.frame(0, &p[4..], t1 + s * P + 1_000_000);
        }
        let t = c.finish(t1 + 49 * P + 50_000_000);
        assert_eq!(c.discontinuities, 1);
        // Old schedule: 0..=200 due by the new stream's first arrival (3.001 s), 50 came.
        assert_eq!((t.expected, t.lost), (201 + 50, 151));
        assert_eq!(c.integrity.total(), 0, "{:?}", c.integrity);
        assert_eq!(t.stalls, 1);
    }

    #[test]
    fn marks_from_padding_units_count_the_holes_between_them() {
        let mut c = Checker::new(params(StreamStart::RtpInfo), Some(3));
        c.playing(Some(7), 0);
        for s in (10..60).filter(|s| *s != 30) {
            // The extension stripped, as a re-packetising relay does; RTP renumbered.
            let mut p = pkt(3, s, 0);
            p[0] &= !0x10;
            p.drain(12..12 + payload::EXT_LEN);
            p[2..4].copy_from_slice(&(s as u16 + 100).to_be_bytes());
            c.frame(0, &p, 1_000_000_000 + s * P + 1_000_000);
        }
        let t = c.finish(1_000_000_000 + 99 * P);
        assert_eq!((t.expected, t.lost, c.timed), (50, 1, 49));
        assert!((c.latency_us.value_at_quantile(0.5) as i64 - 1000).abs() <= 1);
    }

    #[test]
    fn the_first_packet_and_the_first_keyframe_are_timed() {
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
        let rtp = |seq: u16, nal: &[u8]| {
            [&[0x80, 96][..], &seq.to_be_bytes(), &[0, 0, 0, 0], &payload::ssrc_of(3).to_be_bytes(), nal].concat()
        };
        c.frame(0, &rtp(0, &[0x41, 0x9a]), 10);
        c.frame(0, &rtp(1, &[0x7c, 0x05, 1]), 20);
        assert_eq!((c.first_packet_ns, c.first_keyframe_ns), (Some(10), None));
        c.frame(0, &rtp(2, &[0x67, 0x42]), 30);
        c.frame(0, &rtp(3, &[0x65, 0x88]), 40);
        assert_eq!((c.first_packet_ns, c.first_keyframe_ns), (Some(10), Some(30)));
    }

    #[test]
    fn a_replayed_picture_is_checked_but_not_timed() {
        let mut c = checker(StreamStart::RtpInfo);
        // PLAY sent when packet 40 was due; a GOP cache replays 20..40 at once, then live.
        let play = 1_000_000_000 + 40 * P;
        c.play_sent(play);
        c.playing(Some(20), play + 1_000_000);
        for s in 20..40 {
            c.frame(0, &pkt(3, s, s as u16), play + 2_000_000);
        }
        feed(&mut c, 40..100);
        let t = c.finish(1_000_000_000 + 99 * P + 50_000_000);
        assert_eq!((t.expected, t.lost), (80, 0));
        assert_eq!((c.timed, c.from_before_play), (80, 20));
        assert_eq!(c.replayed_bytes, 20 * 104);
        assert_eq!(c.latency_us.len(), 60);
        assert!(c.latency_us.max() < 2000, "replayed packets are not late");
    }

    #[test]
    fn nothing_received_has_nothing_to_extrapolate() {
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
        c.playing(None, 0);
        let t = c.finish(5_000_000_000);
        assert!(t.rate_unknown);
        assert_eq!((t.expected, t.lost, c.packets), (0, 0, 0));
    }
}
