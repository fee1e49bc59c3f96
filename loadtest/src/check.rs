//! What one viewer checks and counts on the media it receives: every frame's channel, every RTP
//! packet's version, SSRC and sequence, every mark's stream, due time (for latency) and stream
//! sequence (for loss), every padding unit's fill; arrival gaps (stalls); when the first packet
//! and the first keyframe packet came. At the end of the session, loss is the packets the
//! camera's schedule says were due minus the packets that came (with marks from the payload
//! only, behind a relay that re-packetised the media: the holes between the first and the last
//! padding unit received).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::payload::{self, MarkError, RtpError};

/// Where a stream's packets are expected to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// At stream sequence 0: the loadtest camera starts a stream for every camera connection,
    /// which holds whenever each viewer has its own (the relay, HAProxy).
    Zero,
    /// At the packet the PLAY reply's `RTP-Info: seq=` names: for relays that share one camera
    /// connection among viewers, whose viewers join a stream under way.
    RtpInfo,
}

#[derive(Debug, Clone, Copy)]
pub struct CheckParams {
    pub start: StreamStart,
    /// A gap between arrivals longer than this many packet intervals is a stall.
    pub stall_intervals: u32,
    /// Packets due within this long before the session's end are not expected yet.
    pub grace_ns: u64,
}

/// Integrity faults, counted per packet or frame.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Integrity {
    /// Marked packets of another stream than the path asked for.
    pub wrong_stream: u64,
    /// RTP packets whose SSRC is not the one announced (or first seen).
    pub ssrc_mismatch: u64,
    /// RTP packets too short or not version 2.
    pub bad_rtp: u64,
    /// Marks or padding units cut short, or padding with damaged fill.
    pub bad_payload: u64,
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
            + self.unexpected_channel
            + self.bad_rtcp
            + self.out_of_order
    }
}

/// One session's media, as counted while it plays.
pub struct Checker {
    params: CheckParams,
    expect_stream: Option<u32>,
    expect_ssrc: Option<u32>,
    rtp_info_seq: Option<u16>,
    pub latency_us: Histogram<u64>,
    /// Frame bytes (headers included) on any channel.
    pub bytes: u64,
    /// RTP packets on the media channel.
    pub packets: u64,
    /// Marked packets of the right stream: timed and sequence-checked.
    pub timed: u64,
    /// RTP packets without our mark (parameter sets, re-packetised media): header-checked only.
    pub unmarked: u64,
    pub rtcp: u64,
    pub integrity: Integrity,
    /// Missing RTP sequence numbers (every packet, marked or not, of the session's SSRC).
    pub rtp_seq_gaps: u64,
    last_rtp_seq: Option<u16>,
    /// RTP packets before the first marked one, and that one's RTP and stream sequence.
    first: Option<First>,
    last_mark: Option<payload::Mark>,
    /// Stream sequences seen, as bits from `base`.
    seen: Vec<u64>,
    base: u64,
    highest: Option<u64>,
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
    /// Arrival gaps seen before the packet interval was known.
    early_gaps: Vec<u64>,
    stalls: Stalls,
}

#[derive(Debug, Clone, Copy)]
struct First {
    rtp_seq: u16,
    seq: u64,
    due_ns: u64,
    packets_before: u64,
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
    /// The packet interval could not be learnt (fewer than two marked packets).
    pub rate_unknown: bool,
    /// `RtpInfo` start asked for but the PLAY reply had no `seq=`: counted from the first packet.
    pub start_unknown: bool,
    pub stalls: u64,
    pub stalled_ns: u64,
    pub longest_stall_ns: u64,
}

/// Stream sequences further than this from the first are refused as damage: bounds the bitmap
/// (2 MB; 22 hours at 2 Mbit/s in 1,200-byte packets).
const MAX_SEQ_SPAN: u64 = 1 << 24;

impl Checker {
    pub fn new(params: CheckParams, expect_stream: Option<u32>) -> Checker {
        Checker {
            params,
            expect_stream,
            expect_ssrc: None,
            rtp_info_seq: None,
            latency_us: crate::report::histogram(),
            bytes: 0,
            packets: 0,
            timed: 0,
            unmarked: 0,
            rtcp: 0,
            integrity: Integrity::default(),
            rtp_seq_gaps: 0,
            last_rtp_seq: None,
            first: None,
            last_mark: None,
            seen: Vec::new(),
            base: 0,
            highest: None,
            last_arrival_ns: None,
            first_packet_ns: None,
            first_keyframe_ns: None,
            scheduled: None,
            play_sent_ns: None,
            from_before_play: 0,
            early_gaps: Vec::new(),
            stalls: Stalls::default(),
        }
    }

    /// The SSRC the SETUP reply announced (`Transport: ...;ssrc=`).
    pub fn expect_ssrc(&mut self, ssrc: u32) {
        self.expect_ssrc = Some(ssrc);
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
        match self.expect_ssrc {
            Some(s) if s != rtp.ssrc => self.integrity.ssrc_mismatch += 1,
            Some(_) => {}
            None => self.expect_ssrc = Some(rtp.ssrc),
        }
        if let Some(last) = self.last_rtp_seq {
            let step = rtp.seq.wrapping_sub(last);
            // Steps past half the space are taken as going backwards, not as a huge gap.
            if step == 0 || step > 0x8000 {
                self.integrity.out_of_order += 1;
            } else {
                self.rtp_seq_gaps += u64::from(step - 1);
            }
        }
        self.last_rtp_seq = Some(rtp.seq);
        self.first_packet_ns.get_or_insert(now_ns);
        if self.first_keyframe_ns.is_none() && payload::starts_keyframe(rtp.payload) {
            self.first_keyframe_ns = Some(now_ns);
        }
        let mark = match payload::parse_mark(&rtp) {
            Ok(Some(m)) if *self.scheduled.get_or_insert(m.scheduled) == m.scheduled => m,
            Ok(_) => {
                self.unmarked += 1;
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
        let first = *self.first.get_or_insert(First {
            rtp_seq: rtp.seq,
            seq: mark.seq,
            due_ns: mark.due_ns,
            packets_before: self.packets - 1,
        });
        if self.seen.is_empty() {
            self.base = match self.params.start {
                StreamStart::Zero => 0,
                // The start lies at most one RTP sequence space before the first packet.
                StreamStart::RtpInfo => mark.seq.saturating_sub(1 << 16),
            };
        }
        if mark.seq < self.base
            || mark.seq - self.base >= MAX_SEQ_SPAN
            || mark.seq.abs_diff(first.seq) >= MAX_SEQ_SPAN / 2
        {
            self.integrity.bad_payload += 1;
            return None;
        }
        let bit = mark.seq - self.base;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & mask != 0 || self.highest.is_some_and(|h| mark.seq < h) {
            self.integrity.out_of_order += 1;
        }
        self.seen[word] |= mask;
        self.highest = Some(self.highest.map_or(mark.seq, |h| h.max(mark.seq)));
        self.timed += 1;
        self.last_mark = Some(mark);
        if !self.early_gaps.is_empty() && self.period_ns().is_some() {
            for g in std::mem::take(&mut self.early_gaps) {
                self.gap(g);
            }
        }
        if self.play_sent_ns.is_some_and(|p| mark.due_ns < p) {
            self.from_before_play += 1;
            return None;
        }
        let lat_us = now_ns.saturating_sub(mark.due_ns) / 1000;
        let _ = self.latency_us.record(lat_us.clamp(1, crate::report::MAX_US));
        Some(lat_us)
    }

    /// The camera's packet interval, from the due times of the first and latest marked packets.
    fn period_ns(&self) -> Option<u64> {
        let (f, l) = (self.first?, self.last_mark?);
        (l.seq > f.seq).then(|| (l.due_ns.saturating_sub(f.due_ns)) / (l.seq - f.seq)).filter(|&p| p > 0)
    }

    fn arrival(&mut self, now_ns: u64) {
        if let Some(last) = self.last_arrival_ns.replace(now_ns) {
            let g = now_ns.saturating_sub(last);
            if self.period_ns().is_some() {
                self.gap(g);
            } else if g > 0 && self.early_gaps.len() < 64 {
                self.early_gaps.push(g);
            }
        }
    }

    fn gap(&mut self, g: u64) {
        let Some(p) = self.period_ns() else { return };
        if g > p.saturating_mul(u64::from(self.params.stall_intervals)) {
            self.stalls.count += 1;
            self.stalls.total_ns += g;
            self.stalls.longest_ns = self.stalls.longest_ns.max(g);
        }
    }

    /// Closes the session's books at `end_ns` (the stop time, or when it failed).
    pub fn finish(&mut self, end_ns: u64) -> Tally {
        self.arrival(end_ns);
        let mut t = Tally::default();
        let (Some(first), Some(period)) = (self.first, self.period_ns()) else {
            // Nothing or a single packet: no schedule to extrapolate, so only what came counts.
            t.rate_unknown = true;
            t.expected = self.timed;
            return self.with_stalls(t);
        };
        if self.scheduled == Some(false) {
            // Padding units are not evenly spaced: no schedule to extrapolate the ends from.
            let hi = self.highest.unwrap_or(first.seq);
            t.expected = hi - first.seq + 1;
            t.lost = t.expected - self.seen_between(first.seq, hi);
            return self.with_stalls(t);
        }
        let start = match (self.params.start, self.rtp_info_seq) {
            (StreamStart::Zero, _) => 0,
            (StreamStart::RtpInfo, Some(s)) => {
                // Packets between the one RTP-Info names and the first marked one that never
                // came are the start's loss.
                let missing = u64::from(first.rtp_seq.wrapping_sub(s)).saturating_sub(first.packets_before);
                first.seq.saturating_sub(missing)
            }
            (StreamStart::RtpInfo, None) => {
                t.start_unknown = true;
                first.seq
            }
        };
        // Due time of stream sequence 0; the schedule is due(k) = t0 + k × period.
        let t0 = i128::from(first.due_ns) - i128::from(first.seq) * i128::from(period);
        let cutoff = i128::from(end_ns.saturating_sub(self.params.grace_ns));
        if cutoff >= t0 + i128::from(start) * i128::from(period) {
            let last_due = ((cutoff - t0) / i128::from(period)) as u64;
            t.expected = last_due - start + 1;
            t.lost = t.expected - self.seen_between(start, last_due);
        }
        self.with_stalls(t)
    }

    fn with_stalls(&self, mut t: Tally) -> Tally {
        t.stalls = self.stalls.count;
        t.stalled_ns = self.stalls.total_ns;
        t.longest_stall_ns = self.stalls.longest_ns;
        t
    }

    /// Distinct stream sequences seen in `lo..=hi`.
    fn seen_between(&self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(self.base) - self.base;
        let Some(hi) = hi.checked_sub(self.base) else { return 0 };
        (lo..=hi)
            .map(|b| ((b / 64) as usize, b % 64))
            .filter(|&(w, bit)| self.seen.get(w).is_some_and(|x| x & (1 << bit) != 0))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 10_000_000; // 10 ms between packets

    fn params(start: StreamStart) -> CheckParams {
        CheckParams { start, stall_intervals: 10, grace_ns: 50_000_000 }
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
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
        c.playing(None, 1_000_000_000);
        feed(&mut c, (2..50).filter(|s| !(20..25).contains(s)));
        // Ended at due(99) + grace: packets 0..=99 were due, 0-1, 20-24 and 50-99 never came.
        let t = c.finish(1_000_000_000 + 99 * P + 50_000_000);
        assert_eq!((t.expected, t.lost), (100, 2 + 5 + 50));
        assert_eq!(c.timed, 43);
        assert_eq!(c.rtp_seq_gaps, 5);
        assert!((c.latency_us.value_at_quantile(0.5) as i64 - 1000).abs() <= 1);
        // The tail: 500 ms without packets, far past 10 intervals.
        assert_eq!(t.stalls, 1);
    }

    #[test]
    fn a_stall_is_told_apart_from_loss_and_shows_as_overdue_latency() {
        let mut c = Checker::new(params(StreamStart::Zero), Some(3));
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
        let mut c = Checker::new(params(StreamStart::RtpInfo), Some(3));
        // Joined at stream sequence 1000, RTP sequence 1000; 1000 and 1001 were lost.
        c.playing(Some(1000), 0);
        feed(&mut c, 1002..1100);
        let t = c.finish(1_000_000_000 + 1099 * P + 50_000_000);
        assert_eq!((t.expected, t.lost), (100, 2));
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
        let mut c = Checker::new(params(StreamStart::RtpInfo), Some(3));
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
