//! The media the simulated cameras send: RTP packets whose payload is an H.264 filler NAL unit
//! (type 12, so real depacketisers and relays carry it) holding a send timestamp, the stream
//! and a per-stream sequence number. Receivers get latency and loss from it.

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a viewer in
/// another process can subtract a camera's timestamp.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

const MAGIC: &[u8; 4] = b"RTRL";
/// RTP header (12) + NAL header (1) + magic (4) + send time (8) + stream (4) + sequence (8).
pub const MIN_PACKET: usize = 12 + 1 + 4 + 8 + 4 + 8;

fn rtp_header(p: &mut Vec<u8>, rtp_seq: u16, ssrc: u32, send_ns: u64) {
    // v=2, marker set (each packet is a whole access unit), PT 96, 90 kHz timestamp.
    p.extend_from_slice(&[0x80, 0x80 | 96]);
    p.extend_from_slice(&rtp_seq.to_be_bytes());
    p.extend_from_slice(&((send_ns / 11_111) as u32).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
}

/// A parameter-set NAL (SPS, PPS) as an interleaved RTP packet, so real H.264 depayloaders and
/// payloaders (the GStreamer relay of the comparison) can negotiate.
pub fn nal_packet(nal: &[u8], rtp_seq: u16, ssrc: u32, send_ns: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(nal.len() + 16);
    p.extend_from_slice(&[b'$', 0]);
    p.extend_from_slice(&((nal.len() + 12) as u16).to_be_bytes());
    rtp_header(&mut p, rtp_seq, ssrc, send_ns);
    p.extend_from_slice(nal);
    p
}

/// One interleaved (`$`, channel 0) RTP packet of `size` bytes (RTP header included).
pub fn packet(size: usize, stream: u32, seq: u64, rtp_seq: u16, ssrc: u32, send_ns: u64) -> Vec<u8> {
    let size = size.max(MIN_PACKET);
    let mut p = Vec::with_capacity(size + 4);
    p.extend_from_slice(&[b'$', 0]);
    p.extend_from_slice(&(size as u16).to_be_bytes());
    rtp_header(&mut p, rtp_seq, ssrc, send_ns);
    p.push(12); // NAL header: filler data
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&send_ns.to_be_bytes());
    p.extend_from_slice(&stream.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(size + 4, 0xff);
    p
}

/// What a received RTP payload carried: (send time, stream, sequence).
pub fn parse(rtp: &[u8]) -> Option<(u64, u32, u64)> {
    // Find our marker after the RTP header (and any CSRCs or re-packetisation by a relay).
    let at = rtp.windows(4).position(|w| w == MAGIC)?;
    let b = rtp.get(at + 4..at + 24)?;
    Some((
        u64::from_be_bytes(b[0..8].try_into().ok()?),
        u32::from_be_bytes(b[8..12].try_into().ok()?),
        u64::from_be_bytes(b[12..20].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_its_size() {
        let p = packet(1200, 7, 42, 42, 0xdead, 123_456_789);
        assert_eq!(p.len(), 1204);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1200);
        assert_eq!(parse(&p[4..]), Some((123_456_789, 7, 42)));
        assert_eq!(p[4 + 12] & 0x1f, 12, "filler NAL");
        assert!(monotonic_ns() > 0);
    }
}
