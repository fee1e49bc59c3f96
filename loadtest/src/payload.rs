//! The media the simulated cameras send: real, decodable H.264 (RFC 6184 packetisation of the
//! relay's embedded clip's keyframe, then P pictures of skipped macroblocks up to the next
//! keyframe), padded to the configured bitrate, with the load generator's accounting in an RTP
//! header extension so that media players can decode the stream untouched.
//!
//! Every RTP packet carries an RFC 8285 one-byte header extension (profile 0xBEDE) with two
//! elements: ID 1, the time the packet was due (its scheduled send time, CLOCK_MONOTONIC ns, 8
//! bytes), and ID 2, the stream (4 bytes) and the stream's packet sequence (8 bytes). Packets are
//! due at a constant interval, so a receiver gets latency, loss and stalls from these alone.
//!
//! Padding is SEI `user_data_unregistered` NAL units (before each picture's slices, where SEI
//! belongs) holding, after their UUID, the same due time and stream as hex text and a sequence
//! of padding units, then 0xFF fill. Relays that re-packetise the media (a depayloader and a
//! payloader, as gst-rtsp-server relays do) drop header extensions; the padding units survive
//! them, so latency and loss can still be measured on those (see [`Mark::scheduled`]).

use rtsp_tunnel_relay::demo_camera::{
    h264::{Clip, SkipPictures, nal_type, nal_unit_type},
    rtp::Packetizer,
};

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a viewer in
/// another process can subtract a camera's timestamp.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// RFC 8285 one-byte header extension profile.
pub const EXT_PROFILE: u16 = 0xBEDE;
/// Extension element: due time, u64 ns.
pub const EXT_DUE: u8 = 1;
/// Extension element: stream u32, packet sequence u64.
pub const EXT_SEQ: u8 = 2;
/// Profile and length (4), due element (1 + 8), sequence element (1 + 12), 2 padding bytes.
pub const EXT_LEN: usize = 28;
const RTP_HEADER: usize = 12;
/// The UUID of the padding SEI messages (no zero byte, so no emulation prevention is needed).
pub const SEI_UUID: &[u8; 16] = b"RTRL-loadtest-v2";
/// Due time (16 hex digits), stream (8), padding sequence (16).
const SEI_MARK: usize = 40;
/// Smallest padding NAL: header, payload type, one size byte, UUID, mark, stop bit.
const MIN_PAD_NAL: usize = 3 + 16 + SEI_MARK + 1;
/// The smallest packet size that still holds a padding unit.
pub const MIN_PACKET: usize = RTP_HEADER + EXT_LEN + MIN_PAD_NAL;
const FILL: u8 = 0xff;
/// RTP clock rate for video.
const CLOCK: u64 = 90_000;

/// The camera's SSRC for stream `n` with salt 0 (`loadtest camera --fixed-ssrc`).
#[cfg(test)]
pub fn ssrc_of(stream: u32) -> u32 {
    salted_ssrc(stream, 0)
}

/// Stream `n`'s SSRC under a camera process's salt (also announced in its SETUP reply). A camera
/// process picks a new salt when it starts, so a restarted camera sends new SSRCs, as real ones
/// do after a reboot; salt 0 gives every process the same SSRCs.
pub fn salted_ssrc(stream: u32, salt: u32) -> u32 {
    (0x5000_0000 | stream) ^ salt.wrapping_mul(0x9E37_79B1)
}

/// The SDP attribute (media level) in which the camera states its packet interval, so a viewer
/// knows the stream's rate before any packet: `a=x-rtrl-loadtest-period-ns:<ns>`.
pub const SDP_PERIOD_ATTR: &str = "x-rtrl-loadtest-period-ns";

/// The packet interval an SDP states in [`SDP_PERIOD_ATTR`], if it does.
pub fn sdp_period_ns(sdp: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(sdp).lines().find_map(|l| {
        let v = l.trim().strip_prefix("a=")?.strip_prefix(SDP_PERIOD_ATTR)?.strip_prefix(':')?;
        v.trim().parse().ok().filter(|&p| p > 0)
    })
}

/// The UUID of the SEI message before each picture's slices that holds a checksum of each of
/// them (8 hex digits each, FNV-1a 32 of the slice NAL unit as sent), so a viewer can verify
/// the slices it receives byte for byte.
pub const SLICE_SUM_UUID: &[u8; 16] = b"RTRL-slice-sum-1";

/// FNV-1a, 32 bits: any single changed byte changes it (each step is a bijection of the state).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The checksum SEI NAL unit for `slices` (see [`SLICE_SUM_UUID`]).
pub fn slice_sum_nal(slices: &[&[u8]]) -> Vec<u8> {
    let size = 16 + 8 * slices.len();
    let mut n = vec![nal_type::SEI, 5];
    n.extend(std::iter::repeat_n(0xff, size / 255));
    n.push((size % 255) as u8);
    n.extend_from_slice(SLICE_SUM_UUID);
    for s in slices {
        push_hex(&mut n, u64::from(fnv1a(s)), 8);
    }
    n.push(0x80);
    n
}

/// How a picture's slice checksums travel.
enum Sums {
    /// One STAP-A (RFC 6184 §5.7.1) holding the checksum SEI and the picture's only slice,
    /// packetised as one NAL unit: a P picture costs no extra packet.
    Aggregated(Vec<u8>),
    /// The checksum SEI as a NAL unit of its own, before the slices (they are too large to
    /// share a packet).
    Separate(Vec<u8>),
}

fn picture_sums(slices: &[&[u8]], max_payload: usize) -> Sums {
    let sums = slice_sum_nal(slices);
    match slices {
        [slice] if 1 + 2 + sums.len() + 2 + slice.len() <= max_payload && !slice.is_empty() => {
            // NRI of an aggregation packet: the largest of its units'.
            let mut stap = vec![(slice[0] & 0x60).max(sums[0] & 0x60) | 24];
            for n in [&sums[..], slice] {
                stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
                stap.extend_from_slice(n);
            }
            Sums::Aggregated(stap)
        }
        _ => Sums::Separate(sums),
    }
}

/// The slice checksums a NAL unit declares, if it is a checksum SEI; `Err` if it is one but
/// damaged.
pub fn parse_slice_sums(nal: &[u8]) -> Result<Option<Vec<u32>>, MarkError> {
    if nal.first().map(|b| b & 0x1f) != Some(nal_type::SEI) || nal.get(1) != Some(&5) {
        return Ok(None);
    }
    let mut at = 2;
    let mut size = 0usize;
    while let Some(&b) = nal.get(at) {
        size += usize::from(b);
        at += 1;
        if b != 0xff {
            break;
        }
    }
    if nal.get(at..at + 16) != Some(SLICE_SUM_UUID) {
        return Ok(None);
    }
    let body = nal.get(at + 16..at + size).ok_or(MarkError::Short)?;
    if body.len() % 8 != 0 {
        return Err(MarkError::Short);
    }
    body.chunks(8)
        .map(|c| std::str::from_utf8(c).ok().and_then(|s| u32::from_str_radix(s, 16).ok()).ok_or(MarkError::Short))
        .collect::<Result<Vec<u32>, _>>()
        .map(Some)
}

/// The SDP lines that announce the header extension elements (RFC 8285 §5).
pub const SDP_EXTMAP: &str =
    "a=extmap:1 urn:x-rtsp-tunnel-relay:loadtest:due-ns\r\na=extmap:2 urn:x-rtsp-tunnel-relay:loadtest:stream-seq\r\n";

/// What the load generator's accounting of one packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub due_ns: u64,
    pub stream: u32,
    pub seq: u64,
    /// From the header extension: `seq` counts every packet and packets are due at a constant
    /// interval. Otherwise from a padding unit in the payload: `seq` counts padding units only,
    /// which are not evenly spaced.
    pub scheduled: bool,
}

/// Appends an interleaved (`$`, channel 0) copy of RTP packet `rtp` with the extension added.
fn push_with_extension(out: &mut Vec<u8>, rtp: &[u8], mark: Mark) {
    out.extend_from_slice(&[b'$', 0]);
    out.extend_from_slice(&((rtp.len() + EXT_LEN) as u16).to_be_bytes());
    out.push(rtp[0] | 0x10);
    out.extend_from_slice(&rtp[1..RTP_HEADER]);
    out.extend_from_slice(&EXT_PROFILE.to_be_bytes());
    out.extend_from_slice(&(((EXT_LEN - 4) / 4) as u16).to_be_bytes());
    out.push(EXT_DUE << 4 | 7);
    out.extend_from_slice(&mark.due_ns.to_be_bytes());
    out.push(EXT_SEQ << 4 | 11);
    out.extend_from_slice(&mark.stream.to_be_bytes());
    out.extend_from_slice(&mark.seq.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&rtp[RTP_HEADER..]);
}

/// A padding SEI NAL unit of exactly `len` bytes (at least [`MIN_PAD_NAL`]).
fn padding_nal(len: usize, due_ns: u64, stream: u32, pad_seq: u64) -> Vec<u8> {
    let len = len.max(MIN_PAD_NAL);
    // len = header + type + size bytes + size + stop bit, where size is coded in size/255 + 1
    // bytes: take the largest size that fits, and give what is left to the fill.
    let mut size = len - 4;
    while 4 + size / 255 + size > len {
        size -= 1;
    }
    let mut n = Vec::with_capacity(len);
    n.extend_from_slice(&[nal_type::SEI, 5]);
    n.extend(std::iter::repeat_n(0xff, size / 255));
    n.push((size % 255) as u8);
    n.extend_from_slice(SEI_UUID);
    push_hex(&mut n, due_ns, 16);
    push_hex(&mut n, u64::from(stream), 8);
    push_hex(&mut n, pad_seq, 16);
    n.resize(n.len() + size - 16 - SEI_MARK, FILL);
    n.push(0x80);
    // A size one short of a multiple of 255 cannot be coded in `len` bytes: one byte less.
    debug_assert!(n.len() == len || n.len() + 1 == len);
    n
}

/// Appends the low `digits` hex digits of `v` (no allocation: this runs for most packets sent).
fn push_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize]);
    }
}

/// Bytes of RTP packets (with the extension) that `nal` takes at payload limit `max`.
fn packet_cost(nal: &[u8], max: usize) -> (u64, u64) {
    let per = (RTP_HEADER + EXT_LEN) as u64;
    if nal.len() <= max {
        return (1, per + nal.len() as u64);
    }
    let n = (nal.len() - 1).div_ceil(max - 2) as u64;
    (n, n * (per + 2) + nal.len() as u64 - 1)
}

/// How the camera's media is shaped.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    pub bitrate_bps: u64,
    /// RTP packet size, header and extension included (padding units fill packets to it).
    pub packet_size: usize,
    /// A keyframe every this many pictures.
    pub gop: u32,
    pub fps: u32,
    /// Mixed into every stream's SSRC ([`salted_ssrc`]).
    pub ssrc_salt: u32,
}

/// One stream's packets, generated as they fall due: the clip's first access unit (SPS, PPS,
/// IDR picture) every `gop` pictures, skip pictures between, each picture preceded by padding
/// units so that each group of pictures is `packets_per_gop` packets and the bitrate's bytes.
pub struct StreamGen {
    stream: u32,
    keyframe: Vec<&'static [u8]>,
    skip: SkipPictures,
    packetizer: Packetizer,
    gop: u64,
    fps: u64,
    max_payload: usize,
    packet_size: usize,
    t0_ns: u64,
    gop_ns: u64,
    pub packets_per_gop: u64,
    bytes_per_gop: u64,
    /// The next picture (counted from the stream's first: RTP timestamps start at 0).
    picture: u64,
    /// The position in its group of pictures of the stream's first picture (0: a keyframe).
    phase: u64,
    /// Sequence of the next packet handed out, and of the next packet packetised.
    seq: u64,
    built: u64,
    pad_seq: u64,
    /// Packets and bytes of the current group of pictures so far (bytes less what is owed).
    gop_packets: u64,
    gop_bytes: i64,
    /// The current picture's RTP packets, back to back, and where each one ends.
    pending: Vec<u8>,
    ends: std::collections::VecDeque<usize>,
    taken: usize,
}

impl StreamGen {
    /// Stream `stream`'s packet `k` is due at `t0_ns + k × period`.
    pub fn new(stream: u32, opts: &MediaOptions, t0_ns: u64) -> anyhow::Result<StreamGen> {
        let clip: &'static Clip<'static> = rtsp_tunnel_relay::demo_camera::clip()?;
        let skip = SkipPictures::new(clip.sps, clip.pps)?;
        let keyframe = clip.frames[0].nals.clone();
        let max_payload = opts.packet_size.saturating_sub(RTP_HEADER + EXT_LEN).max(MIN_PAD_NAL);
        let (gop, fps) = (u64::from(opts.gop.max(1)), u64::from(opts.fps.max(1)));
        // What one group of pictures costs without padding.
        let (mut packets, mut bytes) = (0, 0);
        for nal in &keyframe {
            let (p, b) = packet_cost(nal, max_payload);
            (packets, bytes) = (packets + p, bytes + b);
        }
        // The checksums: a NAL unit of their own, or in place of the slice (aggregated with it).
        let sums_cost = |slices: &[&[u8]]| match picture_sums(slices, max_payload) {
            Sums::Separate(n) => packet_cost(&n, max_payload),
            Sums::Aggregated(stap) => {
                let ((p0, b0), (p1, b1)) = (packet_cost(&stap, max_payload), packet_cost(slices[0], max_payload));
                (p0 - p1, b0 - b1)
            }
        };
        let first_slice = keyframe.iter().position(|n| (1..=5).contains(&nal_unit_type(n))).unwrap_or(0);
        let (p, b) = sums_cost(&keyframe[first_slice..]);
        (packets, bytes) = (packets + p, bytes + b);
        for n in 1..gop {
            let pic = skip.picture(n as u32);
            let (p0, b0) = packet_cost(&pic, max_payload);
            let (p1, b1) = sums_cost(&[&pic[..]]);
            (packets, bytes) = (packets + p0 + p1, bytes + b0 + b1);
        }
        let bytes_per_gop = (opts.bitrate_bps * gop / fps / 8).max(bytes);
        // Padding packets 2% short of full on average leave each picture room to catch up.
        let packets_per_gop = packets + ((bytes_per_gop - bytes) * 51 / 50).div_ceil(opts.packet_size as u64);
        Ok(StreamGen {
            stream,
            keyframe,
            skip,
            packetizer: Packetizer::new(salted_ssrc(stream, opts.ssrc_salt), 0).with_max_payload(max_payload),
            gop,
            fps,
            max_payload,
            packet_size: opts.packet_size,
            t0_ns,
            gop_ns: gop * 1_000_000_000 / fps,
            packets_per_gop,
            bytes_per_gop,
            picture: 0,
            phase: 0,
            seq: 0,
            built: 0,
            pad_seq: 0,
            gop_packets: 0,
            gop_bytes: bytes_per_gop as i64,
            pending: Vec::new(),
            ends: Default::default(),
            taken: 0,
        })
    }

    /// Starts the stream `pictures` pictures (modulo the group) before a keyframe, as a camera
    /// joined mid-group does: P pictures first, then the first keyframe (parameter sets, SEI,
    /// IDR picture), then one every group. Each picture still carries its share of the group's
    /// packets and bytes, as if the group had begun before the stream. 0: a keyframe first.
    pub fn with_first_keyframe_after(mut self, pictures: u64) -> StreamGen {
        let k = pictures % self.gop;
        if k == 0 || self.built > 0 {
            return self;
        }
        let (gop, total_p) = (self.gop, self.packets_per_gop);
        self.phase = gop - k;
        // The shares of the group's pictures before the first one sent (as `build_picture`
        // counts them), so that the first picture gets its own share, not theirs too.
        let before = self.phase;
        self.gop_packets = (total_p * before).div_ceil(gop).min(total_p - (gop - before));
        self.gop_bytes = (self.bytes_per_gop * before / gop) as i64;
        self
    }

    /// The bitrate actually sent: more than asked for when the keyframes alone need more.
    pub fn bitrate_bps(&self) -> u64 {
        self.bytes_per_gop * 8 * self.fps / self.gop
    }

    /// When packet `seq` is due.
    pub fn due_ns(&self, seq: u64) -> u64 {
        self.t0_ns + self.period_ns() * seq
    }

    pub fn period_ns(&self) -> u64 {
        self.gop_ns / self.packets_per_gop
    }

    /// The sequence of the next packet [`push_next`](Self::push_next) appends.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Appends the next packet, interleaved on channel 0.
    pub fn push_next(&mut self, out: &mut Vec<u8>) {
        if self.ends.is_empty() {
            self.pending.clear();
            self.taken = 0;
            self.build_picture();
        }
        let end = self.ends.pop_front().expect("a picture has packets");
        let mark = Mark { due_ns: self.due_ns(self.seq), stream: self.stream, seq: self.seq, scheduled: true };
        push_with_extension(out, &self.pending[self.taken..end], mark);
        self.taken = end;
        self.seq += 1;
    }

    fn build_picture(&mut self) {
        let f = (self.picture + self.phase) % self.gop;
        if f == 0 {
            // What the last group fell short (the last picture's packets were full) is owed.
            self.gop_packets = 0;
            self.gop_bytes -= self.bytes_per_gop as i64;
        }
        let (skip, sums);
        let (mut pre, mut slices): (Vec<&[u8]>, Vec<&[u8]>) = if f == 0 {
            // Parameter sets and SEI first, then the slices' checksums and the padding, then the
            // slices.
            let first_slice = self.keyframe.iter().position(|n| (1..=5).contains(&nal_unit_type(n))).unwrap_or(0);
            (self.keyframe[..first_slice].to_vec(), self.keyframe[first_slice..].to_vec())
        } else {
            skip = self.skip.picture(f as u32);
            (Vec::new(), vec![&skip[..]])
        };
        sums = picture_sums(&slices, self.max_payload);
        match &sums {
            Sums::Aggregated(stap) => slices = vec![&stap[..]],
            Sums::Separate(nal) => pre.push(nal),
        }
        let (mut n_pre, mut n_nat, mut b_nat) = (0, 0, 0);
        for (i, nal) in pre.iter().chain(slices.iter()).enumerate() {
            let (p, b) = packet_cost(nal, self.max_payload);
            (n_nat, b_nat) = (n_nat + p, b_nat + b);
            if i < pre.len() {
                n_pre += p;
            }
        }
        // This picture's share of the group's packets and bytes, keeping one packet for each
        // picture still to come.
        let (total_p, total_b) = (self.packets_per_gop, self.bytes_per_gop);
        let share_p = (total_p * (f + 1)).div_ceil(self.gop).min(total_p - (self.gop - 1 - f));
        let share_b = total_b * (f + 1) / self.gop;
        let last = f + 1 == self.gop;
        let k = if last { total_p } else { share_p }.saturating_sub(self.gop_packets + n_nat);
        let mut r = (if last { total_b } else { share_b } as i64 - self.gop_bytes - b_nat as i64).max(0) as u64;
        let overhead = RTP_HEADER + EXT_LEN;
        let mut pads = Vec::with_capacity(k as usize);
        for i in 0..k {
            let size = (r / (k - i)) as usize;
            let size = size.clamp(overhead + MIN_PAD_NAL, self.packet_size.max(overhead + MIN_PAD_NAL));
            let seq = self.built + n_pre + i;
            let nal = padding_nal(size - overhead, self.due_ns(seq), self.stream, self.pad_seq);
            self.pad_seq += 1;
            r = r.saturating_sub((nal.len() + overhead) as u64);
            b_nat += (nal.len() + overhead) as u64;
            pads.push(nal);
        }
        let mut nals: Vec<&[u8]> = pre;
        nals.extend(pads.iter().map(Vec::as_slice));
        nals.extend_from_slice(&slices);
        let ts = (self.picture * CLOCK / self.fps) as u32;
        let (pending, ends) = (&mut self.pending, &mut self.ends);
        self.packetizer.packetize(&nals, ts, |p| {
            pending.extend_from_slice(p);
            ends.push_back(pending.len());
        });
        self.built += n_nat + k;
        self.gop_packets += n_nat + k;
        self.gop_bytes += b_nat as i64;
        self.picture += 1;
    }
}

/// An RTP packet's header fields the viewer checks, its header extension and its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Rtp<'a> {
    pub seq: u16,
    pub timestamp: u32,
    /// The marker bit: the last packet of a picture.
    pub marker: bool,
    pub ssrc: u32,
    /// The one-byte-form extension's elements, if the packet has one.
    pub ext: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why an RTP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    Short,
    Version,
}

/// Parses an RTP packet (RFC 3550: version 2, CSRCs skipped, padding removed).
pub fn parse_rtp(p: &[u8]) -> Result<Rtp<'_>, RtpError> {
    if p.len() < RTP_HEADER {
        return Err(RtpError::Short);
    }
    if p[0] >> 6 != 2 {
        return Err(RtpError::Version);
    }
    let mut at = RTP_HEADER + 4 * (p[0] & 0x0f) as usize;
    let mut ext = None;
    if p[0] & 0x10 != 0 {
        let h = p.get(at..at + 4).ok_or(RtpError::Short)?;
        let len = 4 * u16::from_be_bytes([h[2], h[3]]) as usize;
        let body = p.get(at + 4..at + 4 + len).ok_or(RtpError::Short)?;
        if u16::from_be_bytes([h[0], h[1]]) == EXT_PROFILE {
            ext = Some(body);
        }
        at += 4 + len;
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(*p.last().unwrap_or(&0) as usize).ok_or(RtpError::Short)?;
    }
    if at > end {
        return Err(RtpError::Short);
    }
    Ok(Rtp {
        seq: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        marker: p[1] & 0x80 != 0,
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        ext,
        payload: &p[at..end],
    })
}

/// Why a packet that looked like ours is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkError {
    /// Our element or padding unit, but cut short or malformed.
    Short,
    /// A padding unit's fill is not all fill bytes.
    Fill,
}

/// The elements of a one-byte-form extension (RFC 8285 §4.2): (ID, data).
fn elements(mut e: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), MarkError>> {
    std::iter::from_fn(move || {
        loop {
            let (&b, rest) = e.split_first()?;
            match b >> 4 {
                0 => e = rest, // padding
                15 => return None,
                id => {
                    let len = usize::from(b & 0xf) + 1;
                    let Some(data) = rest.get(..len) else {
                        e = &[];
                        return Some(Err(MarkError::Short));
                    };
                    e = &rest[len..];
                    return Some(Ok((id, data)));
                }
            }
        }
    })
}

/// The mark of an RTP packet: from its header extension, else from a padding unit in its
/// payload; `Ok(None)` for a packet with neither (another sender's, or media a relay
/// re-packetised), which the viewer counts as unmarked. A padding unit's fill is checked either way.
pub fn parse_mark(rtp: &Rtp) -> Result<Option<Mark>, MarkError> {
    let inband = parse_padding(rtp.payload)?;
    let (mut due, mut seq) = (None, None);
    for el in rtp.ext.into_iter().flat_map(elements) {
        match el? {
            (EXT_DUE, d) => due = Some(u64::from_be_bytes(d.try_into().map_err(|_| MarkError::Short)?)),
            (EXT_SEQ, d) if d.len() == 12 => {
                let stream = u32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
                seq = Some((stream, u64::from_be_bytes(d[4..].try_into().expect("8 bytes"))));
            }
            (EXT_SEQ, _) => return Err(MarkError::Short),
            _ => {}
        }
    }
    match (due, seq) {
        (Some(due_ns), Some((stream, seq))) => Ok(Some(Mark { due_ns, stream, seq, scheduled: true })),
        (None, None) => Ok(inband),
        _ => Err(MarkError::Short),
    }
}

/// The mark of a padding unit (a single NAL unit packet), or `None` for any other payload.
fn parse_padding(payload: &[u8]) -> Result<Option<Mark>, MarkError> {
    if payload.first().map(|b| b & 0x1f) != Some(nal_type::SEI) || payload.get(1) != Some(&5) {
        return Ok(None);
    }
    let mut at = 2;
    let mut size = 0usize;
    while let Some(&b) = payload.get(at) {
        size += usize::from(b);
        at += 1;
        if b != 0xff {
            break;
        }
    }
    if payload.get(at..at + 16) != Some(SEI_UUID) {
        return Ok(None);
    }
    let body = payload.get(at + 16..at + size).ok_or(MarkError::Short)?;
    if size < 16 + SEI_MARK || payload.len() != at + size + 1 || payload[at + size] != 0x80 {
        return Err(MarkError::Short);
    }
    // A fold, not a short-circuiting search, so it vectorises: this runs on most bytes received.
    if body[SEI_MARK..].iter().fold(FILL, |acc, &x| acc & x) != FILL {
        return Err(MarkError::Fill);
    }
    let hex = |r: std::ops::Range<usize>| {
        std::str::from_utf8(&body[r]).ok().and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or(MarkError::Short)
    };
    Ok(Some(Mark { due_ns: hex(0..16)?, stream: hex(16..24)? as u32, seq: hex(24..40)?, scheduled: false }))
}

/// Whether an RTP payload begins a keyframe or carries part of one: an SPS or IDR slice as a
/// single NAL unit, in a STAP-A, or as the first FU-A fragment (RFC 6184 §5.6-5.8).
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let key = |t: u8| t == nal_type::SPS || t == nal_type::IDR_SLICE;
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => {
            let mut at = 1;
            while let Some(len) = payload.get(at..at + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) {
                if payload.get(at + 2).is_some_and(|h| key(h & 0x1f)) {
                    return true;
                }
                at += 2 + len;
            }
            false
        }
        Some(28) => payload.get(1).is_some_and(|h| h & 0x80 != 0 && key(h & 0x1f)),
        Some(t) => key(t),
        None => false,
    }
}

/// One interleaved padding packet of `size` bytes with the mark `(stream, seq, due_ns)` in its
/// extension and payload (for tests of the receiving side).
#[cfg(test)]
pub fn push_packet(p: &mut Vec<u8>, size: usize, stream: u32, seq: u64, rtp_seq: u16, due_ns: u64) {
    let nal = padding_nal(size.max(MIN_PACKET) - RTP_HEADER - EXT_LEN, due_ns, stream, seq);
    let mut rtp = vec![0x80, 96];
    rtp.extend_from_slice(&rtp_seq.to_be_bytes());
    rtp.extend_from_slice(&((due_ns / 11_111) as u32).to_be_bytes());
    rtp.extend_from_slice(&ssrc_of(stream).to_be_bytes());
    rtp.extend_from_slice(&nal);
    push_with_extension(p, &rtp, Mark { due_ns, stream, seq, scheduled: true });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_its_size() {
        let mut p = Vec::new();
        push_packet(&mut p, 1200, 7, 42, 42, 123_456_789);
        assert_eq!(p.len(), 1204);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1200);
        let rtp = parse_rtp(&p[4..]).unwrap();
        assert_eq!((rtp.seq, rtp.ssrc), (42, ssrc_of(7)));
        assert_eq!(rtp.payload[0] & 0x1f, nal_type::SEI);
        let mark = Mark { due_ns: 123_456_789, stream: 7, seq: 42, scheduled: true };
        assert_eq!(parse_mark(&rtp), Ok(Some(mark)));
        // Without the extension (a relay re-packetised it), the padding unit still tells.
        let bare = Rtp { ext: None, ..rtp };
        assert_eq!(parse_mark(&bare), Ok(Some(Mark { scheduled: false, ..mark })));
        assert!(monotonic_ns() > 0);
        for len in MIN_PAD_NAL..MIN_PAD_NAL + 600 {
            let n = padding_nal(len, 1, 2, 3);
            assert!(n.len() == len || n.len() + 1 == len, "{len}: {}", n.len());
            assert!(!n.windows(2).any(|w| w == [0, 0]), "no emulation prevention needed");
            assert_eq!(parse_padding(&n).unwrap().unwrap().seq, 3, "{len}");
        }
    }

    #[test]
    fn damage_is_told_apart_from_foreign_payloads() {
        let mut p = Vec::new();
        push_packet(&mut p, 200, 1, 1, 1, 1);
        let mut bad = p[4..].to_vec();
        let n = bad.len();
        bad[n - 2] = 0;
        assert_eq!(parse_mark(&parse_rtp(&bad).unwrap()), Err(MarkError::Fill));
        let mut cut = p[4..].to_vec();
        cut.truncate(n - 10);
        assert_eq!(parse_mark(&parse_rtp(&cut).unwrap()), Err(MarkError::Short));
        let sps = [0x80, 96, 0, 1, 0, 0, 0, 0, 0x50, 0, 0, 0, 0x67, 1, 2, 3];
        assert_eq!(parse_mark(&parse_rtp(&sps).unwrap()), Ok(None), "an SPS is not ours");
        let mut v1 = p[4..].to_vec();
        v1[0] = 0x50;
        assert_eq!(parse_rtp(&v1), Err(RtpError::Version));
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpError::Short));
        // An extension with only one of the two elements is damaged.
        let mut half = p[4..].to_vec();
        half[12 + 4 + 9] = 0; // the sequence element's header becomes padding
        assert!(parse_mark(&parse_rtp(&half).unwrap()).is_err());
    }

    #[test]
    fn keyframes_are_recognised_in_every_packetisation() {
        assert!(starts_keyframe(&[0x67, 1]) && starts_keyframe(&[0x65, 1]));
        assert!(!starts_keyframe(&[0x41, 1]) && !starts_keyframe(&[0x68, 1]) && !starts_keyframe(&[]));
        assert!(starts_keyframe(&[0x7c, 0x85, 1]), "FU-A start of an IDR slice");
        assert!(!starts_keyframe(&[0x7c, 0x05, 1]), "FU-A middle");
        assert!(starts_keyframe(&[0x78, 0, 2, 0x68, 1, 0, 2, 0x67, 1]), "STAP-A with an SPS");
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x41, 1]));
    }

    /// Splits a generated stream into RTP packets.
    pub(crate) fn packets(g: &mut StreamGen, n: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..n {
            g.push_next(&mut out);
        }
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = u16::from_be_bytes([out[at + 2], out[at + 3]]) as usize;
            v.push(out[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        v
    }

    #[test]
    fn the_stream_meets_its_bitrate_with_keyframes_every_gop() {
        let opts = MediaOptions { bitrate_bps: 2_000_000, packet_size: 1200, gop: 50, fps: 25, ssrc_salt: 0 };
        let mut g = StreamGen::new(3, &opts, 1_000).unwrap();
        let per_gop = g.packets_per_gop;
        let pk = packets(&mut g, 3 * per_gop);
        // Three groups of 2 s: 3 × 500,000 bytes of RTP (the extension included).
        let bytes: usize = pk.iter().map(Vec::len).sum();
        assert!((bytes as i64 - 1_500_000).abs() < 3 * 200, "{bytes}");
        assert!(pk.iter().all(|p| p.len() <= 1200));
        let (mut keys, mut markers, mut last_ts) = (Vec::new(), 0, None);
        for (i, p) in pk.iter().enumerate() {
            let rtp = parse_rtp(p).unwrap();
            let mark = parse_mark(&rtp).unwrap().unwrap();
            assert_eq!((mark.stream, mark.seq, rtp.seq), (3, i as u64, i as u16));
            assert_eq!(mark.due_ns, 1_000 + i as u64 * g.period_ns());
            if rtp.payload[0] & 0x1f == nal_type::SPS {
                keys.push(i as u64);
            }
            let ts = u32::from_be_bytes(p[4..8].try_into().unwrap());
            if p[1] & 0x80 != 0 {
                markers += 1;
                last_ts = Some(ts);
            } else if let Some(l) = last_ts {
                assert!(ts > l || i == 0);
            }
        }
        assert_eq!(keys, [0, per_gop, 2 * per_gop], "a keyframe starts every group");
        assert_eq!(markers, 150, "one marker bit per picture");
        assert_eq!(last_ts, Some(149 * 3600));
        assert_eq!(g.bitrate_bps(), 2_000_000);
        // Below what the keyframe needs, the keyframe wins.
        let low = StreamGen::new(0, &MediaOptions { bitrate_bps: 1_000, ..opts }, 0).unwrap();
        assert!(low.bitrate_bps() > 1_000);
    }

    #[test]
    fn a_stream_started_mid_group_has_its_first_keyframe_after_that_many_pictures() {
        let opts = MediaOptions { bitrate_bps: 1_000_000, packet_size: 1200, gop: 50, fps: 25, ssrc_salt: 0 };
        for k in [0u64, 1, 17, 49, 50 + 17] {
            let mut g = StreamGen::new(3, &opts, 1_000).unwrap().with_first_keyframe_after(k);
            let per_gop = g.packets_per_gop;
            let pk = packets(&mut g, 3 * per_gop);
            let (mut keys, mut pictures_before_key, mut slices) = (Vec::new(), 0, crate::slices::SliceCheck::default());
            let mut picture_packets = vec![0u64];
            for (i, p) in pk.iter().enumerate() {
                let rtp = parse_rtp(p).unwrap();
                // The schedule does not care where the group began.
                let mark = parse_mark(&rtp).unwrap().unwrap();
                assert_eq!((mark.seq, mark.due_ns), (i as u64, 1_000 + i as u64 * g.period_ns()));
                if rtp.payload[0] & 0x1f == nal_type::SPS {
                    keys.push(i as u64);
                }
                assert!(!slices.packet(&rtp, true), "k {k}: a damaged picture at packet {i}");
                *picture_packets.last_mut().unwrap() += 1;
                if rtp.marker {
                    if keys.is_empty() {
                        pictures_before_key += 1;
                    }
                    picture_packets.push(0);
                }
            }
            let k = k % 50;
            assert_eq!(pictures_before_key, k, "k {k}");
            assert_eq!(keys.len(), 3, "k {k}: {keys:?}");
            assert!(keys.windows(2).all(|w| w[1] - w[0] == per_gop), "k {k}: a keyframe every group: {keys:?}");
            if k > 0 {
                // The P pictures before it carry their share of the group, not a burst.
                assert_eq!(keys[0], per_gop - (per_gop * (50 - k)).div_ceil(50).min(per_gop - k), "k {k}");
                let most = *picture_packets[..k as usize].iter().max().unwrap();
                assert!(most <= per_gop.div_ceil(50) + 1, "k {k}: {most} packets in one P picture");
            }
            assert_eq!((slices.pictures_damaged, slices.pictures_unverified), (0, 0), "k {k}: {slices:?}");
            assert!(slices.slices_verified >= 100, "k {k}: {slices:?}");
        }
    }
}
