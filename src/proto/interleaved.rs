//! The `$` demultiplexer: splits an RTSP/TCP byte stream into interleaved binary frames
//! (`$`, channel, 16-bit length, payload) and RTSP messages.
//!
//! Frame bytes are not copied: the demuxer reports which range of the chunk just fed belongs to
//! frames, so the shell can forward them straight from its receive buffers. Frames may span any
//! number of chunks, the 4-byte header included. RTSP messages are buffered until complete.

use std::ops::Range;

use super::rtsp::{Message, MessageLimits, ParseError};

/// What a fed chunk contained, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `range` of the chunk is interleaved-frame bytes (headers and payloads of one or more
    /// consecutive frames, possibly starting or ending mid-frame): forward verbatim.
    /// `frames_completed` counts the frames whose last byte lies in this range.
    Frames {
        range: Range<usize>,
        frames_completed: u32,
    },
    /// A complete RTSP message (request or response).
    Message(Message),
}

/// Streaming demultiplexer state.
#[derive(Debug, Clone)]
pub struct Demux {
    limits: MessageLimits,
}

impl Demux {
    pub fn new(limits: MessageLimits) -> Self {
        Demux { limits }
    }

    /// Feeds the next chunk of the stream, appending events to `out`. CR/LF between messages is
    /// skipped. After an error the stream is unusable.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        let _ = (chunk, out, &self.limits);
        todo!("implemented by the proto-core work")
    }

    /// Bytes buffered for an incomplete RTSP message.
    pub fn buffered(&self) -> usize {
        todo!()
    }
}
