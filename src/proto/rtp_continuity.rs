//! One unbroken RTP stream per track for viewers, however often the camera behind it reconnects.
//!
//! A camera that drops and comes back (a reboot, a network blip) starts a new RTSP session with
//! a new SSRC, new sequence numbers and new timestamps. A viewer of a shared camera never sees
//! that session change, so it would receive a stream whose source identity and numbering jump:
//! GStreamer's `rtspsrc` opens a new pad for the new SSRC (which a fixed pipeline leaves
//! unlinked), and jitter buffers wait for packets that will never come. So from the second
//! camera connection on, each RTP header is rewritten in place before fan-out: the SSRC viewers
//! know, sequence numbers that continue from the last one they got, and timestamps advanced by
//! the real time that passed (at the track's clock rate). RTCP is rewritten to match (sender
//! report SSRC and RTP time, SDES chunk SSRC); BYE is not passed on, since for viewers the stream
//! has not ended.
//!
//! A camera that changes SSRC inside a session (an encoder restarted by a settings change) is
//! treated the same way. The first connection is passed through untouched (the mapping is the
//! identity), so the common case costs a comparison per packet. Each viewer-visible packet is rewritten once, in
//! the camera's receive buffer, before every viewer is sent the same bytes.

use std::time::Instant;

/// How one camera connection's packets map to what viewers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    /// The SSRC the camera uses on this connection.
    ssrc_in: u32,
    seq_add: u16,
    ts_add: u32,
}

/// One track's continuity state.
#[derive(Debug, Clone)]
pub struct TrackContinuity {
    clock_rate: u32,
    /// The SSRC viewers know.
    ssrc_out: Option<u32>,
    /// The last RTP packet viewers got: sequence number, timestamp, when.
    last: Option<(u16, u32, Instant)>,
    /// The current connection's mapping, from its first RTP packet on.
    mapping: Option<Mapping>,
}

/// What to do with an RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpVerdict {
    Forward,
    /// A BYE (the stream goes on for viewers), or a report that cannot be mapped yet.
    Drop,
}

impl TrackContinuity {
    /// `clock_rate`: the track's RTP clock (SDP `a=rtpmap`), for the time gap of a reconnect.
    pub fn new(clock_rate: u32) -> Self {
        TrackContinuity { clock_rate: clock_rate.max(1), ssrc_out: None, last: None, mapping: None }
    }

    /// A new camera connection: its first RTP packet sets a new mapping.
    pub fn reconnected(&mut self) {
        self.mapping = None;
    }

    /// Rewrites an RTP packet's header in place (nothing to do on the first connection).
    /// Packets too short to be RTP are left alone.
    pub fn rtp(&mut self, packet: &mut [u8], now: Instant) {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return;
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        // A camera may also change SSRC within a session (a stream restarted inside it).
        let mapping = match self.mapping {
            Some(m) if m.ssrc_in == ssrc => m,
            _ => {
                let m = match self.last {
                    None => Mapping { ssrc_in: ssrc, seq_add: 0, ts_add: 0 },
                    Some((last_seq, last_ts, at)) => {
                        let gap = now.saturating_duration_since(at);
                        let ticks = (gap.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
                        Mapping {
                            ssrc_in: ssrc,
                            seq_add: last_seq.wrapping_add(1).wrapping_sub(seq),
                            ts_add: last_ts.wrapping_add(ticks.max(1)).wrapping_sub(ts),
                        }
                    }
                };
                self.ssrc_out.get_or_insert(ssrc);
                self.mapping = Some(m);
                m
            }
        };
        let out_seq = seq.wrapping_add(mapping.seq_add);
        let out_ts = ts.wrapping_add(mapping.ts_add);
        let out_ssrc = self.ssrc_out.unwrap_or(ssrc);
        if (out_seq, out_ts, out_ssrc) != (seq, ts, ssrc) {
            packet[2..4].copy_from_slice(&out_seq.to_be_bytes());
            packet[4..8].copy_from_slice(&out_ts.to_be_bytes());
            packet[8..12].copy_from_slice(&out_ssrc.to_be_bytes());
        }
        self.last = Some((out_seq, out_ts, now));
    }

    /// Rewrites a (compound) RTCP packet from the camera in place to match the RTP rewriting.
    pub fn rtcp(&mut self, packet: &mut [u8]) -> RtcpVerdict {
        let identity = |m: &Mapping| m.seq_add == 0 && m.ts_add == 0 && Some(m.ssrc_in) == self.ssrc_out;
        let mapping = match self.mapping {
            Some(m) => m,
            // Before any RTP of a later connection, reports cannot be mapped yet.
            None if self.last.is_some() => return RtcpVerdict::Drop,
            None => Mapping { ssrc_in: 0, seq_add: 0, ts_add: 0 },
        };
        let ssrc_out = self.ssrc_out;
        let mut at = 0;
        while let Some(h) = packet.get(at..at + 4) {
            if h[0] >> 6 != 2 {
                break;
            }
            let (pt, count) = (h[1], usize::from(h[0] & 0x1f));
            let end = (at + 4 + 4 * usize::from(u16::from_be_bytes([h[2], h[3]]))).min(packet.len());
            if pt == 203 {
                return RtcpVerdict::Drop;
            }
            if self.mapping.is_some_and(|m| !identity(&m)) {
                let body = &mut packet[at..end];
                let swap = |b: &mut [u8]| {
                    if let (Some(field), Some(out)) = (b.get_mut(0..4), ssrc_out) {
                        if u32::from_be_bytes([field[0], field[1], field[2], field[3]]) == mapping.ssrc_in {
                            field.copy_from_slice(&out.to_be_bytes());
                        }
                    }
                };
                match pt {
                    // SR: sender SSRC, NTP time, RTP time.
                    200 => {
                        swap(body.get_mut(4..8).unwrap_or_default());
                        if let Some(t) = body.get_mut(16..20) {
                            let v = u32::from_be_bytes([t[0], t[1], t[2], t[3]]).wrapping_add(mapping.ts_add);
                            t.copy_from_slice(&v.to_be_bytes());
                        }
                    }
                    // SDES: chunks of SSRC, items, zero padding to a word; only the first
                    // chunk's SSRC is the camera's own in practice, but each is checked.
                    202 => {
                        let mut c = 4;
                        for _ in 0..count {
                            let Some(ssrc) = body.get_mut(c..c + 4) else { break };
                            swap(ssrc);
                            c += 4;
                            while let Some(&kind) = body.get(c) {
                                if kind == 0 {
                                    break;
                                }
                                c += 2 + usize::from(*body.get(c + 1).unwrap_or(&0));
                            }
                            c = (c + 4) & !3;
                        }
                    }
                    _ => swap(body.get_mut(4..8).unwrap_or_default()),
                }
            }
            if end <= at {
                break;
            }
            at = end;
        }
        RtcpVerdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::keyframe::RtpHeader;
    use std::time::Duration;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"payload");
        p
    }

    fn fields(p: &[u8]) -> (u16, u32, u32) {
        let h = RtpHeader::parse(p).unwrap();
        (h.seq, h.timestamp, h.ssrc)
    }

    #[test]
    fn the_first_connection_is_untouched() {
        let t0 = crate::test_fixtures::t0();
        let mut c = TrackContinuity::new(90_000);
        for i in 0..5u16 {
            let mut p = packet(65534u16.wrapping_add(i), 1000 + u32::from(i) * 3000, 0xabcd);
            let before = p.clone();
            c.rtp(&mut p, t0);
            assert_eq!(p, before);
        }
        let mut sr = sender_report(0xabcd, 7000);
        let before = sr.clone();
        assert_eq!(c.rtcp(&mut sr), RtcpVerdict::Forward);
        assert_eq!(sr, before);
    }

    #[test]
    fn a_reconnect_continues_ssrc_sequence_and_time() {
        let t0 = crate::test_fixtures::t0();
        let mut c = TrackContinuity::new(90_000);
        let mut p = packet(100, 50_000, 0x1111);
        c.rtp(&mut p, t0);
        let mut p = packet(101, 53_600, 0x1111);
        c.rtp(&mut p, t0 + Duration::from_millis(40));
        c.reconnected();
        // Reports of the new connection before its first RTP packet cannot be mapped.
        assert_eq!(c.rtcp(&mut sender_report(0x2222, 1)), RtcpVerdict::Drop);
        // Two seconds later the camera is back with everything new.
        let mut p = packet(9000, 7_000_000, 0x2222);
        c.rtp(&mut p, t0 + Duration::from_millis(2040));
        assert_eq!(fields(&p), (102, 53_600 + 180_000, 0x1111));
        let mut p = packet(9001, 7_003_600, 0x2222);
        c.rtp(&mut p, t0 + Duration::from_millis(2080));
        assert_eq!(fields(&p), (103, 53_600 + 183_600, 0x1111));
        assert_eq!(&p[12..], b"payload");
        // Its reports say the same.
        let mut sr = sender_report(0x2222, 7_003_600);
        assert_eq!(c.rtcp(&mut sr), RtcpVerdict::Forward);
        assert_eq!(u32::from_be_bytes(sr[4..8].try_into().unwrap()), 0x1111);
        assert_eq!(u32::from_be_bytes(sr[16..20].try_into().unwrap()), 53_600 + 183_600);
        let sdes_ssrc = 28 + 4;
        assert_eq!(u32::from_be_bytes(sr[sdes_ssrc..sdes_ssrc + 4].try_into().unwrap()), 0x1111);
        assert_eq!(&sr[sdes_ssrc + 4..sdes_ssrc + 9], b"\x01\x03cam", "the CNAME item untouched");
        // A BYE is never passed on.
        let mut bye = vec![0x81, 203, 0, 1, 0, 0, 0x22, 0x22];
        assert_eq!(c.rtcp(&mut bye), RtcpVerdict::Drop);
    }

    #[test]
    fn an_ssrc_change_inside_a_connection_is_a_new_mapping_and_wraps_are_fine() {
        let t0 = crate::test_fixtures::t0();
        let mut c = TrackContinuity::new(8000);
        let mut p = packet(65535, u32::MAX - 10, 5);
        c.rtp(&mut p, t0);
        let mut p = packet(3, 100, 6);
        c.rtp(&mut p, t0 + Duration::from_secs(1));
        assert_eq!(fields(&p), (0, (u32::MAX - 10).wrapping_add(8000), 5));
        // Truncated or foreign packets are left alone.
        let mut short = vec![0x80, 96, 0];
        c.rtp(&mut short, t0);
        assert_eq!(short, vec![0x80, 96, 0]);
        let mut junk = vec![0x81, 200, 0xff, 0xff, 1];
        assert_eq!(c.rtcp(&mut junk), RtcpVerdict::Forward);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_left_whole(a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                                    b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let t0 = crate::test_fixtures::t0();
            let mut c = TrackContinuity::new(90_000);
            c.rtp(&mut packet(1, 1, 1), t0);
            c.reconnected();
            c.rtp(&mut packet(50, 50, 2), t0 + Duration::from_secs(1));
            let (mut x, mut y) = (a.clone(), b.clone());
            c.rtp(&mut x, t0);
            let _ = c.rtcp(&mut y);
            proptest::prop_assert_eq!((x.len(), y.len()), (a.len(), b.len()));
        }
    }

    /// SR (no report blocks) + SDES with a CNAME, as cameras send them.
    fn sender_report(ssrc: u32, rtp_ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&rtp_ts.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0x81, 202, 0, 3]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"\x01\x03cam\0\0\0");
        p
    }
}
