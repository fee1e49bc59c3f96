//! The media the simulated cameras send: RTP packets whose payload is an H.264 filler NAL unit
//! (type 12, so real depacketisers and relays carry it) holding the time the packet was due
//! (its scheduled send time, not when it was built), the stream and a per-stream sequence
//! number, then fill bytes. Receivers get latency, loss and integrity from it.

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a viewer in
/// another process can subtract a camera's timestamp.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

const MAGIC: &[u8; 4] = b"RTRL";
/// NAL header (1) + magic (4) + due time (8) + stream (4) + sequence (8).
const MARK: usize = 1 + 4 + 8 + 4 + 8;
/// RTP header (12) + the mark.
pub const MIN_PACKET: usize = 12 + MARK;
const FILL: u8 = 0xff;
/// The camera's SSRC for stream `n` (also announced in its SETUP reply).
pub fn ssrc_of(stream: u32) -> u32 {
    0x5000_0000 | stream
}

fn rtp_header(p: &mut Vec<u8>, rtp_seq: u16, ssrc: u32, due_ns: u64) {
    // v=2, marker set (each packet is a whole access unit), PT 96, 90 kHz timestamp.
    p.extend_from_slice(&[0x80, 0x80 | 96]);
    p.extend_from_slice(&rtp_seq.to_be_bytes());
    p.extend_from_slice(&((due_ns / 11_111) as u32).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
}

/// Appends a parameter-set NAL (SPS, PPS) as an interleaved RTP packet, so real H.264
/// depayloaders and payloaders (the GStreamer relay of the comparison) can negotiate.
pub fn push_nal_packet(p: &mut Vec<u8>, nal: &[u8], rtp_seq: u16, ssrc: u32, due_ns: u64) {
    p.extend_from_slice(&[b'$', 0]);
    p.extend_from_slice(&((nal.len() + 12) as u16).to_be_bytes());
    rtp_header(p, rtp_seq, ssrc, due_ns);
    p.extend_from_slice(nal);
}

/// Appends one interleaved (`$`, channel 0) RTP packet of `size` bytes (RTP header included).
pub fn push_packet(p: &mut Vec<u8>, size: usize, stream: u32, seq: u64, rtp_seq: u16, due_ns: u64) {
    let size = size.max(MIN_PACKET);
    let start = p.len();
    p.extend_from_slice(&[b'$', 0]);
    p.extend_from_slice(&(size as u16).to_be_bytes());
    rtp_header(p, rtp_seq, ssrc_of(stream), due_ns);
    p.push(12); // NAL header: filler data
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&due_ns.to_be_bytes());
    p.extend_from_slice(&stream.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(start + 4 + size, FILL);
}

/// An RTP packet's header fields the viewer checks, and its payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Rtp<'a> {
    pub seq: u16,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why an RTP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    Short,
    Version,
}

/// Parses an RTP packet (RFC 3550: version 2, CSRCs, header extension and padding skipped).
pub fn parse_rtp(p: &[u8]) -> Result<Rtp<'_>, RtpError> {
    if p.len() < 12 {
        return Err(RtpError::Short);
    }
    if p[0] >> 6 != 2 {
        return Err(RtpError::Version);
    }
    let mut at = 12 + 4 * (p[0] & 0x0f) as usize;
    if p[0] & 0x10 != 0 {
        let ext = p.get(at + 2..at + 4).ok_or(RtpError::Short)?;
        at += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
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
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload: &p[at..end],
    })
}

/// What a marked payload carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub due_ns: u64,
    pub stream: u32,
    pub seq: u64,
}

/// Why a payload that looked like ours is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkError {
    /// Our magic, but cut short.
    Short,
    /// The fill after the mark is not all fill bytes.
    Fill,
}

/// The mark of an RTP payload: `Ok(None)` for a payload that is not ours (parameter sets, or
/// media a relay re-packetised), which the viewer counts as unchecked.
pub fn parse_mark(payload: &[u8]) -> Result<Option<Mark>, MarkError> {
    if payload.first().map(|h| h & 0x1f) != Some(12) || payload.get(1..5) != Some(MAGIC) {
        return Ok(None);
    }
    let b = payload.get(5..MARK).ok_or(MarkError::Short)?;
    // A fold, not a short-circuiting search, so it vectorises: this runs on every byte received.
    if payload[MARK..].iter().fold(FILL, |acc, &x| acc & x) != FILL {
        return Err(MarkError::Fill);
    }
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Ok(Some(Mark {
        due_ns: u64_at(0),
        stream: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        seq: u64_at(12),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_its_size() {
        let mut p = Vec::new();
        push_packet(&mut p, 1200, 7, 42, 42, 123_456_789);
        assert_eq!(p.len(), 1204);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1200);
        let rtp = parse_rtp(&p[4..]).unwrap();
        assert_eq!((rtp.seq, rtp.ssrc), (42, ssrc_of(7)));
        assert_eq!(rtp.payload[0] & 0x1f, 12, "filler NAL");
        assert_eq!(parse_mark(rtp.payload), Ok(Some(Mark { due_ns: 123_456_789, stream: 7, seq: 42 })));
        assert!(monotonic_ns() > 0);
    }

    #[test]
    fn damage_is_told_apart_from_foreign_payloads() {
        let mut p = Vec::new();
        push_packet(&mut p, 200, 1, 1, 1, 1);
        let mut bad = p[4..].to_vec();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(parse_mark(parse_rtp(&bad).unwrap().payload), Err(MarkError::Fill));
        assert_eq!(parse_mark(&parse_rtp(&p[4..]).unwrap().payload[..10]), Err(MarkError::Short));
        assert_eq!(parse_mark(&[0x67, 1, 2, 3]), Ok(None), "an SPS is not ours");
        let mut v1 = p[4..].to_vec();
        v1[0] = 0x40;
        assert_eq!(parse_rtp(&v1), Err(RtpError::Version));
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpError::Short));
    }
}
