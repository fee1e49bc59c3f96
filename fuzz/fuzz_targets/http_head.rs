//! The request-head classifier: never panics; a head it accepts lies within the input and the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::http_head::{HeadKind, HeadLimits, parse_head};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_header_bytes: 2048, max_cookie_len: 64 };
    if let Ok(Some(h)) = parse_head(data, &limits) {
        assert!(h.consumed <= data.len() && h.consumed <= limits.max_header_bytes);
        if matches!(h.kind, HeadKind::TunnelGet | HeadKind::TunnelPost) {
            let c = h.cookie.expect("a tunnel head has a cookie");
            assert!(!c.is_empty() && c.len() <= 64);
        }
        // A longer input with the same head classifies the same way.
        let mut more = data.to_vec();
        more.extend_from_slice(b"trailing");
        let again = parse_head(&more, &limits).unwrap().unwrap();
        assert_eq!(again.kind, h.kind);
    }
});
