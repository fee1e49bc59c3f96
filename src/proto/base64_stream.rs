//! Streaming base64 decoder for the tunnel's POST body.
//!
//! Clients encode each RTSP message separately *with padding*, so `=` appears mid-stream; a
//! 4-character group may be split across TCP reads and CR/LF may appear between chunks.

/// Why a POST body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("invalid base64 byte {byte:#04x} at stream offset {offset}")]
    InvalidByte { byte: u8, offset: u64 },
    #[error("padding in the wrong place of a group at stream offset {offset}")]
    BadPadding { offset: u64 },
}

/// Decodes a stream of padded base64 groups fed in arbitrary pieces.
#[derive(Debug, Default, Clone)]
pub struct Base64StreamDecoder {
    /// Sextets of the group in progress, most recent in the low bits.
    quad: u32,
    /// Characters of the group in progress (padding included).
    filled: u8,
    /// `=` characters in the group in progress.
    padding: u8,
    /// Bytes consumed so far, for error positions.
    offset: u64,
}

const INVALID: u8 = 0xff;

/// The standard alphabet (RFC 4648 §4); clients do not use the URL-safe one.
const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

impl Base64StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input`, appending the decoded bytes to `out`. Whitespace is skipped and an
    /// incomplete trailing group is carried over to the next call.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
        out.reserve(input.len() / 4 * 3 + 3);
        for &b in input {
            let offset = self.offset;
            self.offset += 1;
            if b == b'=' {
                // Padding may only fill the last one or two places of a group.
                if self.filled < 2 {
                    return Err(Base64Error::BadPadding { offset });
                }
                self.padding += 1;
                self.filled += 1;
            } else {
                let v = DECODE[b as usize];
                if v == INVALID {
                    if b.is_ascii_whitespace() {
                        continue;
                    }
                    return Err(Base64Error::InvalidByte { byte: b, offset });
                }
                if self.padding > 0 {
                    return Err(Base64Error::BadPadding { offset });
                }
                self.quad = (self.quad << 6) | v as u32;
                self.filled += 1;
            }
            if self.filled == 4 {
                let q = self.quad;
                match self.padding {
                    0 => out.extend_from_slice(&[(q >> 16) as u8, (q >> 8) as u8, q as u8]),
                    1 => out.extend_from_slice(&[(q >> 10) as u8, (q >> 2) as u8]),
                    _ => out.push((q >> 4) as u8),
                }
                // Each message is encoded on its own: a padded group ends one, the next
                // group starts the next.
                self.quad = 0;
                self.filled = 0;
                self.padding = 0;
            }
        }
        Ok(())
    }

    /// Number of characters of an incomplete group carried to the next call.
    pub fn pending(&self) -> usize {
        self.filled as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    fn encode(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn decode_all(pieces: &[&[u8]]) -> Result<Vec<u8>, Base64Error> {
        let mut d = Base64StreamDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            d.decode(p, &mut out)?;
        }
        Ok(out)
    }

    /// The decoded POST bodies of the client captures, re-encoded message by message.
    fn fixture_messages() -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for (_, bytes) in crate::test_fixtures::dir("clients") {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            for block in text.split("\r\n\r\n") {
                let start = ["OPTIONS ", "DESCRIBE ", "SETUP ", "PLAY ", "GET_PARAMETER ", "TEARDOWN "]
                    .iter()
                    .filter_map(|m| block.find(m))
                    .min();
                if let Some(s) = start {
                    msgs.push(format!("{}\r\n\r\n", &block[s..]).into_bytes());
                }
            }
        }
        msgs
    }

    #[test]
    fn decodes_messages_encoded_separately_with_mid_stream_padding() {
        let msgs = [&b"OPTIONS rtsp://h/c RTSP/1.0\r\nCSeq: 1\r\n\r\n"[..], b"x", b"ab", b"abc"];
        let stream: String = msgs.iter().map(|m| encode(m)).collect();
        assert!(stream.contains("==") && stream.contains('='));
        assert_eq!(decode_all(&[stream.as_bytes()]).unwrap(), msgs.concat());
    }

    #[test]
    fn client_fixtures_decode_under_every_split() {
        let msgs = fixture_messages();
        assert!(msgs.len() >= 10, "fixtures not found: {}", msgs.len());
        let stream: String = msgs.iter().map(|m| encode(m) + "\r\n").collect();
        let expected = msgs.concat();
        for split in 0..stream.len().min(400) {
            let (a, b) = stream.as_bytes().split_at(split);
            assert_eq!(decode_all(&[a, b]).unwrap(), expected, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(decode_all(&bytewise).unwrap(), expected);
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(decode_all(&[b"QUJD", b"QU*D"]), Err(Base64Error::InvalidByte { byte: b'*', offset: 6 }));
        assert_eq!(decode_all(&[b"Q==="]), Err(Base64Error::BadPadding { offset: 1 }));
        assert_eq!(decode_all(&[b"QQ=A"]), Err(Base64Error::BadPadding { offset: 3 }));
        assert_eq!(decode_all(&[b"=AAA"]), Err(Base64Error::BadPadding { offset: 0 }));
        assert_eq!(decode_all(&[b"QUJD\x00"]), Err(Base64Error::InvalidByte { byte: 0, offset: 4 }));
    }

    #[test]
    fn carries_partial_groups() {
        let mut d = Base64StreamDecoder::new();
        let mut out = Vec::new();
        d.decode(b"QU", &mut out).unwrap();
        assert_eq!((d.pending(), out.len()), (2, 0));
        d.decode(b" \r\nJ", &mut out).unwrap();
        d.decode(b"D", &mut out).unwrap();
        assert_eq!((d.pending(), out.as_slice()), (0, &b"ABC"[..]));
    }

    proptest! {
        #[test]
        fn any_split_with_whitespace_decodes_identically(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            ws in proptest::collection::vec((0usize..400, prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(b'\t')]), 0..6),
        ) {
            let mut stream: Vec<u8> = msgs.iter().flat_map(|m| encode(m).into_bytes()).collect();
            for (at, c) in ws {
                let at = at % (stream.len() + 1);
                stream.insert(at, c);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&stream[last..c]);
                last = c;
            }
            pieces.push(&stream[last..]);
            prop_assert_eq!(decode_all(&pieces).unwrap(), msgs.concat());
        }
    }
}
