//! Just enough H.264 (ITU-T H.264 Annex B) to serve a clip over RTP: split the elementary stream
//! into NAL units, group them into access units, and describe the stream in SDP (RFC 6184 §8).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// NAL unit types this module cares about (H.264 Table 7-1).
pub mod nal_type {
    pub const NON_IDR_SLICE: u8 = 1;
    pub const IDR_SLICE: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// The type of a NAL unit from its header byte (0 for an empty unit, which is "unspecified").
pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Why a byte string is not a clip we can serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    #[error("no NAL units found (not an Annex B byte stream?)")]
    Empty,
    #[error("no sequence parameter set in the stream")]
    NoSps,
    #[error("no picture parameter set in the stream")]
    NoPps,
    #[error("sequence parameter set too short ({0} bytes)")]
    ShortSps(usize),
    #[error("the stream does not start with an IDR access unit, so it cannot loop cleanly")]
    NoLeadingKeyframe,
    #[error("forbidden_zero_bit set in a NAL unit header at index {0}")]
    ForbiddenBit(usize),
}

/// Splits an Annex B byte stream into NAL units (start codes and trailing zero bytes removed).
///
/// Both 3-byte (`00 00 01`) and 4-byte (`00 00 00 01`) start codes are recognised; the extra
/// zero of a 4-byte code, like any `trailing_zero_8bits`, is stripped from the preceding unit.
/// Bytes before the first start code are ignored.
pub fn split_annex_b(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memmem::find(&stream[i..], &[0, 0, 1]) {
        let payload_start = i + off + 3;
        starts.push((i + off, payload_start));
        i = payload_start;
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(stream.len(), |&(code, _)| code);
        let mut nal = &stream[begin..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    nals
}

/// One access unit: the NAL units of one picture, in decoding order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit<'a> {
    pub nals: Vec<&'a [u8]>,
}

impl AccessUnit<'_> {
    /// Whether the picture is an IDR picture: decoding can start here.
    pub fn is_keyframe(&self) -> bool {
        self.nals.iter().any(|n| nal_unit_type(n) == nal_type::IDR_SLICE)
    }

    /// Total payload bytes (NAL units without start codes).
    pub fn size(&self) -> usize {
        self.nals.iter().map(|n| n.len()).sum()
    }
}

fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// Whether a slice NAL unit is the first slice of its picture (`first_mb_in_slice == 0`).
///
/// `first_mb_in_slice` is the first Exp-Golomb field of the slice header, and ue(v) codes 0 as the
/// single bit `1`, so the test is the top bit of the byte after the NAL header. This is the
/// H.264 §7.4.1.2.4 boundary for streams without arbitrary slice order, which is what encoders
/// (x264 included) produce.
fn starts_picture(nal: &[u8]) -> bool {
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Groups NAL units into access units following H.264 §7.4.1.2.3: an access unit delimiter, SPS,
/// PPS, SEI or reserved types 14..=18 after a picture's slices, or the first slice of a new
/// picture, begins the next access unit. Non-VCL units before the first slice stay with it.
pub fn access_units<'a>(nals: &[&'a [u8]]) -> Vec<AccessUnit<'a>> {
    let mut out = Vec::new();
    let mut current: Vec<&'a [u8]> = Vec::new();
    let mut seen_vcl = false;
    for &nal in nals {
        let t = nal_unit_type(nal);
        let begins_next = seen_vcl
            && (matches!(t, nal_type::SEI | nal_type::SPS | nal_type::PPS | nal_type::AUD | 14..=18)
                || (is_vcl(t) && starts_picture(nal)));
        if begins_next {
            out.push(AccessUnit { nals: std::mem::take(&mut current) });
            seen_vcl = false;
        }
        seen_vcl |= is_vcl(t);
        current.push(nal);
    }
    if !current.is_empty() {
        out.push(AccessUnit { nals: current });
    }
    out
}

/// A parsed clip ready for packetisation: its access units and the parameter sets that describe it.
#[derive(Debug, Clone)]
pub struct Clip<'a> {
    pub frames: Vec<AccessUnit<'a>>,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
}

impl<'a> Clip<'a> {
    /// Parses an Annex B stream. The stream must start with an IDR access unit (so that playing
    /// it in a loop stays decodable) and carry an SPS and PPS (the first of each is used in SDP).
    pub fn parse(stream: &'a [u8]) -> Result<Clip<'a>, H264Error> {
        let nals = split_annex_b(stream);
        if nals.is_empty() {
            return Err(H264Error::Empty);
        }
        if let Some(i) = nals.iter().position(|n| n[0] & 0x80 != 0) {
            return Err(H264Error::ForbiddenBit(i));
        }
        let find = |t| nals.iter().copied().find(|n| nal_unit_type(n) == t);
        let sps = find(nal_type::SPS).ok_or(H264Error::NoSps)?;
        let pps = find(nal_type::PPS).ok_or(H264Error::NoPps)?;
        // profile_idc, constraint flags and level_idc follow the header byte.
        if sps.len() < 4 {
            return Err(H264Error::ShortSps(sps.len()));
        }
        let frames = access_units(&nals);
        if !frames.first().is_some_and(AccessUnit::is_keyframe) {
            return Err(H264Error::NoLeadingKeyframe);
        }
        Ok(Clip { frames, sps, pps })
    }

    /// `profile-level-id` for the SDP `fmtp` line: the three bytes after the SPS header, in hex.
    pub fn profile_level_id(&self) -> String {
        format!("{:02X}{:02X}{:02X}", self.sps[1], self.sps[2], self.sps[3])
    }

    /// `sprop-parameter-sets` for the SDP `fmtp` line: base64 SPS and PPS, comma-separated.
    pub fn sprop_parameter_sets(&self) -> String {
        format!("{},{}", BASE64.encode(self.sps), BASE64.encode(self.pps))
    }

    /// Index of the last keyframe at or before `index` (the clip starts with one, so one exists).
    pub fn keyframe_at_or_before(&self, index: usize) -> usize {
        let index = index.min(self.frames.len().saturating_sub(1));
        (0..=index).rev().find(|&i| self.frames[i].is_keyframe()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];

    fn annex_b(nals: &[&[u8]], four_byte: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            if four_byte {
                v.push(0);
            }
            v.extend_from_slice(&[0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let a: &[u8] = &[0x65, 0x88, 0x01];
        let b: &[u8] = &[0x41, 0x9a, 0x02];
        for four in [false, true] {
            let s = annex_b(&[SPS, PPS, a, b], four);
            assert_eq!(split_annex_b(&s), vec![SPS, PPS, a, b]);
        }
        // Mixed codes, trailing zeros, leading garbage.
        let mut s = vec![0xff, 0x00, 0x00, 0x00, 0x01];
        s.extend_from_slice(SPS);
        s.extend_from_slice(&[0, 0, 0, 0, 1]);
        s.extend_from_slice(a);
        s.extend_from_slice(&[0, 0]);
        assert_eq!(split_annex_b(&s), vec![SPS, a]);
        assert!(split_annex_b(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn groups_slices_into_pictures() {
        // Two-slice IDR picture, then two one-slice P pictures, then a two-slice P picture.
        let idr0: &[u8] = &[0x65, 0x88, 0x10];
        let idr1: &[u8] = &[0x65, 0x40, 0x10]; // first_mb_in_slice != 0
        let p0: &[u8] = &[0x41, 0x9a, 0x10];
        let p1: &[u8] = &[0x41, 0x9a, 0x20];
        let p2a: &[u8] = &[0x41, 0x9a, 0x30];
        let p2b: &[u8] = &[0x41, 0x20, 0x30];
        let sei: &[u8] = &[0x06, 0x05, 0x01];
        let aus = access_units(&[SPS, PPS, sei, idr0, idr1, p0, p1, p2a, p2b, SPS, PPS, idr0]);
        let shapes: Vec<_> = aus.iter().map(|a| a.nals.clone()).collect();
        assert_eq!(
            shapes,
            vec![vec![SPS, PPS, sei, idr0, idr1], vec![p0], vec![p1], vec![p2a, p2b], vec![SPS, PPS, idr0],]
        );
        let keys: Vec<_> = aus.iter().map(AccessUnit::is_keyframe).collect();
        assert_eq!(keys, vec![true, false, false, false, true]);
    }

    #[test]
    fn describes_parameter_sets() {
        let idr: &[u8] = &[0x65, 0x88, 0x10];
        let s = annex_b(&[SPS, PPS, idr], true);
        let clip = Clip::parse(&s).unwrap();
        assert_eq!(clip.profile_level_id(), "42C01E");
        assert_eq!(clip.sprop_parameter_sets(), "Z0LAHtoCgA==,aM48gA==");
        assert_eq!(clip.frames.len(), 1);
    }

    #[test]
    fn rejects_unloopable_streams() {
        let idr: &[u8] = &[0x65, 0x88, 0x10];
        let p: &[u8] = &[0x41, 0x9a, 0x10];
        assert_eq!(Clip::parse(b"").unwrap_err(), H264Error::Empty);
        assert_eq!(Clip::parse(&annex_b(&[PPS, idr], false)).unwrap_err(), H264Error::NoSps);
        assert_eq!(Clip::parse(&annex_b(&[SPS, idr], false)).unwrap_err(), H264Error::NoPps);
        assert_eq!(Clip::parse(&annex_b(&[SPS, PPS, p, idr], false)).unwrap_err(), H264Error::NoLeadingKeyframe);
        assert_eq!(Clip::parse(&annex_b(&[SPS, PPS, &[0xE5, 0x88]], false)).unwrap_err(), H264Error::ForbiddenBit(2));
    }

    #[test]
    fn embedded_clip_is_servable() {
        let clip = Clip::parse(super::super::CLIP_H264).unwrap();
        // 4 s at 25 fps, a keyframe every 25 frames.
        assert_eq!(clip.frames.len(), 100);
        let keys: Vec<usize> = (0..clip.frames.len()).filter(|&i| clip.frames[i].is_keyframe()).collect();
        assert_eq!(keys, vec![0, 25, 50, 75]);
        assert_eq!(clip.keyframe_at_or_before(49), 25);
        assert_eq!(clip.keyframe_at_or_before(50), 50);
        assert_eq!(clip.keyframe_at_or_before(1000), 75);
        // Constrained Baseline (profile_idc 66 with constraint_set1).
        assert!(clip.profile_level_id().starts_with("42"));
        // Every keyframe carries its parameter sets in band, so a viewer can join at any of them.
        for &k in &keys {
            let types: Vec<u8> = clip.frames[k].nals.iter().map(|n| nal_unit_type(n)).collect();
            assert!(types.contains(&nal_type::SPS) && types.contains(&nal_type::PPS));
        }
    }
}
