//! Cuts a camera's interleaved byte stream into whole `$` frames, one at a time.
//!
//! [`super::interleaved::Demux`] reports frame bytes as runs (headers and payloads together,
//! cut wherever the reads were cut), which is right for forwarding a stream verbatim to one
//! viewer. Fan-out needs each frame on its own: every viewer gets its own channel byte, and a
//! slow viewer skips whole frames. This splitter reads those runs and yields each frame's
//! channel and payload: a range of the chunk just fed when the payload lies whole in it (the
//! common case: the shell sends it from its receive buffer without a copy), or the payload
//! copied once when it straddled reads.

use std::ops::Range;

use bytes::Bytes;

/// Where a frame's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramePayload {
    /// This range of the chunk just fed.
    InChunk(Range<usize>),
    /// Reassembled from several chunks.
    Assembled(Bytes),
}

impl FramePayload {
    /// The payload bytes, given the chunk the frame was reported for.
    pub fn bytes<'a>(&'a self, chunk: &'a [u8]) -> &'a [u8] {
        match self {
            FramePayload::InChunk(r) => &chunk[r.clone()],
            FramePayload::Assembled(b) => b,
        }
    }

    /// An owned copy (a reference count for assembled payloads).
    pub fn to_bytes(&self, chunk: &[u8]) -> Bytes {
        match self {
            FramePayload::InChunk(r) => Bytes::copy_from_slice(&chunk[r.clone()]),
            FramePayload::Assembled(b) => b.clone(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            FramePayload::InChunk(r) => r.len(),
            FramePayload::Assembled(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One whole interleaved frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitFrame {
    pub channel: u8,
    pub payload: FramePayload,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct FrameSplitter {
    /// Header bytes of a frame whose header straddles chunks.
    header: [u8; 4],
    header_len: u8,
    /// A frame whose payload straddles chunks: its channel, the bytes so far, and the total.
    partial: Option<(u8, Vec<u8>, usize)>,
}

impl FrameSplitter {
    pub fn new() -> Self {
        FrameSplitter::default()
    }

    /// Reads `range` of `chunk`, which holds frame bytes only (a `Frames` event of the demuxer,
    /// continuing the previous one), appending each frame completed in it to `out`.
    pub fn split(&mut self, chunk: &[u8], range: Range<usize>, out: &mut Vec<SplitFrame>) {
        let (mut i, end) = (range.start, range.end);
        while i < end {
            if let Some((channel, buf, total)) = &mut self.partial {
                let take = (*total - buf.len()).min(end - i);
                buf.extend_from_slice(&chunk[i..i + take]);
                i += take;
                if buf.len() == *total {
                    let channel = *channel;
                    let payload = FramePayload::Assembled(Bytes::from(std::mem::take(buf)));
                    self.partial = None;
                    out.push(SplitFrame { channel, payload });
                }
                continue;
            }
            let (channel, len, body) = if self.header_len == 0 && end - i >= 4 {
                (chunk[i + 1], usize::from(u16::from_be_bytes([chunk[i + 2], chunk[i + 3]])), i + 4)
            } else {
                let take = (4 - usize::from(self.header_len)).min(end - i);
                self.header[usize::from(self.header_len)..usize::from(self.header_len) + take]
                    .copy_from_slice(&chunk[i..i + take]);
                self.header_len += take as u8;
                i += take;
                if self.header_len < 4 {
                    continue;
                }
                self.header_len = 0;
                let h = self.header;
                (h[1], usize::from(u16::from_be_bytes([h[2], h[3]])), i)
            };
            if body + len <= end {
                out.push(SplitFrame { channel, payload: FramePayload::InChunk(body..body + len) });
                i = body + len;
            } else {
                let mut buf = Vec::with_capacity(len);
                buf.extend_from_slice(&chunk[body..end]);
                self.partial = Some((channel, buf, len));
                i = end;
            }
        }
    }

    /// Between two frames (nothing held back).
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.partial.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::interleaved::{Demux, Event};
    use crate::proto::rtsp::MessageLimits;
    use proptest::prelude::*;

    fn frame(ch: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b'$', ch];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `pieces` through the demuxer and the splitter; returns (channel, payload) pairs
    /// and how many payloads were copied.
    fn run(pieces: &[&[u8]]) -> (Vec<(u8, Vec<u8>)>, usize) {
        let mut d = Demux::new(MessageLimits::default());
        let mut s = FrameSplitter::new();
        let (mut got, mut copied) = (Vec::new(), 0);
        for p in pieces {
            let mut ev = Vec::new();
            d.feed(p, &mut ev).unwrap();
            for e in ev {
                if let Event::Frames { range, .. } = e {
                    let mut out = Vec::new();
                    s.split(p, range, &mut out);
                    for f in out {
                        copied += usize::from(matches!(f.payload, FramePayload::Assembled(_)));
                        got.push((f.channel, f.payload.bytes(p).to_vec()));
                    }
                }
            }
        }
        (got, copied)
    }

    #[test]
    fn whole_frames_are_ranges_of_the_chunk() {
        let mut s = frame(0, b"abc");
        s.extend(frame(1, b""));
        s.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n");
        s.extend(frame(2, &[9; 300]));
        let (got, copied) = run(&[&s]);
        assert_eq!(got, vec![(0, b"abc".to_vec()), (1, vec![]), (2, vec![9; 300])]);
        assert_eq!(copied, 0);
    }

    #[test]
    fn frames_across_reads_are_assembled_once() {
        let s = [frame(0, &[1; 1000]), frame(3, &[2; 10])].concat();
        for cut in 1..s.len() {
            let (got, copied) = run(&[&s[..cut], &s[cut..]]);
            assert_eq!(got, vec![(0, vec![1; 1000]), (3, vec![2; 10])], "cut {cut}");
            assert!(copied <= 1, "cut {cut}");
        }
        let pieces: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(&pieces).0.len(), 2);
    }

    proptest! {
        #[test]
        fn any_split_yields_the_frames_sent(
            frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..700)), 1..10),
            cuts in proptest::collection::vec(0usize..8000, 0..8),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|(c, p)| frame(*c, p)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&stream[last..c]); last = c; }
            pieces.push(&stream[last..]);
            prop_assert_eq!(run(&pieces).0, frames);
        }
    }
}
