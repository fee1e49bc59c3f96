//! The `$` demultiplexer: splits an RTSP/TCP byte stream into interleaved binary frames
//! (`$`, channel, 16-bit length, payload) and RTSP messages.
//!
//! Frame bytes are not copied: the demuxer reports which range of the chunk just fed belongs to
//! frames, so the shell can forward them straight from its receive buffers. Frames may span any
//! number of chunks, the 4-byte header included. RTSP messages are buffered until complete.

use std::ops::Range;

use super::rtsp::{MAX_METHOD_LEN, Message, MessageLimits, ParseError, find_head_end, is_token_byte, parse_head};

/// What a fed chunk contained, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `range` of the chunk is interleaved-frame bytes (headers and payloads of one or more
    /// consecutive frames, possibly starting or ending mid-frame): forward verbatim.
    /// `frames_completed` counts the frames whose last byte lies in this range.
    Frames { range: Range<usize>, frames_completed: u32 },
    /// A complete RTSP message (request or response).
    Message(Message),
}

/// Streaming demultiplexer state.
#[derive(Debug, Clone)]
pub struct Demux {
    limits: MessageLimits,
    /// Payload bytes of the current frame still to come.
    frame_left: usize,
    /// A frame header split across feeds: bytes seen so far (1..=3) and the length bytes.
    header_seen: u8,
    length_bytes: [u8; 2],
    /// An RTSP message being assembled...
    msg: Vec<u8>,
    /// ...and its total length once its head has been parsed. Boxed: a message whose body
    /// spans receives is rare, and every session holds three demultiplexers.
    msg_total: Option<Box<(Message, usize, usize)>>,
    failed: bool,
}

/// Can `prefix` (the first bytes of a message) start an RTSP message? Lets garbage fail at once
/// instead of after a head's worth of bytes. It accepts exactly what the start-line parser could
/// accept later (a status line, or a method token of at most [`MAX_METHOD_LEN`] bytes), so the
/// verdict never depends on how the stream was split.
fn plausible_start(prefix: &[u8]) -> bool {
    if prefix.starts_with(b"RTSP/") || b"RTSP/".starts_with(prefix) {
        return true;
    }
    let word = match memchr::memchr(b' ', prefix) {
        Some(n) => &prefix[..n],
        None => prefix,
    };
    !word.is_empty() && word.len() <= MAX_METHOD_LEN && word.iter().all(|b| is_token_byte(*b))
}

/// The 4-byte header of a `$` frame of `len` bytes on `channel`; `None` past 65,535 bytes.
pub fn frame_header(channel: u8, len: usize) -> Option<[u8; 4]> {
    let len = u16::try_from(len).ok()?.to_be_bytes();
    Some([b'$', channel, len[0], len[1]])
}

impl Demux {
    pub fn new(limits: MessageLimits) -> Self {
        Demux {
            limits,
            frame_left: 0,
            header_seen: 0,
            length_bytes: [0; 2],
            msg: Vec::new(),
            msg_total: None,
            failed: false,
        }
    }

    /// Feeds the next chunk of the stream, appending events to `out`. CR/LF between messages is
    /// skipped. After an error the stream is unusable.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::Malformed("stream already failed".into()));
        }
        let result = self.feed_inner(chunk, out);
        self.failed = result.is_err();
        result
    }

    fn feed_inner(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), ParseError> {
        // The run of frame bytes not yet reported, and frames completed in it.
        let mut run: Option<usize> = None;
        let mut completed = 0u32;
        let mut i = 0;
        let flush = |run: &mut Option<usize>, completed: &mut u32, end: usize, out: &mut Vec<Event>| {
            if let Some(start) = run.take() {
                if end > start {
                    out.push(Event::Frames { range: start..end, frames_completed: *completed });
                }
            }
            *completed = 0;
        };
        while i < chunk.len() {
            if !self.msg.is_empty() {
                i += self.feed_message(&chunk[i..], out)?;
                continue;
            }
            if self.frame_left > 0 {
                let take = self.frame_left.min(chunk.len() - i);
                run.get_or_insert(i);
                i += take;
                self.frame_left -= take;
                if self.frame_left == 0 {
                    completed += 1;
                }
                continue;
            }
            if self.header_seen > 0 {
                run.get_or_insert(i);
                let b = chunk[i];
                i += 1;
                match self.header_seen {
                    1 => {} // channel
                    2 => self.length_bytes[0] = b,
                    _ => self.length_bytes[1] = b,
                }
                self.header_seen += 1;
                if self.header_seen == 4 {
                    self.header_seen = 0;
                    self.frame_left = u16::from_be_bytes(self.length_bytes) as usize;
                    if self.frame_left == 0 {
                        completed += 1;
                    }
                }
                continue;
            }
            match chunk[i] {
                b'$' => {
                    run.get_or_insert(i);
                    if let Some(h) = chunk.get(i..i + 4) {
                        // Whole header in this chunk: the common case, no state machine.
                        self.frame_left = u16::from_be_bytes([h[2], h[3]]) as usize;
                        i += 4;
                        if self.frame_left == 0 {
                            completed += 1;
                        }
                    } else {
                        self.header_seen = 1;
                        i += 1;
                    }
                }
                b'\r' | b'\n' => {
                    flush(&mut run, &mut completed, i, out);
                    i += 1;
                }
                _ => {
                    flush(&mut run, &mut completed, i, out);
                    i += self.feed_message(&chunk[i..], out)?;
                }
            }
        }
        flush(&mut run, &mut completed, chunk.len(), out);
        Ok(())
    }

    /// Adds bytes to the message being assembled; returns how many of `bytes` it took.
    fn feed_message(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<usize, ParseError> {
        let before = self.msg.len();
        if let Some((_, head_len, total)) = self.msg_total.as_deref() {
            let (head_len, total) = (*head_len, *total);
            let take = (total - before).min(bytes.len());
            self.msg.extend_from_slice(&bytes[..take]);
            if self.msg.len() == total {
                // Invariant: `msg_total` is Some in this branch (tested two lines up); no byte changes that.
                let (mut message, _, _) = *self.msg_total.take().expect("checked above");
                message.body = bytes::Bytes::copy_from_slice(&self.msg[head_len..total]);
                // Messages are rare next to frames: the room of the last one is not kept.
                self.msg = Vec::new();
                out.push(Event::Message(message));
            }
            return Ok(take);
        }
        self.msg.extend_from_slice(bytes);
        let Some(head_len) = find_head_end(&self.msg, before) else {
            if !plausible_start(&self.msg[..self.msg.len().min(MAX_METHOD_LEN + 1)]) {
                return Err(ParseError::Malformed("bytes that are neither `$` frames nor RTSP".into()));
            }
            if self.msg.len() > self.limits.max_head_bytes {
                return Err(ParseError::HeadTooLarge(self.limits.max_head_bytes));
            }
            return Ok(bytes.len());
        };
        let head = parse_head(&self.msg[..head_len], &self.limits)?
            .ok_or_else(|| ParseError::Malformed("incomplete head".into()))?;
        let total = head_len + head.body_len;
        if self.msg.len() >= total {
            let mut message = head.message;
            message.body = bytes::Bytes::copy_from_slice(&self.msg[head_len..total]);
            self.msg = Vec::new();
            out.push(Event::Message(message));
            return Ok(total - before);
        }
        self.msg_total = Some(Box::new((head.message, head_len, total)));
        Ok(bytes.len())
    }

    /// Bytes buffered for an incomplete RTSP message.
    pub fn buffered(&self) -> usize {
        self.msg.len()
    }

    /// The stream stopped inside an interleaved frame: bytes written to its reader now would
    /// land in the frame's payload.
    pub fn mid_frame(&self) -> bool {
        self.frame_left > 0 || self.header_seen > 0
    }

    /// Whether a message or a frame has begun and not yet ended (CR/LF between them is not one).
    pub fn holds_partial(&self) -> bool {
        !self.msg.is_empty() || self.frame_left > 0 || self.header_seen > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtsp::parse_message;
    use proptest::prelude::*;

    fn frame(ch: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b'$', ch];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `pieces`; returns (frame bytes in order, frames completed, messages).
    fn run(pieces: &[&[u8]]) -> Result<(Vec<u8>, u32, Vec<Message>), ParseError> {
        let mut d = Demux::new(MessageLimits::default());
        let (mut frames, mut count, mut msgs) = (Vec::new(), 0, Vec::new());
        for p in pieces {
            let mut ev = Vec::new();
            d.feed(p, &mut ev)?;
            let mut last_end = 0;
            for e in ev {
                match e {
                    Event::Frames { range, frames_completed } => {
                        assert!(range.start >= last_end && range.end <= p.len() && range.start < range.end);
                        last_end = range.end;
                        frames.extend_from_slice(&p[range]);
                        count += frames_completed;
                    }
                    Event::Message(m) => msgs.push(m),
                }
            }
        }
        Ok((frames, count, msgs))
    }

    /// Fuzz finding: a request line starting with a space was refused when its first bytes came
    /// alone (not a plausible start) but parsed when the head came whole.
    #[test]
    fn a_leading_space_is_refused_however_the_stream_is_split() {
        let msg = b" OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert!(run(&[msg]).is_err());
        for split in 1..msg.len() {
            assert!(run(&[&msg[..split], &msg[split..]]).is_err(), "split at {split}");
        }
    }

    #[test]
    fn live555_rtcp_before_the_play_reply_and_frames_coalesce() {
        let mut s = frame(1, b"sr");
        s.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nRTP-Info: url=rtsp://x/trackID=1;seq=1\r\n\r\n");
        s.extend(frame(0, &[7; 100]));
        s.extend(frame(0, &[8; 0]));
        s.extend(frame(1, &[9; 3]));
        let mut d = Demux::new(MessageLimits::default());
        let mut ev = Vec::new();
        d.feed(&s, &mut ev).unwrap();
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[0], Event::Frames { range: 0..6, frames_completed: 1 });
        assert!(matches!(&ev[1], Event::Message(m) if m.cseq() == Some(5)));
        let Event::Frames { range, frames_completed } = &ev[2] else { panic!() };
        assert_eq!((range.end, *frames_completed), (s.len(), 3));
    }

    #[test]
    fn a_header_split_byte_by_byte_still_frames() {
        let f = frame(1, b"rr!");
        let pieces: Vec<&[u8]> = f.chunks(1).collect();
        let (bytes, count, msgs) = run(&pieces).unwrap();
        assert_eq!((bytes, count, msgs.len()), (f.clone(), 1, 0));
    }

    #[test]
    fn camera_requests_between_frames_and_bodies_across_feeds() {
        let mut s = frame(0, b"abc");
        s.extend_from_slice(b"\r\nOPTIONS rtsp://cam/ RTSP/1.0\r\nCSeq: 9\r\n\r\n");
        s.extend_from_slice(b"SET_PARAMETER rtsp://cam/ RTSP/1.0\r\nCSeq: 10\r\nContent-Length: 5\r\n\r\nhello");
        s.extend(frame(0, b"z"));
        for cut in 0..s.len() {
            let (bytes, count, msgs) = run(&[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(count, 2, "cut {cut}");
            assert_eq!(bytes, [frame(0, b"abc"), frame(0, b"z")].concat(), "cut {cut}");
            assert_eq!(msgs.iter().map(|m| m.cseq().unwrap()).collect::<Vec<_>>(), vec![9, 10]);
            assert_eq!(&msgs[1].body[..], b"hello");
        }
    }

    #[test]
    fn holds_partial_while_a_message_or_frame_is_unfinished() {
        let mut stream = b"\r\n".to_vec();
        let msg = b"OPTIONS rtsp://x RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 2\r\n\r\nhi";
        stream.extend_from_slice(msg);
        stream.extend(frame(1, b"rr"));
        // After each byte: unfinished exactly when inside the message or the frame.
        let mut d = Demux::new(MessageLimits::default());
        let mut ev = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            d.feed(std::slice::from_ref(b), &mut ev).unwrap();
            let boundary = i < 2 || i == 1 + msg.len() || i == stream.len() - 1;
            assert_eq!(d.holds_partial(), !boundary, "after byte {i}");
        }
    }

    #[test]
    fn garbage_fails_at_once_and_stays_failed() {
        let mut d = Demux::new(MessageLimits::default());
        let mut ev = Vec::new();
        assert!(d.feed(b"\x00\x01\x02", &mut ev).is_err());
        assert!(d.feed(b"RTSP/1.0 200 OK\r\n\r\n", &mut ev).is_err());
        assert!(run(&[b"hello world this is not rtsp\r\n\r\n"]).is_err());
        let l = MessageLimits { max_head_bytes: 100, max_body_bytes: 100 };
        let mut d = Demux::new(l);
        let long = format!("OPTIONS rtsp://x RTSP/1.0\r\nX: {}", "a".repeat(200));
        assert_eq!(d.feed(long.as_bytes(), &mut ev), Err(ParseError::HeadTooLarge(100)));
    }

    #[test]
    fn splitting_never_changes_the_verdict() {
        // Found by the interleaved_demux fuzz target: a status-line-looking start without a
        // space in its first 33 bytes was refused split but accepted whole.
        let input = b"$\x00\x00\x04abcdRTSP/;\x002=0-1\r\x17Sess345683d=0-1\r\x17Session: 1234eS\x00s/120>P-\r\n$\x01\x00\x02xy";
        let whole = run(&[input]).is_ok();
        for cut in 0..input.len() {
            assert_eq!(run(&[&input[..cut], &input[cut..]]).is_ok(), whole, "cut {cut}");
        }
        // A lowercase (but valid token) method is neither refused early nor late.
        let lower = b"options rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        for cut in 0..lower.len() {
            assert!(run(&[&lower[..cut], &lower[cut..]]).is_ok(), "cut {cut}");
        }
    }

    #[test]
    fn camera_fixtures_interleaved_with_frames() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (_, bytes) in crate::test_fixtures::dir("cameras") {
            let (m, used) = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap();
            stream.extend_from_slice(&bytes[..used]);
            stream.extend(frame(0, &[0xab; 1400]));
            want.push(m);
        }
        for size in [1, 7, 1500, 16384] {
            let pieces: Vec<&[u8]> = stream.chunks(size).collect();
            let (_, count, msgs) = run(&pieces).unwrap();
            assert_eq!((count as usize, &msgs), (want.len(), &want), "chunk size {size}");
        }
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_frames_and_messages(
            items in proptest::collection::vec(prop_oneof![
                (0u8..4, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(c, p)| (true, frame(c, &p))),
                (1u32..1000, proptest::collection::vec(b'a'..=b'z', 0..40)).prop_map(|(cseq, body)| {
                    let body = String::from_utf8(body).unwrap();
                    (false, format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
                }),
            ], 1..12),
            cuts in proptest::collection::vec(0usize..4000, 0..8),
        ) {
            let stream: Vec<u8> = items.iter().flat_map(|(_, b)| b.clone()).collect();
            let frames: Vec<u8> = items.iter().filter(|(f, _)| *f).flat_map(|(_, b)| b.clone()).collect();
            let n_frames = items.iter().filter(|(f, _)| *f).count() as u32;
            let n_msgs = items.len() - n_frames as usize;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&stream[last..c]); last = c; }
            pieces.push(&stream[last..]);
            let (bytes, count, msgs) = run(&pieces).unwrap();
            prop_assert_eq!(bytes, frames);
            prop_assert_eq!(count, n_frames);
            prop_assert_eq!(msgs.len(), n_msgs);
        }
    }
}
