//! The WebSocket server side: the upgrade classifier never panics and an accepted upgrade always
//! names rtsp.onvif.org; the frame decoder gives the same data, replies and end however the
//! input is split, never more data than it was fed, and nothing after the connection ended.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::websocket::{WebRequest, WsEnd, WsEndpoint, WsLimits, accept_reply, classify};

fn run(pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Option<WsEnd>) {
    let mut ep = WsEndpoint::new(WsLimits { max_frame_bytes: 4096, max_message_bytes: 8192 });
    let (mut data, mut out, mut end) = (Vec::new(), Vec::new(), None);
    for p in pieces {
        let (before_data, before_out) = (data.len(), out.len());
        let e = ep.on_bytes(p, &mut data, &mut out);
        if end.is_some() {
            assert!(e.is_none() && data.len() == before_data && out.len() == before_out, "output after the end");
        }
        end = end.or(e);
    }
    (data, out, end)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let input = &data[1..];
    if let WebRequest::WebSocket(u) = classify(input) {
        let reply = accept_reply(&u);
        assert!(reply.windows(14).any(|w| w == b"rtsp.onvif.org"));
    }
    let split = (data[0] as usize * 7) % (input.len() + 1);
    let whole = run(&[input]);
    assert!(whole.0.len() <= input.len());
    assert_eq!(whole, run(&[&input[..split], &input[split..]]));
});
