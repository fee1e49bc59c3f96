//! The POST-body decoder: any split of the input decodes identically (or fails identically).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::base64_stream::Base64StreamDecoder;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let input = &data[1..];
    let split = split.min(input.len());
    let mut whole = Base64StreamDecoder::new();
    let mut a = Vec::new();
    let ra = whole.decode(input, &mut a);
    let mut parts = Base64StreamDecoder::new();
    let mut b = Vec::new();
    let rb = parts.decode(&input[..split], &mut b).and_then(|()| parts.decode(&input[split..], &mut b));
    assert_eq!(ra.is_ok(), rb.is_ok());
    if ra.is_ok() {
        assert_eq!(a, b);
        assert_eq!(whole.pending(), parts.pending());
        assert!(a.len() <= input.len() * 3 / 4 + 3);
    }
});
