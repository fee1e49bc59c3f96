//! The `$` demultiplexer: ranges stay inside their chunk and in order, and feeding the stream
//! in two pieces yields the same frame bytes and messages as feeding it whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::interleaved::{Demux, Event};
use rtsp_tunnel_relay::proto::rtsp::{Message, MessageLimits};

fn run(pieces: &[&[u8]]) -> Result<(Vec<u8>, u32, Vec<Message>), ()> {
    let mut d = Demux::new(MessageLimits { max_head_bytes: 2048, max_body_bytes: 2048 });
    let (mut frames, mut n, mut msgs) = (Vec::new(), 0, Vec::new());
    for p in pieces {
        let mut ev = Vec::new();
        d.feed(p, &mut ev).map_err(|_| ())?;
        let mut last = 0;
        for e in ev {
            match e {
                Event::Frames { range, frames_completed } => {
                    assert!(range.start >= last && range.start < range.end && range.end <= p.len());
                    last = range.end;
                    frames.extend_from_slice(&p[range]);
                    n += frames_completed;
                }
                Event::Message(m) => msgs.push(m),
            }
        }
    }
    Ok((frames, n, msgs))
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let input = &data[1..];
    let split = (data[0] as usize * 7) % (input.len() + 1);
    let whole = run(&[input]);
    let parts = run(&[&input[..split], &input[split..]]);
    match (whole, parts) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // An error may surface earlier or later depending on the split, never vanish.
        (Err(()), Err(())) => {}
        (a, b) => panic!("whole {:?} vs split {:?}", a.is_ok(), b.is_ok()),
    }
});
