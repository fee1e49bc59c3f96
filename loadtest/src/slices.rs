//! Verifies the H.264 slices a viewer receives against the checksums the load-test camera sends
//! before them (a `RTRL-slice-sum-1` SEI message per picture, see
//! [`payload::SLICE_SUM_UUID`]): the RTP payloads are depacketised (single NAL units, STAP-A,
//! FU-A, RFC 6184), each picture's slices hashed and compared with what its SEI declares. A
//! picture with a packet missing inside it cannot be verified and is counted apart, never
//! passed as good.

use crate::payload::{self, Rtp};

/// Per-session slice verification.
#[derive(Debug, Default)]
pub struct SliceCheck {
    /// RTP timestamp of the picture being collected.
    ts: Option<u32>,
    /// A packet of this picture is missing, or a fragment came out of order: unverifiable.
    broken: bool,
    declared: Option<Vec<u32>>,
    /// A checksum SEI that could not be read.
    declared_damaged: bool,
    computed: Vec<u32>,
    /// The FU-A fragments of the NAL unit being reassembled.
    fu: Option<Vec<u8>>,
    /// Slices whose checksum matched.
    pub slices_verified: u64,
    /// Pictures whose slices did not match their checksums (or whose checksum SEI was damaged).
    pub pictures_damaged: u64,
    /// Pictures with slices but no usable checksum, or with a packet missing.
    pub pictures_unverified: u64,
    /// Pictures whose packets came under more than one RTP timestamp (RFC 3550 and 6184 give
    /// each picture one), their slices checked still; see [`SliceCheck::packet`].
    pub pictures_split: u64,
}

impl SliceCheck {
    /// One RTP packet of the session's stream; `continuous`: no packet is missing before it.
    /// Returns whether a damaged picture was found with it.
    pub fn packet(&mut self, rtp: &Rtp, continuous: bool) -> bool {
        let mut damaged = false;
        // A missing packet belonged to the picture under way or to this one: neither can be
        // verified.
        if !continuous {
            self.broken = true;
            self.fu = None;
        }
        if self.ts != Some(rtp.timestamp) {
            if continuous && self.ts.is_some() && !self.broken && !self.all_declared_in() {
                // No packet is missing, yet the timestamp changed before the slices the picture
                // declared were all in: the sender moved its RTP clock inside a picture (live555
                // re-anchors it at every viewer's join). The picture goes on, counted as split.
                self.pictures_split += 1;
            } else {
                // A picture whose last packet (the marked one) never came ends here.
                damaged |= self.close();
                self.broken = !continuous;
            }
            self.ts = Some(rtp.timestamp);
        }
        self.depacketise(rtp.payload);
        if rtp.marker && self.all_declared_in() {
            damaged |= self.close();
        }
        damaged
    }

    /// Whether every slice the picture's checksum SEI declared has come (true without one). A
    /// relay that cannot tell where a picture ends may mark the last packet of each of its slices
    /// (live555's proxy does: its H.264 framer takes each slice for a whole picture), so a marker
    /// closes a picture only once its slices are in; otherwise the next picture's timestamp does.
    fn all_declared_in(&self) -> bool {
        self.declared.as_ref().is_none_or(|d| self.computed.len() >= d.len())
    }

    fn depacketise(&mut self, p: &[u8]) {
        let Some(&first) = p.first() else { return };
        match first & 0x1f {
            1..=23 => self.nal(p),
            24 => {
                let mut at = 1;
                while let Some(l) = p.get(at..at + 2) {
                    let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
                    let Some(n) = p.get(at + 2..at + 2 + len) else {
                        self.broken = true;
                        return;
                    };
                    self.nal(n);
                    at += 2 + len;
                }
            }
            28 => {
                let Some(&h) = p.get(1) else {
                    self.broken = true;
                    return;
                };
                let (start, end) = (h & 0x80 != 0, h & 0x40 != 0);
                if start {
                    // The NAL header: F and NRI from the indicator, the type from the FU header.
                    let mut n = vec![(first & 0xe0) | (h & 0x1f)];
                    n.extend_from_slice(&p[2..]);
                    self.fu = Some(n);
                } else if let Some(n) = self.fu.as_mut() {
                    n.extend_from_slice(&p[2..]);
                } else {
                    self.broken = true;
                    return;
                }
                if end && let Some(n) = self.fu.take() {
                    self.nal(&n);
                }
            }
            _ => {}
        }
    }

    fn nal(&mut self, n: &[u8]) {
        match n.first().map(|b| b & 0x1f) {
            Some(1 | 5) => self.computed.push(payload::fnv1a(n)),
            Some(6) => match payload::parse_slice_sums(n) {
                Ok(Some(sums)) => self.declared = Some(sums),
                Ok(None) => {}
                Err(_) => self.declared_damaged = true,
            },
            _ => {}
        }
    }

    /// Ends the picture being collected; whether it was damaged.
    fn close(&mut self) -> bool {
        let (declared, computed) = (self.declared.take(), std::mem::take(&mut self.computed));
        let (broken, declared_damaged) = (std::mem::take(&mut self.broken), std::mem::take(&mut self.declared_damaged));
        self.fu = None;
        if self.ts.take().is_none() || (computed.is_empty() && declared.is_none() && !declared_damaged) {
            return false;
        }
        if broken {
            self.pictures_unverified += 1;
            return false;
        }
        match declared {
            Some(d) if d == computed => {
                self.slices_verified += computed.len() as u64;
                false
            }
            Some(_) => {
                self.pictures_damaged += 1;
                true
            }
            None if declared_damaged => {
                self.pictures_damaged += 1;
                true
            }
            None => {
                self.pictures_unverified += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{MediaOptions, StreamGen, parse_rtp};

    /// A stream's RTP packets, each as bytes.
    fn packets(n: u64) -> Vec<Vec<u8>> {
        let opts = MediaOptions { bitrate_bps: 500_000, packet_size: 1200, gop: 10, fps: 25, ssrc_salt: 0 };
        let mut g = StreamGen::new(0, &opts, 0).unwrap();
        crate::payload::tests::packets(&mut g, n)
    }

    fn run(pk: &[Vec<u8>], skip: Option<usize>) -> SliceCheck {
        let mut c = SliceCheck::default();
        let mut gap = false;
        for (i, p) in pk.iter().enumerate() {
            if Some(i) == skip {
                gap = true;
                continue;
            }
            c.packet(&parse_rtp(p).unwrap(), !std::mem::take(&mut gap));
        }
        c
    }

    /// Index of the first packet carrying NAL type `t` (single or FU-A), and a byte in its slice.
    fn find(pk: &[Vec<u8>], t: u8) -> (usize, usize) {
        let i = pk
            .iter()
            .position(|p| {
                let r = parse_rtp(p).unwrap();
                let pl = r.payload;
                // P slices travel in a STAP-A after their checksum SEI, last.
                pl[0] & 0x1f == t || (pl[0] & 0x1f == 28 && pl[1] & 0x1f == t) || (t == 1 && pl[0] & 0x1f == 24)
            })
            .unwrap();
        (i, pk[i].len() - 2)
    }

    #[test]
    fn every_slice_is_verified_and_a_flipped_byte_in_a_p_or_idr_slice_is_caught() {
        let pk = packets(400);
        let clean = run(&pk, None);
        assert!(clean.slices_verified >= 30, "{clean:?}");
        assert_eq!((clean.pictures_damaged, clean.pictures_unverified), (0, 0), "{clean:?}");
        for t in [1, 5] {
            let (i, at) = find(&pk, t);
            let mut bad = pk.clone();
            bad[i][at] ^= 0x10;
            let c = run(&bad, None);
            assert_eq!(c.pictures_damaged, 1, "type {t}: {c:?}");
        }
        // A picture with a packet missing cannot be verified: counted apart, not as damage.
        let (i, _) = find(&pk, 1);
        let c = run(&pk, Some(i));
        assert_eq!(c.pictures_damaged, 0, "{c:?}");
        assert!(c.pictures_unverified >= 1, "{c:?}");
    }

    #[test]
    fn a_relay_marking_every_slice_still_has_every_picture_verified() {
        // live555's proxy sets the marker on the last packet of every slice, not of every
        // picture: the keyframe's several slices arrive as several "pictures" of one timestamp.
        let mut pk = packets(400);
        let mut marked = 0;
        for p in pk.iter_mut() {
            let r = parse_rtp(p).unwrap();
            let (t, ends) = match r.payload[0] & 0x1f {
                28 => (r.payload[1] & 0x1f, r.payload[1] & 0x40 != 0),
                t => (t, true),
            };
            if t == 5 && ends && p[1] & 0x80 == 0 {
                p[1] |= 0x80;
                marked += 1;
            }
        }
        assert!(marked >= 1, "the keyframe has more than one slice");
        let c = run(&pk, None);
        assert_eq!((c.pictures_damaged, c.pictures_unverified), (0, 0), "{c:?}");
        assert!(c.slices_verified >= 30, "{c:?}");
        // Damage is still caught.
        let (i, at) = find(&pk, 5);
        pk[i][at] ^= 0x10;
        assert_eq!(run(&pk, None).pictures_damaged, 1);
    }

    #[test]
    fn a_picture_split_across_two_timestamps_is_counted_apart_and_its_slices_still_checked() {
        // live555 re-anchors its RTP clock when a viewer joins: the other viewers see one
        // picture's packets under two timestamps, here between a P picture's checksum SEI and
        // its slice (the SEI travels alone, the slice in the next packet, as live555 sends them).
        let mut pk = packets(400);
        let (i, _) = find(&pk, 1);
        let stap = parse_rtp(&pk[i]).unwrap();
        assert_eq!(stap.payload[0] & 0x1f, 24, "a P picture's SEI and slice travel in a STAP-A");
        let header = pk[i].len() - stap.payload.len();
        let (mut sei, mut slice) = (pk[i][..header].to_vec(), pk[i][..header].to_vec());
        let (l0, rest) = (usize::from(u16::from_be_bytes([stap.payload[1], stap.payload[2]])), &stap.payload[3..]);
        sei.extend_from_slice(&rest[..l0]);
        sei[1] &= 0x7f; // not the picture's last packet
        slice.extend_from_slice(&rest[l0 + 2..]);
        let seq = u16::from_be_bytes([pk[i][2], pk[i][3]]);
        pk.splice(i..=i, [sei, slice]);
        for (k, p) in pk.iter_mut().enumerate() {
            let s = if k <= i { seq.wrapping_sub((i - k) as u16) } else { seq.wrapping_add((k - i) as u16) };
            p[2..4].copy_from_slice(&s.to_be_bytes());
            if k > i {
                // From the slice on, every timestamp 1,663 ticks later.
                let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(1663);
                p[4..8].copy_from_slice(&ts.to_be_bytes());
            }
        }
        let c = run(&pk, None);
        assert_eq!((c.pictures_damaged, c.pictures_unverified, c.pictures_split), (0, 0, 1), "{c:?}");
        assert!(c.slices_verified >= 30, "{c:?}");
    }
}
