//! Reading RTP video packets: the RTP header (RFC 3550) and enough of the H.264 (RFC 6184) and
//! H.265 (RFC 7798) payload headers to tell where a decodable picture starts.
//!
//! A shared camera fans one stream out to viewers who join at any moment; a joiner can only
//! decode from a keyframe (H.264 IDR, H.265 IRAP) with its parameter sets. The relay never
//! depacketizes: it looks at the first bytes of each payload (the NAL unit header, the
//! aggregation sizes, the fragmentation start bit) and leaves the RTP bytes untouched.

/// A video codec the relay can find keyframes in, named by the SDP `a=rtpmap` encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// From an `a=rtpmap` encoding name (`H264`, `H265`; any case).
    pub fn from_encoding(name: &str) -> Option<VideoCodec> {
        if name.eq_ignore_ascii_case("H264") {
            Some(VideoCodec::H264)
        } else if name.eq_ignore_ascii_case("H265") || name.eq_ignore_ascii_case("HEVC") {
            Some(VideoCodec::H265)
        } else {
            None
        }
    }
}

/// The fixed part of an RTP header, and where the payload lies in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Byte offset of the payload (after CSRCs and any header extension).
    pub payload_start: usize,
    /// Byte offset just past the payload (padding excluded).
    pub payload_end: usize,
}

impl RtpHeader {
    /// Parses an RTP packet (version 2). `None` for anything shorter than its own header,
    /// another version, or padding longer than the payload.
    pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return None;
        }
        let csrc_count = usize::from(packet[0] & 0x0f);
        let mut start = 12 + 4 * csrc_count;
        if packet[0] & 0x10 != 0 {
            // Header extension: 16-bit profile, 16-bit length in 32-bit words (RFC 3550 §5.3.1).
            let ext = packet.get(start..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = packet.len();
        if packet[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*packet.last()?))?;
        }
        if start > end {
            return None;
        }
        Some(RtpHeader {
            payload_type: packet[1] & 0x7f,
            marker: packet[1] & 0x80 != 0,
            seq: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            payload_start: start,
            payload_end: end,
        })
    }
}

/// What one RTP video packet holds, as far as joining viewers are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoPacket {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The packet holds the start of a keyframe NAL unit (an IDR slice, an IRAP picture): the
    /// access unit with this timestamp can be decoded without earlier pictures.
    pub keyframe: bool,
    /// The packet holds a parameter set (SPS/PPS; VPS/SPS/PPS for H.265).
    pub parameter_sets: bool,
}

/// How one track's packets are read: the codec, and for H.265 whether the payload headers
/// carry decoding order numbers (`sprop-max-don-diff` > 0, RFC 7798 §4.4), which shift the
/// aggregation packets' sizes by two bytes (DONL) and one byte (DOND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classifier {
    pub codec: VideoCodec,
    pub donl: bool,
}

/// What the NAL units seen in a payload are.
#[derive(Default)]
struct Found {
    keyframe: bool,
    parameter_sets: bool,
}

impl Found {
    fn h264(&mut self, nal_type: u8) {
        match nal_type {
            5 => self.keyframe = true,
            7 | 8 => self.parameter_sets = true,
            _ => {}
        }
    }

    fn h265(&mut self, nal_type: u8) {
        match nal_type {
            16..=21 => self.keyframe = true,
            32..=34 => self.parameter_sets = true,
            _ => {}
        }
    }
}

impl Classifier {
    pub fn new(codec: VideoCodec) -> Self {
        Classifier { codec, donl: false }
    }

    /// Reads one RTP packet of this track. `None` if it is not a valid RTP packet; a valid one
    /// with an unknown or truncated payload is neither keyframe nor parameter sets.
    pub fn classify(&self, packet: &[u8]) -> Option<VideoPacket> {
        let h = RtpHeader::parse(packet)?;
        let payload = &packet[h.payload_start..h.payload_end];
        let found = match self.codec {
            VideoCodec::H264 => h264_payload(payload),
            VideoCodec::H265 => h265_payload(payload, self.donl),
        };
        Some(VideoPacket {
            seq: h.seq,
            timestamp: h.timestamp,
            marker: h.marker,
            keyframe: found.keyframe,
            parameter_sets: found.parameter_sets,
        })
    }
}

/// Walks `size(2) NAL` units from `at`, skipping `gap` bytes between them (MTAP's DOND and
/// timestamp offset, H.265's DOND), calling `each` with every NAL unit's first byte(s).
fn aggregated(payload: &[u8], mut at: usize, gap: usize, mut each: impl FnMut(&[u8])) {
    while let Some(size) = payload.get(at..at + 2) {
        let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
        let start = at + 2 + gap;
        let Some(nal) = payload.get(start..start + size.saturating_sub(gap)) else { return };
        if !nal.is_empty() {
            each(nal);
        }
        at = start + size.saturating_sub(gap);
    }
}

/// RFC 6184 §5.2: the NAL unit type of the payload header says how the payload is packed.
fn h264_payload(p: &[u8]) -> Found {
    let mut found = Found::default();
    let Some(&first) = p.first() else { return found };
    match first & 0x1f {
        t @ 1..=23 => found.h264(t),
        // STAP-A: size-prefixed NAL units; STAP-B: the same after a 16-bit DON.
        24 => aggregated(p, 1, 0, |nal| found.h264(nal[0] & 0x1f)),
        25 => aggregated(p, 3, 0, |nal| found.h264(nal[0] & 0x1f)),
        // MTAP16/MTAP24: a 16-bit DON base, then units of size, DOND (1), TS offset (2 or 3);
        // the size counts DOND and offset, hence the gap.
        26 => aggregated(p, 3, 3, |nal| found.h264(nal[0] & 0x1f)),
        27 => aggregated(p, 3, 4, |nal| found.h264(nal[0] & 0x1f)),
        // FU-A/FU-B: the FU header's start bit and the fragmented unit's type.
        28 | 29 => {
            if let Some(&fu) = p.get(1) {
                if fu & 0x80 != 0 {
                    found.h264(fu & 0x1f);
                }
            }
        }
        _ => {}
    }
    found
}

/// RFC 7798 §4.4: a two-byte payload header whose type says how the payload is packed.
fn h265_payload(p: &[u8], donl: bool) -> Found {
    let mut found = Found::default();
    if p.len() < 2 {
        return found;
    }
    match (p[0] >> 1) & 0x3f {
        t @ 0..=47 => found.h265(t),
        // AP: [DONL] size NAL [DOND size NAL]...; the first unit has the 2-byte DONL before its
        // size, later ones a 1-byte DOND before theirs.
        48 => {
            if donl {
                let mut at = 4;
                while let Some(size) = p.get(at..at + 2) {
                    let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                    let Some(nal) = p.get(at + 2..at + 2 + size) else { break };
                    if !nal.is_empty() {
                        found.h265((nal[0] >> 1) & 0x3f);
                    }
                    at += 2 + size + 1;
                }
            } else {
                aggregated(p, 2, 0, |nal| found.h265((nal[0] >> 1) & 0x3f));
            }
        }
        // FU: the FU header (third byte) has the start bit and the fragmented unit's type.
        49 => {
            if let Some(&fu) = p.get(2) {
                if fu & 0x80 != 0 {
                    found.h265(fu & 0x3f);
                }
            }
        }
        _ => {}
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An RTP packet with this payload (version 2, payload type 96).
    pub(crate) fn rtp(seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn h264(payload: &[u8]) -> VideoPacket {
        Classifier::new(VideoCodec::H264).classify(&rtp(1, 2, false, payload)).unwrap()
    }

    fn h265(payload: &[u8]) -> VideoPacket {
        Classifier::new(VideoCodec::H265).classify(&rtp(1, 2, false, payload)).unwrap()
    }

    fn flags(v: VideoPacket) -> (bool, bool) {
        (v.keyframe, v.parameter_sets)
    }

    #[test]
    fn rtp_header_fields_csrcs_extension_and_padding() {
        let mut p = rtp(0xbeef, 0xdead_beef, true, &[0x65, 1, 2]);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.seq, h.timestamp, h.marker, h.payload_type, h.ssrc),
            (0xbeef, 0xdead_beef, true, 96, 0x1234_5678)
        );
        assert_eq!((h.payload_start, h.payload_end), (12, 15));
        // Two CSRCs, a one-word extension (the load generator's timestamps travel there) and
        // two bytes of padding.
        p[0] = 0x80 | 0x20 | 0x10 | 2;
        let mut q = p[..12].to_vec();
        q.extend_from_slice(&[0; 8]);
        q.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        q.extend_from_slice(&[0x65, 1, 2, 0, 2]);
        let h = RtpHeader::parse(&q).unwrap();
        assert_eq!(&q[h.payload_start..h.payload_end], &[0x65, 1, 2]);
        assert!(Classifier::new(VideoCodec::H264).classify(&q).unwrap().keyframe);
        // Refused: short, version 1, padding past the header, extension past the end.
        assert!(RtpHeader::parse(&p[..11]).is_none());
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert!(RtpHeader::parse(&v1).is_none());
        let mut pad = rtp(1, 1, false, &[0x65, 200]);
        pad[0] |= 0x20;
        assert!(RtpHeader::parse(&pad).is_none());
        let mut ext = rtp(1, 1, false, &[0xbe, 0xde, 0, 9]);
        ext[0] |= 0x10;
        assert!(RtpHeader::parse(&ext).is_none());
    }

    #[test]
    fn h264_single_nal_units() {
        assert_eq!(flags(h264(&[0x65, 0x88])), (true, false), "IDR slice");
        assert_eq!(flags(h264(&[0x41, 0x9a])), (false, false), "non-IDR slice");
        assert_eq!(flags(h264(&[0x67, 0x42])), (false, true), "SPS");
        assert_eq!(flags(h264(&[0x68, 0xce])), (false, true), "PPS");
        assert_eq!(flags(h264(&[0x06, 0x05])), (false, false), "SEI");
        assert_eq!(flags(h264(&[0x09, 0x10])), (false, false), "AUD");
        assert_eq!(flags(h264(&[])), (false, false), "empty payload");
    }

    #[test]
    fn h264_stap_a_and_stap_b() {
        // STAP-A: SPS (3 bytes), PPS (2 bytes), IDR (2 bytes).
        let stap = [0x78, 0, 3, 0x67, 0x42, 0, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88];
        assert_eq!(flags(h264(&stap)), (true, true));
        assert_eq!(flags(h264(&stap[..8])), (false, true), "SPS only, then a truncated size");
        assert_eq!(flags(h264(&[0x78, 0, 9, 0x65])), (false, false), "a unit longer than the packet");
        // STAP-B with a DON before the units.
        assert_eq!(flags(h264(&[0x79, 0xab, 0xcd, 0, 2, 0x65, 0x88])), (true, false));
    }

    #[test]
    fn h264_mtap() {
        // MTAP16: DON base, then size(2) DOND(1) TS offset(2) NAL; the size covers DOND+offset.
        assert_eq!(flags(h264(&[0x7a, 0, 0, 0, 5, 0, 0, 0, 0x65, 0x88])), (true, false));
        // MTAP24: a 3-byte offset.
        assert_eq!(flags(h264(&[0x7b, 0, 0, 0, 6, 0, 0, 0, 0, 0x67, 0x42])), (false, true));
    }

    #[test]
    fn h264_fu_a_only_the_start_fragment_counts() {
        assert_eq!(flags(h264(&[0x7c, 0x85, 0xb8])), (true, false), "start of an IDR");
        assert_eq!(flags(h264(&[0x7c, 0x05, 0xb8])), (false, false), "middle of an IDR");
        assert_eq!(flags(h264(&[0x7c, 0x45, 0xb8])), (false, false), "end of an IDR");
        assert_eq!(flags(h264(&[0x5c, 0x81, 0x9a])), (false, false), "start of a P slice");
        assert_eq!(flags(h264(&[0x7c])), (false, false), "no FU header");
        assert_eq!(flags(h264(&[0x7d, 0x85, 0, 0])), (true, false), "FU-B");
    }

    #[test]
    fn h265_units_aggregation_and_fragments() {
        // NAL header: type in bits 1..7 of the first byte.
        let hdr = |t: u8| [t << 1, 1];
        for t in 16..=21 {
            assert_eq!(flags(h265(&[hdr(t)[0], 1, 0xaf])), (true, false), "IRAP type {t}");
        }
        for t in 32..=34 {
            assert_eq!(flags(h265(&[hdr(t)[0], 1, 0x0c])), (false, true), "parameter set type {t}");
        }
        assert_eq!(flags(h265(&[hdr(1)[0], 1, 0xd0])), (false, false), "TRAIL_R");
        assert_eq!(flags(h265(&[hdr(19)[0]])), (false, false), "a one-byte payload header");
        // AP: VPS, SPS, PPS.
        let ap = [96, 1, 0, 2, 64, 1, 0, 2, 66, 1, 0, 2, 68, 1];
        assert_eq!(flags(h265(&ap)), (false, true));
        // FU: payload header, FU header (S bit, type 19 = IDR_W_RADL).
        assert_eq!(flags(h265(&[98, 1, 0x80 | 19, 0xaf])), (true, false));
        assert_eq!(flags(h265(&[98, 1, 19, 0xaf])), (false, false), "not the first fragment");
        assert_eq!(flags(h265(&[98, 1])), (false, false), "no FU header");
    }

    #[test]
    fn h265_with_decoding_order_numbers() {
        let c = Classifier { codec: VideoCodec::H265, donl: true };
        // AP: DONL(2), size, VPS; DOND(1), size, IDR.
        let ap = [96, 1, 0, 7, 0, 2, 64, 1, 1, 0, 2, 38, 1];
        let v = c.classify(&rtp(1, 1, false, &ap)).unwrap();
        assert_eq!(flags(v), (true, true));
        // Without DON the same bytes read differently (and find no IDR).
        assert!(!flags(h265(&ap)).0);
    }

    #[test]
    fn codec_names() {
        assert_eq!(VideoCodec::from_encoding("h264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_encoding("H265"), Some(VideoCodec::H265));
        assert_eq!(VideoCodec::from_encoding("MPEG4-GENERIC"), None);
    }

    #[test]
    fn the_demo_clip_packetized_has_one_keyframe_start_per_idr() {
        // Real H.264 (the embedded demo clip, two slices a picture) through the real
        // packetizer: one packet flagged keyframe per IDR slice, none elsewhere, and the
        // parameter sets are found.
        let clip = crate::demo_camera::clip().unwrap();
        let mut pk = crate::demo_camera::rtp::Packetizer::new(7, 65530).with_max_payload(500);
        let c = Classifier::new(VideoCodec::H264);
        for (i, au) in clip.frames.iter().enumerate() {
            let mut packets = Vec::new();
            pk.packetize(&au.nals, i as u32 * 3600, |p| packets.push(p.to_vec()));
            let read: Vec<VideoPacket> = packets.iter().map(|p| c.classify(p).unwrap()).collect();
            let keys = read.iter().filter(|v| v.keyframe).count();
            let idr_slices = au.nals.iter().filter(|n| n[0] & 0x1f == 5).count();
            assert_eq!(keys, idr_slices, "access unit {i}");
            assert_eq!(keys > 0, au.is_keyframe(), "access unit {i}");
            let params = au.nals.iter().any(|n| matches!(n[0] & 0x1f, 7 | 8));
            assert_eq!(read.iter().any(|v| v.parameter_sets), params, "access unit {i}");
            assert!(read.last().unwrap().marker && read.iter().all(|v| v.timestamp == i as u32 * 3600));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), donl: bool) {
            for codec in [VideoCodec::H264, VideoCodec::H265] {
                let _ = Classifier { codec, donl }.classify(&bytes);
                let mut p = rtp(1, 1, false, &[]);
                p.extend_from_slice(&bytes);
                let c = Classifier { codec, donl };
                prop_assert!(c.classify(&p).is_some());
            }
        }
    }
}
