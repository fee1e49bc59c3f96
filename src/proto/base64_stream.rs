//! Streaming base64 decoder for the tunnel's POST body (DESIGN.md §1).
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
    _todo: (),
}

impl Base64StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input`, appending the decoded bytes to `out`. Whitespace is skipped and an
    /// incomplete trailing group is carried over to the next call.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
        let _ = (input, out);
        todo!("implemented by the proto-core work")
    }

    /// Number of characters of an incomplete group carried to the next call.
    pub fn pending(&self) -> usize {
        todo!()
    }
}
