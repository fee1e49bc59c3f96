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
    #[error("parameter sets not supported for generated pictures: {0}")]
    Unsupported(&'static str),
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

/// Reads the Exp-Golomb coded fields of parameter sets (H.264 §7.2, §9.1), emulation
/// prevention bytes already removed.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, H264Error> {
        let b = self.data.get(self.at / 8).ok_or(H264Error::Unsupported("truncated parameter set"))?;
        let v = (b >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Ok(u32::from(v))
    }

    fn bits(&mut self, n: u32) -> Result<u32, H264Error> {
        (0..n).try_fold(0, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Result<u32, H264Error> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(H264Error::Unsupported("bad Exp-Golomb code"));
            }
        }
        Ok((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Result<i32, H264Error> {
        let k = self.ue()?;
        Ok(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }
}

/// Writes a slice's bits (H.264 §7.2) into an RBSP.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u8,
    used: u32,
}

impl BitWriter {
    fn bits(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.acc = (self.acc << 1) | ((v >> i) & 1) as u8;
            self.used += 1;
            if self.used == 8 {
                self.out.push(self.acc);
                (self.acc, self.used) = (0, 0);
            }
        }
    }

    fn ue(&mut self, v: u32) {
        let code = u64::from(v) + 1;
        let len = 64 - code.leading_zeros();
        self.bits(0, len - 1);
        for i in (0..len).rev() {
            self.bits(((code >> i) & 1) as u32, 1);
        }
    }

    /// rbsp_trailing_bits: a one, then zeros to the byte boundary.
    fn finish(mut self) -> Vec<u8> {
        self.bits(1, 1);
        while self.used != 0 {
            self.bits(0, 1);
        }
        self.out
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`, §7.4.1).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Inserts emulation prevention bytes so no start code appears inside a NAL unit (§7.4.1).
fn escape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + 4);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// P pictures made only of P_Skip macroblocks: each repeats its reference picture, costs a few
/// bytes, and decodes with any conforming decoder. They stretch a clip's keyframe into a group
/// of pictures of any length (the load generator's cameras), for CAVLC streams of progressive
/// frames without weighted prediction (what Baseline encoders produce; the embedded clip is one).
#[derive(Debug, Clone)]
pub struct SkipPictures {
    pps_id: u32,
    log2_max_frame_num: u32,
    frame_mbs_only: bool,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    poc_delta_present: bool,
    bottom_field_poc_present: bool,
    redundant_pic_cnt_present: bool,
    deblocking_control_present: bool,
    mbs: u32,
}

impl SkipPictures {
    /// Reads what the slice header needs from the SPS and PPS the pictures refer to.
    pub fn new(sps: &[u8], pps: &[u8]) -> Result<SkipPictures, H264Error> {
        let sps = unescape(sps);
        let mut s = Bits { data: &sps, at: 8 };
        let profile_idc = s.bits(8)?;
        s.bits(16)?; // constraint flags, level_idc
        s.ue()?; // seq_parameter_set_id
        if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
            if s.ue()? == 3 && s.bit()? == 1 {
                return Err(H264Error::Unsupported("separate colour planes"));
            }
            s.ue()?; // bit_depth_luma_minus8
            s.ue()?; // bit_depth_chroma_minus8
            s.bit()?; // qpprime_y_zero_transform_bypass_flag
            if s.bit()? == 1 {
                return Err(H264Error::Unsupported("scaling matrices"));
            }
        }
        let log2_max_frame_num = s.ue()? + 4;
        let poc_type = s.ue()?;
        let (mut log2_max_poc_lsb, mut poc_delta_present) = (0, false);
        match poc_type {
            0 => log2_max_poc_lsb = s.ue()? + 4,
            1 => {
                poc_delta_present = s.bit()? == 0;
                s.se()?;
                s.se()?;
                for _ in 0..s.ue()? {
                    s.se()?;
                }
            }
            _ => {}
        }
        s.ue()?; // max_num_ref_frames
        s.bit()?; // gaps_in_frame_num_value_allowed_flag
        let width = s.ue()? + 1;
        let height = s.ue()? + 1;
        let frame_mbs_only = s.bit()? == 1;
        let pps = unescape(pps);
        let mut p = Bits { data: &pps, at: 8 };
        let pps_id = p.ue()?;
        p.ue()?; // seq_parameter_set_id
        if p.bit()? == 1 {
            return Err(H264Error::Unsupported("CABAC"));
        }
        let bottom_field_poc_present = p.bit()? == 1;
        if p.ue()? != 0 {
            return Err(H264Error::Unsupported("slice groups"));
        }
        p.ue()?;
        p.ue()?; // num_ref_idx_l0/l1_default_active_minus1
        if p.bit()? == 1 {
            return Err(H264Error::Unsupported("weighted prediction"));
        }
        p.bits(2)?; // weighted_bipred_idc
        p.se()?;
        p.se()?;
        p.se()?; // pic_init_qp, pic_init_qs, chroma_qp_index_offset
        let deblocking_control_present = p.bit()? == 1;
        p.bit()?; // constrained_intra_pred_flag
        let redundant_pic_cnt_present = p.bit()? == 1;
        Ok(SkipPictures {
            pps_id,
            log2_max_frame_num,
            frame_mbs_only,
            poc_type,
            log2_max_poc_lsb,
            poc_delta_present,
            bottom_field_poc_present,
            redundant_pic_cnt_present,
            deblocking_control_present,
            mbs: width * height * if frame_mbs_only { 1 } else { 2 },
        })
    }

    /// The NAL unit of the `n`th picture after an IDR picture (n ≥ 1), as a reference picture so
    /// that `frame_num` simply counts pictures (§7.4.3) and any `pic_order_cnt_type` works.
    pub fn picture(&self, n: u32) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.ue(0); // first_mb_in_slice
        w.ue(5); // slice_type: P, as every slice of the picture
        w.ue(self.pps_id);
        w.bits(n & ((1 << self.log2_max_frame_num) - 1), self.log2_max_frame_num);
        if !self.frame_mbs_only {
            w.bits(0, 1); // field_pic_flag
        }
        if self.poc_type == 0 {
            w.bits((2 * n) & ((1 << self.log2_max_poc_lsb) - 1), self.log2_max_poc_lsb);
            if self.bottom_field_poc_present {
                w.ue(0); // delta_pic_order_cnt_bottom: se(0) is coded as ue(0)
            }
        }
        if self.poc_type == 1 && self.poc_delta_present {
            w.ue(0);
            if self.bottom_field_poc_present {
                w.ue(0);
            }
        }
        if self.redundant_pic_cnt_present {
            w.ue(0);
        }
        // One reference index: the PPS default may name more pictures than exist after an IDR.
        w.bits(1, 1); // num_ref_idx_active_override_flag
        w.ue(0); // num_ref_idx_l0_active_minus1
        w.bits(0, 1); // ref_pic_list_modification_flag_l0
        w.bits(0, 1); // adaptive_ref_pic_marking_mode_flag: sliding window
        w.ue(0); // slice_qp_delta
        if self.deblocking_control_present {
            w.ue(1); // disable_deblocking_filter_idc: nothing to filter in a copy
        }
        w.ue(self.mbs); // mb_skip_run: every macroblock
        let mut nal = vec![0x40 | nal_type::NON_IDR_SLICE]; // nal_ref_idc 2
        nal.extend_from_slice(&escape(&w.finish()));
        nal
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
    fn skip_pictures_follow_the_parameter_sets() {
        let clip = Clip::parse(super::super::CLIP_H264).unwrap();
        let skip = SkipPictures::new(clip.sps, clip.pps).unwrap();
        // 640x360: 40 x 23 macroblocks; 16 frame numbers; picture order from frame_num.
        assert_eq!((skip.mbs, skip.log2_max_frame_num, skip.poc_type), (920, 4, 2));
        assert!(skip.deblocking_control_present && skip.frame_mbs_only);
        // first_mb 0 (1), P (00110), pps 0 (1), frame_num 5 (0101), one reference (11), two flags (00),
        // qp delta 0 (1), deblocking off (010), skip run 920 (0000000001110011001), stop bit.
        let p = skip.picture(5);
        assert_eq!(p[0], 0x41);
        let bits: String = p[1..].iter().map(|b| format!("{b:08b}")).collect();
        assert_eq!(bits, "1001101010111001010000000000111001100110", "{bits}");
        assert_eq!(skip.picture(21)[1..], p[1..], "frame_num wraps at 16");
        assert_eq!(escape(&[0, 0, 1, 0, 0, 0, 5]), [0, 0, 3, 1, 0, 0, 3, 0, 5]);
        assert_eq!(unescape(&escape(&[0, 0, 1, 0, 0, 0, 5])), [0, 0, 1, 0, 0, 0, 5]);
        assert!(matches!(SkipPictures::new(&clip.sps[..3], clip.pps), Err(H264Error::Unsupported(_))));
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
