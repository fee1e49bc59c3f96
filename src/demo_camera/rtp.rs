//! RTP packetisation of H.264 (RFC 6184, packetization-mode=1) and RTCP sender reports
//! (RFC 3550). Pure functions over bytes: the server decides when and where they go.

/// Dynamic payload type announced in the SDP.
pub const PAYLOAD_TYPE: u8 = 96;
/// RTP clock rate for video (RFC 6184 §8.2.1).
pub const CLOCK_RATE: u32 = 90_000;
/// Largest RTP payload produced by default: keeps packets (plus RTP, `$` and TCP/IP headers)
/// under a 1500-byte Ethernet MTU, so the same packets would also be valid over UDP.
pub const DEFAULT_MAX_PAYLOAD: usize = 1400;

const RTP_HEADER_LEN: usize = 12;
const FU_A: u8 = 28;
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;

/// Turns access units into RTP packets for one stream (one SSRC). Sequence numbers continue
/// from call to call, wrapping at 2^16.
#[derive(Debug, Clone)]
pub struct Packetizer {
    ssrc: u32,
    seq: u16,
    payload_type: u8,
    max_payload: usize,
    packets_sent: u32,
    octets_sent: u32,
    scratch: Vec<u8>,
}

impl Packetizer {
    /// `ssrc` and `first_seq` should be random (RFC 3550 §5.1) and are chosen by the caller.
    pub fn new(ssrc: u32, first_seq: u16) -> Self {
        Packetizer {
            ssrc,
            seq: first_seq,
            payload_type: PAYLOAD_TYPE,
            max_payload: DEFAULT_MAX_PAYLOAD,
            packets_sent: 0,
            octets_sent: 0,
            scratch: Vec::with_capacity(RTP_HEADER_LEN + DEFAULT_MAX_PAYLOAD),
        }
    }

    /// Sets the largest payload per packet (at least 3: FU indicator, FU header, one byte).
    pub fn with_max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload.max(3);
        self
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sequence number the next packet will carry (what `RTP-Info: seq=` announces).
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Packets produced so far (for the sender report; wraps like the RTCP field).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Payload octets produced so far (for the sender report; wraps like the RTCP field).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// Packetises one access unit, calling `emit` with each RTP packet in order. Every packet
    /// carries `timestamp`; the last one has the marker bit set (RFC 6184 §5.1). NAL units that
    /// fit travel as single NAL unit packets, larger ones as FU-A fragments (§5.8).
    pub fn packetize(&mut self, nals: &[&[u8]], timestamp: u32, mut emit: impl FnMut(&[u8])) {
        // Empty units carry nothing (and have no header to fragment); the marker goes on the
        // last packet actually sent.
        let Some(last) = nals.iter().rposition(|n| !n.is_empty()) else {
            return;
        };
        for (i, nal) in nals.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
            let last_nal = i == last;
            if nal.len() <= self.max_payload {
                self.packet(timestamp, last_nal, &[], nal, &mut emit);
                continue;
            }
            // The FU indicator keeps the NAL's F and NRI bits; the FU header its type.
            let indicator = (nal[0] & 0xE0) | FU_A;
            let body = &nal[1..];
            let chunk = self.max_payload - 2;
            let count = body.len().div_ceil(chunk);
            for (k, part) in body.chunks(chunk).enumerate() {
                let mut header = nal[0] & 0x1F;
                if k == 0 {
                    header |= FU_START;
                }
                let last_fragment = k + 1 == count;
                if last_fragment {
                    header |= FU_END;
                }
                self.packet(timestamp, last_nal && last_fragment, &[indicator, header], part, &mut emit);
            }
        }
    }

    fn packet(&mut self, timestamp: u32, marker: bool, prefix: &[u8], payload: &[u8], emit: &mut impl FnMut(&[u8])) {
        let p = &mut self.scratch;
        p.clear();
        p.push(0x80); // V=2, no padding, no extension, no CSRC
        p.push(self.payload_type | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(prefix);
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add((prefix.len() + payload.len()) as u32);
        emit(p);
    }
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// 64-bit NTP timestamp for a time given as a duration since the Unix epoch.
pub fn ntp_timestamp(since_unix_epoch: std::time::Duration) -> u64 {
    let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Sender statistics for one RTCP sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    /// Wall-clock time of the report (NTP format).
    pub ntp: u64,
    /// The same instant on the RTP clock of the stream.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// A compound RTCP packet: SR followed by SDES with a CNAME, as RFC 3550 §6.1 requires of every
/// compound packet. Receivers use it to map RTP time to wall-clock time.
pub fn sender_report(info: &SenderInfo, cname: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    // SR: V=2, RC=0, PT=200, length 6 (in 32-bit words minus one).
    p.extend_from_slice(&[0x80, 200, 0, 6]);
    p.extend_from_slice(&info.ssrc.to_be_bytes());
    p.extend_from_slice(&info.ntp.to_be_bytes());
    p.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
    p.extend_from_slice(&info.packet_count.to_be_bytes());
    p.extend_from_slice(&info.octet_count.to_be_bytes());

    // SDES: one chunk (SSRC, CNAME item, end-of-list null), padded to a 32-bit boundary.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let sdes_start = p.len();
    p.extend_from_slice(&[0x81, 202, 0, 0]);
    p.extend_from_slice(&info.ssrc.to_be_bytes());
    p.push(1); // CNAME
    p.push(cname.len() as u8);
    p.extend_from_slice(cname);
    p.push(0);
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let words = ((p.len() - sdes_start) / 4 - 1) as u16;
    p[sdes_start + 2..sdes_start + 4].copy_from_slice(&words.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed RTP packet, enough to check the packetiser.
    #[derive(Debug)]
    struct Rtp {
        marker: bool,
        pt: u8,
        seq: u16,
        ts: u32,
        ssrc: u32,
        payload: Vec<u8>,
    }

    fn parse(p: &[u8]) -> Rtp {
        assert!(p.len() > 12);
        assert_eq!(p[0], 0x80);
        Rtp {
            marker: p[1] & 0x80 != 0,
            pt: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p[12..].to_vec(),
        }
    }

    /// RFC 6184 receiver side, for single NAL unit and FU-A packets.
    fn depacketize(packets: &[Rtp]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut partial: Option<Vec<u8>> = None;
        for p in packets {
            let t = p.payload[0] & 0x1f;
            match t {
                1..=23 => {
                    assert!(partial.is_none(), "single NAL inside a fragmented unit");
                    nals.push(p.payload.clone());
                }
                FU_A => {
                    let (ind, hdr) = (p.payload[0], p.payload[1]);
                    if hdr & FU_START != 0 {
                        assert!(partial.is_none());
                        partial = Some(vec![(ind & 0xE0) | (hdr & 0x1f)]);
                    }
                    let buf = partial.as_mut().expect("fragment without start");
                    buf.extend_from_slice(&p.payload[2..]);
                    if hdr & FU_END != 0 {
                        nals.push(partial.take().unwrap());
                    }
                }
                other => panic!("unexpected payload type {other}"),
            }
        }
        assert!(partial.is_none(), "unterminated fragment");
        nals
    }

    fn collect(pk: &mut Packetizer, nals: &[&[u8]], ts: u32) -> Vec<Rtp> {
        let mut out = Vec::new();
        pk.packetize(nals, ts, |p| out.push(parse(p)));
        out
    }

    #[test]
    fn small_nals_are_single_packets_with_marker_on_last() {
        let mut pk = Packetizer::new(0xdead_beef, 65_534);
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: &[u8] = &[0x65, 1, 2, 3, 4];
        let pkts = collect(&mut pk, &[sps, pps, idr], 1234);
        assert_eq!(pkts.len(), 3);
        assert_eq!(pkts.iter().map(|p| p.seq).collect::<Vec<_>>(), vec![65_534, 65_535, 0]);
        assert_eq!(pkts.iter().map(|p| p.marker).collect::<Vec<_>>(), vec![false, false, true]);
        assert!(pkts.iter().all(|p| p.ts == 1234 && p.ssrc == 0xdead_beef));
        assert!(pkts.iter().all(|p| p.pt == PAYLOAD_TYPE));
        assert_eq!(depacketize(&pkts), vec![sps.to_vec(), pps.to_vec(), idr.to_vec()]);
        assert_eq!(pk.next_seq(), 1);
        assert_eq!(pk.packets_sent(), 3);
        assert_eq!(pk.octets_sent(), 13);
    }

    #[test]
    fn large_nals_round_trip_through_fu_a() {
        let big: Vec<u8> = std::iter::once(0x65).chain((0..5000u32).map(|i| (i * 7 + 3) as u8)).collect();
        let small: &[u8] = &[0x41, 9, 9];
        let trailing_big: Vec<u8> = std::iter::once(0x41).chain((0..1399u32).map(|i| i as u8)).collect();
        for max in [3, 100, 1400, 4999, 5000, 5001] {
            let mut pk = Packetizer::new(7, 100).with_max_payload(max);
            let nals: Vec<&[u8]> = vec![&big, small, &trailing_big];
            let pkts = collect(&mut pk, &nals, 90_000);
            assert!(pkts.iter().all(|p| p.payload.len() <= max), "payload over {max}");
            assert_eq!(depacketize(&pkts), nals.iter().map(|n| n.to_vec()).collect::<Vec<_>>());
            // Only the very last packet of the access unit has the marker.
            let markers: Vec<bool> = pkts.iter().map(|p| p.marker).collect();
            assert_eq!(markers.iter().filter(|m| **m).count(), 1);
            assert!(markers[markers.len() - 1]);
            // Consecutive sequence numbers from 100.
            for (i, p) in pkts.iter().enumerate() {
                assert_eq!(p.seq, 100 + i as u16);
            }
            // FU indicator keeps NRI from the NAL header (0x65 → NRI 3).
            if max < big.len() {
                assert_eq!(pkts[0].payload[0], 0x60 | FU_A);
                assert_eq!(pkts[0].payload[1], FU_START | 5);
            }
        }
    }

    #[test]
    fn sequence_numbers_continue_across_access_units() {
        let mut pk = Packetizer::new(1, 10);
        let a = collect(&mut pk, &[&[0x65, 1]], 0);
        let b = collect(&mut pk, &[&[0x41, 1]], 3600);
        assert_eq!((a[0].seq, b[0].seq), (10, 11));
        assert_eq!(b[0].ts, 3600);
    }

    #[test]
    fn ntp_conversion() {
        use std::time::Duration;
        assert_eq!(ntp_timestamp(Duration::ZERO), NTP_UNIX_OFFSET << 32);
        assert_eq!(ntp_timestamp(Duration::from_millis(1500)), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
    }

    #[test]
    fn sender_report_layout() {
        let info = SenderInfo {
            ssrc: 0x0102_0304,
            ntp: 0x1122_3344_5566_7788,
            rtp_timestamp: 0x99aa_bbcc,
            packet_count: 5,
            octet_count: 6,
        };
        let p = sender_report(&info, "demo");
        // SR (28 bytes) + SDES (4 + 4 + 2 + 4 + 1 null, padded to 16).
        assert_eq!(p.len(), 28 + 16);
        assert_eq!(&p[..4], &[0x80, 200, 0, 6]);
        assert_eq!(&p[4..8], &[1, 2, 3, 4]);
        assert_eq!(&p[8..16], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(&p[16..20], &0x99aa_bbccu32.to_be_bytes());
        assert_eq!(&p[20..28], &[0, 0, 0, 5, 0, 0, 0, 6]);
        assert_eq!(&p[28..32], &[0x81, 202, 0, 3]);
        assert_eq!(&p[32..36], &[1, 2, 3, 4]);
        assert_eq!(&p[36..42], b"\x01\x04demo");
        assert!(p[42..].iter().all(|b| *b == 0));
        // A CNAME that exactly fills the word still gets its terminating null.
        let p = sender_report(&info, "ab");
        assert_eq!(p.len(), 28 + 16);
        assert_eq!(&p[28..32], &[0x81, 202, 0, 3]);
    }
}
